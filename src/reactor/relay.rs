//! Relayed connections (front mode): one slab entry per client, its client socket and the
//! socket to the member's internal inbound, and one fixed buffer per direction. A direction
//! reads only once its buffer was written out, so a slow writer stops the reader (backpressure)
//! and a connection's memory is bounded. The shared receive-buffer ring is not used here: a fast
//! relay would take every buffer and starve the IPC connections that share it.
//!
//! Completions only change state and queue the relay ([`Reactor::relay_wake`]); after the batch
//! [`Reactor::relay_turn`] issues at most [`RELAY_OPS_PER_TURN`] ops, after the IPC sends, so
//! relay traffic never delays a reply by more than one turn's worth of copying. An op is tried
//! directly (non-blocking `send`, and `recv` after a receive that filled its buffer) before it
//! goes to the ring, so a relayed message costs one loop turn: its receive's completion, whose
//! bytes go out at once while the drained buffer's receive is re-armed.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};

use slab::Slab;

use crate::supervisor::{CoreId, RouteTarget};

pub use super::pipe::RELAY_BUFFER_BYTES;
use super::pipe::{self, Pipe};
use super::retry::{FrontPort, Observer, Refusal, Replay};
use super::ring::Op;
use super::route_wait::RouteWait;
use super::splice::Dir;
use super::token::{Kind, Token, GENERATION_MASK};
use super::Reactor;

/// A refused client's receive buffer (its opening is a few hundred bytes).
pub const REFUSAL_BUFFER_BYTES: usize = 1024;
/// Rounds of direct (non-blocking) receives and sends one relay gets per look: at most this
/// many buffers per direction before the next relay's turn.
const DIRECT_ROUNDS_MAX: usize = 4;
/// Ops the relays may issue per loop turn, an op on a bulk buffer counting as one per
/// [`RELAY_BUFFER_BYTES`] of it ([`pipe::cost`]): about this many small buffers (2 MiB) are
/// copied by the kernel between two looks at the IPC connections.
pub const RELAY_OPS_PER_TURN: usize = 64;
/// Refused clients answered at once; past this a refused client is closed unanswered.
pub const REFUSING_MAX: usize = 256;
/// How long a refused client has to send its opening before it is closed; also how long the
/// answer waits to be read after `shutdown(SHUT_WR)`.
pub const FRONT_OPENING_TIMEOUT_MS: u64 = 5_000;
/// The opening bytes a refused client may send before it is closed unanswered.
pub const REFUSAL_BYTES_MAX: usize = 16 * 1024;
const _: () = assert!(REFUSAL_BUFFER_BYTES <= RELAY_BUFFER_BYTES);
const _: () = assert!(RELAY_OPS_PER_TURN * RELAY_BUFFER_BYTES <= 4 * 1024 * 1024);
const _: () = assert!(REFUSAL_BYTES_MAX >= super::opening::HTTP_HEADERS_MAX * 64);
const _: () = assert!(
    (crate::settings::RELAY_CONNECTIONS_LIMIT as usize + REFUSING_MAX) <= u32::MAX as usize
);

/// Where a relay is in its life.
#[derive(Debug)]
pub enum Mode {
    /// Connecting to, or relaying through, its member.
    Relaying,
    /// Its opening failed: the old member's socket is being retired before the next connect.
    Switching,
    /// No member will serve it: answering in its protocol, then closing. `answered` once the
    /// whole answer is queued.
    Refusing { refusal: Refusal, answered: bool },
    /// Cancelling its ops; freed after the last completion.
    Closing,
}

/// Which ops are in flight; a relay is freed only when none is.
#[derive(Debug, Default, Clone, Copy)]
pub struct InFlight {
    pub connect: bool,
    pub client_recv: bool,
    pub client_send: bool,
    pub core_recv: bool,
    pub core_send: bool,
    /// A spliced direction's poll or splice (on either socket or its pipe; see splice.rs).
    pub up_poll: bool,
    pub down_poll: bool,
}

impl InFlight {
    /// Ops that retiring the member socket waits for (a poll may be on it).
    pub fn core(&self) -> bool {
        self.connect || self.core_recv || self.core_send || self.polls()
    }

    pub fn polls(&self) -> bool {
        self.up_poll || self.down_poll
    }

    pub fn any(&self) -> bool {
        self.core() || self.client_recv || self.client_send
    }
}

/// One relayed (or refused) client connection.
pub struct Relay {
    pub serial: u32,
    pub port: FrontPort,
    pub mode: Mode,
    pub client: OwnedFd,
    /// The socket to the member's inbound, while there is one.
    pub core: Option<OwnedFd>,
    pub connected: bool,
    /// The core socket's ops were cancelled (retiring it).
    pub core_cancelled: bool,
    pub client_cancelled: bool,
    /// The member it is on (for the drain count), and every member tried.
    pub target: Option<RouteTarget>,
    pub tried: Vec<(CoreId, i64)>,
    /// The core whose inbound last refused it: skipped (see route_wait.rs).
    pub refused_core: Option<CoreId>,
    pub route_wait: RouteWait,
    /// Connects started; from the second on, the kept opening is replayed first.
    pub attempts: u32,
    /// The member's address, read by the kernel during the connect.
    pub addr: Box<libc::sockaddr_storage>,
    /// Client → member.
    pub up: Pipe,
    /// Member → client.
    pub down: Pipe,
    /// Bytes owed to the client before `down`'s: forwarded handshake messages or an answer.
    /// Appended to while `inflight` is with the kernel (the conn.rs scheme).
    pub out: Vec<u8>,
    pub inflight: Vec<u8>,
    pub inflight_sent: usize,
    /// The client send in flight is from `inflight` (else from `down`).
    pub sending_out: bool,
    pub replay: Replay,
    /// While replaying on a new member: how much of the kept bytes it has.
    pub replay_sent: Option<usize>,
    pub observer: Observer,
    /// The opening is over (the remote spoke, or the front stopped observing): no retry.
    pub opened: bool,
    pub stall_reported: bool,
    pub last_failure: Option<crate::supervisor::RelayFailure>,
    /// Bytes received from the client.
    pub up_total: u64,
    /// The last receive on that side filled its buffer: more is likely waiting, so the next
    /// receive is tried at once (non-blocking) before one is issued.
    pub up_more: bool,
    pub down_more: bool,
    pub ops: InFlight,
    pub timer_at: Option<u64>,
    pub queued: bool,
    /// Counted among the open relayed connections (a client refused at accept is not).
    pub counted: bool,
}

impl Relay {
    /// A client to relay (`buffer` = [`RELAY_BUFFER_BYTES`]) or to refuse (a small buffer).
    pub fn new(serial: u32, port: FrontPort, client: OwnedFd, mode: Mode, replay: usize) -> Relay {
        let relaying = matches!(mode, Mode::Relaying);
        let bytes = if relaying {
            RELAY_BUFFER_BYTES
        } else {
            REFUSAL_BUFFER_BYTES
        };
        Relay {
            serial,
            port,
            mode,
            client,
            core: None,
            connected: false,
            core_cancelled: false,
            client_cancelled: false,
            target: None,
            tried: Vec::new(),
            refused_core: None,
            route_wait: RouteWait::Unused,
            attempts: 0,
            // SAFETY: all-zero is a valid sockaddr_storage.
            addr: Box::new(unsafe { std::mem::zeroed() }),
            up: Pipe::new(bytes),
            down: Pipe::new(if relaying { bytes } else { 0 }),
            out: Vec::new(),
            inflight: Vec::new(),
            inflight_sent: 0,
            sending_out: false,
            replay: Replay::new(replay),
            replay_sent: None,
            observer: Observer::new(port),
            opened: false,
            stall_reported: false,
            last_failure: None,
            up_total: 0,
            up_more: false,
            down_more: false,
            ops: InFlight::default(),
            timer_at: None,
            queued: false,
            counted: relaying,
        }
    }

    pub fn token(&self, kind: Kind, slot: usize) -> u64 {
        Token {
            kind,
            generation: self.serial & GENERATION_MASK,
            slot: slot as u32,
        }
        .encode()
    }

    fn core_fd(&self) -> Option<RawFd> {
        self.core.as_ref().map(|fd| fd.as_raw_fd())
    }

    /// The member has every kept byte; once the opening is over they are freed.
    fn replay_done(&mut self) {
        if self.replay_sent.take().is_some() && self.opened {
            self.replay.release();
        }
    }

    /// Nothing is owed to the client any more.
    pub fn client_flushed(&self) -> bool {
        self.out.is_empty() && self.inflight_sent == self.inflight.len() && self.down.is_empty()
    }
}

/// The relay table and its run queue.
#[derive(Default)]
pub struct Relays {
    pub slab: Slab<Relay>,
    /// Relays with something to issue, served [`RELAY_OPS_PER_TURN`] ops at a time.
    pub ready: VecDeque<usize>,
    pub next_serial: u32,
    /// The wake-up no-op is in the ring.
    pub wake_armed: bool,
    /// Bulk buffers in use over every relay (at most `RELAY_BULK_BUFFERS_MAX`).
    pub bulk_buffers: usize,
    /// Spliced directions over every relay (at most `splice::SPLICED_MAX`).
    pub spliced: usize,
    /// When the last "cannot splice" was logged.
    pub splice_log_ms: Option<u64>,
}

impl Reactor {
    /// Queues a relay to have its next ops issued after this batch.
    pub(super) fn relay_wake(&mut self, slot: usize) {
        if let Some(r) = self.relays.slab.get_mut(slot) {
            if !r.queued {
                r.queued = true;
                self.relays.ready.push_back(slot);
            }
        }
    }

    /// After the IPC sends of a batch: issue relay ops, at most [`RELAY_OPS_PER_TURN`]; what is
    /// left waits for the next turn, which a no-op brings at once.
    pub(super) fn relay_turn(&mut self) {
        let mut budget = RELAY_OPS_PER_TURN;
        while budget > 0 {
            let Some(slot) = self.relays.ready.pop_front() else {
                break;
            };
            let Some(r) = self.relays.slab.get_mut(slot) else {
                continue;
            };
            r.queued = false;
            budget = budget.saturating_sub(self.relay_advance(slot, budget));
        }
        if !self.relays.ready.is_empty() && !self.relays.wake_armed {
            self.relays.wake_armed = true;
            // SAFETY: a no-op carries no buffer.
            unsafe { self.push(Op::Nop, Token::singleton(Kind::Wake).encode()) };
        }
    }

    /// Issues whatever the relay's state allows, stopping after the round that reached
    /// `budget`; returns what its ops cost ([`pipe::cost`]).
    fn relay_advance(&mut self, slot: usize, budget: usize) -> usize {
        let r = &mut self.relays.slab[slot];
        if let Mode::Closing = r.mode {
            self.relay_settle(slot);
            return 0;
        }
        if matches!(r.mode, Mode::Switching) && !r.ops.core() {
            self.retire_core(slot);
            self.finish_switch(slot);
            // Giving up may have closed (and freed) it.
            match self.relays.slab.get(slot).map(|r| &r.mode) {
                None => return 0,
                Some(Mode::Closing) => {
                    self.relay_settle(slot);
                    return 0;
                }
                Some(_) => {}
            }
        }
        // Sends first (at once where the socket takes them), then receives; a receive tried
        // at once that brought bytes goes round again, up to DIRECT_ROUNDS_MAX. A direct op that
        // failed may have closed (and freed) the relay.
        let mut issued = 0;
        let alive = |s: &Self| s.relays.slab.contains(slot);
        for round in 0..DIRECT_ROUNDS_MAX {
            issued += self.client_send(slot);
            if !alive(self) {
                return issued;
            }
            issued += self.core_send(slot);
            if !alive(self) {
                return issued;
            }
            let (n, up_got) = self.client_recv(slot);
            issued += n;
            if !alive(self) {
                return issued;
            }
            let (n, down_got) = self.core_recv(slot);
            issued += n;
            if !alive(self) {
                return issued;
            }
            let (n, up_spliced) = self.splice_step(slot, Dir::Up);
            issued += n;
            if !alive(self) {
                return issued;
            }
            let (n, down_spliced) = self.splice_step(slot, Dir::Down);
            issued += n;
            if !alive(self) {
                return issued;
            }
            if !(up_got || down_got || up_spliced || down_spliced) {
                break;
            }
            if round + 1 == DIRECT_ROUNDS_MAX || issued >= budget {
                // Bytes are held with no op in flight: come back later in this turn or the next.
                self.relay_wake(slot);
                break;
            }
        }
        self.pass_shutdowns(slot);
        issued
    }

    /// The bytes the client is owed next, if no client send is in flight: the handshake or
    /// answer bytes first (`true`), then `down`'s.
    fn client_send_bytes(&mut self, slot: usize) -> Option<(RawFd, *const u8, usize, bool)> {
        let r = &mut self.relays.slab[slot];
        if r.ops.client_send || r.client_cancelled || matches!(r.mode, Mode::Closing) {
            return None;
        }
        if r.inflight_sent == r.inflight.len() && !r.out.is_empty() {
            r.inflight.clear();
            r.inflight_sent = 0;
            std::mem::swap(&mut r.out, &mut r.inflight);
        }
        let fd = r.client.as_raw_fd();
        if r.inflight_sent < r.inflight.len() {
            let rest = &r.inflight[r.inflight_sent..];
            Some((fd, rest.as_ptr(), rest.len(), true))
        } else if r.opened
            && matches!(r.mode, Mode::Relaying)
            && r.down.spliced.is_none()
            && !r.down.is_empty()
        {
            let rest = &r.down.buf[r.down.start..r.down.len];
            Some((fd, rest.as_ptr(), rest.len(), false))
        } else {
            None
        }
    }

    /// Writes what the client is owed: at once with a non-blocking send while the socket takes
    /// it, the rest through the ring. Returns what the sends (direct or issued) cost.
    fn client_send(&mut self, slot: usize) -> usize {
        let token = self.relays.slab[slot].token(Kind::RelayClientSend, slot);
        let mut sends = 0;
        let mut direct = true;
        while let Some((fd, ptr, len, from_out)) = self.client_send_bytes(slot) {
            sends += pipe::cost(len);
            self.relays.slab[slot].sending_out = from_out;
            if direct {
                match send_now(fd, ptr, len) {
                    Direct::Sent(n) => {
                        self.on_client_send(slot, n as i32);
                        direct = n == len;
                        continue;
                    }
                    Direct::Later => {}
                    Direct::Failed(errno) => {
                        self.on_client_send(slot, -errno);
                        self.relay_wake(slot);
                        return sends;
                    }
                }
            }
            self.relays.slab[slot].ops.client_send = true;
            let len = len as u32;
            // SAFETY: the bytes are `inflight` (not touched until this send completes: appends
            // go to `out`) or `down.buf[start..len]` (only advanced by this send's completion,
            // and no receive into `down` is issued while it is non-empty); the relay lives
            // until then.
            unsafe { self.push(Op::Send { fd, ptr, len }, token) };
            return sends;
        }
        sends
    }

    /// The bytes the member is owed next, if it can be sent to: the kept opening while
    /// replaying, then `up`'s.
    fn core_send_bytes(&mut self, slot: usize) -> Option<(RawFd, *const u8, usize)> {
        let r = &mut self.relays.slab[slot];
        let fd = r.core_fd()?;
        if !matches!(r.mode, Mode::Relaying) || !r.connected || r.ops.core_send {
            return None;
        }
        match r.replay_sent {
            Some(sent) if sent < r.replay.bytes().len() => {
                let rest = &r.replay.bytes()[sent..];
                Some((fd, rest.as_ptr(), rest.len()))
            }
            _ if r.up.spliced.is_none() && !r.up.is_empty() => {
                r.replay_done();
                let rest = &r.up.buf[r.up.start..r.up.len];
                Some((fd, rest.as_ptr(), rest.len()))
            }
            _ => {
                r.replay_done();
                None
            }
        }
    }

    /// Writes what the member is owed, as [`Reactor::client_send`] does.
    fn core_send(&mut self, slot: usize) -> usize {
        let token = self.relays.slab[slot].token(Kind::RelayCoreSend, slot);
        let mut sends = 0;
        let mut direct = true;
        while let Some((fd, ptr, len)) = self.core_send_bytes(slot) {
            sends += pipe::cost(len);
            if direct {
                match send_now(fd, ptr, len) {
                    Direct::Sent(n) => {
                        self.on_core_send(slot, n as i32);
                        direct = n == len;
                        continue;
                    }
                    Direct::Later => {}
                    Direct::Failed(errno) => {
                        self.on_core_send(slot, -errno);
                        self.relay_wake(slot);
                        return sends;
                    }
                }
            }
            self.relays.slab[slot].ops.core_send = true;
            let len = len as u32;
            // SAFETY: the kept bytes are only appended to by a client receive, and none is
            // issued while a member send is in flight; `up.buf[start..len]` likewise. The relay
            // lives until this send completes.
            unsafe { self.push(Op::Send { fd, ptr, len }, token) };
            return sends;
        }
        sends
    }

    /// Receives from the client when `up` is free: at once if the last receive filled the
    /// buffer, else (or when nothing is there) through the ring. Returns what the receive
    /// (direct or issued) cost and whether a direct receive changed the relay.
    fn client_recv(&mut self, slot: usize) -> (usize, bool) {
        let token = self.relays.slab[slot].token(Kind::RelayClientRecv, slot);
        let r = &mut self.relays.slab[slot];
        let open = matches!(
            r.mode,
            Mode::Relaying | Mode::Switching | Mode::Refusing { .. }
        );
        if !open || r.ops.client_recv || r.ops.core_send || r.up.eof || r.client_cancelled {
            return (0, false);
        }
        if r.up.spliced.is_some() {
            return (0, false); // splice.rs moves it
        }
        if !r.up.is_empty() {
            return (0, false);
        }
        r.up.start = 0;
        r.up.len = 0;
        let relaying = r.opened && matches!(r.mode, Mode::Relaying);
        if relaying && r.up_more && self.go_bulk(slot, Dir::Up) {
            // The last receive filled the buffer: a bulk transfer, spliced from now on.
            self.relays.slab[slot].up_more = false;
            return (0, true);
        }
        let r = &mut self.relays.slab[slot];
        let (fd, ptr, len) = (r.client.as_raw_fd(), r.up.buf.as_mut_ptr(), r.up.buf.len());
        if std::mem::take(&mut r.up_more) && relaying {
            if let Some(result) = recv_now(fd, ptr, len) {
                self.on_client_recv(super::now(), slot, result);
                if result < 0 {
                    self.relay_wake(slot);
                }
                return (pipe::cost(len), true);
            }
        }
        let r = &mut self.relays.slab[slot];
        r.ops.client_recv = true;
        // SAFETY: `up.buf` is boxed in the relay and not read or written by Rust code until
        // this receive completes (it is empty, and a member send is issued only from its
        // completion); the relay is freed only after it, and a pipe grows only when no op is
        // on it.
        unsafe {
            self.push(
                Op::Recv {
                    fd,
                    ptr,
                    len: len as u32,
                },
                token,
            )
        };
        (pipe::cost(len), false)
    }

    /// Receives from the member, as [`Reactor::client_recv`] does (at once only after the
    /// opening: the observed handshake bytes go through the ring).
    fn core_recv(&mut self, slot: usize) -> (usize, bool) {
        let token = self.relays.slab[slot].token(Kind::RelayCoreRecv, slot);
        let r = &mut self.relays.slab[slot];
        let Some(fd) = r.core_fd() else {
            return (0, false);
        };
        if !matches!(r.mode, Mode::Relaying) || !r.connected || r.ops.core_recv || r.down.eof {
            return (0, false);
        }
        if r.down.spliced.is_some() {
            return (0, false); // splice.rs moves it
        }
        if r.opened {
            if !r.down.is_empty() {
                return (0, false);
            }
            r.down.start = 0;
            r.down.len = 0;
            if std::mem::take(&mut r.down_more) {
                // The last receive filled the buffer: a bulk transfer, spliced from now on
                // when a pipe can be had, else with a bulk buffer (pipe.rs).
                if self.go_bulk(slot, Dir::Down) {
                    return (0, true);
                }
                let r = &mut self.relays.slab[slot];
                let (ptr, len) = (r.down.buf.as_mut_ptr(), r.down.buf.len());
                if let Some(result) = recv_now(fd, ptr, len) {
                    self.on_core_recv(super::now(), slot, result);
                    if result < 0 {
                        self.relay_wake(slot);
                    }
                    return (pipe::cost(len), true);
                }
            }
        } else if r.down.len == r.down.buf.len() {
            return (0, false);
        }
        let r = &mut self.relays.slab[slot];
        r.ops.core_recv = true;
        let at = r.down.len;
        let rest = &mut r.down.buf[at..];
        let (ptr, len) = (rest.as_mut_ptr(), rest.len());
        // SAFETY: the kernel writes `down.buf[len..]`, which Rust code neither reads nor writes
        // until this receive completes (held handshake bytes are below `len`); boxed in the
        // relay, which lives until then, and a pipe grows only when no op is on it.
        unsafe {
            self.push(
                Op::Recv {
                    fd,
                    ptr,
                    len: len as u32,
                },
                token,
            )
        };
        (pipe::cost(len), false)
    }

    /// Passes each side's EOF on with `shutdown(SHUT_WR)` once its bytes are written, and
    /// closes when both directions are done.
    fn pass_shutdowns(&mut self, slot: usize) {
        let r = &mut self.relays.slab[slot];
        let relaying = matches!(r.mode, Mode::Relaying);
        let up_done = r.up.eof && r.up.is_empty() && r.replay_sent.is_none() && !r.ops.core_send;
        if relaying && r.connected && up_done && !r.up.shut {
            if let Some(fd) = r.core_fd() {
                // SAFETY: shutdown on a socket we own; it never blocks.
                unsafe { libc::shutdown(fd, libc::SHUT_WR) };
            }
            r.up.shut = true;
        }
        let answered = matches!(r.mode, Mode::Refusing { answered: true, .. });
        let down_done = (r.down.eof || answered) && r.client_flushed() && !r.ops.client_send;
        if (relaying || answered) && down_done && !r.down.shut {
            // SAFETY: as above.
            unsafe { libc::shutdown(r.client.as_raw_fd(), libc::SHUT_WR) };
            r.down.shut = true;
        }
        if relaying && r.up.shut && r.down.shut {
            self.close_relay(slot);
        }
    }

    /// Stops using the member socket: cancels its ops, and closes it once none is left.
    pub(super) fn retire_core(&mut self, slot: usize) {
        let r = &mut self.relays.slab[slot];
        let Some(fd) = r.core_fd() else {
            return;
        };
        if r.ops.core() {
            if !r.core_cancelled {
                r.core_cancelled = true;
                // SAFETY: a cancel carries no buffer.
                unsafe { self.push(Op::CancelFd { fd }, Token::singleton(Kind::Cancel).encode()) };
            }
            return;
        }
        let fd = r.core.take().expect("checked").into_raw_fd();
        r.connected = false;
        r.core_cancelled = false;
        // SAFETY: a close carries no buffer; no op refers to the socket any more.
        unsafe { self.push(Op::Close { fd }, Token::singleton(Kind::Close).encode()) };
    }

    /// Cancels every op of the relay; it is freed after the last completion.
    pub(super) fn close_relay(&mut self, slot: usize) {
        let Some(r) = self.relays.slab.get_mut(slot) else {
            return;
        };
        if matches!(r.mode, Mode::Closing) {
            return;
        }
        r.mode = Mode::Closing;
        let client_ops = r.ops.client_recv || r.ops.client_send || r.ops.polls();
        if client_ops && !r.client_cancelled {
            r.client_cancelled = true;
            let fd = r.client.as_raw_fd();
            // SAFETY: a cancel carries no buffer.
            unsafe { self.push(Op::CancelFd { fd }, Token::singleton(Kind::Cancel).encode()) };
        }
        self.retire_core(slot);
        self.relay_detach(slot);
        self.relay_settle(slot);
    }

    /// Frees a closing relay once no op is in flight.
    pub(super) fn relay_settle(&mut self, slot: usize) {
        let Some(r) = self.relays.slab.get(slot) else {
            return;
        };
        if !matches!(r.mode, Mode::Closing) || r.ops.any() {
            return;
        }
        self.retire_core(slot);
        let r = self.relays.slab.remove(slot);
        if let Some(at) = r.timer_at {
            self.deadlines
                .remove(at, super::deadlines::Due::Relay(slot, r.serial));
        }
        self.relays.bulk_buffers -= r.up.bulk as usize + r.down.bulk as usize;
        self.relays.spliced -= r.up.spliced.is_some() as usize + r.down.spliced.is_some() as usize;
        self.front.counters.connections_open -= r.counted as u64;
        self.front.refusing -= !r.counted as usize;
        let fd = r.client.into_raw_fd();
        // SAFETY: a close carries no buffer; no op refers to the socket any more.
        unsafe { self.push(Op::Close { fd }, Token::singleton(Kind::Close).encode()) };
        self.front_resume_accept();
    }
}

/// What a direct non-blocking send did.
enum Direct {
    /// This many bytes (at least one) are with the kernel.
    Sent(usize),
    /// The socket takes nothing now (or the try was interrupted): the ring sends instead.
    Later,
    /// The send failed with this errno, mapped as a ring send's would be.
    Failed(i32),
}

/// One `send(MSG_DONTWAIT | MSG_NOSIGNAL)` of `ptr[..len]`: a loop turn saved when the socket
/// has room, as it usually has on loopback and for small messages.
fn send_now(fd: RawFd, ptr: *const u8, len: usize) -> Direct {
    // SAFETY: `ptr[..len]` is initialized memory owned by the relay (its pipe, its owed bytes
    // or its kept opening), not touched by anything else during the call; send(2) copies it
    // and keeps no reference. A bad fd is reported as an errno, never undefined behaviour.
    let n = unsafe { libc::send(fd, ptr.cast(), len, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n > 0 {
        return Direct::Sent(n as usize);
    }
    if n == 0 {
        return Direct::Later; // only for len 0, which is never asked
    }
    match std::io::Error::last_os_error().raw_os_error().unwrap_or(0) {
        // EAGAIN is EWOULDBLOCK on Linux: the buffer is full, the ring waits for room.
        // EINTR: try again through the ring. ENOBUFS/ENOMEM: transient; the ring's send
        // reports them if they last.
        libc::EAGAIN | libc::EINTR | libc::ENOBUFS | libc::ENOMEM | 0 => Direct::Later,
        errno => Direct::Failed(errno),
    }
}

/// One `recv(MSG_DONTWAIT)` into `ptr[..len]`, tried when the last receive filled the buffer:
/// `Some` with what a ring receive's completion would carry (bytes, 0 at EOF, or -errno), or
/// `None` when nothing is waiting (the ring receives instead).
fn recv_now(fd: RawFd, ptr: *mut u8, len: usize) -> Option<i32> {
    // SAFETY: `ptr[..len]` is a relay buffer that no op is in flight on (the caller checked)
    // and no Rust reference covers during the call; recv(2) writes at most `len` bytes into it
    // and keeps no reference. A bad fd is reported as an errno.
    let n = unsafe { libc::recv(fd, ptr.cast(), len, libc::MSG_DONTWAIT) };
    if n >= 0 {
        return Some(n as i32); // n <= len <= RELAY_BULK_BUFFER_BYTES <= i32::MAX
    }
    match std::io::Error::last_os_error().raw_os_error().unwrap_or(0) {
        // Nothing waiting (EAGAIN is EWOULDBLOCK on Linux), interrupted, or short of memory
        // for a moment: the ring's receive waits, or reports it if it lasts.
        libc::EAGAIN | libc::EINTR | libc::ENOBUFS | libc::ENOMEM | 0 => None,
        errno => Some(-errno),
    }
}
