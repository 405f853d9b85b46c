//! Completion handlers and effect application. Each errno is mapped explicitly.

use std::os::fd::{AsRawFd, RawFd};

use crate::ipc::access::{peer_uid, Access, Policy};
use crate::ipc::protocol::Code;
use crate::ipc::protocol::Request;
use crate::ipc::{decode_request, FrameError, RawId};
use crate::supervisor::{ConnId, Input, Now, Rejection, Reply};

use super::conn::{
    split_conn_id, Phase, AWAITING_LOW, AWAITING_MAX, OUTPUT_BYTES_HIGH, OUTPUT_BYTES_LOW,
};
use super::ring::{Completion, Op};
use super::token::{Kind, Token};
use super::{Reactor, SHUTDOWN_FLUSH_MS};

/// Direct sends tried for one connection after a batch before the rest goes through the ring.
const DIRECT_SEND_ROUNDS_MAX: usize = 4;

/// Where received bytes are.
#[derive(Clone, Copy)]
pub(super) enum Source {
    /// A provided buffer the kernel filled.
    Ring { bid: u16, len: usize },
    /// The reactor's scratch buffer (a direct `recv`).
    Scratch(usize),
}

impl Reactor {
    pub(super) fn on_accept(&mut self, now: Now, c: &Completion) {
        if !c.more() {
            self.accept_armed = false;
        }
        if c.result >= 0 {
            self.admit(now, c.result);
        } else {
            match -c.result {
                // Shutdown cancelled it: nothing more to accept.
                libc::ECANCELED => {}
                // The client gave up before we accepted.
                libc::ECONNABORTED | libc::EINTR | libc::EAGAIN => {}
                // Out of descriptors or memory: keep serving existing clients, refuse one
                // waiting client with the spare descriptor, and pause accepting for a moment
                // instead of spinning on the error.
                errno @ (libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                    self.out_of_fds(now, errno);
                }
                errno => eprintln!(
                    "xrat: accept failed unexpectedly: {}",
                    std::io::Error::from_raw_os_error(errno)
                ),
            }
        }
        let paused = self.admission.paused_until.is_some();
        if !self.accept_armed && self.shutdown_deadline.is_none() && !paused {
            self.arm_accept();
        }
    }

    pub(super) fn arm_recv(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.recv_armed || conn.phase != Phase::Open || conn.recv_paused || conn.peeked > 0 {
            return;
        }
        conn.recv_armed = true;
        let (fd, token) = (conn.fd, conn.token(Kind::Recv, slot));
        // SAFETY: the receive selects provided buffers, which live as long as the ring.
        unsafe { self.push(Op::RecvMulti { fd }, token) };
    }

    pub(super) fn on_recv(&mut self, now: Now, token: Token, c: &Completion) {
        let slot = token.slot as usize;
        let owned = self.conns.get(slot).is_some_and(|conn| conn.owns(&token));
        if !owned {
            // Stale: the connection is gone. Its buffer still goes back.
            if let Some(bid) = c.buffer_id() {
                self.bufs.recycle(bid);
            }
            return;
        }
        if !c.more() {
            self.conns[slot].recv_armed = false;
        }
        if c.result > 0 {
            let bid = c.buffer_id().expect("a receive with data names its buffer");
            self.feed(
                now,
                slot,
                Source::Ring {
                    bid,
                    len: c.result as usize,
                },
            );
            self.bufs.recycle(bid);
        } else if c.result == 0 {
            // The client finished sending; it may still read its replies (`socat`, shutdown(WR)).
            self.end_of_input(slot);
        } else {
            if let Some(bid) = c.buffer_id() {
                self.bufs.recycle(bid);
            }
            match -c.result {
                libc::ENOBUFS => {} // re-armed below, after the batch returns buffers
                libc::ECANCELED => {}
                libc::ECONNRESET | libc::EPIPE | libc::ETIMEDOUT | libc::ENOTCONN => {
                    self.begin_close(slot)
                }
                libc::EINTR | libc::EAGAIN => {}
                errno => {
                    eprintln!(
                        "xrat: receive failed: {}",
                        std::io::Error::from_raw_os_error(errno)
                    );
                    self.begin_close(slot);
                }
            }
        }
        self.settle(slot);
    }

    /// Frames and answers the bytes of one receive buffer.
    pub(super) fn feed(&mut self, now: Now, slot: usize, source: Source) {
        let conn = &mut self.conns[slot];
        // A subscriber's further bytes are discarded unread (docs/PROTOCOL.md).
        if conn.phase != Phase::Open || conn.subscribing {
            return;
        }
        let conn_id = conn.conn_id(slot);
        let data = match source {
            Source::Ring { bid, len } => self.bufs.filled(bid, len),
            Source::Scratch(len) => &self.scratch[..len],
        };
        let mut pos = 0;
        let mut reloads = Vec::new();
        loop {
            let input = match conn.decoder.next_frame(data, &mut pos) {
                Ok(None) => break,
                Ok(Some(line)) => line_input(
                    conn_id,
                    line,
                    &self.admission.access,
                    Peer {
                        fd: conn.fd,
                        access: &mut conn.access,
                        denial_logged: &mut conn.denial_logged,
                    },
                ),
                Err(e @ FrameError::TooLarge) => {
                    conn.phase = Phase::Draining;
                    too_large_input(conn_id, e)
                }
            };
            conn.awaiting += 1;
            if let Input::Request {
                request: Ok(Request::Subscribe { .. }),
                ..
            } = input
            {
                // The rest of the stream is the daemon's to write; no line after this one is
                // read as a request.
                conn.subscribing = true;
                self.inputs.push_back(input);
                break;
            }
            if let Input::Request {
                conn: from,
                id,
                request: Ok(Request::DaemonReload),
            } = input
            {
                // Read the file after the loop (it needs the reactor), in this request's place.
                reloads.push((self.inputs.len(), from, id));
                self.inputs.push_back(Input::Timer);
            } else {
                self.inputs.push_back(input);
            }
            if conn.phase != Phase::Open {
                break;
            }
        }
        for (at, from, id) in reloads {
            self.inputs[at] = self.reload_input(Some((from, id)));
        }
        let conn = &mut self.conns[slot];
        // The whole buffer is framed (the decoder keeps no unread tail), so the bound can be
        // passed by one buffer's worth of requests before reading pauses.
        conn.last_active_ms = now.monotonic_ms;
        let partial = conn.decoder.pending_bytes() > 0;
        match (partial, conn.partial_since_ms) {
            (true, None) => conn.partial_since_ms = Some(now.monotonic_ms),
            (false, Some(_)) => conn.partial_since_ms = None,
            _ => {}
        }
        if conn.awaiting >= AWAITING_MAX {
            self.pause_recv(slot);
        }
        self.arm_conn_timer(now, slot);
    }

    /// Stops reading a connection until it has taken its replies.
    fn pause_recv(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        if c.recv_paused {
            return;
        }
        c.recv_paused = true;
        if c.recv_armed {
            let (target, cancel) = (c.token(Kind::Recv, slot), c.token(Kind::Cancel, slot));
            // SAFETY: a cancel carries no buffer.
            unsafe { self.push(Op::Cancel { user_data: target }, cancel) };
        }
    }

    /// Reading resumes once both the reply backlog and the unanswered requests are low.
    fn maybe_resume(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        if c.recv_paused && c.backlog() < OUTPUT_BYTES_LOW && c.awaiting < AWAITING_LOW {
            c.recv_paused = false;
            // A partial line's deadline counts from now: its rest could not arrive while paused.
            if c.partial_since_ms.is_some() {
                c.partial_since_ms = Some(super::setup::monotonic_ms());
            }
            self.rearm.push(slot);
        }
    }

    pub(super) fn on_send(&mut self, token: Token, c: &Completion) {
        let slot = token.slot as usize;
        let Some(conn) = self.conns.get_mut(slot).filter(|conn| conn.owns(&token)) else {
            return;
        };
        conn.send_armed = false;
        match c.result {
            n if n >= 0 => {
                self.took(slot, n as usize);
                self.dirty.push(slot);
            }
            errno => self.send_failed(slot, -errno),
        }
        self.settle(slot);
    }

    /// The kernel took `n` bytes of the connection's in-flight replies.
    fn took(&mut self, slot: usize, n: usize) {
        let conn = &mut self.conns[slot];
        conn.inflight_sent += n;
        if let Some(sub) = conn.sub.as_mut() {
            sub.refill(&mut conn.out);
        }
        self.maybe_resume(slot);
    }

    fn send_failed(&mut self, slot: usize, errno: i32) {
        match errno {
            libc::EINTR | libc::EAGAIN => self.dirty.push(slot),
            libc::ECANCELED => {}
            // The client vanished with replies pending: drop them.
            libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN => self.begin_close(slot),
            errno => {
                let e = std::io::Error::from_raw_os_error(errno);
                eprintln!("xrat: send failed: {e}");
                self.begin_close(slot);
            }
        }
    }

    pub(super) fn on_signal(&mut self, now: Now, c: &Completion) {
        if c.result == 128 {
            let signo = u32::from_ne_bytes(self.signal_buf[..4].try_into().expect("4 bytes"));
            self.on_signo(now, signo);
        } else if c.result < 0 && -c.result != libc::EINTR && -c.result != libc::EAGAIN {
            eprintln!(
                "xrat: reading the signalfd failed: {}",
                std::io::Error::from_raw_os_error(-c.result)
            );
            return;
        }
        self.arm_signal();
    }

    pub(super) fn on_timer(&mut self, c: &Completion) {
        match c.result {
            8 => {
                self.timer_armed_at = None;
                self.inputs.push_back(Input::Timer);
            }
            r if r < 0 && matches!(-r, libc::EINTR | libc::EAGAIN) => {}
            r => {
                eprintln!(
                    "xrat: reading the timerfd failed: {}",
                    std::io::Error::from_raw_os_error(-r)
                );
                return;
            }
        }
        self.arm_timer_read();
    }

    /// Buffers a reply for its connection (sent after the batch).
    pub(super) fn write_reply(
        &mut self,
        conn: ConnId,
        id: &RawId,
        reply: &Reply,
        message: Option<&str>,
        close_after: bool,
    ) {
        let (slot, serial) = split_conn_id(conn);
        let Some(c) = self.conns.get_mut(slot).filter(|c| c.serial == serial) else {
            return;
        };
        c.awaiting = c.awaiting.saturating_sub(1);
        if c.phase == Phase::Closing {
            return;
        }
        self.encoder.encode(&mut c.out, id, reply, message);
        if close_after {
            c.phase = Phase::Draining;
        }
        self.dirty.push(slot);
        if c.out.len() >= OUTPUT_BYTES_HIGH {
            self.pause_recv(slot);
        } else {
            self.maybe_resume(slot);
        }
    }

    /// Starts sending a connection's replies. With `direct`, a non-blocking `send` is tried first: a reply
    /// almost always fits the socket buffer, and going straight out saves the ring a round trip
    /// (a Send SQE, its completion, and one more loop). Whatever does not fit goes through the
    /// ring, one send in flight per connection.
    pub(super) fn flush(&mut self, slot: usize, direct: bool) {
        if !self.conns.contains(slot) {
            return;
        }
        if direct {
            self.send_direct(slot);
        } else {
            self.send_through_ring(slot);
        }
        // Peeked bytes are consumed by `settle_peeked`, which runs right after every flush of
        // the turn; a failed send may have closed and freed the connection, which `settle` skips.
        self.settle(slot);
    }

    /// Non-blocking sends until the backlog is gone, the socket is full, or a few rounds passed
    /// (replies that piled up in `out` while the in-flight part was being sent go too; stopping
    /// after the in-flight part would strand them until some unrelated completion).
    fn send_direct(&mut self, slot: usize) {
        for _ in 0..DIRECT_SEND_ROUNDS_MAX {
            let conn = &mut self.conns[slot];
            let Some((ptr, len)) = conn.next_send() else {
                return;
            };
            let fd = conn.fd;
            // SAFETY: `ptr..ptr+len` is the unsent part of `inflight`, alive and untouched for the
            // duration of this synchronous call; MSG_DONTWAIT keeps the loop from blocking.
            let n = unsafe {
                libc::send(
                    fd,
                    ptr.cast(),
                    len as usize,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if n == len as isize {
                self.took(slot, len as usize);
                continue;
            }
            if n >= 0 || errno == libc::EAGAIN {
                self.took(slot, n.max(0) as usize);
            } else {
                return self.send_failed(slot, errno);
            }
            break;
        }
        self.send_through_ring(slot);
    }

    /// Queues the rest of the in-flight replies as a ring send.
    fn send_through_ring(&mut self, slot: usize) {
        let conn = &mut self.conns[slot];
        if let Some((ptr, len)) = conn.next_send() {
            conn.send_armed = true;
            let (fd, token) = (conn.fd, conn.token(Kind::Send, slot));
            // SAFETY: `inflight` is not touched while `send_armed`, and the connection is freed
            // only after its last completion.
            unsafe { self.push(Op::Send { fd, ptr, len }, token) };
        }
    }

    /// The client shut down its write side: an unfinished last line is its final request
    /// (protocol: a request ended by EOF is answered), then the connection drains.
    pub(super) fn end_of_input(&mut self, slot: usize) {
        let conn = &mut self.conns[slot];
        if conn.phase == Phase::Open && !conn.subscribing {
            let conn_id = conn.conn_id(slot);
            let policy = &self.admission.access;
            let input = match conn.decoder.finish() {
                Ok(None) => None,
                Ok(Some(line)) => Some(line_input(
                    conn_id,
                    line,
                    policy,
                    Peer {
                        fd: conn.fd,
                        access: &mut conn.access,
                        denial_logged: &mut conn.denial_logged,
                    },
                )),
                Err(e @ FrameError::TooLarge) => Some(too_large_input(conn_id, e)),
            };
            conn.partial_since_ms = None;
            if let Some(input) = input {
                conn.awaiting += 1;
                let input = match input {
                    Input::Request {
                        conn: from,
                        id,
                        request: Ok(Request::DaemonReload),
                    } => self.reload_input(Some((from, id))),
                    other => other,
                };
                self.inputs.push_back(input);
            }
        }
        self.drain(slot);
    }

    /// Stops reading; the connection closes once its replies are written.
    fn drain(&mut self, slot: usize) {
        let conn = &mut self.conns[slot];
        if conn.phase == Phase::Open {
            conn.phase = Phase::Draining;
        }
    }

    /// Cancels the connection's ops; it is freed when the last completion arrives.
    pub(super) fn begin_close(&mut self, slot: usize) {
        let conn = &mut self.conns[slot];
        if conn.phase == Phase::Closing {
            return;
        }
        if conn.peeked > 0 {
            // Unread bytes at close turn the client's end of file into ECONNRESET. A failed
            // consume closes the connection itself (and may free it).
            self.consume_peeked(slot);
        }
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        conn.phase = Phase::Closing;
        let (fd, quiet, id) = (conn.fd, conn.is_quiet(), conn.conn_id(slot));
        let cancel = conn.token(Kind::Cancel, slot);
        if !quiet {
            // SAFETY: a cancel carries no buffer.
            unsafe { self.push(Op::CancelFd { fd }, cancel) };
        }
        self.inputs.push_back(Input::ConnectionClosed { conn: id });
        self.settle(slot);
    }

    /// Advances a connection whose state may have changed: a drained one closes, a closing one
    /// with no completion outstanding is freed.
    pub(super) fn settle(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        match conn.phase {
            Phase::Open if !conn.recv_armed && !conn.recv_paused => self.rearm.push(slot),
            Phase::Open => {}
            Phase::Draining if conn.is_flushed() && !conn.send_armed => self.begin_close(slot),
            Phase::Draining => {}
            Phase::Closing if conn.is_quiet() => {
                // No op refers to the socket any more; the close rides the next submit. Its fd
                // number cannot be handed out again before the close has run.
                let conn = self.conns.remove(slot);
                if let Some(at) = conn.timer_at {
                    self.deadlines
                        .remove(at, super::deadlines::Due::Conn(slot, conn.serial));
                }
                if conn.evicted {
                    self.admission.evicting -= 1;
                }
                let fd = conn.fd;
                self.spare.give(conn.out);
                self.spare.give(conn.inflight);
                // A descriptor is free again.
                self.resume_accept();
                // SAFETY: a close carries no buffer, and nothing else refers to the fd.
                unsafe { self.push(Op::Close { fd }, Token::singleton(Kind::Close).encode()) };
            }
            Phase::Closing => {}
        }
    }

    pub(super) fn begin_shutdown(&mut self, now: Now) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(now.monotonic_ms + SHUTDOWN_FLUSH_MS);
        self.front_shutdown();
        if self.accept_armed {
            let fd = self.listener.as_raw_fd();
            // SAFETY: a cancel carries no buffer.
            unsafe { self.push(Op::CancelFd { fd }, Token::singleton(Kind::Cancel).encode()) };
        }
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.drain(slot);
            self.dirty.push(slot);
        }
    }

    /// During shutdown, closes every connection that has taken its replies.
    pub(super) fn close_flushed(&mut self, _now: Now) {
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.drain(slot);
            self.settle(slot);
        }
    }
}

/// What [`line_input`] needs of the connection a line came on.
struct Peer<'a> {
    fd: RawFd,
    /// Read from `SO_PEERCRED` at the first request that needs it.
    access: &'a mut Option<Access>,
    denial_logged: &'a mut bool,
}

/// The supervisor's input for one request line: the request, or why it is refused (the
/// connection stays open). A read-only peer's request that changes something is refused with
/// 403 here, before the supervisor (and before `daemon_reload` reads the file); the rule is
/// [`Policy::check`], and the first refusal on a connection is logged. The peer's credentials
/// are read (one getsockopt, which never blocks) only for a request that is not read-only; an
/// error, which a connected Unix socket does not give, leaves the peer read-only.
fn line_input(conn: ConnId, line: &[u8], policy: &Policy, peer: Peer<'_>) -> Input {
    let (id, request) = match decode_request(line) {
        Ok((id, request)) if request.is_read_only() => (id, Ok(request)),
        Ok((id, request)) => {
            let access = *peer
                .access
                .get_or_insert_with(|| policy.access(peer_uid(peer.fd).ok()));
            match policy.check(access, &request) {
                Ok(()) => (id, Ok(request)),
                Err(message) => {
                    log_denial(access, peer.denial_logged, &request);
                    let rejection = Rejection {
                        code: Code::Forbidden,
                        message,
                        close: false,
                    };
                    (id, Err(rejection))
                }
            }
        }
        Err(e) => (
            e.id,
            Err(Rejection {
                code: e.code,
                message: e.message,
                close: false,
            }),
        ),
    };
    Input::Request { conn, id, request }
}

/// One line per connection, at its first refusal: a client looping on a write request does not
/// fill the log.
fn log_denial(access: Access, logged: &mut bool, request: &Request) {
    if std::mem::replace(logged, true) {
        return;
    }
    if let Access::ReadOnly { uid } = access {
        let uid = uid.map_or("unknown".to_string(), |uid| uid.to_string());
        eprintln!(
            "xrat: refused `{}` from read-only uid {uid} (403); later refusals on this connection are not logged",
            request.name()
        );
    }
}

/// A line over the limit: 413, then the connection closes.
fn too_large_input(conn: ConnId, e: FrameError) -> Input {
    let rejection = Rejection {
        code: Code::FrameTooLarge,
        message: e.to_string(),
        close: true,
    };
    Input::Request {
        conn,
        id: RawId::NONE,
        request: Err(rejection),
    }
}
