//! Who gets a connection slot, and who loses one (issue 10): the connection limit with eviction of
//! the longest-idle connection, refusals that always deliver their 503 line (written, then
//! `shutdown(SHUT_WR)`, then a short drain so the client's own write does not fail), accepting
//! paused on EMFILE/ENFILE (with a spare descriptor to refuse the client that hit it), and the
//! per-connection timers: a partial request line must complete within `daemon.frame_timeout_ms`
//! (408, then close), and an idle connection is closed after `daemon.idle_timeout_secs`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use slab::Slab;

use crate::ipc::access::Policy;
use crate::ipc::protocol::Code;
use crate::ipc::RawId;
use crate::supervisor::{Input, Now, Rejection};

use super::conn::{Conn, Phase};
use super::deadlines::Due;
use super::ring::Op;
use super::token::{Kind, Token, GENERATION_MASK};
use super::Reactor;

/// Descriptors the daemon keeps for itself besides client connections: the ring, listener,
/// signalfd, timerfd, the database and its WAL, logs, core pidfds, version runs, the spare.
pub const FDS_OWN: u64 = 128;
/// Refused connections draining at once; past this a refusal is closed right after its line.
pub const REJECTING_MAX: usize = 64;
/// How long a refused connection is drained before it is closed.
pub const REJECT_DRAIN_MS: u64 = 500;
/// Evicted connections still flushing at once; past this a new client is refused instead.
pub const EVICTING_MAX: usize = 16;
/// After EMFILE/ENFILE, accepting pauses this long (or until a connection closes).
pub const ACCEPT_PAUSE_MS: u64 = 100;
/// At most one line a second about descriptor exhaustion.
pub const FD_LOG_EVERY_MS: u64 = 1_000;
const _: () = assert!(REJECTING_MAX as u64 + EVICTING_MAX as u64 <= FDS_OWN);

/// The one-line answer for a client past the connection limit (it never sent a request).
const CONNECTION_LIMIT_REPLY: &[u8] = b"{\"protocol_version\":1,\"id\":null,\"ok\":false,\"code\":503,\"message\":\"connection limit reached (daemon.max_connections); close idle connections or raise the limit in config.toml\",\"payload\":{\"error\":\"unavailable\"}}\n";
/// The line an evicted idle connection gets.
const EVICTED_REPLY: &[u8] = b"{\"protocol_version\":1,\"id\":null,\"ok\":false,\"code\":503,\"message\":\"closed to make room: the connection limit (daemon.max_connections) was reached and this connection was the longest idle; reconnect when needed\",\"payload\":{\"error\":\"unavailable\"}}\n";

/// A refused connection being drained.
struct Rejecting {
    serial: u32,
    fd: OwnedFd,
    deadline_ms: u64,
}

/// Admission state.
pub struct Admission {
    rejecting: Slab<Rejecting>,
    /// Where drained bytes go; never read (kernel-written, stable for the reactor's life).
    discard: Box<[u8; 4096]>,
    next_serial: u32,
    /// Held so that one descriptor is free to refuse a client when the process hits its limit.
    spare: Option<OwnedFd>,
    /// Accepting is paused until this time (or until a connection closes).
    pub paused_until: Option<u64>,
    last_fd_log_ms: Option<u64>,
    fd_errors_unlogged: u64,
    /// Connections closed to make room and not yet freed.
    pub evicting: usize,
    /// `daemon.frame_timeout_ms`.
    pub frame_timeout_ms: u64,
    /// `daemon.idle_timeout_secs`, in ms.
    pub idle_timeout_ms: u64,
    /// Who may do what (the daemon's uid, `daemon.socket_group`), applied to every request.
    pub access: Policy,
}

impl Admission {
    /// Admission for the given timeouts.
    pub fn new(frame_timeout_ms: u64, idle_timeout_ms: u64, access: Policy) -> Admission {
        Admission {
            rejecting: Slab::new(),
            discard: Box::new([0; 4096]),
            next_serial: 0,
            spare: open_spare(),
            paused_until: None,
            last_fd_log_ms: None,
            fd_errors_unlogged: 0,
            evicting: 0,
            frame_timeout_ms,
            idle_timeout_ms,
            access,
        }
    }
}

fn open_spare() -> Option<OwnedFd> {
    std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
}

/// The connection limit the process's descriptor limit allows: `wanted`, or less with a warning
/// that names both numbers and the fix.
pub fn clamp_connections(wanted: u64, test_concurrency: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return wanted;
    }
    let own = FDS_OWN + 2 * test_concurrency;
    let room = limit.rlim_cur.saturating_sub(own).max(1);
    if wanted <= room {
        return wanted;
    }
    eprintln!(
        "xrat: daemon.max_connections = {wanted} needs {} file descriptors but the limit is {} (ulimit -n); serving at most {room} connections. Raise the limit (LimitNOFILE= in the unit, or ulimit -n) or lower daemon.max_connections in config.toml",
        wanted + own,
        limit.rlim_cur
    );
    room
}

impl Reactor {
    /// A client was accepted: admit it, make room by evicting the longest-idle connection, or
    /// refuse it with its 503 line.
    pub(super) fn admit(&mut self, now: Now, fd: i32) {
        // SAFETY: the accepted socket is ours alone.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        if self.shutdown_deadline.is_some() {
            return self.refuse(now, owned, CONNECTION_LIMIT_REPLY);
        }
        if self.conns.len() >= self.connections_max && !self.evict_one(now) {
            return self.refuse(now, owned, CONNECTION_LIMIT_REPLY);
        }
        self.next_serial = self.next_serial.wrapping_add(1);
        let fd = std::os::fd::IntoRawFd::into_raw_fd(owned);
        let mut conn = Conn::new(fd, self.next_serial, now.monotonic_ms);
        conn.out = self.spare.take();
        conn.inflight = self.spare.take();
        let slot = self.conns.insert(conn);
        self.arm_conn_timer(now, slot);
        self.read_at_once(now, slot);
        self.arm_recv(slot);
    }

    /// Closes the longest-idle connection that owes nothing (no request in flight, no reply
    /// unsent) to make room; false when none qualifies.
    fn evict_one(&mut self, now: Now) -> bool {
        if self.admission.evicting >= EVICTING_MAX {
            return false;
        }
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.phase == Phase::Open && c.awaiting == 0 && c.backlog() == 0 && c.sub.is_none()
            })
            .min_by_key(|(_, c)| c.last_active_ms)
            .map(|(slot, _)| slot);
        let Some(slot) = victim else {
            return false;
        };
        let conn = &mut self.conns[slot];
        conn.out.extend_from_slice(EVICTED_REPLY);
        conn.phase = Phase::Draining;
        conn.evicted = true;
        self.admission.evicting += 1;
        self.dirty.push(slot);
        let _ = now;
        true
    }

    /// Writes `line`, shuts the write side, and drains what the client sends for a moment so its
    /// own write succeeds and it reads the line; then closes.
    fn refuse(&mut self, now: Now, fd: OwnedFd, line: &[u8]) {
        let raw = fd.as_raw_fd();
        // A fresh socket's send buffer is empty, so this non-blocking send cannot stall.
        // SAFETY: `raw` is the accepted socket we own; the buffer is a static slice.
        unsafe {
            libc::send(
                raw,
                line.as_ptr().cast(),
                line.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            );
            libc::shutdown(raw, libc::SHUT_WR);
        }
        if self.admission.rejecting.len() >= REJECTING_MAX {
            return; // dropped: closed at once
        }
        self.admission.next_serial = self.admission.next_serial.wrapping_add(1);
        let deadline_ms = now.monotonic_ms + REJECT_DRAIN_MS;
        let serial = self.admission.next_serial;
        let index = self.admission.rejecting.insert(Rejecting {
            serial,
            fd,
            deadline_ms,
        });
        self.deadlines
            .add(deadline_ms, Due::RejectDrain(index, serial));
        self.arm_discard(index);
    }

    fn arm_discard(&mut self, index: usize) {
        let r = &self.admission.rejecting[index];
        let op = Op::Read {
            fd: r.fd.as_raw_fd(),
            ptr: self.admission.discard.as_mut_ptr(),
            len: self.admission.discard.len() as u32,
        };
        let token = Token {
            kind: Kind::Reject,
            generation: r.serial & GENERATION_MASK,
            slot: index as u32,
        };
        // SAFETY: `discard` is boxed for the reactor's life and never read; the fd lives in the
        // slab until this read's completion.
        unsafe { self.push(op, token.encode()) };
    }

    /// A drain read of a refused connection completed.
    pub(super) fn on_reject_read(&mut self, token: Token, result: i32) {
        let index = token.slot as usize;
        let Some(r) = self.admission.rejecting.get(index) else {
            return;
        };
        if r.serial & GENERATION_MASK != token.generation {
            return;
        }
        if result > 0 {
            return self.arm_discard(index);
        }
        let r = self.admission.rejecting.remove(index);
        self.deadlines
            .remove(r.deadline_ms, Due::RejectDrain(index, r.serial));
    }

    /// A refused connection drained long enough: cancel its read; the completion closes it.
    pub(super) fn reject_drained(&mut self, index: usize, serial: u32) {
        let Some(r) = self
            .admission
            .rejecting
            .get(index)
            .filter(|r| r.serial == serial)
        else {
            return;
        };
        let fd = r.fd.as_raw_fd();
        // SAFETY: a cancel carries no buffer.
        unsafe { self.push(Op::CancelFd { fd }, Token::singleton(Kind::Cancel).encode()) };
    }

    /// Accept failed for lack of descriptors: refuse one waiting client with the spare
    /// descriptor, and pause accepting.
    pub(super) fn out_of_fds(&mut self, now: Now, errno: i32) {
        self.admission.fd_errors_unlogged += 1;
        let log_due = self
            .admission
            .last_fd_log_ms
            .is_none_or(|at| now.monotonic_ms >= at + FD_LOG_EVERY_MS);
        if log_due {
            eprintln!(
                "xrat: accept failed {} time(s): {}; pausing accepts for {ACCEPT_PAUSE_MS} ms (raise the descriptor limit, ulimit -n, or lower daemon.max_connections)",
                self.admission.fd_errors_unlogged,
                std::io::Error::from_raw_os_error(errno)
            );
            self.admission.last_fd_log_ms = Some(now.monotonic_ms);
            self.admission.fd_errors_unlogged = 0;
        }
        if let Some(spare) = self.admission.spare.take() {
            drop(spare);
            let listener = self.listener.as_raw_fd();
            // SAFETY: a non-blocking accept4 on our listener; the fd is checked before use.
            let fd = unsafe {
                libc::accept4(
                    listener,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: fresh fd owned by nobody else.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                self.refuse(now, owned, CONNECTION_LIMIT_REPLY);
            }
            self.admission.spare = open_spare();
        }
        let until = now.monotonic_ms + ACCEPT_PAUSE_MS;
        self.admission.paused_until = Some(until);
        self.deadlines.add(until, Due::AcceptResume);
    }

    /// Accepting may go on (the pause ended, or a descriptor was freed).
    pub(super) fn resume_accept(&mut self) {
        if self.admission.paused_until.take().is_some()
            && !self.accept_armed
            && self.shutdown_deadline.is_none()
        {
            self.arm_accept();
        }
    }

    /// Registers the connection's next timer: its frame deadline while a line is partial, else
    /// its idle deadline.
    pub(super) fn arm_conn_timer(&mut self, now: Now, slot: usize) {
        let (frame_ms, idle_ms) = (
            self.admission.frame_timeout_ms,
            self.admission.idle_timeout_ms,
        );
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let at = match (&conn.sub, conn.partial_since_ms) {
            // A subscriber has no idle deadline; one that lagged has a last one.
            (Some(sub), _) => match sub.lagged_at {
                Some(lagged) => lagged + super::subscribers::LAGGED_FLUSH_MS,
                None => {
                    if let Some(old) = conn.timer_at.take() {
                        self.deadlines.remove(old, Due::Conn(slot, conn.serial));
                    }
                    return;
                }
            },
            (None, Some(since)) => since + frame_ms,
            (None, None) => conn.last_active_ms + idle_ms,
        };
        if conn.timer_at == Some(at) {
            return;
        }
        if let Some(old) = conn.timer_at.replace(at) {
            self.deadlines.remove(old, Due::Conn(slot, conn.serial));
        }
        self.deadlines
            .add(at.max(now.monotonic_ms), Due::Conn(slot, conn.serial));
        conn.timer_at = Some(at.max(now.monotonic_ms));
    }

    /// A connection's timer fired: 408 for a line left partial too long, close for an idle one,
    /// otherwise the next deadline.
    pub(super) fn conn_timer(&mut self, now: Now, slot: usize, serial: u32) {
        let (frame_ms, idle_ms) = (
            self.admission.frame_timeout_ms,
            self.admission.idle_timeout_ms,
        );
        let Some(conn) = self.conns.get_mut(slot).filter(|c| c.serial == serial) else {
            return;
        };
        conn.timer_at = None;
        if conn.sub.as_ref().is_some_and(|s| s.lagged_at.is_some()) {
            // It did not take its `lagged` line in time.
            return self.begin_close(slot);
        }
        if conn.phase != Phase::Open || conn.sub.is_some() {
            return;
        }
        let t = now.monotonic_ms;
        if conn.recv_paused && conn.partial_since_ms.is_some() {
            // The rest of the line cannot arrive while the daemon is not reading: the frame
            // deadline counts from when reading resumes.
            conn.partial_since_ms = Some(t);
        }
        if conn
            .partial_since_ms
            .is_some_and(|since| t >= since + frame_ms)
        {
            conn.phase = Phase::Draining;
            conn.awaiting += 1;
            let message = format!("the request line was not completed within {frame_ms} ms (daemon.frame_timeout_ms); send whole lines ending in a newline");
            let rejection = Rejection {
                code: Code::FrameTimeout,
                message,
                close: true,
            };
            let id = conn.conn_id(slot);
            return self.inputs.push_back(Input::Request {
                conn: id,
                id: RawId::NONE,
                request: Err(rejection),
            });
        }
        let idle = conn.partial_since_ms.is_none() && conn.awaiting == 0 && conn.backlog() == 0;
        if idle && t >= conn.last_active_ms + idle_ms {
            if self.log_debug {
                eprintln!(
                    "xrat: closing a connection idle for {} s (daemon.idle_timeout_secs)",
                    idle_ms / 1000
                );
            }
            return self.begin_close(slot);
        }
        self.arm_conn_timer(now, slot);
    }
}
