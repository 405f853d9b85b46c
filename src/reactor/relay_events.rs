//! What a relayed connection's completions mean: bytes moved, the opening observed (the core's
//! handshake held back until it is judged), failures reported to the supervisor and replayed on
//! the next member, the protocol's own answer when none is left, and the stall timer. Each
//! errno is mapped here; ops are issued by relay.rs after the batch.

use crate::supervisor::{CoreId, Input, Now, RelayFailure};

use super::deadlines::Due;
use super::opening::SOCKS5_NO_AUTH_REPLY;
use super::relay::Mode;
use super::retry::{self, next_target, FrontPort, Refusal, Step};
use super::ring::Completion;
use super::route_wait::RouteWait;
use super::token::{Kind, Token, GENERATION_MASK};
use super::Reactor;

/// How an errno on a relay socket is taken.
enum Errno {
    /// The op was cancelled, or should just be issued again.
    Ignore,
    /// The peer vanished: close without a word.
    Gone,
    /// Unexpected: say so, then close.
    Log,
}

fn classify(errno: i32) -> Errno {
    match errno {
        libc::ECANCELED | libc::EINTR | libc::EAGAIN => Errno::Ignore,
        libc::ECONNRESET | libc::EPIPE | libc::ENOTCONN | libc::ETIMEDOUT | libc::ECONNABORTED => {
            Errno::Gone
        }
        _ => Errno::Log,
    }
}

impl Reactor {
    /// A relay op completed.
    pub(super) fn on_relay(&mut self, now: Now, token: Token, c: &Completion) {
        let slot = token.slot as usize;
        let Some(r) = self.relays.slab.get_mut(slot) else {
            return;
        };
        if r.serial & GENERATION_MASK != token.generation {
            return;
        }
        match token.kind {
            Kind::RelayConnect => {
                r.ops.connect = false;
                self.on_relay_connect(now, slot, c.result);
            }
            Kind::RelayClientRecv => {
                r.ops.client_recv = false;
                self.on_client_recv(now, slot, c.result);
            }
            Kind::RelayClientSend => {
                r.ops.client_send = false;
                self.on_client_send(slot, c.result);
            }
            Kind::RelayCoreRecv => {
                r.ops.core_recv = false;
                self.on_core_recv(now, slot, c.result);
            }
            Kind::RelayCoreSend => {
                r.ops.core_send = false;
                self.on_core_send(slot, c.result);
            }
            // Ready, hung up or cancelled: the next splice says which (splice.rs).
            Kind::RelayUpPoll => r.ops.up_poll = false,
            Kind::RelayDownPoll => r.ops.down_poll = false,
            Kind::RelayUpSplice => {
                r.ops.up_poll = false;
                self.on_splice(now, slot, super::splice::Dir::Up, c.result);
            }
            Kind::RelayDownSplice => {
                r.ops.down_poll = false;
                self.on_splice(now, slot, super::splice::Dir::Down, c.result);
            }
            _ => {}
        }
        self.relay_settle(slot);
        self.relay_wake(slot);
    }

    fn on_relay_connect(&mut self, now: Now, slot: usize, result: i32) {
        let r = &mut self.relays.slab[slot];
        if !matches!(r.mode, Mode::Relaying) || r.core_cancelled {
            return;
        }
        if result < 0 {
            // ECONNREFUSED, and any other way a loopback connect fails, is the member's.
            return self.opening_failed(now, slot, RelayFailure::Refused);
        }
        r.connected = true;
    }

    pub(super) fn on_client_recv(&mut self, now: Now, slot: usize, result: i32) {
        let r = &mut self.relays.slab[slot];
        if result < 0 {
            return match classify(-result) {
                Errno::Ignore => {}
                Errno::Gone => self.close_relay(slot),
                Errno::Log => self.relay_error(slot, "receiving from a client", -result),
            };
        }
        if result == 0 {
            r.up.eof = true;
            if matches!(r.mode, Mode::Refusing { .. }) {
                self.close_relay(slot);
            }
            return;
        }
        let n = result as usize;
        r.up_total += n as u64;
        if let Mode::Refusing { .. } = r.mode {
            return self.refusal_bytes(now, slot, n);
        }
        self.front.counters.bytes_up += n as u64;
        r.up.len = n;
        r.up_more = n == r.up.buf.len();
        if !r.opened {
            let kept = r.replay.keep(&r.up.buf[..n]);
            if kept && r.observer.greet(r.replay.bytes()) {
                // Answered here, ahead of the core (see Observer::greet).
                r.out.extend_from_slice(&SOCKS5_NO_AUTH_REPLY);
            }
            if kept && r.replay_sent.is_some() {
                // Replaying: the bytes go out behind the kept ones.
                r.up.len = 0;
            }
        }
        self.maybe_arm_stall(now, slot);
    }

    pub(super) fn on_client_send(&mut self, slot: usize, result: i32) {
        let r = &mut self.relays.slab[slot];
        if result < 0 {
            return match classify(-result) {
                Errno::Ignore => {}
                Errno::Gone => self.close_relay(slot),
                Errno::Log => self.relay_error(slot, "sending to a client", -result),
            };
        }
        let n = result as usize;
        if r.sending_out {
            r.inflight_sent += n;
        } else {
            r.down.start += n;
        }
    }

    pub(super) fn on_core_recv(&mut self, now: Now, slot: usize, result: i32) {
        let r = &mut self.relays.slab[slot];
        if !matches!(r.mode, Mode::Relaying) || r.core_cancelled {
            return; // a retired member's last word
        }
        if result < 0 {
            return match classify(-result) {
                Errno::Ignore => {}
                Errno::Gone if !r.opened && !r.up.eof => {
                    self.opening_failed(now, slot, RelayFailure::ClosedEarly)
                }
                Errno::Gone => self.close_relay(slot),
                Errno::Log => self.relay_error(slot, "receiving from a pool member", -result),
            };
        }
        if result == 0 {
            if !r.opened && !r.up.eof {
                return self.opening_failed(now, slot, RelayFailure::ClosedEarly);
            }
            r.down.eof = true;
            return;
        }
        r.down.len += result as usize;
        r.down_more = r.opened && r.down.len == r.down.buf.len();
        self.front.counters.bytes_down += result as u64;
        if !r.opened {
            self.observe(now, slot);
        }
    }

    pub(super) fn on_core_send(&mut self, slot: usize, result: i32) {
        let r = &mut self.relays.slab[slot];
        if !matches!(r.mode, Mode::Relaying) || r.core_cancelled {
            return;
        }
        if result < 0 {
            return match classify(-result) {
                Errno::Ignore => {}
                Errno::Gone if !r.opened => {
                    let now = super::now();
                    self.opening_failed(now, slot, RelayFailure::ClosedEarly)
                }
                Errno::Gone => self.close_relay(slot),
                Errno::Log => self.relay_error(slot, "sending to a pool member", -result),
            };
        }
        let n = result as usize;
        match &mut r.replay_sent {
            Some(sent) => *sent += n,
            None => r.up.start += n,
        }
    }

    fn relay_error(&mut self, slot: usize, what: &str, errno: i32) {
        let e = std::io::Error::from_raw_os_error(errno);
        eprintln!("xrat: relay: {what} failed: {e}");
        self.close_relay(slot);
    }

    /// Reads what the member said so far during the opening: forwards or swallows its
    /// handshake messages, and judges it.
    fn observe(&mut self, now: Now, slot: usize) {
        loop {
            let r = &mut self.relays.slab[slot];
            let http_connect = match r.port {
                FrontPort::Http => retry::http_connect(r.replay.bytes()),
                FrontPort::Socks => None,
            };
            let held = &r.down.buf[r.down.start..r.down.len];
            match r.observer.step(held, http_connect) {
                Step::More if r.down.len == r.down.buf.len() => {
                    // A handshake message larger than the buffer is not one the front judges.
                    return self.opening_over(slot);
                }
                Step::More => return,
                Step::Handshake { len, forward } => {
                    if forward {
                        let start = r.down.start;
                        r.out.extend_from_slice(&r.down.buf[start..start + len]);
                    }
                    r.down.start += len;
                    if r.down.is_empty() {
                        r.down.start = 0;
                        r.down.len = 0;
                    }
                    self.maybe_arm_stall(now, slot);
                }
                Step::Remote | Step::PassThrough => return self.opening_over(slot),
                Step::Failed(failure) => return self.opening_failed(now, slot, failure),
            }
        }
    }

    /// The remote spoke (or the front stopped observing): nothing will be replayed.
    fn opening_over(&mut self, slot: usize) {
        let r = &mut self.relays.slab[slot];
        r.opened = true;
        match r.replay_sent {
            // A replay still going out keeps its bytes until it is done (core_send frees them).
            Some(_) => r.replay.stop(),
            None => r.replay.release(),
        }
        if let Some(at) = r.timer_at.take() {
            self.deadlines.remove(at, Due::Relay(slot, r.serial));
        }
    }

    /// The opening failed on the relay's member: report it, then replay on the next member or
    /// answer the client.
    fn opening_failed(&mut self, _now: Now, slot: usize, failure: RelayFailure) {
        let r = &mut self.relays.slab[slot];
        r.last_failure = Some(failure);
        if let Some(t) = r.target {
            if failure == RelayFailure::Refused {
                r.refused_core = Some(t.core);
            }
            self.front.counters.failures += 1;
            self.inputs.push_back(Input::RelayFailed {
                core: t.core,
                config_id: t.config_id,
                failure,
            });
        }
        self.relay_detach(slot);
        let r = &mut self.relays.slab[slot];
        if r.replay.complete() && !r.opened {
            self.leave_stall_timer(slot);
            self.relays.slab[slot].mode = Mode::Switching;
            self.retire_core(slot);
        } else {
            self.give_up(slot, failure);
        }
    }

    /// `Effect::Reroute`: the member died, so its openings that still wait for the remote's
    /// first byte leave it for the route's next untried target, kept bytes replayed, as a
    /// failed opening would (not reported: the supervisor knows). One with nowhere to go, or
    /// whose client bytes no longer all fit, stays.
    pub(super) fn reroute(&mut self, core: CoreId, config_id: i64) {
        let movable: Vec<usize> = self
            .relays
            .slab
            .iter()
            .filter(|(_, r)| {
                r.target
                    .is_some_and(|t| (t.core, t.config_id) == (core, config_id))
                    && matches!(r.mode, Mode::Relaying)
                    && !r.opened
                    && !r.core_cancelled
                    && r.replay.complete()
                    && next_target(&self.route, &r.tried, r.refused_core).is_some()
            })
            .map(|(slot, _)| slot)
            .collect();
        for slot in movable {
            let r = &mut self.relays.slab[slot];
            r.last_failure = Some(RelayFailure::Stalled);
            r.mode = Mode::Switching;
            self.front.counters.rerouted += 1;
            self.leave_stall_timer(slot);
            self.relay_detach(slot);
            self.retire_core(slot);
            self.relay_wake(slot);
        }
    }

    /// The relay leaves its member for the next: that member's stall timer goes with it, and
    /// the next gets a stall time of its own. A relaying relay's timer is only ever its stall
    /// timer (a route wait's and a refusal's belong to other modes).
    fn leave_stall_timer(&mut self, slot: usize) {
        let r = &mut self.relays.slab[slot];
        r.stall_reported = false;
        if let Some(at) = r.timer_at.take() {
            self.deadlines.remove(at, Due::Relay(slot, r.serial));
        }
    }

    /// The failed member's socket is gone: connect to the next target, with the kept bytes.
    pub(super) fn finish_switch(&mut self, slot: usize) {
        let r = &mut self.relays.slab[slot];
        if !matches!(r.mode, Mode::Switching) || r.core.is_some() {
            return;
        }
        let failure = r.last_failure.unwrap_or(RelayFailure::Refused);
        if !r.replay.complete() {
            return self.give_up(slot, failure);
        }
        r.mode = Mode::Relaying;
        r.down.reset();
        r.up.start = 0;
        r.up.len = 0;
        r.up.shut = false;
        r.observer.restart();
        self.relay_connect_next(slot);
    }

    /// Connects the relay to the first route target it has not tried; answers the client when
    /// none is left (after a wait for a route, when a member's inbound refused it).
    pub(super) fn relay_connect_next(&mut self, slot: usize) {
        loop {
            let r = &mut self.relays.slab[slot];
            let Some(target) = next_target(&self.route, &r.tried, r.refused_core) else {
                let failure = r.last_failure.unwrap_or(RelayFailure::Refused);
                if self.relay_wait_for_route(slot) {
                    return;
                }
                return self.give_up(slot, failure);
            };
            r.tried.push((target.core, target.config_id));
            self.relay_wait_over(slot);
            let r = &mut self.relays.slab[slot];
            let member = self.pool_members.get(&(target.core, target.config_id));
            let addr = match (r.port, member) {
                (FrontPort::Socks, Some(m)) => Some(m.socks),
                (FrontPort::Http, Some(m)) => m.http,
                (_, None) => None,
            };
            let Some(addr) = addr else {
                eprintln!(
                    "xrat: relay: pool member {} of core {} has no {} inbound known; trying the next",
                    target.config_id,
                    target.core.0,
                    if r.port == FrontPort::Socks { "SOCKS" } else { "HTTP" }
                );
                continue;
            };
            if let Err(e) = self.relay_connect(slot, target, addr) {
                eprintln!("xrat: relay: cannot create a socket: {e}");
                return self.close_relay(slot);
            }
            return;
        }
    }

    /// No member will serve this connection: the protocol's own answer when the client has
    /// not been told success yet, else just close.
    fn give_up(&mut self, slot: usize, failure: RelayFailure) {
        self.retire_core(slot);
        let r = &mut self.relays.slab[slot];
        let told = match r.port {
            FrontPort::Socks => r.observer.forwarded() >= 2,
            FrontPort::Http => r.observer.forwarded() >= 1,
        };
        if told || r.opened || !r.replay.complete() {
            return self.close_relay(slot);
        }
        let greeted = r.observer.forwarded() >= 1;
        let refusal = Refusal::new(
            r.port,
            retry::socks_code_for(failure),
            retry::http_gave_up(failure),
            greeted,
        );
        r.mode = Mode::Refusing {
            refusal,
            answered: false,
        };
        r.down.reset();
        let now = super::now();
        self.relay_timer(now, slot, super::relay::FRONT_OPENING_TIMEOUT_MS);
        self.refusal_step(slot);
    }

    /// A refused client sent `n` more bytes of its opening (or of anything, once answered).
    fn refusal_bytes(&mut self, _now: Now, slot: usize, n: usize) {
        let r = &mut self.relays.slab[slot];
        if let Mode::Refusing { answered: true, .. } = r.mode {
            return; // drained, so its own writes succeed and it reads the answer
        }
        let over = r.replay.bytes().len() + n > super::relay::REFUSAL_BYTES_MAX;
        if over || !r.replay.keep(&r.up.buf[..n]) {
            return self.close_relay(slot);
        }
        self.refusal_step(slot);
    }

    fn refusal_step(&mut self, slot: usize) {
        let r = &mut self.relays.slab[slot];
        let Mode::Refusing { refusal, answered } = &mut r.mode else {
            return;
        };
        match refusal.step(r.replay.bytes(), &mut r.out) {
            Ok(done) => *answered = done,
            Err(_) => self.close_relay(slot),
        }
    }

    /// Arms the stall timer until the remote's first byte once the client's whole opening is
    /// out and the core has not answered it yet (sing-box and mihomo dial before they answer a
    /// SOCKS5 request, so a hung remote stalls here), or once the opening succeeded and the
    /// client sent payload (V2Ray answers at once and stalls on the payload).
    fn maybe_arm_stall(&mut self, now: Now, slot: usize) {
        let r = &self.relays.slab[slot];
        let Some(target) = r.target else {
            return;
        };
        if r.opened || r.stall_reported || r.timer_at.is_some() {
            return;
        }
        let opening = match r.replay.complete() {
            true => retry::client_opening_len(r.port, r.replay.bytes()),
            false => Some(0),
        };
        let waiting = !r.observer.done()
            && r.up_total > 0
            && opening.is_some_and(|len| r.up_total >= len as u64);
        let payload = r.observer.done() && opening.is_some_and(|len| r.up_total > len as u64);
        if (waiting || payload) && target.stall_ms > 0 {
            self.relay_timer(now, slot, target.stall_ms);
        }
    }

    pub(super) fn relay_timer(&mut self, now: Now, slot: usize, after_ms: u64) {
        let r = &mut self.relays.slab[slot];
        let at = now.monotonic_ms + after_ms;
        if let Some(old) = r.timer_at.replace(at) {
            self.deadlines.remove(old, Due::Relay(slot, r.serial));
        }
        self.deadlines.add(at, Due::Relay(slot, r.serial));
    }

    /// A relay's timer fired: a refused client took too long (close), or the remote stalled
    /// (report once; a long poll is legal, so the connection stays).
    pub(super) fn relay_timer_due(&mut self, slot: usize, serial: u32) {
        let Some(r) = self
            .relays
            .slab
            .get_mut(slot)
            .filter(|r| r.serial == serial)
        else {
            return;
        };
        r.timer_at = None;
        match r.mode {
            Mode::Refusing { .. } => self.close_relay(slot),
            Mode::Switching if r.route_wait == RouteWait::Waiting => self.route_wait_expired(slot),
            Mode::Relaying if !r.opened && !r.stall_reported => {
                r.stall_reported = true;
                if let Some(t) = r.target {
                    self.front.counters.failures += 1;
                    self.inputs.push_back(Input::RelayFailed {
                        core: t.core,
                        config_id: t.config_id,
                        failure: RelayFailure::Stalled,
                    });
                }
            }
            _ => {}
        }
    }
}
