//! The epoll backend's syscalls: one attempt of each op on a ready (or fresh) descriptor, with
//! the result shaped the way io_uring would post it, plus the consumer side of the
//! provided-buffer ring.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

use super::bufring::BufRing;
use super::ring::Op;

/// `IORING_CQE_F_BUFFER`: the completion names a provided buffer in its upper 16 bits.
pub const CQE_F_BUFFER: u32 = 1 << 0;
/// `IORING_CQE_F_MORE`: the multishot op goes on.
pub const CQE_F_MORE: u32 = 1 << 1;
/// `IORING_CQE_BUFFER_SHIFT`: where the buffer id sits in the flags.
pub const CQE_BUFFER_SHIFT: u32 = 16;

/// What one attempt of an op came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The op is done: its final completion.
    Final {
        /// Result, or negated errno.
        result: i32,
        /// CQE flags (a buffer, never "more").
        flags: u32,
    },
    /// A multishot op produced one completion and goes on; `again` says the descriptor may
    /// have more right now (try before waiting).
    More {
        /// Result.
        result: i32,
        /// CQE flags (a buffer; "more" is added by the caller).
        flags: u32,
        /// Try again at once.
        again: bool,
    },
    /// Nothing to do until the descriptor is ready.
    Wait,
}

fn final_of(result: i32) -> Step {
    Step::Final { result, flags: 0 }
}

/// The errno of the last failed call, negated as a completion carries it.
fn neg_errno() -> i32 {
    -io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// EAGAIN and EINTR on a non-blocking call: wait for readiness (level-triggered, so a ready
/// descriptor is reported again at once).
fn is_wait(result: i32) -> bool {
    result == -libc::EAGAIN || result == -libc::EWOULDBLOCK || result == -libc::EINTR
}

/// Epoll events an op waits for.
pub fn interest(op: &Op) -> u32 {
    match op {
        Op::Send { .. } | Op::Connect { .. } | Op::PollOut { .. } => libc::EPOLLOUT as u32,
        _ => libc::EPOLLIN as u32,
    }
}

/// The descriptor an op works on, if it waits on one.
pub fn fd_of(op: &Op) -> Option<RawFd> {
    match *op {
        Op::AcceptMulti { fd }
        | Op::RecvMulti { fd }
        | Op::Send { fd, .. }
        | Op::Recv { fd, .. }
        | Op::Read { fd, .. }
        | Op::PollIn { fd }
        | Op::PollOut { fd }
        | Op::Connect { fd, .. } => Some(fd),
        Op::Nop
        | Op::Close { .. }
        | Op::Cancel { .. }
        | Op::CancelFd { .. }
        | Op::Splice { .. } => None,
    }
}

/// The consumer side of a provided-buffer ring: the head io_uring would keep in the kernel.
pub struct Provided {
    entries: *const BufRingEntry,
    mask: u16,
    head: u16,
    /// The group the ring was registered under.
    pub bgid: u16,
}

impl Provided {
    /// Consumes `ring` from its start, as the kernel does after registration.
    pub fn new(ring: &BufRing, bgid: u16) -> Provided {
        Provided {
            entries: ring.entries_addr() as *const BufRingEntry,
            mask: ring.entry_count() - 1,
            head: 0,
            bgid,
        }
    }

    /// The entry at the head (bid, address, length), without taking it.
    fn peek(&self) -> Option<(u16, u64, u32)> {
        // SAFETY: `entries` is the base of the ring's entry array, which outlives the backend
        // (registration contract); the tail is the shared u16 the reactor publishes with a
        // release store, read here with acquire so the entries before it are visible.
        let tail = unsafe {
            (*(BufRingEntry::tail(self.entries) as *const AtomicU16)).load(Ordering::Acquire)
        };
        if tail == self.head {
            return None;
        }
        // SAFETY: the index is masked into the array; entries between head and the published
        // tail are not written by the reactor (it writes only past the tail).
        let entry = unsafe { &*self.entries.add((self.head & self.mask) as usize) };
        Some((entry.bid(), entry.addr(), entry.len()))
    }

    /// Takes the entry at the head (after a receive filled it).
    fn advance(&mut self) {
        self.head = self.head.wrapping_add(1);
    }
}

/// One multishot receive into the buffer at the ring's head. An empty ring ends the op with
/// ENOBUFS before any data is read, as the kernel does; except on a `retry` right after a full
/// buffer, where the kernel first checks whether the socket still holds bytes and otherwise
/// waits for them (so does this, with a one-byte peek). A buffer is taken only when bytes
/// landed in it, so EOF and errors carry none.
pub fn recv_multi(fd: RawFd, provided: Option<&mut Provided>, retry: bool) -> Step {
    let Some(provided) = provided else {
        return final_of(-libc::ENOBUFS);
    };
    let Some((bid, addr, len)) = provided.peek() else {
        if retry && !has_bytes(fd) {
            return Step::Wait;
        }
        return final_of(-libc::ENOBUFS);
    };
    // SAFETY: the entry names a buffer of `len` bytes inside the BufRing's allocation, which
    // the reactor does not touch until this completion hands the buffer id back.
    let n = unsafe {
        libc::recv(
            fd,
            addr as *mut libc::c_void,
            len as usize,
            libc::MSG_DONTWAIT,
        )
    };
    if n > 0 {
        provided.advance();
        let flags = CQE_F_BUFFER | (u32::from(bid) << CQE_BUFFER_SHIFT);
        // A full buffer suggests more is queued; a short one drained the socket.
        return Step::More {
            result: n as i32,
            flags,
            again: n as u32 == len,
        };
    }
    if n == 0 {
        return final_of(0);
    }
    match neg_errno() {
        r if is_wait(r) => Step::Wait,
        r => final_of(r),
    }
}

/// Whether a receive would find bytes, EOF or an error now (not EAGAIN).
fn has_bytes(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: a one-byte peek into a local; nothing is consumed.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n >= 0 || !is_wait(neg_errno())
}

/// One accept; accepted sockets are close-on-exec (and blocking, like io_uring's: every
/// receive and send on them is issued with MSG_DONTWAIT here).
pub fn accept(fd: RawFd) -> Step {
    // SAFETY: accept4 without an address buffer; the result is a fresh fd or -1.
    let accepted = unsafe {
        libc::accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if accepted >= 0 {
        return Step::More {
            result: accepted,
            flags: 0,
            again: true,
        };
    }
    match neg_errno() {
        r if is_wait(r) => Step::Wait,
        r => final_of(r),
    }
}

/// One non-blocking send; a short send completes with its count, like io_uring's.
pub fn send(fd: RawFd, ptr: *const u8, len: u32) -> Step {
    // SAFETY: the op's contract keeps `ptr..ptr+len` valid and untouched until completion.
    let n = unsafe {
        libc::send(
            fd,
            ptr.cast(),
            len as usize,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    byte_count(n)
}

/// One non-blocking receive of at most `len` bytes.
pub fn recv(fd: RawFd, ptr: *mut u8, len: u32) -> Step {
    // SAFETY: the op's contract keeps `ptr..ptr+len` valid and unread by Rust until completion.
    let n = unsafe { libc::recv(fd, ptr.cast(), len as usize, libc::MSG_DONTWAIT) };
    byte_count(n)
}

/// One read, issued only once the descriptor is readable (it may be a blocking one: the
/// timerfd, the signalfd, a probe socket).
pub fn read(fd: RawFd, ptr: *mut u8, len: u32) -> Step {
    // SAFETY: the op's contract keeps `ptr..ptr+len` valid and unread by Rust until completion.
    let n = unsafe { libc::read(fd, ptr.cast(), len as usize) };
    byte_count(n)
}

fn byte_count(n: isize) -> Step {
    if n >= 0 {
        return final_of(n as i32);
    }
    match neg_errno() {
        r if is_wait(r) => Step::Wait,
        r => final_of(r),
    }
}

/// A one-shot poll completes with the ready events, as poll(2) bits (they equal epoll's for
/// IN, PRI, OUT, ERR and HUP).
pub fn poll_result(events: u32) -> Step {
    const POLL_BITS: u32 = (libc::POLLIN
        | libc::POLLPRI
        | libc::POLLOUT
        | libc::POLLERR
        | libc::POLLHUP
        | libc::POLLRDHUP) as u32;
    final_of((events & POLL_BITS) as i32)
}

/// Starts a connect: the socket is made non-blocking first (a blocking connect would stall
/// the loop; every later op on it is non-blocking anyway).
pub fn connect_start(fd: RawFd, addr: *const libc::sockaddr, len: libc::socklen_t) -> Step {
    // SAFETY: fcntl on a descriptor the op names; no memory is involved.
    let status = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if status < 0 {
        return final_of(neg_errno());
    }
    if status & libc::O_NONBLOCK == 0 {
        // SAFETY: fcntl on the same descriptor; only its status flags change.
        let rc = unsafe { libc::fcntl(fd, libc::F_SETFL, status | libc::O_NONBLOCK) };
        if rc < 0 {
            return final_of(neg_errno());
        }
    }
    // SAFETY: the op's contract keeps the address valid until completion; connect copies it.
    if unsafe { libc::connect(fd, addr, len) } == 0 {
        return final_of(0);
    }
    match neg_errno() {
        r if r == -libc::EINPROGRESS || r == -libc::EINTR => Step::Wait,
        r => final_of(r),
    }
}

/// A connect in progress became writable: its outcome is SO_ERROR.
pub fn connect_finish(fd: RawFd) -> Step {
    let mut error: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes one c_int into `error` and its size into `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut error as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    match (rc, error) {
        (0, 0) => final_of(0),
        (0, e) => final_of(-e),
        _ => final_of(neg_errno()),
    }
}

/// One non-blocking splice(2) between a socket and a pipe; the completion carries its result
/// (-EAGAIN when a side is not ready, as the ring's op reports it).
pub fn splice(from: RawFd, to: RawFd, len: u32) -> i32 {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    let (null_in, null_out) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: splice between two descriptors the caller owns; no memory of ours is involved,
    // and null offsets are what sockets and pipes require. A bad descriptor is an errno.
    let n = unsafe { libc::splice(from, null_in, to, null_out, len as usize, flags) };
    if n >= 0 {
        n as i32 // at most len, a u32 that the caller keeps under i32::MAX
    } else {
        neg_errno()
    }
}

/// Closes `fd`; the completion carries close(2)'s result.
pub fn close(fd: RawFd) -> i32 {
    // SAFETY: the reactor hands over the descriptor with the op; nothing else uses it.
    if unsafe { libc::close(fd) } == 0 {
        0
    } else {
        neg_errno()
    }
}
