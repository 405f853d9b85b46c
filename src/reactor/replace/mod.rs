//! Rotation (DESIGN §7): test every candidate in one batch core, then switch the session to the
//! best one that works, falling back down the ranking and finally to the old config.
//!
//! Phases: the batch core starts (all its SOCKS inbounds listening) → candidates are probed, at
//! most `test_concurrency` at once, ranked by latency then id → switching: stop the old core,
//! start the candidate on the same ports, wait until it listens, pass one probe. The old session
//! serves traffic until the switch begins. Every wait is a ring completion or a deadline.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use crate::ipc::protocol::{Code, Trigger};
use crate::supervisor::{Input, Now, OpId, SessionInfo};

use super::probes::{ProbeResult, Purpose};
use super::process;
use super::runtime::{error_chain, Prepared, STOP_GRACE_MS};
use super::Reactor;

mod rank;
mod switch;

/// The `Proc` session id the batch test core is tracked under (real sessions are positive).
pub const BATCH_SESSION: i64 = -1;
/// Pause between checks that a starting core listens.
const LISTEN_POLL_MS: u64 = 20;

struct Candidate {
    prepared: Prepared,
    port: u16,
    started_ms: Option<u64>,
    result: Option<ProbeResult>,
}

enum Step {
    /// The running core must exit before the next one can take its ports.
    Stopping {
        session_id: i64,
        deadline_ms: u64,
        killed: bool,
    },
    /// Start the next candidate (or the old config when restoring).
    Launch,
    /// The new core runs; its SOCKS port must listen before the deadline.
    Starting {
        session: SessionInfo,
        deadline_ms: u64,
    },
    /// One probe through the new session decides.
    Verifying { session: SessionInfo },
}

enum Phase {
    BatchStarting {
        pid: u32,
        deadline_ms: u64,
    },
    BatchProbing {
        pid: u32,
        next: usize,
        in_flight: usize,
    },
    Switching {
        ranked: VecDeque<usize>,
        current: Option<usize>,
        restoring: bool,
        step: Step,
    },
}

/// One rotation in progress.
pub(super) struct ReplaceJob {
    op: OpId,
    trigger: Trigger,
    old_session: i64,
    old_config: i64,
    candidates: Vec<Candidate>,
    notes: Vec<String>,
    phase: Phase,
    next_check_ms: u64,
    /// Ports that must accept a connection (checked through the ring, one at a time) before
    /// the current phase may go on.
    waiting: VecDeque<u16>,
    next_ready_probe_ms: u64,
}

impl ReplaceJob {
    /// The earliest moment this job must look at the world again.
    pub fn next_deadline(&self) -> u64 {
        match &self.phase {
            Phase::Switching {
                step: Step::Stopping { deadline_ms, .. },
                ..
            } => *deadline_ms,
            _ => self.next_check_ms,
        }
    }

    /// True when `session_id`'s core matters to this job.
    pub fn involves(&self, session_id: i64) -> bool {
        session_id == BATCH_SESSION
            || session_id == self.old_session
            || matches!(&self.phase, Phase::Switching { step: Step::Starting { session, .. } | Step::Verifying { session }, .. } if session.id == session_id)
            || matches!(&self.phase, Phase::Switching { step: Step::Stopping { session_id: s, .. }, .. } if *s == session_id)
    }
}

/// Makes the socks port of `socks_addr` the one to wait for.
fn await_port(waiting: &mut VecDeque<u16>, next: &mut u64, socks_addr: &str, now: Now) {
    waiting.clear();
    waiting.extend(
        socks_addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok()),
    );
    *next = now.monotonic_ms;
}

/// Free loopback ports for the batch inbounds (bound, then released for the core to take).
fn free_ports(listen: IpAddr, count: usize) -> std::io::Result<Vec<u16>> {
    let held: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind((listen, 0)))
        .collect::<Result<_, _>>()?;
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

impl Reactor {
    /// Begins a rotation.
    pub(super) fn start_replace(
        &mut self,
        now: Now,
        op: OpId,
        trigger: Trigger,
        candidate_id: Option<i64>,
        old: (i64, i64),
    ) {
        let (old_session, old_config) = old;
        let mut notes = Vec::new();
        let ids: Vec<i64> = match candidate_id {
            Some(id) => vec![id],
            None => match self.runtime.store().enabled_configs() {
                Ok(rows) => rows
                    .into_iter()
                    .map(|c| c.id)
                    .filter(|id| *id != old_config)
                    .collect(),
                Err(e) => return self.fail_op(now, op, Code::Internal, error_chain(&e)),
            },
        };
        let mut candidates = Vec::new();
        for id in ids {
            match self.runtime.prepare(id) {
                Ok(prepared) => candidates.push(Candidate {
                    prepared,
                    port: 0,
                    started_ms: None,
                    result: None,
                }),
                // An explicitly named candidate that cannot run is the caller's error.
                Err(rejection) if candidate_id.is_some() => {
                    return self.fail_op(now, op, rejection.code, rejection.message)
                }
                Err(rejection) => notes.push(format!("config {id} skipped: {}", rejection.message)),
            }
        }
        let mut job = ReplaceJob {
            op,
            trigger,
            old_session,
            old_config,
            candidates,
            notes,
            phase: Phase::BatchStarting {
                pid: 0,
                deadline_ms: 0,
            },
            next_check_ms: now.monotonic_ms,
            waiting: VecDeque::new(),
            next_ready_probe_ms: now.monotonic_ms,
        };
        if job.candidates.is_empty() {
            job.notes
                .push("no other enabled config to rotate to".into());
            return self.finish_replace(now, job, None, "no_working_candidate");
        }
        match self.spawn_batch(now, &mut job) {
            Ok(pid) => {
                job.phase = Phase::BatchStarting {
                    pid,
                    deadline_ms: now.monotonic_ms + self.runtime.ready_timeout_ms(),
                };
                job.waiting = job.candidates.iter().map(|c| c.port).collect();
                self.runtime.replace = Some(Box::new(job));
            }
            Err(why) => {
                job.notes.push(why);
                self.finish_replace(now, job, None, "no_working_candidate");
            }
        }
    }

    fn fail_op(&mut self, now: Now, op: OpId, code: Code, message: String) {
        let rejection = crate::supervisor::Rejection {
            code,
            message,
            close: false,
        };
        self.sup.handle(
            now,
            Input::OperationDone {
                op,
                outcome: Err(rejection),
            },
        );
    }

    /// Renders and starts the batch core: one SOCKS inbound per candidate.
    fn spawn_batch(&mut self, now: Now, job: &mut ReplaceJob) -> Result<u32, String> {
        self.runtime.forget_exited(BATCH_SESSION);
        let listen = self.runtime.listen_addr();
        let ports = free_ports(listen, job.candidates.len())
            .map_err(|e| format!("no free ports for the batch test: {e}"))?;
        for (candidate, port) in job.candidates.iter_mut().zip(ports) {
            candidate.port = port;
        }
        let pairs: Vec<(u16, &crate::links::Outbound)> = job
            .candidates
            .iter()
            .map(|c| (c.port, &c.prepared.outbound))
            .collect();
        let core = job.candidates[0].prepared.core.clone();
        let rendered =
            crate::core::render_batch(&core, listen, &pairs).map_err(|e| error_chain(&e))?;
        let path = self
            .runtime
            .paths()
            .runtime_dir()
            .join(format!("batch-{}.json", job.op.0));
        let log = self.runtime.paths().logs_dir().join("batch.log");
        super::runtime::write_private(&path, &rendered)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let spawned = process::spawn(&core.path, &crate::core::run_args(&core, &path), &log)
            .map_err(|e| {
                format!(
                    "cannot start the batch test core {}: {e}",
                    core.path.display()
                )
            })?;
        let pid = spawned.pid;
        self.watch_core(BATCH_SESSION, spawned);
        let _ = now;
        Ok(pid)
    }

    /// True once every port in `waiting` accepted a connection; otherwise starts the next
    /// connect check through the ring when one is due.
    fn poll_ready(&mut self, now: Now, waiting: &mut VecDeque<u16>, next: &mut u64) -> bool {
        let Some(port) = waiting.front() else {
            return true;
        };
        if !self.runtime.ready_probe_busy() && now.monotonic_ms >= *next {
            let addr = SocketAddr::new(self.runtime.listen_addr(), *port).to_string();
            self.start_probe(&addr);
            *next = u64::MAX;
        }
        false
    }

    /// The connect check of `waiting`'s first port completed.
    pub(super) fn replace_ready(&mut self, now: Now, accepted: bool) {
        let Some(job) = self.runtime.replace.as_mut() else {
            return;
        };
        if accepted {
            job.waiting.pop_front();
            job.next_ready_probe_ms = now.monotonic_ms;
        } else {
            job.next_ready_probe_ms = now.monotonic_ms + LISTEN_POLL_MS;
        }
        self.advance_replace(now);
    }

    /// A candidate or verification probe finished.
    pub(super) fn replace_probe_done(&mut self, now: Now, purpose: Purpose, result: ProbeResult) {
        let Some(mut job) = self.runtime.replace.take() else {
            return;
        };
        match (purpose, &mut job.phase) {
            (Purpose::Candidate { op, config_id }, Phase::BatchProbing { in_flight, .. })
                if op == job.op =>
            {
                *in_flight -= 1;
                if let Some(c) = job
                    .candidates
                    .iter_mut()
                    .find(|c| c.prepared.config_id == config_id)
                {
                    c.result = Some(result);
                }
            }
            (Purpose::Verify { op }, Phase::Switching { step, .. }) if op == job.op => {
                let Step::Verifying { session } = step else {
                    self.runtime.replace = Some(job);
                    return;
                };
                let session = session.clone();
                if result.is_ok() {
                    return self.finish_replace(now, *job, Some(session), "switched");
                }
                let why = result.err().unwrap_or_default();
                self.runtime.stop(session.id, libc::SIGTERM);
                *step = Step::Stopping {
                    session_id: session.id,
                    deadline_ms: now.monotonic_ms + STOP_GRACE_MS,
                    killed: false,
                };
                job.notes.push(format!(
                    "config {} failed its probe after the switch: {why}",
                    session.config_id
                ));
            }
            _ => {
                self.runtime.replace = Some(job);
                return;
            }
        }
        self.runtime.replace = Some(job);
        self.advance_replace(now);
    }

    /// Moves the rotation forward after any event or tick.
    pub(super) fn advance_replace(&mut self, now: Now) {
        let Some(mut job) = self.runtime.replace.take() else {
            return;
        };
        job.next_check_ms = now.monotonic_ms + LISTEN_POLL_MS;
        let done = match job.phase {
            Phase::BatchStarting { pid, deadline_ms } => {
                self.batch_starting(now, &mut job, pid, deadline_ms)
            }
            Phase::BatchProbing { pid, .. } => self.batch_probing(now, &mut job, pid),
            Phase::Switching { .. } => self.switching(now, &mut job),
        };
        match done {
            None => self.runtime.replace = Some(job),
            Some((session, result)) => self.finish_replace(now, *job, session, result),
        }
    }

    fn batch_starting(
        &mut self,
        now: Now,
        job: &mut ReplaceJob,
        pid: u32,
        deadline_ms: u64,
    ) -> Option<(Option<SessionInfo>, &'static str)> {
        let log = self.runtime.paths().logs_dir().join("batch.log");
        if self.runtime.exited_pid(pid).is_some() {
            job.notes.push(format!(
                "the batch test core exited at start; batch.log ends with:\n{}",
                process::log_tail(&log, 8)
            ));
            return Some((None, "no_working_candidate"));
        }
        if self.poll_ready(now, &mut job.waiting, &mut job.next_ready_probe_ms) {
            job.phase = Phase::BatchProbing {
                pid,
                next: 0,
                in_flight: 0,
            };
            return self.batch_probing(now, job, pid);
        }
        if now.monotonic_ms >= deadline_ms {
            process::signal_group(pid, libc::SIGKILL);
            job.notes.push(format!(
                "the batch test core did not listen within {} ms",
                self.runtime.ready_timeout_ms()
            ));
            return Some((None, "no_working_candidate"));
        }
        None
    }

    fn batch_probing(
        &mut self,
        now: Now,
        job: &mut ReplaceJob,
        pid: u32,
    ) -> Option<(Option<SessionInfo>, &'static str)> {
        let Phase::BatchProbing {
            next, in_flight, ..
        } = &mut job.phase
        else {
            unreachable!()
        };
        let limit = self.runtime.test_concurrency();
        let listen = self.runtime.listen_addr();
        let mut start = Vec::new();
        while *in_flight < limit && *next < job.candidates.len() {
            let c = &mut job.candidates[*next];
            c.started_ms = Some(now.monotonic_ms);
            start.push((SocketAddr::new(listen, c.port), c.prepared.config_id));
            *next += 1;
            *in_flight += 1;
        }
        let finished = *next == job.candidates.len() && (*in_flight == 0 || decided(job, now));
        // Probe results always arrive later (a probe that cannot even start is reported at the
        // end of the batch), so starting them needs no job in place.
        for (addr, config_id) in start {
            self.start_health_probe(
                now,
                addr,
                Purpose::Candidate {
                    op: job.op,
                    config_id,
                },
            );
        }
        if !finished {
            return None;
        }
        process::signal_group(pid, libc::SIGKILL);
        for c in &job.candidates {
            let id = c.prepared.config_id;
            match &c.result {
                Some(Ok(_)) => {}
                Some(Err(why)) => job
                    .notes
                    .push(format!("config {id} failed the batch test: {why}")),
                None => job.notes.push(format!(
                    "config {id} was still being probed when a faster one had answered"
                )),
            }
        }
        let order: VecDeque<usize> = rank::rank(&trials(job)).into();
        if order.is_empty() {
            return Some((None, "no_working_candidate"));
        }
        job.phase = Phase::Switching {
            ranked: order,
            current: None,
            restoring: false,
            step: Step::Stopping {
                session_id: job.old_session,
                deadline_ms: now.monotonic_ms + STOP_GRACE_MS,
                killed: false,
            },
        };
        self.runtime.stop(job.old_session, libc::SIGTERM);
        self.switching(now, job)
    }
}

fn decided(job: &ReplaceJob, now: Now) -> bool {
    rank::decided(&trials(job), now.monotonic_ms)
}

fn trials(job: &ReplaceJob) -> Vec<rank::Trial<'_>> {
    job.candidates
        .iter()
        .map(|c| rank::Trial {
            config_id: c.prepared.config_id,
            started_ms: c.started_ms,
            result: c.result.as_ref(),
        })
        .collect()
}

fn trigger_name(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Manual => "manual",
        Trigger::Timer => "timer",
        Trigger::HealthCheckFailed => "health_check_failed",
    }
}
