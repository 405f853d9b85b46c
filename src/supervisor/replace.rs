//! One rotation (DESIGN §7), as a state machine fed by executor reports.
//!
//! Inspect the candidates (enabled, not the active config, not failed recently while others
//! remain) → start one batch core with an inbound per candidate → probe them, at most
//! `test_concurrency` at once, ranked by latency then id, deciding early once no running probe can
//! win → stop the old core → start the best candidate on the user's ports → ready → one probe →
//! switched. A candidate that fails to take over is stopped and the next one tried; when none is
//! left the old config is started again (restored). The old session is never touched unless some
//! candidate passed the batch test. The answer waits until every core the rotation stopped exited.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;

use crate::ipc::protocol::{Code, ReplacePayload, Trigger};

use super::ops::{input_core, Flow};
use super::rank::{self, Trial};
use super::{
    error, trigger_name, CoreId, CoreRole, CoreSpec, Effect, Input, InspectId, Now, ProbeId,
    ProbeKind, ReplaceResult, Reply, RotationEvent, Selection, Session, SessionInfo, StartFailure,
    Supervisor, TestRecord, TestSource, STOP_GRACE_MS,
};

#[derive(Debug)]
pub(super) struct Candidate {
    pub config_id: i64,
    pub addr: Option<SocketAddr>,
    pub probe: Option<ProbeId>,
    pub started_ms: Option<u64>,
    pub result: Option<Result<u64, String>>,
}

#[derive(Debug)]
pub(super) enum Phase {
    Inspecting(InspectId),
    BatchStarting(CoreId),
    BatchProbing {
        next: usize,
        in_flight: usize,
    },
    Switching {
        ranked: VecDeque<usize>,
        current: Option<usize>,
        restoring: bool,
        step: Step,
    },
    /// Over; waiting for the cores it stopped to exit before answering.
    Finishing(Reply),
}

#[derive(Debug)]
pub(super) enum Step {
    /// The core running on the user's ports must exit first; `then_end` names its row.
    Stopping {
        core: CoreId,
        then_end: Option<(i64, &'static str)>,
    },
    Starting {
        core: CoreId,
        config_id: i64,
        session: Option<SessionInfo>,
    },
    Verifying {
        core: CoreId,
        session: SessionInfo,
        probe: ProbeId,
    },
    /// Front mode: the new pool core accepts; its first member is being probed.
    PoolVerifying {
        core: CoreId,
        config_id: i64,
        probe: ProbeId,
    },
    /// Front mode: the new pool core's member was probed (or is restored unprobed); its session
    /// row is being written.
    Beginning {
        core: CoreId,
        config_id: i64,
        latency_ms: Option<u64>,
    },
}

/// A rotation in progress.
#[derive(Debug)]
pub(super) struct Replace {
    pub trigger: Trigger,
    pub candidate_id: Option<i64>,
    pub old_session: i64,
    pub old_config: i64,
    pub old_core: CoreId,
    pub batch: Option<CoreId>,
    pub candidates: Vec<Candidate>,
    pub notes: Vec<String>,
    pub phase: Phase,
    /// Cores this rotation stopped and has not yet seen exit.
    pub stopping: BTreeSet<CoreId>,
    /// Front mode: the members of the pool core being started.
    pub pool_inbounds: Vec<(i64, SocketAddr)>,
}

impl Replace {
    pub fn new(trigger: Trigger, candidate_id: Option<i64>, session: &Session) -> Replace {
        Replace {
            trigger,
            candidate_id,
            old_session: session.info.id,
            old_config: session.info.config_id,
            old_core: session.core,
            batch: None,
            candidates: Vec::new(),
            notes: Vec::new(),
            phase: Phase::Inspecting(InspectId(0)),
            stopping: BTreeSet::new(),
            pool_inbounds: Vec::new(),
        }
    }

    /// The moment the batch is decided if no probe answers before then.
    pub fn deadline(&self) -> Option<u64> {
        match self.phase {
            Phase::BatchProbing { .. } => rank::decision_due(&self.trials()),
            _ => None,
        }
    }

    fn trials(&self) -> Vec<Trial<'_>> {
        self.candidates
            .iter()
            .map(|c| Trial {
                config_id: c.config_id,
                started_ms: c.started_ms,
                result: c.result.as_ref(),
            })
            .collect()
    }

    fn tested(&self) -> u32 {
        self.candidates
            .iter()
            .filter(|c| c.result.is_some())
            .count() as u32
    }
}

impl Supervisor {
    pub(super) fn begin_replace(&mut self, _now: Now, r: &mut Replace) -> Flow {
        let inspect = InspectId(self.fresh());
        r.phase = Phase::Inspecting(inspect);
        let selection = r.candidate_id.map_or(Selection::Enabled, Selection::One);
        self.emit(Effect::Inspect { inspect, selection });
        Flow::Continue
    }

    pub(super) fn step_replace(&mut self, now: Now, r: &mut Replace, input: &Input) -> Flow {
        if let Some(core) = input_core(input) {
            if let Input::CoreExited { .. } = input {
                if r.stopping.remove(&core) {
                    // A core we stopped is gone; the phase may be waiting on it too.
                    let flow = self.replace_phase(now, r, input);
                    return match flow {
                        Flow::NotMine => self.maybe_finished(r),
                        other => other,
                    };
                }
            }
        }
        self.replace_phase(now, r, input)
    }

    fn replace_phase(&mut self, now: Now, r: &mut Replace, input: &Input) -> Flow {
        match (&r.phase, input) {
            (Phase::Inspecting(want), Input::Inspected { inspect, configs }) if want == inspect => {
                match configs {
                    Err(rejection) => Flow::Done(error(rejection.code, rejection.message.clone())),
                    Ok(checks) => self.choose_candidates(now, r, checks),
                }
            }
            (Phase::BatchStarting(batch), _) if input_core(input) == Some(*batch) => {
                self.batch_starting(now, r, input)
            }
            (Phase::BatchProbing { .. }, Input::ProbeDone { probe, result }) => {
                let Some(c) = r.candidates.iter_mut().find(|c| c.probe == Some(*probe)) else {
                    return Flow::NotMine;
                };
                c.result = Some(result.clone());
                if let Phase::BatchProbing { in_flight, .. } = &mut r.phase {
                    *in_flight -= 1;
                }
                self.batch_probing(now, r)
            }
            // The caller goes on with the health tick and rotation deadlines either way.
            (Phase::BatchProbing { .. }, Input::Timer) => self.batch_probing(now, r),
            (Phase::Switching { .. }, _) => self.switching(now, r, input),
            (Phase::Finishing(_), _) => Flow::NotMine,
            _ => Flow::NotMine,
        }
        .or_finished(self, r)
    }

    /// Picks the candidates from the inspected configs and starts the batch core.
    fn choose_candidates(
        &mut self,
        now: Now,
        r: &mut Replace,
        checks: &[super::ConfigCheck],
    ) -> Flow {
        if let Some(refusal) = self.refuse_named(now, r, checks) {
            return Flow::Done(refusal);
        }
        let mut runnable = Vec::new();
        for check in checks {
            if r.candidate_id.is_none() && check.config_id == r.old_config {
                continue;
            }
            let skip = r
                .candidate_id
                .is_none()
                .then(|| self.skip_reason(now, r.trigger, check.config_id))
                .flatten();
            match (&check.result, skip) {
                (Ok(()), None) => runnable.push(check.config_id),
                (Ok(()), Some(why)) => r
                    .notes
                    .push(format!("config {} skipped: {why}", check.config_id)),
                (Err(rejection), _) => r.notes.push(format!(
                    "config {} skipped: {}",
                    check.config_id, rejection.message
                )),
            }
        }
        let fresh: Vec<i64> = runnable
            .iter()
            .copied()
            .filter(|id| !self.failed_recently(now, *id))
            .collect();
        if !fresh.is_empty() && fresh.len() < runnable.len() {
            for id in runnable.iter().filter(|id| !fresh.contains(id)) {
                r.notes.push(format!(
                    "config {id} skipped: it failed a test in the last {} s",
                    super::FAILED_CANDIDATE_HOLD_MS / 1000
                ));
            }
            runnable = fresh;
        }
        if runnable.is_empty() {
            r.notes.push("no other enabled config to rotate to".into());
            return self.finish_replace(now, r, ReplaceResult::NoWorkingCandidate, None);
        }
        r.candidates = runnable
            .into_iter()
            .map(|config_id| Candidate {
                config_id,
                addr: None,
                probe: None,
                started_ms: None,
                result: None,
            })
            .collect();
        let batch = CoreId(self.fresh());
        self.cores.insert(batch, CoreRole::Batch);
        r.batch = Some(batch);
        r.phase = Phase::BatchStarting(batch);
        self.emit(Effect::StartCore {
            core: batch,
            spec: CoreSpec::Batch {
                config_ids: r.candidates.iter().map(|c| c.config_id).collect(),
            },
            ready_timeout_ms: self.config.ready_timeout_ms,
        });
        Flow::Continue
    }

    /// An explicitly named candidate that cannot run, is unknown or is quarantined is the
    /// caller's error.
    fn refuse_named(&self, now: Now, r: &Replace, checks: &[super::ConfigCheck]) -> Option<Reply> {
        let only = r.candidate_id?;
        match checks
            .iter()
            .find(|c| c.config_id == only)
            .map(|c| &c.result)
        {
            Some(Err(rejection)) => Some(error(rejection.code, rejection.message.clone())),
            None => Some(error(
                Code::NotFound,
                format!("config {only} not found; list stored configs with `xrat config list`"),
            )),
            Some(Ok(())) if self.quarantined(now, only) => {
                let why = self.skip_reason(now, r.trigger, only).unwrap_or_default();
                Some(error(
                    Code::Conflict,
                    format!("config {only} is {why}; test it again with `xrat config test {only}`, or name another config"),
                ))
            }
            Some(Ok(())) => None,
        }
    }

    fn batch_starting(&mut self, now: Now, r: &mut Replace, input: &Input) -> Flow {
        let batch = r.batch.expect("a batch is starting");
        match input {
            Input::CoreStarted { inbounds, .. } => {
                for (config_id, addr) in inbounds {
                    if let Some(c) = r.candidates.iter_mut().find(|c| c.config_id == *config_id) {
                        c.addr = Some(*addr);
                    }
                }
                Flow::Continue
            }
            Input::CoreReady { .. } => {
                r.phase = Phase::BatchProbing {
                    next: 0,
                    in_flight: 0,
                };
                self.batch_probing(now, r)
            }
            Input::CoreFailed { failure, .. } => {
                match failure {
                    StartFailure::Refused(rejection) => r.notes.push(rejection.message.clone()),
                    StartFailure::NotReady { .. } => {
                        r.notes.push(format!(
                            "the batch test core did not listen within {} ms",
                            self.config.ready_timeout_ms
                        ));
                        self.emit(Effect::StopCore {
                            core: batch,
                            grace_ms: 0,
                        });
                        r.stopping.insert(batch);
                    }
                }
                self.finish_replace(now, r, ReplaceResult::NoWorkingCandidate, None)
            }
            Input::CoreExited { log_tail, .. } => {
                r.notes
                    .push(format!("the batch test core exited at start; {log_tail}"));
                self.finish_replace(now, r, ReplaceResult::NoWorkingCandidate, None)
            }
            _ => Flow::NotMine,
        }
    }

    /// Starts probes while there is room; once the batch is decided, ranks it and switches.
    fn batch_probing(&mut self, now: Now, r: &mut Replace) -> Flow {
        let Phase::BatchProbing { next, in_flight } = &mut r.phase else {
            return Flow::Continue;
        };
        let limit = self.config.test_concurrency.max(1) as usize;
        let mut start = Vec::new();
        while *in_flight < limit && *next < r.candidates.len() {
            let c = &mut r.candidates[*next];
            *next += 1;
            let Some(addr) = c.addr else {
                c.result = Some(Err("the batch core reported no inbound for it".into()));
                continue;
            };
            let probe = ProbeId(self.next_id);
            self.next_id += 1;
            c.probe = Some(probe);
            c.started_ms = Some(now.monotonic_ms);
            *in_flight += 1;
            start.push((probe, addr));
        }
        let all_started = *next == r.candidates.len();
        let idle = *in_flight == 0;
        for (probe, addr) in start {
            self.emit(Effect::Probe {
                probe,
                addr,
                kind: ProbeKind::Http,
                timeout_ms: self.config.probe_timeout_ms,
            });
        }
        if !(all_started && (idle || rank::decided(&r.trials(), now.monotonic_ms))) {
            return Flow::Continue;
        }
        self.batch_decided(now, r)
    }

    fn batch_decided(&mut self, now: Now, r: &mut Replace) -> Flow {
        // A batch core that already exited (it crashed while probed) has no exit left to wait for.
        if let Some(batch) = r.batch.filter(|b| self.cores.contains_key(b)) {
            self.emit(Effect::StopCore {
                core: batch,
                grace_ms: 0,
            });
            r.stopping.insert(batch);
        }
        for c in &r.candidates {
            match &c.result {
                Some(Ok(_)) => {}
                Some(Err(why)) => r.notes.push(format!(
                    "config {} failed the batch test: {why}",
                    c.config_id
                )),
                None => r.notes.push(format!(
                    "config {} was still being probed when a faster one had answered",
                    c.config_id
                )),
            }
        }
        self.note_verdicts(now, r);
        let ranked: VecDeque<usize> = rank::rank(&r.trials()).into();
        if ranked.is_empty() {
            return self.finish_replace(now, r, ReplaceResult::NoWorkingCandidate, None);
        }
        debug_assert!(ranked
            .iter()
            .all(|i| matches!(r.candidates[*i].result, Some(Ok(_)))));
        if self.config.front {
            // Make-before-break: the old pool core keeps serving until the new one took over.
            r.phase = Phase::Switching {
                ranked,
                current: None,
                restoring: false,
                step: Step::Stopping {
                    core: r.old_core,
                    then_end: None,
                },
            };
            return self.launch_next(now, r);
        }
        let step = match self.session.as_ref() {
            Some(s) if s.info.id == r.old_session && s.pid_running => {
                self.emit(Effect::StopCore {
                    core: r.old_core,
                    grace_ms: STOP_GRACE_MS,
                });
                Step::Stopping {
                    core: r.old_core,
                    then_end: Some((r.old_session, "rotated")),
                }
            }
            _ => {
                // The old core already exited (its row was ended then).
                self.session.take_if(|s| s.info.id == r.old_session);
                r.phase = Phase::Switching {
                    ranked,
                    current: None,
                    restoring: false,
                    step: Step::Stopping {
                        core: r.old_core,
                        then_end: None,
                    },
                };
                return self.launch_next(now, r);
            }
        };
        r.phase = Phase::Switching {
            ranked,
            current: None,
            restoring: false,
            step,
        };
        Flow::Continue
    }

    /// The batch's verdicts: failures held in memory, and every verdict recorded (undecided
    /// candidates were not tested to the end, so they are not).
    fn note_verdicts(&mut self, now: Now, r: &Replace) {
        let failed: Vec<i64> = r
            .candidates
            .iter()
            .filter(|c| matches!(c.result, Some(Err(_))))
            .map(|c| c.config_id)
            .collect();
        for id in failed {
            self.mark_failed(now, id);
        }
        // Undecided candidates were not tested to the end: only verdicts are recorded.
        let records = r
            .candidates
            .iter()
            .filter_map(|c| {
                let result = c.result.as_ref()?;
                Some(TestRecord::from_probe(c.config_id, result, now.unix_secs))
            })
            .collect();
        self.record_tests(TestSource::Rotation, records);
    }

    /// Builds the answer, records the event and the outcome, and finishes once every stopped
    /// core exited.
    pub(super) fn finish_replace(
        &mut self,
        now: Now,
        r: &mut Replace,
        result: ReplaceResult,
        session: Option<(SessionInfo, CoreId)>,
    ) -> Flow {
        let tested = r.tested();
        let candidate = match &r.phase {
            Phase::Switching {
                current: Some(i), ..
            } => Some(r.candidates[*i].config_id),
            _ => None,
        };
        let mut detail = format!("{tested} candidate(s) tested");
        for note in &r.notes {
            detail.push_str("; ");
            detail.push_str(note);
        }
        let new = session.as_ref().map(|(info, _)| info.clone());
        if result == ReplaceResult::Switched {
            let id = new.as_ref().map_or(0, |s| s.config_id);
            detail = format!(
                "switched from config {} to config {id}; {detail}",
                r.old_config
            );
        }
        if let Some((info, core)) = session {
            self.session = Some(Session::new(info, core));
        }
        debug_assert!(
            result != ReplaceResult::NoWorkingCandidate
                || self
                    .session
                    .as_ref()
                    .is_some_and(|s| s.info.id == r.old_session),
            "a rotation that found no candidate touched the session"
        );
        self.emit(Effect::Persist(RotationEvent {
            at: now.unix_secs,
            trigger: r.trigger,
            from_config_id: Some(r.old_config),
            // Front mode restores by keeping the old session running: it is still the config
            // in force after the rotation.
            to_config_id: match (&new, result) {
                (Some(s), _) => Some(s.config_id),
                (None, ReplaceResult::Restored) => self.session.as_ref().map(|s| s.info.config_id),
                _ => None,
            },
            result,
            detail: detail.clone(),
        }));
        self.log(format!(
            "rotation ({}) {}: {detail}",
            trigger_name(r.trigger),
            result.name()
        ));
        self.rotation_finished(now, r.trigger, result, candidate);
        let kept = self.session.as_ref().map(|s| &s.info);
        let shown = new.as_ref().or(kept);
        let reply = Reply::Replaced(Box::new(ReplacePayload {
            trigger: r.trigger,
            replaced: result == ReplaceResult::Switched,
            old_session_id: r.old_session,
            new_config_id: shown.map(|s| s.config_id),
            new_session_id: shown.map(|s| s.id),
            new_pid: shown.map(|s| s.pid),
            tested_candidates: tested,
            result: result.name().to_string(),
            detail,
        }));
        r.phase = Phase::Finishing(reply);
        self.maybe_finished(r)
    }

    /// Answers once nothing the rotation stopped is still running.
    pub(super) fn maybe_finished(&mut self, r: &mut Replace) -> Flow {
        match &r.phase {
            Phase::Finishing(reply) if r.stopping.is_empty() => Flow::Done(reply.clone()),
            _ => Flow::Continue,
        }
    }
}

trait OrFinished {
    fn or_finished(self, sup: &mut Supervisor, r: &mut Replace) -> Flow;
}

impl OrFinished for Flow {
    /// A phase that just moved to Finishing with nothing left to wait for is done.
    fn or_finished(self, sup: &mut Supervisor, r: &mut Replace) -> Flow {
        match self {
            Flow::Continue => sup.maybe_finished(r),
            other => other,
        }
    }
}
