//! A fresh connection's first read, taken with `MSG_PEEK` and consumed only after the turn's
//! replies are sent.
//!
//! A client writes its request right after connecting and blocks reading the reply. Consuming
//! the request frees the client's send buffer, and the kernel wakes every sleeper on the client's
//! socket for the write space, including the reader, which finds nothing yet and sleeps again.
//! On a CPU the two share, that wake-up also preempts the daemon between its read and its reply:
//! two context switches per connection for nothing (traced with `sched_switch`). Peeking reads
//! the same bytes without freeing them; after the reply has gone out, consuming them wakes
//! nobody who has anything to wait for.
//!
//! Invariant: while `Conn::peeked` is non-zero the connection has no receive armed (a receive
//! would return the peeked bytes a second time), and the peeked bytes are consumed before the
//! next submit or close, whichever comes first.

use super::conn::Phase;
use super::handlers::Source;
use super::{Now, Reactor};

impl Reactor {
    /// Reads what a freshly accepted client already sent, without taking it from the socket.
    pub(super) fn read_at_once(&mut self, now: Now, slot: usize) {
        let fd = self.conns[slot].fd;
        let n = self.recv_scratch(fd, self.scratch.len(), libc::MSG_PEEK);
        if n > 0 {
            let conn = &mut self.conns[slot];
            conn.peeked = n as usize;
            self.peeked.push((slot, conn.serial));
            self.feed(now, slot, Source::Scratch(n as usize));
        } else if n == 0 {
            self.end_of_input(slot);
        }
    }

    /// Takes the connection's peeked bytes off the socket (their requests are already framed).
    /// A failure closes the connection: the stream would no longer line up with what was read.
    pub(super) fn consume_peeked(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let (fd, mut left) = (conn.fd, conn.peeked);
        conn.peeked = 0;
        // Bounded: each round takes at least one byte of `left`, and the kernel hands back
        // everything peeked (the bytes are queued and no one else reads this socket).
        let rounds = left;
        for _ in 0..rounds {
            if left == 0 {
                break;
            }
            let n = self.recv_scratch(fd, left.min(self.scratch.len()), 0);
            if n <= 0 {
                let errno = std::io::Error::last_os_error();
                eprintln!("xrat: consuming a request already read failed: {errno}");
                return self.begin_close(slot);
            }
            left -= n as usize;
        }
    }

    /// End of a turn, after the turn's replies went out: every connection peeked this turn has
    /// its bytes consumed, then is read once more without waiting. By then a client on the same
    /// CPU has usually taken its reply and closed, so the end of file is seen here instead of by
    /// a receive armed, woken and completed through the ring.
    /// Returns true when that read produced inputs for the supervisor.
    pub(super) fn settle_peeked(&mut self, now: Now) -> bool {
        let mut peeked = std::mem::take(&mut self.peeked);
        let inputs = self.inputs.len();
        for (slot, serial) in peeked.drain(..) {
            let Some(conn) = self.conns.get(slot).filter(|c| c.serial == serial) else {
                continue;
            };
            if conn.peeked > 0 {
                self.consume_peeked(slot);
            }
            if self.conns.get(slot).is_some_and(|c| c.phase == Phase::Open) {
                self.read_again(now, slot);
            }
        }
        self.peeked = peeked;
        self.inputs.len() != inputs
    }

    /// One non-blocking read after the peeked bytes: more requests are framed, an end of file
    /// drains the connection, and nothing yet arms the receive.
    fn read_again(&mut self, now: Now, slot: usize) {
        let fd = self.conns[slot].fd;
        let n = self.recv_scratch(fd, self.scratch.len(), 0);
        if n > 0 {
            self.feed(now, slot, Source::Scratch(n as usize));
        } else if n == 0 {
            self.end_of_input(slot);
        } else {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if !matches!(errno, libc::EAGAIN | libc::EINTR) {
                return self.begin_close(slot);
            }
        }
        self.arm_recv(slot);
        self.settle(slot);
    }

    /// One non-blocking `recv` of at most `len` bytes into the scratch buffer.
    fn recv_scratch(&mut self, fd: i32, len: usize, flags: i32) -> isize {
        let len = len.min(self.scratch.len());
        // SAFETY: `scratch` is ours, at least `len` long, and outlives this synchronous call.
        unsafe {
            libc::recv(
                fd,
                self.scratch.as_mut_ptr().cast(),
                len,
                libc::MSG_DONTWAIT | flags,
            )
        }
    }
}
