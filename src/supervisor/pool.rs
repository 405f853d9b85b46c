//! The warm pool (front mode): the members of the routed pool core, what is known of each
//! one's health, and the route the front follows.
//!
//! - A member is `Untested` until its first probe, `Alive` after a passing one, and `Dead` once
//!   `passive_failures` failed openings fell within `passive_window_ms`, or a probe failed and
//!   the re-probe `retry_interval_ms` later failed too (or `failure_threshold` probes in a row).
//!   A passing probe makes any member `Alive` again.
//! - The route is a function of that state: the active member first unless it is dead, then
//!   the alive members by latency. It is emitted whenever it changes, so a dead active member
//!   stops getting new connections at the input that killed it, before any operation runs.
//! - Members are probed in the background, each every `health_interval_ms`, staggered across the
//!   interval; a suspect one (a probe or a stall failed) every `retry_interval_ms`, with that as
//!   its deadline so a hung remote is found within two intervals.
//! - A replaced pool core drains: it stays up, unrouted, until the executor reports that its
//!   last relayed connection closed or `drain_ms` passed.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::ipc::protocol::PoolMemberView;

use super::{
    CoreId, CoreRole, Effect, Now, ProbeId, ProbeKind, RelayFailure, RouteTarget, Supervisor,
    STOP_GRACE_MS,
};

/// No member's stall deadline is shorter: loopback latencies of a few ms would make every
/// slow page a suspect.
pub const STALL_FLOOR_MS: u64 = 500;
/// A member's stall deadline is this many times its probe latency (when that is longer).
pub const STALL_LATENCY_FACTOR: u64 = 4;
/// Most pool cores draining at once; replacing a pool core again stops the oldest at once.
pub const DRAINING_MAX: usize = 2;

/// What is known of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MemberState {
    Untested,
    Alive,
    Dead,
}

#[derive(Debug, Clone)]
pub(super) struct Member {
    pub config_id: i64,
    pub socks: SocketAddr,
    pub state: MemberState,
    pub latency_ms: Option<u64>,
    pub probe: Option<ProbeId>,
    pub next_probe_ms: u64,
    /// A probe or a stall failed: re-probe every `retry_interval_ms`.
    pub suspect: bool,
    /// When failed openings happened, within the passive window.
    pub passive: VecDeque<u64>,
    /// Failed probes in a row.
    pub failures: u32,
    pub last_error: Option<String>,
    /// Its openings were moved off it ([`Effect::Reroute`]) since it last died.
    pub rerouted: bool,
}

/// The routed pool core.
#[derive(Debug, Clone)]
pub(super) struct Pool {
    pub core: CoreId,
    pub members: Vec<Member>,
}

impl Pool {
    /// A pool whose members are probed at once (first round), except `verified`, whose probe
    /// just passed with that latency.
    pub fn new(
        core: CoreId,
        inbounds: &[(i64, SocketAddr)],
        now_ms: u64,
        verified: Option<(i64, u64)>,
        interval_ms: u64,
    ) -> Pool {
        let n = inbounds.len().max(1) as u64;
        let members = inbounds
            .iter()
            .enumerate()
            .map(|(i, (config_id, socks))| {
                let passed = verified.filter(|(id, _)| id == config_id);
                Member {
                    config_id: *config_id,
                    socks: *socks,
                    state: if passed.is_some() {
                        MemberState::Alive
                    } else {
                        MemberState::Untested
                    },
                    latency_ms: passed.map(|(_, ms)| ms),
                    probe: None,
                    // The verified member is next probed in its slot of the stagger.
                    next_probe_ms: match passed {
                        Some(_) => now_ms + interval_ms * (i as u64 + 1) / n,
                        None => now_ms,
                    },
                    suspect: false,
                    passive: VecDeque::new(),
                    failures: 0,
                    last_error: None,
                    rerouted: false,
                }
            })
            .collect();
        Pool { core, members }
    }

    pub fn member(&self, config_id: i64) -> Option<&Member> {
        self.members.iter().find(|m| m.config_id == config_id)
    }

    fn member_mut(&mut self, config_id: i64) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.config_id == config_id)
    }

    /// The best alive member other than `except`: lowest latency, then lowest id.
    pub fn best_alive(&self, except: Option<i64>) -> Option<&Member> {
        self.members
            .iter()
            .filter(|m| m.state == MemberState::Alive && Some(m.config_id) != except)
            .min_by_key(|m| (m.latency_ms.unwrap_or(u64::MAX), m.config_id))
    }
}

impl Supervisor {
    /// The config the session runs, when it runs in the routed pool.
    pub(super) fn active_member(&self) -> Option<i64> {
        let pool = self.pool.as_ref()?;
        self.session
            .as_ref()
            .filter(|s| s.core == pool.core)
            .map(|s| s.info.config_id)
    }

    /// The pool member a switch can go to at once: `wanted` when it is a member that is not
    /// dead, else (with no wish) the best alive member; never the active one.
    pub(super) fn warm_member(&self, wanted: Option<i64>) -> Option<i64> {
        let pool = self.pool.as_ref()?;
        let active = self.active_member()?;
        match wanted {
            Some(id) if id == active => None,
            Some(id) => pool
                .member(id)
                .filter(|m| m.state != MemberState::Dead)
                .map(|m| m.config_id),
            None => pool.best_alive(Some(active)).map(|m| m.config_id),
        }
    }

    /// Failover to other members is allowed: the health trigger is on, as for rotations.
    pub(super) fn failover_allowed(&self) -> bool {
        self.rotation.enabled && self.config.health_trigger_enabled
    }

    /// Where new connections go now.
    pub(super) fn route_targets(&self) -> Vec<RouteTarget> {
        let (Some(pool), Some(active)) = (self.pool.as_ref(), self.active_member()) else {
            return Vec::new();
        };
        let target = |m: &Member| RouteTarget {
            core: pool.core,
            config_id: m.config_id,
            stall_ms: STALL_FLOOR_MS.max(m.latency_ms.unwrap_or(0) * STALL_LATENCY_FACTOR),
        };
        let mut targets = Vec::new();
        if let Some(m) = pool
            .member(active)
            .filter(|m| m.state != MemberState::Dead || !self.failover_allowed())
        {
            targets.push(target(m));
        }
        if !self.failover_allowed() {
            return targets;
        }
        let mut others: Vec<&Member> = pool
            .members
            .iter()
            .filter(|m| m.config_id != active && m.state == MemberState::Alive)
            .collect();
        others.sort_by_key(|m| (m.latency_ms.unwrap_or(u64::MAX), m.config_id));
        targets.extend(others.into_iter().map(target));
        if targets.is_empty() {
            // A dead active member with nothing alive beside it is still the last resort:
            // refusing every connection is never better than trying it.
            if let Some(m) = pool.member(active) {
                targets.push(target(m));
            }
        }
        targets
    }

    /// Emits the route when it changed.
    pub(super) fn sync_route(&mut self) {
        if !self.config.front {
            return;
        }
        let targets = self.route_targets();
        if targets != self.route {
            self.route = targets.clone();
            self.emit(Effect::Route { targets });
        }
        self.reroute_dead();
    }

    /// Once per death of a member that the route now leaves out (with another target in it),
    /// its openings that have had no byte from the remote move down the route. A dead member's
    /// stalled openings would otherwise wait for a remote that is gone until their clients give
    /// up: a hung remote held every request made before it was found out.
    fn reroute_dead(&mut self) {
        let route = &self.route;
        let Some(pool) = self.pool.as_mut().filter(|_| !route.is_empty()) else {
            return;
        };
        let core = pool.core;
        let mut moved = Vec::new();
        for m in pool.members.iter_mut() {
            if m.state != MemberState::Dead {
                m.rerouted = false;
                continue;
            }
            let routed = route
                .iter()
                .any(|t| (t.core, t.config_id) == (core, m.config_id));
            if !m.rerouted && !routed {
                m.rerouted = true;
                moved.push(m.config_id);
            }
        }
        for config_id in moved {
            self.emit(Effect::Reroute { core, config_id });
        }
    }

    /// The earliest member probe or drain deadline.
    pub(super) fn pool_deadline(&self) -> Option<u64> {
        let limit = self.config.test_concurrency.max(1) as usize;
        // With every probe slot taken, the next probe waits for an answer, not for a time
        // (else a due member would wake the loop again and again).
        let room = |p: &&Pool| p.members.iter().filter(|m| m.probe.is_some()).count() < limit;
        let probes = self.pool.iter().filter(room).flat_map(|p| {
            p.members
                .iter()
                .filter(|m| m.probe.is_none())
                .map(|m| m.next_probe_ms)
        });
        probes.chain(self.draining.values().copied()).min()
    }

    /// Due member probes (at most `test_concurrency` in flight) and drain deadlines.
    pub(super) fn pool_timers(&mut self, now: Now) {
        let due: Vec<u64> = self
            .draining
            .iter()
            .filter(|(_, until)| now.monotonic_ms >= **until)
            .map(|(core, _)| core.0)
            .collect();
        for core in due {
            self.stop_drained(CoreId(core), "its drain time ran out");
        }
        let limit = self.config.test_concurrency.max(1) as usize;
        let (retry, interval) = (
            self.config.retry_interval_ms,
            self.config.health_interval_ms,
        );
        let probe_timeout = self
            .config
            .probe_timeout_ms
            .min((interval - interval / 10).max(1));
        let Some(pool) = self.pool.as_mut() else {
            return;
        };
        let mut in_flight = pool.members.iter().filter(|m| m.probe.is_some()).count();
        let mut start = Vec::new();
        for m in pool.members.iter_mut() {
            if in_flight >= limit {
                break;
            }
            if m.probe.is_some() || now.monotonic_ms < m.next_probe_ms {
                continue;
            }
            let timeout_ms = if m.suspect {
                // A re-probe must answer before the next is due, unless the member is slow.
                retry.max(m.latency_ms.unwrap_or(0) * 3).min(probe_timeout)
            } else {
                probe_timeout
            };
            start.push((m.config_id, m.socks, timeout_ms));
            in_flight += 1;
        }
        for (config_id, addr, timeout_ms) in start {
            let probe = ProbeId(self.fresh());
            if let Some(m) = self.pool.as_mut().and_then(|p| p.member_mut(config_id)) {
                m.probe = Some(probe);
            }
            self.emit(Effect::Probe {
                probe,
                addr,
                kind: ProbeKind::Http,
                timeout_ms,
            });
        }
    }

    /// A member probe's answer; false when the probe is not a member's.
    pub(super) fn on_member_probe(
        &mut self,
        now: Now,
        probe: ProbeId,
        result: &Result<u64, String>,
    ) -> bool {
        let (retry, interval) = (
            self.config.retry_interval_ms,
            self.config.health_interval_ms,
        );
        let threshold = self.config.failure_threshold;
        let active = self.active_member();
        let Some(m) = self
            .pool
            .as_mut()
            .and_then(|p| p.members.iter_mut().find(|m| m.probe == Some(probe)))
        else {
            return false;
        };
        m.probe = None;
        match result {
            Ok(latency) => {
                m.state = MemberState::Alive;
                m.latency_ms = Some(*latency);
                m.suspect = false;
                m.failures = 0;
                m.passive.clear();
                m.last_error = None;
                m.next_probe_ms = now.monotonic_ms + interval;
            }
            Err(why) => {
                m.failures += 1;
                if m.suspect || m.failures >= threshold {
                    m.state = MemberState::Dead;
                }
                // A confirmed-dead member is looked at once per interval, not hammered.
                let confirmed = m.state == MemberState::Dead && m.suspect;
                m.suspect = !confirmed;
                m.last_error = Some(why.clone());
                m.next_probe_ms = now.monotonic_ms + if confirmed { interval } else { retry };
            }
        }
        let config_id = m.config_id;
        if Some(config_id) == active {
            self.active_health(now, result);
        }
        self.failover_check(now);
        true
    }

    /// Mirrors the active member's probes into the session's health view.
    fn active_health(&mut self, now: Now, result: &Result<u64, String>) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        s.health.last_check_at = Some(now.unix_secs);
        match result {
            Ok(latency) => {
                s.health.last_latency_ms = Some(*latency);
                s.health.consecutive_failures = 0;
                s.health.last_error = None;
            }
            Err(why) => {
                s.health.consecutive_failures += 1;
                s.health.last_error = Some(why.clone());
            }
        }
        self.publish_health();
    }

    /// A failed opening on a member (front mode).
    pub(super) fn on_relay_failed(
        &mut self,
        now: Now,
        core: CoreId,
        config_id: i64,
        failure: RelayFailure,
    ) {
        let (window, limit) = (self.config.passive_window_ms, self.config.passive_failures);
        let Some(m) = self
            .pool
            .as_mut()
            .filter(|p| p.core == core)
            .and_then(|p| p.member_mut(config_id))
        else {
            return;
        };
        m.last_error = Some(failure.describe());
        if failure == RelayFailure::Stalled {
            // A slow first byte may be a long poll: it only earns a quick re-probe.
            if !m.suspect {
                m.suspect = true;
                m.next_probe_ms = m.next_probe_ms.min(now.monotonic_ms);
            }
            return;
        }
        m.passive.push_back(now.monotonic_ms);
        while m
            .passive
            .front()
            .is_some_and(|at| now.monotonic_ms.saturating_sub(*at) >= window)
            || m.passive.len() > limit as usize
        {
            m.passive.pop_front();
        }
        if m.passive.len() >= limit as usize && m.state != MemberState::Dead {
            m.state = MemberState::Dead;
            m.suspect = true;
            // Confirm (or revive) it soon with a probe.
            m.next_probe_ms = now.monotonic_ms + self.config.retry_interval_ms;
            self.log(format!(
                "pool member config {config_id} failed {limit} relayed opening(s) within {window} ms ({}); new connections go elsewhere",
                failure.describe()
            ));
            self.failover_check(now);
        }
    }

    /// The active member is dead: switch the session to the best alive member (no cooldown:
    /// the route already moved), or rebuild the pool when none is alive.
    pub(super) fn failover_check(&mut self, now: Now) {
        if self.op.is_some() || self.shutting_down || !self.failover_allowed() {
            return;
        }
        let (Some(pool), Some(active)) = (self.pool.as_ref(), self.active_member()) else {
            return;
        };
        if pool.member(active).map(|m| m.state) != Some(MemberState::Dead) {
            return;
        }
        match pool.best_alive(Some(active)).map(|m| m.config_id) {
            Some(to) => self.start_pool_switch(
                now,
                None,
                crate::ipc::RawId::NONE,
                to,
                crate::ipc::protocol::Trigger::HealthCheckFailed,
                false,
            ),
            None => self.health_trigger(now, true),
        }
    }

    /// After any input: a dead active member with an alive one beside it is left now. The
    /// switch may have been held back by an operation in flight or by failover being off; only
    /// the switch is retried here, never a rebuild (that is the health trigger's).
    pub(super) fn failover_pending(&mut self, now: Now) {
        let warm = match (self.pool.as_ref(), self.active_member()) {
            (Some(pool), Some(active)) => {
                pool.member(active).map(|m| m.state) == Some(MemberState::Dead)
                    && pool.best_alive(Some(active)).is_some()
            }
            _ => false,
        };
        if warm {
            self.failover_check(now);
        }
    }

    /// The executor saw the last relayed connection of an unrouted pool core close.
    pub(super) fn on_core_drained(&mut self, core: CoreId) {
        if self.draining.contains_key(&core) {
            self.stop_drained(core, "its last relayed connection closed");
        }
    }

    fn stop_drained(&mut self, core: CoreId, why: &str) {
        if self.draining.remove(&core).is_some() && self.cores.contains_key(&core) {
            self.log(format!("stopping replaced pool core {}: {why}", core.0));
            self.emit(Effect::StopCore {
                core,
                grace_ms: STOP_GRACE_MS,
            });
        }
    }

    /// A pool core that is no longer routed: it drains, or stops at once without drain time.
    pub(super) fn retire_pool(&mut self, now: Now, core: CoreId) {
        if !self.cores.contains_key(&core) {
            return;
        }
        if self.config.drain_ms == 0 {
            self.emit(Effect::StopCore {
                core,
                grace_ms: STOP_GRACE_MS,
            });
            return;
        }
        while self.draining.len() >= DRAINING_MAX {
            let oldest = *self
                .draining
                .iter()
                .min_by_key(|(core, until)| (**until, core.0))
                .expect("draining is not empty")
                .0;
            self.stop_drained(oldest, "another pool core was replaced meanwhile");
        }
        self.draining
            .insert(core, now.monotonic_ms + self.config.drain_ms);
    }

    /// Installs a newly routed pool core; the one it replaces drains.
    pub(super) fn install_pool(&mut self, now: Now, pool: Pool) {
        debug_assert_eq!(self.cores.get(&pool.core), Some(&CoreRole::Pool));
        if let Some(old) = self.pool.replace(pool) {
            if Some(old.core) != self.pool.as_ref().map(|p| p.core) {
                self.retire_pool(now, old.core);
            }
        }
    }

    /// The pool's members for status (front mode), the active one first.
    pub(super) fn pool_view(&self) -> Vec<PoolMemberView> {
        let Some(pool) = self.pool.as_ref() else {
            return Vec::new();
        };
        let active = self.active_member();
        let mut view: Vec<PoolMemberView> = pool
            .members
            .iter()
            .map(|m| PoolMemberView {
                config_id: m.config_id,
                active: Some(m.config_id) == active,
                socks_addr: m.socks.to_string(),
                latency_ms: m.latency_ms,
                alive: m.state == MemberState::Alive
                    || (Some(m.config_id) == active && m.state == MemberState::Untested),
                passive_failures: m.passive.len() as u32,
                last_error: m.last_error.clone(),
            })
            .collect();
        view.sort_by_key(|m| !m.active);
        view
    }
}

impl Supervisor {
    /// Stops a draining core now (shutdown).
    pub(super) fn retire_now(&mut self, core: CoreId) {
        self.stop_drained(core, "the daemon is shutting down");
    }
}
