//! The switch of a rotation in front mode, make-before-break: start a pool core led by the next
//! ranked candidate (with the other ranked ones as warm members) beside the running one, probe
//! the candidate through it, write its session row, then flip the route and let the old pool
//! core drain. The old session is never stopped, so when no candidate takes over it simply
//! keeps running (restored); only if it is gone is the old config started again.

use super::ops::{input_core, Flow};
use super::pool::{MemberState, Pool};
use super::replace::{Phase, Replace, Step};
use super::{Effect, Input, Now, ProbeId, ProbeKind, ReplaceResult, StartFailure, Supervisor};

impl Supervisor {
    /// Starts a pool core for the next ranked candidate, or settles the rotation.
    pub(super) fn front_launch_next(&mut self, now: Now, r: &mut Replace) -> Flow {
        let Phase::Switching {
            ranked,
            current,
            restoring,
            ..
        } = &mut r.phase
        else {
            return Flow::NotMine;
        };
        let old_runs = self
            .session
            .as_ref()
            .is_some_and(|s| s.info.id == r.old_session && s.pid_running);
        let (first, rest): (i64, Vec<i64>) = match ranked.pop_front() {
            Some(next) => {
                *current = Some(next);
                let rest = ranked.iter().map(|i| r.candidates[*i].config_id).collect();
                (r.candidates[next].config_id, rest)
            }
            None if old_runs => {
                r.notes.push(format!(
                    "no candidate took over; config {} kept running throughout",
                    r.old_config
                ));
                return self.finish_replace(now, r, ReplaceResult::Restored, None);
            }
            None => {
                // The old core is gone (its row was ended then), as in direct mode.
                self.session
                    .take_if(|s| s.info.id == r.old_session && !s.pid_running);
                *restoring = true;
                r.notes.push(format!(
                    "no candidate worked; restoring config {}",
                    r.old_config
                ));
                (r.old_config, Vec::new())
            }
        };
        let warm = self.warm_members(r.old_config);
        let members = self.pick_members(now, first, rest.into_iter().chain(warm));
        let core = self.start_pool_core(members);
        r.pool_inbounds.clear();
        if let Phase::Switching { step, .. } = &mut r.phase {
            *step = Step::Starting {
                core,
                config_id: first,
                session: None,
            };
        }
        Flow::Continue
    }

    /// Configs that stay warm in the new pool core besides the ranked ones: the routed pool's
    /// alive members and the config being replaced (unless it failed: `pick_members` leaves out
    /// what failed recently). A rotation that ranked one candidate (a manual switch to a config
    /// outside the pool) would otherwise start a pool of that one config, and every later switch
    /// would start a core again instead of moving inside a warm pool.
    fn warm_members(&self, old_config: i64) -> Vec<i64> {
        let alive = self.pool.iter().flat_map(|p| {
            p.members
                .iter()
                .filter(|m| m.state == MemberState::Alive)
                .map(|m| m.config_id)
        });
        let old = self
            .session
            .as_ref()
            .filter(|s| s.info.config_id == old_config && s.pid_running)
            .map(|s| s.info.config_id);
        alive.chain(old).collect()
    }

    /// An executor report while the new pool core starts, is probed or is recorded.
    pub(super) fn front_switching(&mut self, now: Now, r: &mut Replace, input: &Input) -> Flow {
        let Phase::Switching {
            step, restoring, ..
        } = &r.phase
        else {
            return Flow::NotMine;
        };
        let restoring = *restoring;
        match (step, input) {
            (
                Step::Starting {
                    core, config_id, ..
                },
                _,
            ) if input_core(input) == Some(*core) => {
                let (core, config_id) = (*core, *config_id);
                self.front_starting(now, r, core, config_id, restoring, input)
            }
            (
                Step::PoolVerifying {
                    core,
                    config_id,
                    probe,
                },
                Input::ProbeDone {
                    probe: done,
                    result,
                },
            ) if probe == done => {
                let (core, config_id) = (*core, *config_id);
                match result {
                    Ok(latency) => self.front_begin(r, core, config_id, Some(*latency)),
                    Err(why) => {
                        let why = format!(
                            "config {config_id} failed its probe through the new pool core: {why}"
                        );
                        self.front_abandon(now, r, core, config_id, why)
                    }
                }
            }
            (
                Step::Beginning {
                    core,
                    config_id,
                    latency_ms,
                },
                Input::SessionBegun {
                    core: begun,
                    session,
                    ..
                },
            ) if core == begun => {
                let (core, config_id, latency_ms) = (*core, *config_id, *latency_ms);
                let info = match session {
                    Ok(info) => info.clone(),
                    Err(rejection) => {
                        let why = format!("config {config_id}: {}", rejection.message);
                        return self.front_abandon(now, r, core, config_id, why);
                    }
                };
                if self
                    .session
                    .as_ref()
                    .is_some_and(|s| s.info.id == r.old_session)
                {
                    self.end_session(r.old_session, "rotated");
                }
                let verified = latency_ms.map(|ms| (config_id, ms));
                let interval = self.config.health_interval_ms;
                let pool = Pool::new(core, &r.pool_inbounds, now.monotonic_ms, verified, interval);
                self.install_pool(now, pool);
                let result = if restoring {
                    ReplaceResult::Restored
                } else {
                    ReplaceResult::Switched
                };
                self.finish_replace(now, r, result, Some((info, core)))
            }
            (
                Step::PoolVerifying {
                    core, config_id, ..
                }
                | Step::Beginning {
                    core, config_id, ..
                },
                Input::CoreExited {
                    core: exited, how, ..
                },
            ) if core == exited => {
                r.notes
                    .push(format!("config {config_id}: the new pool core {how}"));
                self.mark_failed(now, *config_id);
                self.launch_next(now, r)
            }
            _ => Flow::NotMine,
        }
    }

    fn front_starting(
        &mut self,
        now: Now,
        r: &mut Replace,
        core: super::CoreId,
        config_id: i64,
        restoring: bool,
        input: &Input,
    ) -> Flow {
        match input {
            Input::CoreStarted { inbounds, .. } => {
                r.pool_inbounds = inbounds.clone();
                Flow::Continue
            }
            Input::CoreReady { .. } => {
                let Some(addr) = Self::member_addr(&r.pool_inbounds, config_id) else {
                    let why =
                        format!("config {config_id}: the pool core reported no inbound for it");
                    return self.front_abandon(now, r, core, config_id, why);
                };
                if restoring {
                    return self.front_begin(r, core, config_id, None);
                }
                let probe = ProbeId(self.fresh());
                self.emit(Effect::Probe {
                    probe,
                    addr,
                    kind: ProbeKind::Http,
                    timeout_ms: self.config.probe_timeout_ms,
                });
                self.set_step(
                    r,
                    Step::PoolVerifying {
                        core,
                        config_id,
                        probe,
                    },
                );
                Flow::Continue
            }
            Input::CoreFailed {
                failure: StartFailure::Refused(rejection),
                ..
            } => {
                r.notes.push(format!(
                    "config {config_id}: the pool core did not start: {}",
                    rejection.message
                ));
                self.mark_failed(now, config_id);
                self.launch_next(now, r)
            }
            Input::CoreFailed {
                failure: StartFailure::NotReady { .. },
                ..
            } => {
                let why = format!(
                    "config {config_id}: the pool core did not listen within {} ms",
                    self.config.ready_timeout_ms
                );
                self.front_abandon(now, r, core, config_id, why)
            }
            Input::CoreExited { how, .. } => {
                r.notes
                    .push(format!("config {config_id}: the pool core {how} at start"));
                self.mark_failed(now, config_id);
                self.launch_next(now, r)
            }
            _ => Flow::NotMine,
        }
    }

    fn front_begin(
        &mut self,
        r: &mut Replace,
        core: super::CoreId,
        config_id: i64,
        latency_ms: Option<u64>,
    ) -> Flow {
        self.emit(Effect::BeginSession { core, config_id });
        self.set_step(
            r,
            Step::Beginning {
                core,
                config_id,
                latency_ms,
            },
        );
        Flow::Continue
    }

    /// The candidate failed on its new pool core: stop that core; once it exited, the next
    /// candidate is tried.
    fn front_abandon(
        &mut self,
        now: Now,
        r: &mut Replace,
        core: super::CoreId,
        config_id: i64,
        why: String,
    ) -> Flow {
        r.notes.push(why);
        self.mark_failed(now, config_id);
        self.emit(Effect::StopCore { core, grace_ms: 0 });
        self.set_step(
            r,
            Step::Stopping {
                core,
                then_end: None,
            },
        );
        Flow::Continue
    }

    fn set_step(&mut self, r: &mut Replace, next: Step) {
        if let Phase::Switching { step, .. } = &mut r.phase {
            *step = next;
        }
    }
}
