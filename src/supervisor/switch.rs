//! The switch of a rotation: once the old core exited, start the next ranked candidate on the
//! user's ports, wait until it accepts, verify it with one probe; on failure stop it and try the
//! next; with none left start the old config again (restored, not verified: it is the last resort).

use super::ops::{input_core, Flow};
use super::replace::{Phase, Replace, Step};
use super::{
    Effect, Input, Now, ProbeId, ProbeKind, ReplaceResult, StartFailure, Supervisor, STOP_GRACE_MS,
};

impl Supervisor {
    /// An executor report during the switch.
    pub(super) fn switching(&mut self, now: Now, r: &mut Replace, input: &Input) -> Flow {
        let Phase::Switching { step, .. } = &r.phase else {
            return Flow::NotMine;
        };
        if self.config.front && !matches!(step, Step::Stopping { .. }) {
            return self.front_switching(now, r, input);
        }
        match (step, input) {
            (Step::Stopping { core, then_end }, Input::CoreExited { core: exited, .. })
                if core == exited =>
            {
                if let Some((session_id, reason)) = *then_end {
                    self.end_session(session_id, reason);
                }
                self.launch_next(now, r)
            }
            (Step::Starting { core, .. }, _) if input_core(input) == Some(*core) => {
                self.switch_starting(now, r, input)
            }
            (
                Step::Verifying { probe, .. },
                Input::ProbeDone {
                    probe: done,
                    result,
                },
            ) if probe == done => self.verified(now, r, result.clone()),
            (
                Step::Verifying { core, session, .. },
                Input::CoreExited {
                    core: exited, how, ..
                },
            ) if core == exited => {
                let (session_id, config_id) = (session.id, session.config_id);
                r.notes
                    .push(format!("config {config_id} core {how} after the switch"));
                self.mark_failed(now, config_id);
                self.end_session(session_id, "failed");
                self.launch_next(now, r)
            }
            _ => Flow::NotMine,
        }
    }

    fn switch_starting(&mut self, now: Now, r: &mut Replace, input: &Input) -> Flow {
        let restoring = matches!(
            r.phase,
            Phase::Switching {
                restoring: true,
                ..
            }
        );
        let Phase::Switching {
            step:
                Step::Starting {
                    core,
                    config_id,
                    session,
                },
            ..
        } = &mut r.phase
        else {
            return Flow::NotMine;
        };
        let (core, config_id) = (*core, *config_id);
        let what = if restoring {
            format!("restoring config {config_id} failed")
        } else {
            format!("config {config_id}")
        };
        match input {
            Input::CoreStarted { session: s, .. } => {
                *session = s.clone();
                Flow::Continue
            }
            Input::CoreReady { .. } => {
                let Some(info) = session.take() else {
                    r.notes.push(format!("{what}: no session was recorded"));
                    return self.launch_next(now, r);
                };
                if restoring {
                    return self.finish_replace(
                        now,
                        r,
                        ReplaceResult::Restored,
                        Some((info, core)),
                    );
                }
                let probe = ProbeId(self.fresh());
                self.emit(Effect::Probe {
                    probe,
                    addr: info.socks_addr,
                    kind: ProbeKind::Http,
                    timeout_ms: self.config.probe_timeout_ms,
                });
                if let Phase::Switching { step, .. } = &mut r.phase {
                    *step = Step::Verifying {
                        core,
                        session: info,
                        probe,
                    };
                }
                Flow::Continue
            }
            Input::CoreFailed {
                failure: StartFailure::Refused(rejection),
                ..
            } => {
                r.notes
                    .push(format!("{what} did not start: {}", rejection.message));
                self.mark_failed(now, config_id);
                self.launch_next(now, r)
            }
            Input::CoreFailed {
                failure: StartFailure::NotReady { .. },
                ..
            } => {
                let session_id = session.as_ref().map(|s| s.id);
                r.notes.push(format!(
                    "{what} did not listen within {} ms",
                    self.config.ready_timeout_ms
                ));
                self.mark_failed(now, config_id);
                self.emit(Effect::StopCore { core, grace_ms: 0 });
                if let Phase::Switching { step, .. } = &mut r.phase {
                    *step = Step::Stopping {
                        core,
                        then_end: session_id.map(|id| (id, "not_ready")),
                    };
                }
                Flow::Continue
            }
            Input::CoreExited { how, .. } => {
                let session_id = session.as_ref().map(|s| s.id);
                r.notes.push(format!("{what}: its core {how} at start"));
                self.mark_failed(now, config_id);
                if let Some(id) = session_id {
                    self.end_session(id, "failed");
                }
                self.launch_next(now, r)
            }
            _ => Flow::NotMine,
        }
    }

    fn verified(&mut self, now: Now, r: &mut Replace, result: Result<u64, String>) -> Flow {
        let Phase::Switching {
            step: Step::Verifying { core, session, .. },
            ..
        } = &r.phase
        else {
            return Flow::NotMine;
        };
        let (core, session) = (*core, session.clone());
        match result {
            Ok(_) => self.finish_replace(now, r, ReplaceResult::Switched, Some((session, core))),
            Err(why) => {
                r.notes.push(format!(
                    "config {} failed its probe after the switch: {why}",
                    session.config_id
                ));
                self.mark_failed(now, session.config_id);
                self.emit(Effect::StopCore {
                    core,
                    grace_ms: STOP_GRACE_MS,
                });
                if let Phase::Switching { step, .. } = &mut r.phase {
                    *step = Step::Stopping {
                        core,
                        then_end: Some((session.id, "failed_probe")),
                    };
                }
                Flow::Continue
            }
        }
    }

    /// Starts the next ranked candidate, or the old config once none is left.
    pub(super) fn launch_next(&mut self, now: Now, r: &mut Replace) -> Flow {
        let Phase::Switching {
            ranked,
            current,
            restoring,
            ..
        } = &mut r.phase
        else {
            return Flow::NotMine;
        };
        if *restoring {
            return self.finish_replace(now, r, ReplaceResult::Failed, None);
        }
        if self.config.front {
            return self.front_launch_next(now, r);
        }
        let config_id = match ranked.pop_front() {
            Some(next) => {
                *current = Some(next);
                r.candidates[next].config_id
            }
            None => {
                *restoring = true;
                r.notes.push(format!(
                    "no candidate worked; restoring config {}",
                    r.old_config
                ));
                r.old_config
            }
        };
        debug_assert!(
            self.session.is_none(),
            "a candidate starts while a session still runs"
        );
        let core = self.start_session_core(config_id);
        if let Phase::Switching { step, .. } = &mut r.phase {
            *step = Step::Starting {
                core,
                config_id,
                session: None,
            };
        }
        Flow::Continue
    }
}
