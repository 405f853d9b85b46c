//! The narrow seam between the reactor and the kernel: a handful of [`Op`]s in, [`Completion`]s
//! out. io_uring implements it here; `epoll.rs` implements the same ops and completions where
//! io_uring is refused (DESIGN §3a rule 12), and `backend.rs` picks one, so the reactor does not
//! notice which.

use std::io;
use std::os::fd::RawFd;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::bufring::BufRing;
use super::ReactorError;

/// Submission queue entries. Completions may be many more (multishot), hence the larger CQ.
pub const SQ_ENTRIES: u32 = 512;
/// Completion queue entries: at least 4x the SQ (DESIGN §3a rule 1).
pub const CQ_ENTRIES: u32 = 8 * SQ_ENTRIES;
const _: () = assert!(CQ_ENTRIES >= 4 * SQ_ENTRIES);

/// Completions copied out of the CQ per batch before any is dispatched.
pub const BATCH_COMPLETIONS_MAX: usize = CQ_ENTRIES as usize;

/// One operation the reactor can ask for.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// Multishot accept on a listening socket; accepted fds are close-on-exec.
    AcceptMulti {
        /// The listener.
        fd: RawFd,
    },
    /// Multishot receive into buffers of the provided-buffer ring.
    RecvMulti {
        /// The connection.
        fd: RawFd,
    },
    /// Send `len` bytes at `ptr`, with MSG_NOSIGNAL.
    Send {
        /// The connection.
        fd: RawFd,
        /// Start of the bytes; must stay valid until the completion arrives.
        ptr: *const u8,
        /// How many.
        len: u32,
    },
    /// One receive of at most `len` bytes into `ptr` (relayed connections: a fixed buffer per
    /// direction, so a slow writer stops the reading side).
    Recv {
        /// The socket.
        fd: RawFd,
        /// Destination; must stay valid until the completion arrives.
        ptr: *mut u8,
        /// Capacity.
        len: u32,
    },
    /// Completes at once: makes the next wait return (work was left for the next turn).
    Nop,
    /// Read into `ptr` (timerfd and signalfd records).
    Read {
        /// The file.
        fd: RawFd,
        /// Destination; must stay valid until the completion arrives.
        ptr: *mut u8,
        /// Capacity.
        len: u32,
    },
    /// One-shot poll for readability (pidfds, a spliced relay's source socket).
    PollIn {
        /// The file.
        fd: RawFd,
    },
    /// One-shot poll for room to write (a spliced relay's destination socket).
    PollOut {
        /// The file.
        fd: RawFd,
    },
    /// Non-blocking `splice(2)` of at most `len` bytes between a socket and a pipe (no
    /// offsets). The kernel runs it on an io-wq worker thread, not the loop thread.
    Splice {
        /// The source.
        from: RawFd,
        /// The destination.
        to: RawFd,
        /// At most this many bytes.
        len: u32,
    },
    /// Connect a socket.
    Connect {
        /// The socket.
        fd: RawFd,
        /// The address; must stay valid until the completion arrives.
        addr: *const libc::sockaddr,
        /// Its length.
        len: libc::socklen_t,
    },
    /// Close a file descriptor (batched into the next submit instead of its own syscall).
    Close {
        /// The file.
        fd: RawFd,
    },
    /// Cancel the operation issued with `user_data`.
    Cancel {
        /// The target's token.
        user_data: u64,
    },
    /// Cancel every operation on `fd`.
    CancelFd {
        /// The file.
        fd: RawFd,
    },
}

/// One completion, copied out of the CQ.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    /// The token given with the op.
    pub user_data: u64,
    /// Result: >= 0 success value, < 0 negated errno.
    pub result: i32,
    /// CQE flags (more, buffer id).
    pub flags: u32,
}

impl Completion {
    /// More completions will follow for this multishot op.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer this completion filled, if any.
    pub fn buffer_id(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

/// The io_uring backend.
pub struct Ring {
    ring: IoUring,
}

impl Ring {
    /// Builds the ring on the calling (loop) thread, dropping optional setup flags one by one
    /// when the kernel refuses them.
    pub fn new() -> Result<Ring, ReactorError> {
        // Strongest first: DEFER_TASKRUN needs SINGLE_ISSUER; COOP_TASKRUN is the oldest.
        const ATTEMPTS: [(bool, bool, bool); 4] = [
            (true, true, true),
            (true, false, true),
            (false, false, true),
            (false, false, false),
        ];
        let mut last = None;
        for (single_issuer, defer, coop) in ATTEMPTS {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(CQ_ENTRIES);
            if single_issuer {
                builder.setup_single_issuer();
            }
            if defer {
                builder.setup_defer_taskrun();
            }
            if coop {
                builder.setup_coop_taskrun();
            }
            match builder.build(SQ_ENTRIES) {
                Ok(ring) => return Ok(Ring { ring }),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
                Err(e) => return Err(classify_setup_error(e)),
            }
        }
        Err(classify_setup_error(last.expect("at least one attempt")))
    }

    /// Registers a provided-buffer ring under group `bgid`.
    pub fn register_buf_ring(&self, ring: &BufRing, bgid: u16) -> io::Result<()> {
        // SAFETY: the BufRing owns the page-aligned entry array and outlives the ring: the
        // reactor drops the Ring before the BufRing (field order in `Reactor`).
        unsafe {
            self.ring.submitter().register_buf_ring_with_flags(
                ring.entries_addr(),
                ring.entry_count(),
                bgid,
                0,
            )
        }
    }

    /// Queues one op; submits first when the SQ is full.
    ///
    /// # Safety
    /// The kernel reads or writes the memory behind every pointer in `op` (and the fd) until the
    /// op's final completion: the caller keeps that memory allocated, at the same address, and
    /// untouched by Rust code until then.
    pub unsafe fn push(&mut self, op: Op, user_data: u64, bgid: u16) -> io::Result<()> {
        let entry = build(op, bgid).user_data(user_data);
        loop {
            // SAFETY: the caller guarantees every pointer in `entry` stays valid until the op's
            // final completion.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// Submits queued ops and blocks until at least one completion is ready.
    pub fn submit_and_wait(&mut self) -> io::Result<()> {
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => return Ok(()),
                Err(e) => match e.raw_os_error() {
                    // A signal arrived (we read signals through a signalfd, but others exist).
                    Some(libc::EINTR) => continue,
                    // The CQ is full or the kernel is short of request memory: reaping
                    // completions makes room, and the caller does that next.
                    Some(libc::EBUSY) | Some(libc::EAGAIN) => return Ok(()),
                    _ => return Err(e),
                },
            }
        }
    }

    /// Submits queued ops and runs the ring's deferred completion work without waiting; true
    /// when a completion is ready (the busy-poll step).
    pub fn submit_and_peek(&mut self) -> io::Result<bool> {
        let queued = self.ring.submission().len() as u32;
        // GETEVENTS even though nothing is awaited: with DEFER_TASKRUN, completions are posted
        // only by an enter that carries it.
        const IORING_ENTER_GETEVENTS: u32 = 1;
        // SAFETY: no argument pointer is passed, and min_complete 0 never blocks; the queued
        // entries' memory is the callers' contract from `push`.
        let entered = unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(queued, 0, IORING_ENTER_GETEVENTS, None)
        };
        match entered {
            Ok(_) => {}
            // As in `submit_and_wait`: a signal, or a full CQ that reaping will empty.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) => {}
            Err(e) => return Err(e),
        }
        Ok(!self.ring.completion().is_empty())
    }

    /// Copies every ready completion into `batch` (up to its capacity limit).
    pub fn drain_into(&mut self, batch: &mut Vec<Completion>) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            batch.push(Completion {
                user_data: cqe.user_data(),
                result: cqe.result(),
                flags: cqe.flags(),
            });
            if batch.len() >= BATCH_COMPLETIONS_MAX {
                break;
            }
        }
    }
}

fn build(op: Op, bgid: u16) -> squeue::Entry {
    match op {
        Op::AcceptMulti { fd } => opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build(),
        Op::RecvMulti { fd } => opcode::RecvMulti::new(types::Fd(fd), bgid).build(),
        Op::Send { fd, ptr, len } => opcode::Send::new(types::Fd(fd), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build(),
        Op::Recv { fd, ptr, len } => opcode::Recv::new(types::Fd(fd), ptr, len).build(),
        Op::Nop => opcode::Nop::new().build(),
        Op::Read { fd, ptr, len } => opcode::Read::new(types::Fd(fd), ptr, len).build(),
        Op::PollIn { fd } => opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32).build(),
        Op::PollOut { fd } => opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32).build(),
        Op::Splice { from, to, len } => {
            opcode::Splice::new(types::Fd(from), -1, types::Fd(to), -1, len)
                .flags(libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK)
                .build()
        }
        Op::Connect { fd, addr, len } => opcode::Connect::new(types::Fd(fd), addr, len).build(),
        Op::Close { fd } => opcode::Close::new(types::Fd(fd)).build(),
        Op::Cancel { user_data } => opcode::AsyncCancel::new(user_data).build(),
        Op::CancelFd { fd } => {
            opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all()).build()
        }
    }
}

/// ENOSYS, EPERM and EINVAL at setup mean "io_uring is not allowed here"; anything else
/// (ENOMEM, EMFILE) is an ordinary resource error.
fn classify_setup_error(e: io::Error) -> ReactorError {
    match e.raw_os_error() {
        Some(libc::ENOSYS) | Some(libc::EPERM) | Some(libc::EINVAL) => {
            ReactorError::IoUringUnavailable { source: e }
        }
        _ => ReactorError::RingSetup { source: e },
    }
}
