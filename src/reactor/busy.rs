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

    /// Opens a window of `window_us` after a batch that held a client's completion.
    pub(super) fn after_batch(&mut self, batch: &[Completion], window_us: u64) {
        let served = batch
            .iter()
            .any(|c| Token::decode(c.user_data).is_some_and(|token| is_traffic(token.kind)));
        self.until = (served && window_us > 0 && self.useful)
            .then(|| Instant::now() + Duration::from_micros(window_us));
    }

    /// Submits and waits for the next completion: polls while the window is open, then sleeps.
    pub(super) fn wait(&mut self, ring: &mut Backend) -> io::Result<()> {
        if let Some(until) = self.until.take() {
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
