//! Bulk directions through a kernel pipe (`splice(2)`). Once a direction of an opened relay is
//! a bulk transfer (its receive filled the buffer, pipe.rs), its bytes go socket → pipe →
//! socket inside the kernel: the daemon copies none of them, where a buffer costs a copy in and
//! a copy out per byte on the CPU the transfer shares with the pool core.
//!
//! Each splice is a ring op (`IORING_OP_SPLICE`, non-blocking on both sides), which the kernel
//! always runs on an io-wq worker thread: the loop thread only issues and reaps, so the CPU
//! time of the transfer is the workers', and the loop thread stays a light task that the
//! scheduler wakes at once for IPC (docs/BENCHMARKS.md: a ping's p99 under bulk through the
//! front went to the level of the control). A side that is not ready (`EAGAIN`) gets a one-shot
//! poll; one op per direction is in flight at a time, and what the pipe holds goes out before the
//! source is read again, so the relay's backpressure stays. The epoll backend runs the same
//! splice at once in the loop thread.
//!
//! Only opened relays splice: the opening is observed and may be replayed, which needs the
//! bytes in the daemon's hands. `relay.splice = false` keeps every direction on buffers.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::pipe;
use super::relay::Mode;
use super::ring::Op;
use super::token::Kind;
use super::Reactor;
use crate::supervisor::Now;

/// Directions spliced at once over every relay; past it a bulk direction gets a bulk buffer
/// (pipe.rs). Each holds a pipe (two descriptors) of at most [`SPLICE_PIPE_BYTES`].
pub const SPLICED_MAX: usize = 128;
/// Capacity asked for each pipe (`F_SETPIPE_SZ`); the default 64 KiB stays where the system
/// refuses it (an unprivileged user past `pipe-user-pages-soft`).
pub const SPLICE_PIPE_BYTES: usize = 256 * 1024;
const _: () = assert!(SPLICED_MAX * SPLICE_PIPE_BYTES <= 32 * 1024 * 1024);
// A splice's result is an isize; the relay's byte counts are usize.
const _: () = assert!(SPLICE_PIPE_BYTES <= i32::MAX as usize);
const _: () = assert!(SPLICE_PIPE_BYTES == pipe::RELAY_BULK_BUFFER_BYTES);

/// A spliced direction's pipe and how many bytes it holds.
pub struct Spliced {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe, not yet spliced to the destination.
    pub held: usize,
    /// The splice in flight (or the last one) reads the source into the pipe.
    reading: bool,
}

impl Spliced {
    /// A non-blocking, close-on-exec pipe of [`SPLICE_PIPE_BYTES`] where the system allows it.
    pub fn new() -> io::Result<Spliced> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array we pass.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both are fresh descriptors that nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ takes an int and touches no memory of ours; a refusal (EPERM,
        // EBUSY) leaves the pipe at its default size, which works the same, 64 KiB at a time.
        unsafe {
            libc::fcntl(
                write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                SPLICE_PIPE_BYTES as libc::c_int,
            )
        };
        Ok(Spliced {
            read,
            write,
            held: 0,
            reading: false,
        })
    }
}

/// Which direction of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client → member.
    Up,
    /// Member → client.
    Down,
}

/// Makes a socket non-blocking (splice(2) takes a socket's blocking mode from its file, not
/// from a flag). The ring's ops on it are not affected: they never block either way.
fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFL with an int on a socket we own; a socket has no other status flag to keep.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Reactor {
    /// A direction's receive filled its buffer: from now on it is spliced when a pipe can be
    /// had (returns `true`), else it gets a bulk buffer. The pipe is empty (no op on it).
    pub(super) fn go_bulk(&mut self, slot: usize, dir: Dir) -> bool {
        let splice = self.front.splice && self.relays.spliced < SPLICED_MAX;
        let r = &mut self.relays.slab[slot];
        let (client, core) = (r.client.as_raw_fd(), r.core.as_ref().map(|f| f.as_raw_fd()));
        let pipe = match dir {
            Dir::Up => &mut r.up,
            Dir::Down => &mut r.down,
        };
        if pipe.spliced.is_some() {
            return true;
        }
        let ready = splice && pipe.is_empty() && !pipe.bulk;
        if let (true, Some(core)) = (ready, core) {
            let made = set_nonblocking(client)
                .and_then(|()| set_nonblocking(core))
                .and_then(|()| Spliced::new());
            match made {
                Ok(spliced) => {
                    pipe.spliced = Some(Box::new(spliced));
                    self.relays.spliced += 1;
                    self.front.counters.spliced += 1;
                    return true;
                }
                // EMFILE, ENFILE: the buffers work as well, with copies.
                Err(e) => {
                    pipe.grow(&mut self.relays.bulk_buffers);
                    self.splice_refused(&e);
                    return false;
                }
            }
        }
        pipe.grow(&mut self.relays.bulk_buffers);
        false
    }

    /// Says once a minute at most why a bulk direction is not spliced.
    fn splice_refused(&mut self, e: &io::Error) {
        let now = super::now().monotonic_ms;
        if self
            .relays
            .splice_log_ms
            .is_none_or(|at| now >= at + 60_000)
        {
            self.relays.splice_log_ms = Some(now);
            eprintln!("xrat: relay: cannot splice a bulk transfer ({e}); copying it instead");
        }
    }

    /// Issues a spliced direction's next op, if none is in flight: what the pipe holds goes
    /// out (`Splice` pipe → destination) before the source is read again (`Splice` source →
    /// pipe). Returns what it cost ([`pipe::cost`]); nothing moves before its completion.
    pub(super) fn splice_step(&mut self, slot: usize, dir: Dir) -> (usize, bool) {
        let r = &mut self.relays.slab[slot];
        let Some(core) = r.core.as_ref().map(|f| f.as_raw_fd()) else {
            return (0, false);
        };
        let client = r.client.as_raw_fd();
        let (src, dst, waiting, may_write) = match dir {
            Dir::Up => (
                client,
                core,
                r.ops.up_poll,
                r.connected && !r.ops.core_send && r.replay_sent.is_none(),
            ),
            Dir::Down => (
                core,
                client,
                r.ops.down_poll,
                !r.ops.client_send && r.out.is_empty() && r.inflight_sent == r.inflight.len(),
            ),
        };
        let relaying = matches!(r.mode, Mode::Relaying) && r.connected && !r.core_cancelled;
        let pipe = match dir {
            Dir::Up => &mut r.up,
            Dir::Down => &mut r.down,
        };
        let eof = pipe.eof;
        let Some(s) = pipe.spliced.as_mut() else {
            return (0, false);
        };
        if waiting || !relaying {
            return (0, false);
        }
        let op = if s.held > 0 {
            if !may_write {
                return (0, false); // the owed bytes go first; their send's completion wakes it
            }
            s.reading = false;
            Op::Splice {
                from: s.read.as_raw_fd(),
                to: dst,
                len: s.held as u32,
            }
        } else if !eof {
            s.reading = true;
            Op::Splice {
                from: src,
                to: s.write.as_raw_fd(),
                len: SPLICE_PIPE_BYTES as u32,
            }
        } else {
            return (0, false);
        };
        let cost = pipe::cost(s.held.max(1));
        self.splice_issue(slot, dir, op);
        (cost, false)
    }

    /// A spliced direction's splice completed.
    pub(super) fn on_splice(&mut self, now: Now, slot: usize, dir: Dir, result: i32) {
        let r = &mut self.relays.slab[slot];
        let (src, dst) = match (dir, r.core.as_ref().map(|f| f.as_raw_fd())) {
            (_, None) => return, // retired: closing
            (Dir::Up, Some(core)) => (r.client.as_raw_fd(), core),
            (Dir::Down, Some(core)) => (core, r.client.as_raw_fd()),
        };
        let closing = !matches!(r.mode, Mode::Relaying) || r.core_cancelled;
        let pipe = match dir {
            Dir::Up => &mut r.up,
            Dir::Down => &mut r.down,
        };
        let Some(s) = pipe.spliced.as_mut() else {
            return;
        };
        let reading = s.reading;
        match result {
            _ if closing => {}
            n if n > 0 && reading => {
                s.held = n as usize;
                match dir {
                    Dir::Up => {
                        r.up_total += n as u64;
                        self.front.counters.bytes_up += n as u64;
                    }
                    Dir::Down => self.front.counters.bytes_down += n as u64,
                }
            }
            n if n > 0 => s.held -= (n as usize).min(s.held),
            0 if reading => pipe.eof = true,
            // A pipe whose write end we hold never ends while it holds bytes.
            0 => self.splice_failed(now, slot, dir, false, libc::EIO),
            e if -e == libc::EAGAIN || -e == libc::EINTR || -e == libc::ENOMEM => {
                let fd = if reading { src } else { dst };
                let op = match reading {
                    true => Op::PollIn { fd },
                    false => Op::PollOut { fd },
                };
                self.splice_issue(slot, dir, op);
            }
            e if -e == libc::ECANCELED => {}
            e => self.splice_failed(now, slot, dir, reading, -e),
        }
    }

    /// Issues a spliced direction's op (a splice, or a poll for the side that was not ready).
    fn splice_issue(&mut self, slot: usize, dir: Dir, op: Op) {
        let r = &mut self.relays.slab[slot];
        let splice = matches!(op, Op::Splice { .. });
        let kind = match (dir, splice) {
            (Dir::Up, true) => Kind::RelayUpSplice,
            (Dir::Up, false) => Kind::RelayUpPoll,
            (Dir::Down, true) => Kind::RelayDownSplice,
            (Dir::Down, false) => Kind::RelayDownPoll,
        };
        match dir {
            Dir::Up => r.ops.up_poll = true,
            Dir::Down => r.ops.down_poll = true,
        }
        let token = r.token(kind, slot);
        // SAFETY: neither a poll nor a splice carries a buffer; the pipe's descriptors live in
        // the relay, which is freed only after this op's completion.
        unsafe { self.push(op, token) };
    }

    /// A splice failed: taken as the receive (`reading`) or send of that side would be.
    fn splice_failed(&mut self, now: Now, slot: usize, dir: Dir, reading: bool, errno: i32) {
        match (dir, reading) {
            (Dir::Up, true) => self.on_client_recv(now, slot, -errno),
            (Dir::Up, false) => self.on_core_send(slot, -errno),
            (Dir::Down, true) => self.on_core_recv(now, slot, -errno),
            (Dir::Down, false) => self.on_client_send(slot, -errno),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use super::*;

    /// What one non-blocking splice did (the completion's result, read).
    enum Moved {
        Bytes(usize),
        End,
        Later,
        Failed(i32),
    }

    fn splice_now(from: RawFd, to: RawFd, len: usize) -> Moved {
        match super::super::epoll_ops::splice(from, to, len as u32) {
            n if n > 0 => Moved::Bytes(n as usize),
            0 => Moved::End,
            e if -e == libc::EAGAIN => Moved::Later,
            e => Moved::Failed(-e),
        }
    }

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (a, b)
    }

    #[test]
    fn bytes_cross_the_pipe_and_an_idle_or_ended_source_says_so() {
        let (mut client, src) = pair();
        let (dst, mut sink) = pair();
        set_nonblocking(src.as_raw_fd()).unwrap();
        set_nonblocking(dst.as_raw_fd()).unwrap();
        let pipe = Spliced::new().unwrap();
        let (r, w) = (pipe.read.as_raw_fd(), pipe.write.as_raw_fd());
        assert!(matches!(
            splice_now(src.as_raw_fd(), w, SPLICE_PIPE_BYTES),
            Moved::Later
        ));
        client.write_all(b"through the kernel").unwrap();
        let n = loop {
            match splice_now(src.as_raw_fd(), w, SPLICE_PIPE_BYTES) {
                Moved::Bytes(n) => break n,
                Moved::Later => std::thread::yield_now(),
                _ => panic!("the source has bytes"),
            }
        };
        assert_eq!(n, 18);
        assert!(matches!(
            splice_now(r, dst.as_raw_fd(), n),
            Moved::Bytes(18)
        ));
        let mut got = [0; 18];
        sink.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"through the kernel");
        drop(client);
        let ended = (0..1_000).any(|_| {
            let end = matches!(
                splice_now(src.as_raw_fd(), w, SPLICE_PIPE_BYTES),
                Moved::End
            );
            if !end {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            end
        });
        assert!(ended, "EOF of the source");
    }

    #[test]
    fn a_full_destination_is_later_not_a_failure() {
        let (mut client, src) = pair();
        let (dst, _sink) = pair(); // never read
        set_nonblocking(src.as_raw_fd()).unwrap();
        set_nonblocking(dst.as_raw_fd()).unwrap();
        let pipe = Spliced::new().unwrap();
        let (r, w) = (pipe.read.as_raw_fd(), pipe.write.as_raw_fd());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let writer = std::thread::spawn(move || {
            let chunk = vec![7u8; 64 * 1024];
            // Until told: the relay stops taking bytes once the destination is full.
            client.set_nonblocking(true).unwrap();
            for _ in 0..100_000 {
                if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                if client.write(&chunk).is_err() {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        });
        let (mut later, mut held, mut moved) = (false, 0, 0);
        for _ in 0..1_000_000 {
            if held == 0 {
                match splice_now(src.as_raw_fd(), w, SPLICE_PIPE_BYTES) {
                    Moved::Bytes(n) => held = n,
                    Moved::Later => std::thread::yield_now(),
                    Moved::End => panic!("the source is open"),
                    Moved::Failed(errno) => panic!("source: errno {errno}"),
                }
                continue;
            }
            // The pipe holds bytes: only a full destination makes this wait.
            match splice_now(r, dst.as_raw_fd(), held) {
                Moved::Later => {
                    later = true;
                    break;
                }
                Moved::Bytes(n) => (held, moved) = (held - n, moved + n),
                Moved::End => panic!("the pipe holds bytes"),
                Moved::Failed(errno) => panic!("a full socket is not a failure (errno {errno})"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        assert!(later, "the destination never filled ({moved} bytes moved)");
        assert!(moved > 0 && held > 0, "{moved} moved, {held} held");
    }
}
