//! The switch: stop whatever runs, start the next ranked candidate on the same ports, wait until
//! it accepts, verify it with one probe; restore the old config when none works. Then the event.

use crate::store::NewRotationEvent;
use crate::supervisor::{Input, Now, OperationOutput, ReplaceOutcome, SessionInfo};

use super::super::probes::Purpose;
use super::super::runtime::{error_chain, STOP_GRACE_MS};
use super::super::Reactor;
use super::{await_port, trigger_name, Phase, ReplaceJob, Step};

/// What one switching step decided.
enum Flow {
    /// Look again after the next event or tick.
    Wait,
    /// Go on with the next step now.
    Next,
    /// The rotation is over.
    Done(Option<SessionInfo>, &'static str),
}

impl Reactor {
    /// The switching phase: stop whatever runs, start the next candidate, wait, verify.
    pub(super) fn switching(
        &mut self,
        now: Now,
        job: &mut ReplaceJob,
    ) -> Option<(Option<SessionInfo>, &'static str)> {
        // Bounded: every `Next` consumes a step, and each candidate has at most four.
        for _ in 0..4 * (job.candidates.len() + 2) {
            let Phase::Switching { step, .. } = &job.phase else {
                unreachable!()
            };
            let flow = match step {
                Step::Stopping { .. } => self.step_stopping(now, job),
                Step::Launch => self.step_launch(now, job),
                Step::Starting { .. } => self.step_starting(now, job),
                Step::Verifying { .. } => Flow::Wait,
            };
            match flow {
                Flow::Wait => return None,
                Flow::Next => {}
                Flow::Done(session, result) => return Some((session, result)),
            }
        }
        None
    }

    /// Waits for the running core to exit (SIGKILL after the grace period), then launches.
    fn step_stopping(&mut self, now: Now, job: &mut ReplaceJob) -> Flow {
        let Phase::Switching {
            step:
                Step::Stopping {
                    session_id,
                    deadline_ms,
                    killed,
                },
            ..
        } = &mut job.phase
        else {
            unreachable!()
        };
        let id = *session_id;
        if self.runtime.exited(id).is_none() && self.runtime.is_tracked(id) {
            if now.monotonic_ms >= *deadline_ms && !*killed {
                self.runtime.stop(id, libc::SIGKILL);
                *killed = true;
                *deadline_ms = now.monotonic_ms + STOP_GRACE_MS;
            }
            return Flow::Wait;
        }
        let old = id == job.old_session;
        self.runtime
            .finish_session(id, now, if old { "rotated" } else { "failed_probe" });
        if old {
            self.sup.handle(now, Input::SessionEnded { session_id: id });
        }
        set_step(job, Step::Launch);
        Flow::Next
    }

    /// Starts the next ranked candidate, or the old config once none is left.
    fn step_launch(&mut self, now: Now, job: &mut ReplaceJob) -> Flow {
        let Phase::Switching {
            ranked,
            current,
            restoring,
            ..
        } = &mut job.phase
        else {
            unreachable!()
        };
        if *restoring {
            return Flow::Done(None, "failed");
        }
        let prepared = match ranked.pop_front() {
            Some(next) => {
                *current = Some(next);
                job.candidates[next].prepared.clone()
            }
            None => {
                *restoring = true;
                job.notes.push(format!(
                    "no candidate worked; restoring config {}",
                    job.old_config
                ));
                match self.runtime.prepare(job.old_config) {
                    Ok(prepared) => prepared,
                    Err(r) => {
                        job.notes.push(format!(
                            "restoring config {} failed: {}",
                            job.old_config, r.message
                        ));
                        return Flow::Done(None, "failed");
                    }
                }
            }
        };
        match self.runtime.launch(&prepared, now) {
            Ok((session, spawned)) => {
                self.watch_core(session.id, spawned);
                await_port(
                    &mut job.waiting,
                    &mut job.next_ready_probe_ms,
                    &session.socks_addr,
                    now,
                );
                let deadline_ms = now.monotonic_ms + self.runtime.ready_timeout_ms();
                set_step(
                    job,
                    Step::Starting {
                        session,
                        deadline_ms,
                    },
                );
            }
            Err(r) => job.notes.push(format!(
                "config {} did not start: {}",
                prepared.config_id, r.message
            )),
        }
        Flow::Next
    }

    /// Waits until the new core accepts, then verifies it (a restored old config is not verified:
    /// it is the last resort either way).
    fn step_starting(&mut self, now: Now, job: &mut ReplaceJob) -> Flow {
        let Phase::Switching {
            restoring,
            step:
                Step::Starting {
                    session,
                    deadline_ms,
                },
            ..
        } = &job.phase
        else {
            unreachable!()
        };
        let (session, deadline_ms, restoring) = (session.clone(), *deadline_ms, *restoring);
        if let Some(how) = self.runtime.exited(session.id) {
            job.notes
                .push(format!("config {} core {how} at start", session.config_id));
            self.runtime.finish_session(session.id, now, "failed");
            set_step(job, Step::Launch);
            return Flow::Next;
        }
        if self.poll_ready(now, &mut job.waiting, &mut job.next_ready_probe_ms) {
            if restoring {
                return Flow::Done(Some(session), "restored");
            }
            let addr = session
                .socks_addr
                .parse()
                .expect("rendered from a SocketAddr");
            self.start_health_probe(now, addr, Purpose::Verify { op: job.op });
            set_step(job, Step::Verifying { session });
            return Flow::Wait;
        }
        if now.monotonic_ms < deadline_ms {
            return Flow::Wait;
        }
        job.notes.push(format!(
            "config {} did not listen within {} ms",
            session.config_id,
            self.runtime.ready_timeout_ms()
        ));
        self.runtime.stop(session.id, libc::SIGKILL);
        let deadline_ms = now.monotonic_ms + STOP_GRACE_MS;
        set_step(
            job,
            Step::Stopping {
                session_id: session.id,
                deadline_ms,
                killed: true,
            },
        );
        Flow::Next
    }

    /// Ends a rotation: records the event, tells the supervisor.
    pub(super) fn finish_replace(
        &mut self,
        now: Now,
        job: ReplaceJob,
        session: Option<SessionInfo>,
        result: &'static str,
    ) {
        let replaced = result == "switched";
        let tested = job.candidates.iter().filter(|c| c.result.is_some()).count() as u32;
        let candidate = match &job.phase {
            Phase::Switching {
                current: Some(i), ..
            } => Some(job.candidates[*i].prepared.config_id),
            _ => None,
        };
        let mut detail = format!("{tested} candidate(s) tested");
        for note in &job.notes {
            detail.push_str("; ");
            detail.push_str(note);
        }
        if replaced {
            let id = session.as_ref().map_or(0, |s| s.config_id);
            detail = format!(
                "switched from config {} to config {id}; {detail}",
                job.old_config
            );
        }
        let event = NewRotationEvent {
            at: now.unix_secs,
            trigger: trigger_name(job.trigger).to_string(),
            from_config_id: Some(job.old_config),
            to_config_id: session.as_ref().map(|s| s.config_id),
            result: result.to_string(),
            detail: detail.clone(),
        };
        if let Err(e) = self.runtime.store().insert_rotation_event(&event) {
            eprintln!(
                "xrat: cannot record the rotation event: {}",
                error_chain(&e)
            );
        }
        eprintln!(
            "xrat: rotation ({}) {result}: {detail}",
            trigger_name(job.trigger)
        );
        let outcome = ReplaceOutcome {
            replaced,
            old_session_id: job.old_session,
            session,
            tested_candidates: tested,
            candidate,
            result,
            detail,
        };
        let output = OperationOutput::Replaced(Box::new(outcome));
        self.sup.handle(
            now,
            Input::OperationDone {
                op: job.op,
                outcome: Ok(output),
            },
        );
    }
}

fn set_step(job: &mut ReplaceJob, next: Step) {
    if let Phase::Switching { step, .. } = &mut job.phase {
        *step = next;
    }
}
