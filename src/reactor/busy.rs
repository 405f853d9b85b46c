//! Busy polling (`daemon.busy_poll_us`): after a turn that served traffic, the loop polls the
//! backend for the window before it sleeps.
//!
//! Why: a script that talks to the daemon in a tight loop sends its next request within tens of
//! microseconds. A loop that went to sleep in between must be woken by the kernel, and on a
//! virtual machine waking an idle vCPU costs more than the request (docs/BENCHMARKS.md, "Busy
//! polling"). Polling only after traffic keeps an idle daemon idle: a timer tick or a signal
//! opens no window.

use std::io;
use std::time::{Duration, Instant};

use super::backend::Backend;
use super::ring::Completion;
use super::token::{Kind, Token};

/// When the current polling window closes; none open after a turn without traffic.
#[derive(Debug)]
pub(super) struct BusyPoll {
    until: Option<Instant>,
    /// False on a machine with one CPU online: the client then needs that CPU, and polling
    /// could only delay it. (A daemon pinned to one CPU of several still polls: its clients
    /// may be elsewhere, and one on its own CPU gets it at each `sched_yield`.)
    useful: bool,
}

impl BusyPoll {
    /// Reads the CPUs online, once (a CPU brought online later is not seen).
    pub(super) fn new() -> BusyPoll {
        // SAFETY: sysconf reads a number and takes no pointer.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        BusyPoll {
            until: None,
            useful: cpus > 1,
        }
    }

    /// Opens a window of `window_us` after a batch that held a client's completion. A batch
    /// without one leaves an open window as it was: the completion of the daemon's own close
    /// of a finished connection, which comes at once, would otherwise end the window and the
    /// loop would sleep just before the script's next connect (one wake-up per connection).
    pub(super) fn after_batch(&mut self, batch: &[Completion], window_us: u64) {
        let served = batch
            .iter()
            .any(|c| Token::decode(c.user_data).is_some_and(|token| is_traffic(token.kind)));
        if served && window_us > 0 && self.useful {
            self.until = Some(Instant::now() + Duration::from_micros(window_us));
        }
    }

    /// Submits and waits for the next completion: polls while the window is open, then sleeps.
    pub(super) fn wait(&mut self, ring: &mut Backend) -> io::Result<()> {
        if let Some(until) = self.until {
            // Bounded by the window (at most BUSY_POLL_US_MAX).
            while Instant::now() < until {
                if ring.submit_and_peek()? {
                    return Ok(());
                }
                // A client on this same CPU must get it: polling that held the CPU would delay
                // the very request it waits for by the whole window.
                // SAFETY: sched_yield takes no arguments and cannot fail on Linux.
                unsafe { libc::sched_yield() };
            }
            self.until = None;
        }
        ring.submit_and_wait()
    }
}

/// Completions that a client's request or a relayed byte caused (not the daemon's own timers,
/// signals, probes or closes).
fn is_traffic(kind: Kind) -> bool {
    match kind {
        Kind::Accept
        | Kind::Recv
        | Kind::Send
        | Kind::RelayConnect
        | Kind::RelayClientRecv
        | Kind::RelayClientSend
        | Kind::RelayCoreRecv
        | Kind::RelayCoreSend
        | Kind::RelayUpPoll
        | Kind::RelayDownPoll
        | Kind::RelayUpSplice
        | Kind::RelayDownSplice
        | Kind::FrontAccept
        | Kind::Wake => true,
        Kind::Cancel
        | Kind::Signal
        | Kind::Timer
        | Kind::Pidfd
        | Kind::ProbeIo
        | Kind::Close
        | Kind::Reject => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(kind: Kind) -> Completion {
        Completion {
            user_data: Token::singleton(kind).encode(),
            result: 0,
            flags: 0,
        }
    }

    fn poll() -> BusyPoll {
        BusyPoll {
            until: None,
            useful: true,
        }
    }

    #[test]
    fn traffic_opens_a_window_and_the_daemons_own_completions_leave_it_as_it_was() {
        let mut busy = poll();
        busy.after_batch(&[completion(Kind::Timer)], 25);
        assert!(busy.until.is_none(), "a tick opens no window");
        busy.after_batch(&[completion(Kind::Recv)], 25);
        let opened = busy.until.expect("a request opens the window");
        // The close of the finished connection completes at once; the script's next connect
        // comes within the window, which must still be open for it.
        busy.after_batch(&[completion(Kind::Close)], 25);
        assert_eq!(busy.until, Some(opened));
        busy.after_batch(&[completion(Kind::Accept)], 25);
        assert!(busy.until.is_some_and(|until| until >= opened));
    }

    #[test]
    fn no_window_when_off_or_useless() {
        let mut busy = poll();
        busy.after_batch(&[completion(Kind::Recv)], 0);
        assert!(busy.until.is_none());
        let mut single = BusyPoll {
            until: None,
            useful: false,
        };
        single.after_batch(&[completion(Kind::Recv)], 25);
        assert!(single.until.is_none());
    }
}
