//! The epoll backend: the same [`Op`]s in and [`Completion`]s out as the ring, for hosts that
//! refuse io_uring (DESIGN §3a rule 12). Readiness is turned into completions:
//!
//! - pushed ops queue like SQEs and are issued, in order, by the next
//!   [`Epoll::submit_and_wait`]; an op that cannot finish at once waits on its descriptor
//!   (level-triggered, one registration per descriptor for the union of its ops' interests);
//! - multishot accept and receive post completions with the "more" flag until they end; a
//!   multishot receive takes the buffer at the provided ring's head, names it in the flags as
//!   io_uring does, and ends with ENOBUFS when the ring is empty;
//! - cancelled ops end with ECANCELED (their final completion), and the cancel itself completes
//!   with 0 / the number cancelled / ENOENT, as `IORING_OP_ASYNC_CANCEL` does;
//! - a close first ends whatever still waits on the descriptor (as cancelled: the reactor never
//!   closes a descriptor with ops in flight, DESIGN §3a rule 6, but if it did, their owners
//!   would still see final completions), then closes it.
//!
//! As with io_uring, a descriptor stays open until every op on it has its final completion (the
//! reactor frees descriptors only then); epoll forgets a closed descriptor on its own, so one
//! closed (dropped) under a waiting op would leave that op waiting.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use slab::Slab;

use super::bufring::BufRing;
use super::epoll_ops::{self as ops, Provided, Step, CQE_F_MORE};
use super::ring::{Completion, Op, BATCH_COMPLETIONS_MAX};
use super::ReactorError;

/// Readiness events taken from one `epoll_wait`.
pub const EPOLL_EVENTS_MAX: usize = 256;
/// Completions one multishot op posts for one readiness report before it waits again (the
/// kernel's multishot retry bound); level-triggered epoll reports the rest at once.
pub const MULTISHOT_ROUNDS_MAX: usize = 32;
/// Pending ops the table starts with room for.
const PENDING_INITIAL: usize = 1024;

/// An issued op waiting for its descriptor.
#[derive(Debug, Clone, Copy)]
struct Pending {
    op: Op,
    user_data: u64,
    fd: RawFd,
}

/// One descriptor's registration.
#[derive(Debug, Default)]
struct Watch {
    /// Waiting ops, oldest first.
    ops: Vec<usize>,
    /// The events registered with epoll (0: not registered).
    events: u32,
}

/// The epoll backend.
pub struct Epoll {
    epfd: OwnedFd,
    /// Pushed, not yet issued (the submission queue).
    queued: Vec<(Op, u64)>,
    pending: Slab<Pending>,
    watches: HashMap<RawFd, Watch>,
    /// Posted, not yet drained (the completion queue).
    ready: VecDeque<Completion>,
    events: Vec<libc::epoll_event>,
    provided: Option<Provided>,
}

impl Epoll {
    /// Creates the epoll instance.
    pub fn new() -> Result<Epoll, ReactorError> {
        // SAFETY: plain syscall; the result is checked before being owned.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(ReactorError::Syscall {
                what: "epoll_create1",
                source: io::Error::last_os_error(),
            });
        }
        Ok(Epoll {
            // SAFETY: a fresh descriptor owned by nobody else.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            queued: Vec::new(),
            pending: Slab::with_capacity(PENDING_INITIAL),
            watches: HashMap::new(),
            ready: VecDeque::new(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EPOLL_EVENTS_MAX],
            provided: None,
        })
    }

    /// Becomes the consumer of `ring` for group `bgid` (one group, as the reactor uses).
    ///
    /// The ring must outlive the backend, as with io_uring's registration.
    pub fn register_buf_ring(&mut self, ring: &BufRing, bgid: u16) -> io::Result<()> {
        if self.provided.is_some() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        self.provided = Some(Provided::new(ring, bgid));
        Ok(())
    }

    /// Queues one op; it is issued by the next [`Epoll::submit_and_wait`].
    ///
    /// # Safety
    /// As [`super::ring::Ring::push`]: the memory behind every pointer in `op` stays valid and
    /// untouched by Rust code until the op's final completion.
    pub unsafe fn push(&mut self, op: Op, user_data: u64, bgid: u16) -> io::Result<()> {
        let op = match op {
            // A group nobody registered has no buffers: the kernel answers ENOBUFS.
            Op::RecvMulti { .. } if self.provided.as_ref().map(|p| p.bgid) != Some(bgid) => {
                self.post(user_data, -libc::ENOBUFS, 0);
                return Ok(());
            }
            op => op,
        };
        self.queued.push((op, user_data));
        Ok(())
    }

    /// Issues queued ops and blocks until at least one completion is ready.
    pub fn submit_and_wait(&mut self) -> io::Result<()> {
        for (op, user_data) in std::mem::take(&mut self.queued) {
            self.issue(op, user_data);
        }
        loop {
            // Completions already posted: only collect what is ready now, so readiness is
            // never starved by ops that complete at once (a Nop every turn).
            let timeout = if self.ready.is_empty() { -1 } else { 0 };
            let n = self.wait(timeout)?;
            for i in 0..n {
                let event = self.events[i];
                self.on_ready(event.u64 as RawFd, event.events);
            }
            if !self.ready.is_empty() {
                return Ok(());
            }
        }
    }

    /// Issues queued ops and takes the readiness already reported, without waiting; true when a
    /// completion is posted (the busy-poll step).
    pub fn submit_and_peek(&mut self) -> io::Result<bool> {
        for (op, user_data) in std::mem::take(&mut self.queued) {
            self.issue(op, user_data);
        }
        if self.ready.is_empty() {
            let n = self.wait(0)?;
            for i in 0..n {
                let event = self.events[i];
                self.on_ready(event.u64 as RawFd, event.events);
            }
        }
        Ok(!self.ready.is_empty())
    }

    /// Issues queued ops and takes one readiness report, waiting at most `timeout_ms`.
    #[cfg(test)]
    fn submit_and_poll(&mut self, timeout_ms: libc::c_int) {
        for (op, user_data) in std::mem::take(&mut self.queued) {
            self.issue(op, user_data);
        }
        let n = self.wait(timeout_ms).expect("epoll_wait");
        for i in 0..n {
            let event = self.events[i];
            self.on_ready(event.u64 as RawFd, event.events);
        }
    }

    /// Copies posted completions into `batch` (up to its capacity limit).
    pub fn drain_into(&mut self, batch: &mut Vec<Completion>) {
        while batch.len() < BATCH_COMPLETIONS_MAX {
            let Some(c) = self.ready.pop_front() else {
                return;
            };
            batch.push(c);
        }
    }

    fn wait(&mut self, timeout: libc::c_int) -> io::Result<usize> {
        // SAFETY: `events` has EPOLL_EVENTS_MAX initialised entries the kernel may overwrite.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                EPOLL_EVENTS_MAX as libc::c_int,
                timeout,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(0);
        }
        Err(e)
    }

    fn post(&mut self, user_data: u64, result: i32, flags: u32) {
        self.ready.push_back(Completion {
            user_data,
            result,
            flags,
        });
    }

    /// Runs one op as its SQE would run at submit.
    fn issue(&mut self, op: Op, user_data: u64) {
        let step = match op {
            Op::Nop => return self.post(user_data, 0, 0),
            Op::Close { fd } => {
                self.cancel_fd(fd);
                let result = ops::close(fd);
                return self.post(user_data, result, 0);
            }
            Op::Cancel { user_data: target } => {
                let result = if self.cancel_one(target) {
                    0
                } else {
                    -libc::ENOENT
                };
                return self.post(user_data, result, 0);
            }
            Op::CancelFd { fd } => {
                let cancelled = self.cancel_fd(fd);
                return self.post(user_data, cancelled as i32, 0);
            }
            Op::Connect { fd, addr, len } => ops::connect_start(fd, addr, len),
            // Non-blocking on both sides: runs at once, as the ring's worker thread would.
            Op::Splice { from, to, len } => {
                return self.post(user_data, ops::splice(from, to, len), 0)
            }
            // Their descriptors may be blocking: read only once they are readable.
            Op::Read { .. } | Op::PollIn { .. } | Op::PollOut { .. } => Step::Wait,
            op => self.attempt(op, 0, false),
        };
        let fd = ops::fd_of(&op).expect("ops that wait name a descriptor");
        let pending = Pending { op, user_data, fd };
        match step {
            Step::Final { result, flags } => self.post(user_data, result, flags),
            Step::Wait => {
                let key = self.pending.insert(pending);
                self.watch(fd, key);
            }
            Step::More {
                result,
                flags,
                again,
            } => {
                self.post(user_data, result, flags | CQE_F_MORE);
                let key = self.pending.insert(pending);
                self.watch(fd, key);
                // It may have more right now: go on as if its descriptor were reported ready.
                if again {
                    self.run_op(key, libc::EPOLLIN as u32, true);
                }
            }
        }
    }

    /// One attempt of `op` on its descriptor, which reported `events` (0: not yet waited);
    /// `retry`: a multishot op going on without a new readiness report.
    fn attempt(&mut self, op: Op, events: u32, retry: bool) -> Step {
        match op {
            Op::AcceptMulti { fd } => ops::accept(fd),
            Op::RecvMulti { fd } => ops::recv_multi(fd, self.provided.as_mut(), retry),
            Op::Send { fd, ptr, len } => ops::send(fd, ptr, len),
            Op::Recv { fd, ptr, len } => ops::recv(fd, ptr, len),
            Op::Read { fd, ptr, len } => ops::read(fd, ptr, len),
            Op::PollIn { .. } | Op::PollOut { .. } => ops::poll_result(events),
            Op::Connect { fd, .. } => ops::connect_finish(fd),
            Op::Nop
            | Op::Close { .. }
            | Op::Cancel { .. }
            | Op::CancelFd { .. }
            | Op::Splice { .. } => {
                unreachable!("completed when issued")
            }
        }
    }

    /// A descriptor became ready: run each of its waiting ops that the events concern.
    fn on_ready(&mut self, fd: RawFd, events: u32) {
        let Some(watch) = self.watches.get(&fd) else {
            return;
        };
        // Errors and hang-ups concern every op: each learns its own result from its call.
        let failed = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
        let keys: Vec<usize> = watch.ops.clone();
        for key in keys {
            let Some(p) = self.pending.get(key) else {
                continue;
            };
            if events & (ops::interest(&p.op) | failed) != 0 {
                self.run_op(key, events, false);
            }
        }
    }

    /// Runs a waiting op until it waits again, ends, or used its rounds; `retry` as for
    /// [`Epoll::attempt`] (every round after the first is one).
    fn run_op(&mut self, key: usize, events: u32, retry: bool) {
        for round in 0..MULTISHOT_ROUNDS_MAX {
            let Some(&p) = self.pending.get(key) else {
                return;
            };
            match self.attempt(p.op, events, retry || round > 0) {
                Step::Wait => return,
                Step::More {
                    result,
                    flags,
                    again,
                } => {
                    self.post(p.user_data, result, flags | CQE_F_MORE);
                    if !again {
                        return;
                    }
                }
                Step::Final { result, flags } => {
                    self.finish(key);
                    return self.post(p.user_data, result, flags);
                }
            }
        }
    }

    /// Cancels the first waiting op issued with `user_data`; false when there is none.
    fn cancel_one(&mut self, user_data: u64) -> bool {
        let found = self
            .pending
            .iter()
            .find(|(_, p)| p.user_data == user_data)
            .map(|(key, _)| key);
        let Some(key) = found else {
            return false;
        };
        self.finish(key);
        self.post(user_data, -libc::ECANCELED, 0);
        true
    }

    /// Cancels every waiting op on `fd`, oldest first; returns how many.
    fn cancel_fd(&mut self, fd: RawFd) -> usize {
        let Some(watch) = self.watches.get(&fd) else {
            return 0;
        };
        let keys = watch.ops.clone();
        for &key in &keys {
            let user_data = self.pending[key].user_data;
            self.finish(key);
            self.post(user_data, -libc::ECANCELED, 0);
        }
        keys.len()
    }

    /// Adds a waiting op to its descriptor's registration.
    fn watch(&mut self, fd: RawFd, key: usize) {
        self.watches.entry(fd).or_default().ops.push(key);
        self.sync_watch(fd);
    }

    /// Removes an op that ended from the table and its descriptor's registration.
    fn finish(&mut self, key: usize) {
        let p = self.pending.remove(key);
        if let Some(watch) = self.watches.get_mut(&p.fd) {
            watch.ops.retain(|&k| k != key);
        }
        self.sync_watch(p.fd);
    }

    /// Makes epoll's registration of `fd` the union of its waiting ops' interests (none:
    /// removed, so a descriptor the reactor closes is never left registered).
    fn sync_watch(&mut self, fd: RawFd) {
        let Some(watch) = self.watches.get(&fd) else {
            return;
        };
        let wanted = watch
            .ops
            .iter()
            .fold(0, |acc, &key| acc | ops::interest(&self.pending[key].op));
        let had = watch.events;
        if wanted == had {
            return;
        }
        let (ctl, events) = match (had, wanted) {
            (_, 0) => (libc::EPOLL_CTL_DEL, 0),
            (0, w) => (libc::EPOLL_CTL_ADD, w),
            (_, w) => (libc::EPOLL_CTL_MOD, w),
        };
        let mut event = libc::epoll_event {
            events,
            u64: fd as u64,
        };
        // SAFETY: epoll_ctl reads the event we pass; no memory is retained.
        let rc = unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), ctl, fd, &mut event) };
        if wanted == 0 {
            // A failed removal means the descriptor is already gone; nothing is left either way.
            self.watches.remove(&fd);
            return;
        }
        if rc == 0 {
            self.watches.get_mut(&fd).expect("checked above").events = wanted;
            return;
        }
        // Not pollable or not open: every op waiting on it fails with the reason.
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        let keys = std::mem::take(&mut self.watches.get_mut(&fd).expect("checked above").ops);
        self.watches.remove(&fd);
        for key in keys {
            let p = self.pending.remove(key);
            self.post(p.user_data, -errno, 0);
        }
    }
}

#[cfg(test)]
#[path = "epoll_tests.rs"]
mod tests;
