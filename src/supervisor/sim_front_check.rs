//! The simulation's checks for front mode: the route, member health as the model derives it from
//! probes and relay failures, passive failover, pool switches, and drain before stop.
//!
//! A member (pool core, config) is alive once a probe through it passed (or it was verified by
//! its rotation) and it did not die since; it dies when `passive_failures` relay failures fall
//! within `passive_window_ms`, when a probe fails while it is suspect (a probe failed before, it
//! stalled, or it died passively), or after `failure_threshold` failed probes in a row. A passing
//! probe makes it alive again.

use std::collections::{BTreeMap, VecDeque};

use crate::ipc::protocol::{Request, Trigger};

use super::pool::DRAINING_MAX;
use super::sim_exec::Life;
use super::sim_world::World;
use super::RouteTarget;
use super::{CoreId, CoreSpec, Input, ProbeId, RelayFailure, ReplaceResult, RotationEvent};

/// What the model knows of one member.
#[derive(Debug, Default, Clone)]
pub(super) struct MemberModel {
    pub passed: bool,
    pub dead: bool,
    pub suspect: bool,
    pub fails: u32,
    pub passive: VecDeque<u64>,
    /// A `Reroute` moved its openings since it died.
    pub rerouted: bool,
}

impl MemberModel {
    pub fn alive(&self) -> bool {
        self.passed && !self.dead
    }
}

/// A pool core the session left: it drains until stopped.
#[derive(Debug)]
pub(super) struct Retired {
    pub at_ms: u64,
    pub drained: bool,
    pub stopped: bool,
}

/// A pool switch as the model follows it.
#[derive(Debug)]
pub(super) struct SwitchModel {
    pub trigger: Trigger,
    pub to: i64,
    pub core: CoreId,
    pub connect: bool,
    pub old_config: i64,
    pub persisted: Option<ReplaceResult>,
}

#[derive(Debug, Default)]
pub(super) struct FrontModel {
    pub route: Vec<RouteTarget>,
    /// The core of the last non-empty route.
    pub routed: Option<CoreId>,
    pub members: BTreeMap<(CoreId, i64), MemberModel>,
    pub member_probes: BTreeMap<ProbeId, (CoreId, i64)>,
    pub verify_probes: BTreeMap<ProbeId, (CoreId, i64)>,
    pub retired: BTreeMap<CoreId, Retired>,
    pub session_core_before: Option<CoreId>,
    /// Passive failovers, cores retired, stopped on CoreDrained, stopped at their deadline.
    pub counts: [u64; 4],
}

impl World {
    fn failover_allowed(&self) -> bool {
        self.enabled && self.cfg.health_trigger_enabled
    }

    /// The session's member, when it runs in a live pool core.
    fn active(&self) -> Option<(CoreId, i64)> {
        let s = self.sup.session.as_ref().filter(|s| s.pid_running)?;
        let pool = matches!(
            self.exec.cores.get(&s.core).map(|c| &c.spec),
            Some(CoreSpec::Pool { .. })
        );
        pool.then_some((s.core, s.info.config_id))
    }

    fn member(&self, key: (CoreId, i64)) -> &MemberModel {
        static UNKNOWN: MemberModel = MemberModel {
            passed: false,
            dead: false,
            suspect: false,
            fails: 0,
            passive: VecDeque::new(),
            rerouted: false,
        };
        self.fm.members.get(&key).unwrap_or(&UNKNOWN)
    }

    fn active_dead(&self) -> bool {
        self.active().is_some_and(|key| self.member(key).dead)
    }

    /// Another member of the active pool is alive.
    fn other_alive(&self) -> bool {
        let Some((core, active)) = self.active() else {
            return false;
        };
        self.fm
            .members
            .iter()
            .any(|((c, id), m)| *c == core && *id != active && m.alive())
    }

    /// Model updates from an input, before the supervisor sees it.
    pub(super) fn front_before(&mut self, input: &Input) {
        let now = self.now.monotonic_ms;
        self.fm.session_core_before = self.sup.session.as_ref().map(|s| s.core);
        match input {
            Input::RelayFailed {
                core,
                config_id,
                failure,
            } => {
                let key = (*core, *config_id);
                let routed = self.fm.route.iter().any(|t| (t.core, t.config_id) == key);
                self.check(routed || *failure == RelayFailure::Stalled, || {
                    format!("the front relayed to {key:?}, which the route leaves out")
                });
                if self.fm.routed != Some(*core) {
                    return;
                }
                let (limit, window) = (self.cfg.passive_failures, self.cfg.passive_window_ms);
                let m = self.fm.members.entry(key).or_default();
                if *failure == RelayFailure::Stalled {
                    m.suspect = true;
                    return;
                }
                m.passive.push_back(now);
                m.passive.retain(|at| now - at < window);
                if m.passive.len() >= limit as usize && !m.dead {
                    m.dead = true;
                    m.suspect = true;
                }
            }
            Input::ProbeDone { probe, result } => {
                if let Some(key) = self.fm.verify_probes.remove(probe) {
                    if result.is_ok() {
                        self.fm.members.entry(key).or_default().passed = true;
                    }
                }
                let Some(key) = self.fm.member_probes.remove(probe) else {
                    return;
                };
                let threshold = self.cfg.failure_threshold;
                let m = self.fm.members.entry(key).or_default();
                if result.is_ok() {
                    *m = MemberModel {
                        passed: true,
                        ..MemberModel::default()
                    };
                } else {
                    m.fails += 1;
                    if m.suspect || m.fails >= threshold {
                        m.dead = true;
                    }
                    let confirmed = m.dead && m.suspect;
                    m.suspect = !confirmed;
                }
            }
            Input::CoreDrained { core } => {
                if let Some(r) = self.fm.retired.get_mut(core) {
                    r.drained = true;
                }
            }
            _ => {}
        }
    }

    /// After the supervisor took an input, before its effects: a session that moved to another
    /// pool core leaves the old one draining.
    pub(super) fn front_after_handle(&mut self) {
        let after = self.sup.session.as_ref().map(|s| s.core);
        let Some(old) = self.fm.session_core_before else {
            return;
        };
        if after.is_none() || after == Some(old) {
            return;
        }
        let alive = self
            .exec
            .cores
            .get(&old)
            .is_some_and(|c| c.alive() && matches!(c.spec, CoreSpec::Pool { .. }));
        if alive {
            self.fm.counts[1] += 1;
            self.fm.retired.insert(
                old,
                Retired {
                    at_ms: self.now.monotonic_ms,
                    drained: false,
                    stopped: false,
                },
            );
        }
    }

    pub(super) fn front_route(&mut self, targets: Vec<RouteTarget>) {
        self.check(self.cfg.front, || "a Route in direct mode".into());
        if let Some(first) = targets.first() {
            self.fm.routed = Some(first.core);
            // The executor releases held connections into a non-empty route.
            self.rs.hold_until = None;
        }
        self.fm.route = targets.clone();
        let now = self.now.monotonic_ms;
        self.exec.on_route(now, targets, &mut self.rng);
    }

    /// A `Reroute` names a dead member of the routed core that the route leaves out, once per
    /// death, and only when the route has somewhere else to go.
    pub(super) fn front_reroute(&mut self, core: CoreId, config_id: i64) {
        let key = (core, config_id);
        self.check(self.cfg.front, || "a Reroute in direct mode".into());
        let routed = self.fm.route.iter().any(|t| (t.core, t.config_id) == key);
        let elsewhere = self.fm.route.first().is_some_and(|t| t.core == core);
        let m = self.member(key).clone();
        self.check(m.dead && !m.rerouted && !routed && elsewhere, || {
            format!(
                "a Reroute of {key:?} (model {m:?}, route {:?})",
                self.fm.route
            )
        });
        self.fm.members.entry(key).or_default().rerouted = true;
        let now = self.now.monotonic_ms;
        self.exec.front.on_reroute(now, core, config_id);
    }

    pub(super) fn front_begin(&mut self, core: CoreId, config_id: i64) {
        self.check(self.cfg.front, || "a BeginSession in direct mode".into());
        let Some(op) = self.op.as_ref() else {
            self.fail("a BeginSession outside an operation");
        };
        if op.kind == super::sim_world::Kind::Respawn {
            self.respawn_begin(core, config_id);
        }
        if let Some(s) = &op.switch {
            self.check((s.core, s.to) == (core, config_id), || {
                format!(
                    "a pool switch to {:?} began {core:?}/{config_id}",
                    (s.core, s.to)
                )
            });
        }
        let pool = matches!(
            self.exec.cores.get(&core).map(|c| (&c.spec, c.life)),
            Some((CoreSpec::Pool { .. }, Life::Running))
        );
        self.check(pool, || {
            format!("BeginSession on core {} that is not a running pool", core.0)
        });
        let now = self.now.monotonic_ms;
        self.exec.on_begin(now, core, config_id, &mut self.rng);
    }

    /// A StopCore of a retired pool core (true), judged against the drain rules.
    pub(super) fn front_stop(&mut self, core: CoreId) -> bool {
        let now = self.now.monotonic_ms;
        let live = |r: &Retired, c: &CoreId| {
            !r.stopped && self.exec.cores.get(c).is_some_and(|c| c.alive())
        };
        let draining: Vec<(u64, CoreId)> = self
            .fm
            .retired
            .iter()
            .filter(|(c, r)| live(r, c))
            .map(|(c, r)| (r.at_ms, *c))
            .collect();
        let Some(r) = self.fm.retired.get(&core).filter(|r| !r.stopped) else {
            return false;
        };
        let due = now >= r.at_ms + self.cfg.drain_ms;
        let evicted =
            draining.len() > DRAINING_MAX && draining.iter().min().map(|d| d.1) == Some(core);
        self.check(r.drained || due || evicted || self.shutting_down, || {
            format!(
                "pool core {} stopped {} ms after it was replaced, before it drained (drain {} ms)",
                core.0,
                now - r.at_ms,
                self.cfg.drain_ms
            )
        });
        self.fm.counts[if r.drained { 2 } else { 3 }] += 1;
        self.fm.retired.get_mut(&core).expect("found").stopped = true;
        true
    }

    /// A probe through a pool core: a rotation's verification, or a member probe of the routed
    /// pool.
    pub(super) fn front_probe(&mut self, probe: ProbeId, core: CoreId, config_id: i64) {
        let verify = self.op.as_ref().is_some_and(|op| {
            op.rot
                .as_ref()
                .is_some_and(|r| r.tried.iter().any(|t| t.0 == core))
        });
        if verify {
            self.rot().verify.insert(probe, core);
            self.fm.verify_probes.insert(probe, (core, config_id));
            return;
        }
        let alive = self.exec.cores.get(&core).is_some_and(|c| c.alive());
        let retired = self.fm.retired.contains_key(&core);
        self.check(alive && self.fm.routed == Some(core) && !retired, || {
            format!(
                "a member probe of core {} (alive {alive}, routed {:?}, retired {retired})",
                core.0, self.fm.routed
            )
        });
        let key = (core, config_id);
        let (twice, in_flight) = self
            .fm
            .member_probes
            .values()
            .fold((false, 0), |(twice, n), k| {
                (twice || *k == key, n + usize::from(k.0 == core))
            });
        self.check(!twice, || format!("two probes of member {key:?} in flight"));
        let limit = self.cfg.test_concurrency.max(1) as usize;
        self.check(in_flight < limit, || {
            format!("more than {limit} member probes in flight")
        });
        self.fm.member_probes.insert(probe, key);
    }

    /// A pool switch began: who may ask for one, and to which member.
    pub(super) fn front_switch_started(&mut self, s: &SwitchModel, client: bool) {
        self.check(self.cfg.front, || "a pool switch in direct mode".into());
        let active = self.active();
        self.check(active.map(|a| a.0) == Some(s.core), || {
            format!("a pool switch in core {} off the session's", s.core.0)
        });
        let to = self.member((s.core, s.to)).clone();
        self.check(active.map(|a| a.1) != Some(s.to) && !to.dead, || {
            format!("a pool switch to member {} that is active or dead", s.to)
        });
        if client {
            match self.last_request {
                Some((_, Request::RuntimeConnect { config_id })) => {
                    self.check(s.connect && s.to == config_id, || {
                        format!("connect {config_id} switched to {}", s.to)
                    });
                }
                Some((
                    _,
                    Request::RuntimeReplace {
                        trigger,
                        candidate_id,
                    },
                )) => {
                    let right = candidate_id.map_or(to.alive(), |c| c == s.to);
                    self.check(!s.connect && s.trigger == trigger && right, || {
                        format!(
                            "replace ({trigger:?}, {candidate_id:?}) switched to {}",
                            s.to
                        )
                    });
                }
                _ => self.fail("a pool switch for a request that asks none"),
            }
        } else {
            self.check(
                s.trigger == Trigger::HealthCheckFailed
                    && self.failover_allowed()
                    && !self.shutting_down,
                || format!("an automatic pool switch ({:?})", s.trigger),
            );
            // Passive failover runs inside the cooldown: the route already left the member.
            self.check(self.active_dead() && to.alive(), || {
                format!(
                    "a failover to member {} (alive {}) while the active member is not dead",
                    s.to,
                    to.alive()
                )
            });
            self.fm.counts[0] += 1;
        }
    }

    /// A health rotation (batch test) in front mode: the pool core exited, or the active member
    /// is dead; inside the cooldown only when nothing is left to route to.
    pub(super) fn front_health_rotation_ok(&self, core_dead: bool, cooldown: bool) -> bool {
        core_dead || (self.active_dead() && (!cooldown || !self.other_alive()))
    }

    /// A pool switch's rotation event (true when it was one).
    pub(super) fn front_persist(&mut self, ev: &RotationEvent) -> bool {
        let session = self
            .sup
            .session
            .as_ref()
            .map(|s| (s.core, s.info.config_id));
        let op = match self.ended.as_mut() {
            Some(op) if op.switch.is_some() => op,
            _ => return false,
        };
        let s = op.switch.as_mut().expect("a switch");
        let right = !s.connect
            && ev.trigger == s.trigger
            && ev.result == ReplaceResult::Switched
            && ev.from_config_id == Some(s.old_config)
            && ev.to_config_id == Some(s.to)
            && session == Some((s.core, s.to));
        s.persisted = Some(ev.result);
        self.stats.results[0] += 1;
        self.check(right, || format!("a pool switch recorded {ev:?}"));
        true
    }

    /// The front rules, after every step.
    pub(super) fn check_front(&mut self) {
        let route = std::mem::take(&mut self.fm.route);
        self.check_route(&route);
        self.fm.route = route;
        self.check_draining();
    }

    /// Where new connections may go, and that a dead active member is left at once.
    fn check_route(&self, route: &[RouteTarget]) {
        let active = self.active();
        if route.is_empty() && active.is_none() {
            return;
        }
        let allowed = self.failover_allowed();
        for (i, t) in route.iter().enumerate() {
            let key = (t.core, t.config_id);
            let core = self.exec.cores.get(&t.core);
            let member = core.is_some_and(|c| {
                c.alive()
                    && c.was_ready
                    && c.inbounds.iter().any(|(id, _)| *id == t.config_id)
                    && matches!(c.spec, CoreSpec::Pool { .. })
            });
            self.check(member, || {
                format!("route target {key:?} is no ready pool member")
            });
            self.check(Some(t.core) == active.map(|a| a.0), || {
                format!("route target {key:?} is not in the session's pool core")
            });
            self.check(!self.fm.retired.contains_key(&t.core), || {
                format!("route target {key:?} is in a draining core")
            });
            self.check(!route[..i].contains(t), || format!("{key:?} routed twice"));
            let m = self.member(key);
            if Some(key) == active {
                // A dead active member stays only as the last resort: alone in the route.
                self.check(i == 0 && (!allowed || !m.dead || route.len() == 1), || {
                    format!(
                        "the active member {key:?} at {i} (dead {}) in the route",
                        m.dead
                    )
                });
            } else {
                self.check(allowed && m.alive(), || {
                    format!("member {key:?} routed: failover {allowed}, model {m:?}")
                });
            }
        }
        // Liveness: a dead member the route leaves out has had its openings moved.
        if let Some(core) = route.first().map(|t| t.core) {
            for (key, m) in self.fm.members.range((core, i64::MIN)..=(core, i64::MAX)) {
                let routed = route.iter().any(|t| (t.core, t.config_id) == *key);
                self.check(!m.dead || m.rerouted || routed, || {
                    format!("dead member {key:?} is out of the route and was not rerouted")
                });
            }
        }
        if let Some(key) = active {
            let m = self.member(key);
            let routed = route.first().map(|t| (t.core, t.config_id)) == Some(key);
            self.check(routed || (allowed && m.dead), || {
                format!("the active member {key:?} (model {m:?}) is not routed first")
            });
            // Liveness: a dead active member with alive others is left at once (no cooldown).
            let other = route.iter().any(|t| (t.core, t.config_id) != key);
            let stuck = allowed && m.dead && other;
            self.check(!stuck || self.op.is_some() || self.shutting_down, || {
                format!("the active member {key:?} is dead and no failover started")
            });
        }
    }

    /// Retired pool cores stop once drained or at their deadline; at most DRAINING_MAX drain.
    fn check_draining(&self) {
        let (now, drain_ms) = (self.now.monotonic_ms, self.cfg.drain_ms);
        let mut draining = 0;
        for (core, r) in &self.fm.retired {
            if r.stopped || self.exec.cores.get(core).is_none_or(|c| !c.alive()) {
                continue;
            }
            draining += 1;
            self.check(self.shutting_down || now <= r.at_ms + drain_ms, || {
                format!(
                    "pool core {} was not stopped when its drain time ran out",
                    core.0
                )
            });
            self.check(self.shutting_down || !r.drained, || {
                format!("pool core {} drained and was not stopped", core.0)
            });
        }
        self.check(draining <= DRAINING_MAX, || {
            format!("{draining} pool cores draining")
        });
    }
}
