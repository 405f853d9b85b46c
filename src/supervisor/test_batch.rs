//! `config_test` (issue 12 part 2): the rotation's batch test (DESIGN §7) on demand, without a
//! switch. Inspect the configs → one batch core with an inbound per runnable config → probe
//! every one (at most `concurrency` at once, no early decision: every config gets its verdict)
//! → stop the batch core → record the results ([`Effect::RecordTests`]) and answer once the core
//! exited. It is a runtime operation (the busy rule), so it never runs beside a rotation's batch.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::ctest::{ErrorKind, TestOutcome};
use crate::ipc::protocol::{ConfigTestPayload, Request};
use crate::probe::ProbeTarget;

use super::ops::{input_core, Flow};
use super::{
    error, CoreId, CoreRole, CoreSpec, Effect, Input, InspectId, Now, ProbeId, ProbeKind, Reply,
    Selection, StartFailure, Supervisor, TestSource,
};

#[derive(Debug)]
struct Member {
    config_id: i64,
    addr: Option<SocketAddr>,
    probe: Option<ProbeId>,
}

#[derive(Debug)]
enum Phase {
    Inspecting(InspectId),
    Starting(CoreId),
    Probing {
        next: usize,
        in_flight: usize,
    },
    /// Over; the batch core was stopped and its exit is awaited.
    Stopping(CoreId),
}

/// A `config_test` in progress.
#[derive(Debug)]
pub(super) struct TestBatch {
    /// The configs asked for; empty for every enabled one.
    asked: Vec<i64>,
    url: String,
    target: Option<Arc<ProbeTarget>>,
    timeout_ms: u64,
    concurrency: u32,
    members: Vec<Member>,
    /// Results in the order asked (configs that cannot run get theirs at inspect).
    results: Vec<Option<TestOutcome>>,
    order: Vec<i64>,
    batch: Option<CoreId>,
    phase: Phase,
}

impl TestBatch {
    /// From the request; `default_url` is `health.probe_url` (the request was validated by the
    /// decoder, so a URL given there parses).
    pub fn new(request: Request, default_url: &str, timeout_ms: u64, concurrency: u32) -> Self {
        let Request::ConfigTest {
            config_ids,
            url,
            timeout_ms: t,
            concurrency: c,
        } = request
        else {
            unreachable!("a config_test request")
        };
        let target = url
            .as_deref()
            .and_then(|u| ProbeTarget::parse(u).ok())
            .map(Arc::new);
        TestBatch {
            asked: config_ids,
            url: url.unwrap_or_else(|| default_url.to_string()),
            target,
            timeout_ms: t.unwrap_or(timeout_ms),
            concurrency: c.unwrap_or(concurrency).max(1),
            members: Vec::new(),
            results: Vec::new(),
            order: Vec::new(),
            batch: None,
            phase: Phase::Inspecting(InspectId(0)),
        }
    }

    fn slot(&mut self, config_id: i64) -> Option<&mut Option<TestOutcome>> {
        let index = self.order.iter().position(|id| *id == config_id)?;
        self.results.get_mut(index)
    }
}

impl Supervisor {
    pub(super) fn begin_test(&mut self, t: &mut TestBatch) -> Flow {
        let inspect = InspectId(self.fresh());
        t.phase = Phase::Inspecting(inspect);
        let selection = if t.asked.is_empty() {
            Selection::Enabled
        } else {
            Selection::All
        };
        self.emit(Effect::Inspect { inspect, selection });
        Flow::Continue
    }

    pub(super) fn step_test(&mut self, now: Now, t: &mut TestBatch, input: &Input) -> Flow {
        match (&t.phase, input) {
            (Phase::Inspecting(want), Input::Inspected { inspect, configs }) if want == inspect => {
                match configs {
                    Err(rejection) => Flow::Done(error(rejection.code, rejection.message.clone())),
                    Ok(checks) => self.test_inspected(now, t, checks),
                }
            }
            (Phase::Starting(core), _) if input_core(input) == Some(*core) => {
                self.test_starting(now, t, *core, input)
            }
            (Phase::Probing { .. }, Input::ProbeDone { probe, result }) => {
                let Some(m) = t.members.iter().find(|m| m.probe == Some(*probe)) else {
                    return Flow::NotMine;
                };
                let outcome = TestOutcome::from_probe(m.config_id, result, now.unix_secs);
                let id = m.config_id;
                if let Some(slot) = t.slot(id) {
                    *slot = Some(outcome);
                }
                if let Phase::Probing { in_flight, .. } = &mut t.phase {
                    *in_flight -= 1;
                }
                self.test_probing(now, t)
            }
            (Phase::Stopping(core), Input::CoreExited { core: exited, .. }) if exited == core => {
                self.test_done(now, t)
            }
            _ => Flow::NotMine,
        }
    }

    /// Unknown, disabled (with every enabled one asked) and unrunnable configs get their result
    /// now; the rest go into one batch core.
    fn test_inspected(
        &mut self,
        now: Now,
        t: &mut TestBatch,
        checks: &[super::ConfigCheck],
    ) -> Flow {
        t.order = if t.asked.is_empty() {
            checks.iter().map(|c| c.config_id).collect()
        } else {
            t.asked.clone()
        };
        t.results = vec![None; t.order.len()];
        for index in 0..t.order.len() {
            let id = t.order[index];
            match checks.iter().find(|c| c.config_id == id).map(|c| &c.result) {
                Some(Ok(())) => t.members.push(Member {
                    config_id: id,
                    addr: None,
                    probe: None,
                }),
                Some(Err(rejection)) => {
                    t.results[index] = Some(TestOutcome::failed(
                        id,
                        ErrorKind::Unsupported,
                        rejection.message.clone(),
                        now.unix_secs,
                    ));
                }
                None => {
                    let why = format!("config {id} not found; list them with `xrat config list`");
                    t.results[index] = Some(TestOutcome::failed(
                        id,
                        ErrorKind::Unsupported,
                        why,
                        now.unix_secs,
                    ));
                }
            }
        }
        if t.members.is_empty() {
            return self.test_done(now, t);
        }
        let config_ids = t.members.iter().map(|m| m.config_id).collect();
        let core = self.start_core(CoreRole::Batch, CoreSpec::Batch { config_ids });
        t.batch = Some(core);
        t.phase = Phase::Starting(core);
        Flow::Continue
    }

    fn test_starting(&mut self, now: Now, t: &mut TestBatch, core: CoreId, input: &Input) -> Flow {
        let failed = match input {
            Input::CoreStarted { inbounds, .. } => {
                for (config_id, addr) in inbounds {
                    if let Some(m) = t.members.iter_mut().find(|m| m.config_id == *config_id) {
                        m.addr = Some(*addr);
                    }
                }
                return Flow::Continue;
            }
            Input::CoreReady { .. } => {
                t.phase = Phase::Probing {
                    next: 0,
                    in_flight: 0,
                };
                return self.test_probing(now, t);
            }
            Input::CoreFailed { failure, .. } => match failure {
                StartFailure::Refused(rejection) => rejection.message.clone(),
                StartFailure::NotReady { log_tail, .. } => {
                    self.emit(Effect::StopCore { core, grace_ms: 0 });
                    let ms = self.config.ready_timeout_ms;
                    let why = format!("the test core did not listen within {ms} ms; {log_tail}");
                    self.fail_members(now, t, &why);
                    t.phase = Phase::Stopping(core);
                    return Flow::Continue;
                }
            },
            Input::CoreExited { log_tail, .. } => {
                format!("the test core exited at start; {log_tail}")
            }
            _ => return Flow::NotMine,
        };
        self.fail_members(now, t, &failed);
        self.test_done(now, t)
    }

    /// Every member without a result fails with `why` (the core never served it).
    fn fail_members(&mut self, now: Now, t: &mut TestBatch, why: &str) {
        let ids: Vec<i64> = t.members.iter().map(|m| m.config_id).collect();
        for id in ids {
            if let Some(slot) = t.slot(id).filter(|s| s.is_none()) {
                let outcome =
                    TestOutcome::failed(id, ErrorKind::CoreFailed, why.into(), now.unix_secs);
                *slot = Some(outcome);
            }
        }
    }

    /// Starts probes while there is room; once every member has its verdict, stops the core.
    fn test_probing(&mut self, now: Now, t: &mut TestBatch) -> Flow {
        let Phase::Probing { next, in_flight } = &mut t.phase else {
            return Flow::Continue;
        };
        let mut start = Vec::new();
        while *in_flight < t.concurrency as usize && *next < t.members.len() {
            let m = &mut t.members[*next];
            *next += 1;
            let Some(addr) = m.addr else {
                start.push((m.config_id, None));
                continue;
            };
            let probe = ProbeId(self.next_id);
            self.next_id += 1;
            m.probe = Some(probe);
            *in_flight += 1;
            start.push((m.config_id, Some((probe, addr))));
        }
        let finished = *next == t.members.len() && *in_flight == 0;
        for (config_id, probe) in start {
            let Some((probe, addr)) = probe else {
                let why = "the test core reported no inbound for it".to_string();
                let outcome =
                    TestOutcome::failed(config_id, ErrorKind::CoreFailed, why, now.unix_secs);
                if let Some(slot) = t.slot(config_id) {
                    *slot = Some(outcome);
                }
                continue;
            };
            let kind = match &t.target {
                Some(target) => ProbeKind::HttpTo(Arc::clone(target)),
                None => ProbeKind::Http,
            };
            let timeout_ms = t.timeout_ms;
            self.emit(Effect::Probe {
                probe,
                addr,
                kind,
                timeout_ms,
            });
        }
        if !finished {
            return Flow::Continue;
        }
        // A batch core that crashed while probed has no exit left to wait for.
        if let Some(core) = t.batch.filter(|c| self.cores.contains_key(c)) {
            self.emit(Effect::StopCore { core, grace_ms: 0 });
            t.phase = Phase::Stopping(core);
            return Flow::Continue;
        }
        self.test_done(now, t)
    }

    fn test_done(&mut self, now: Now, t: &mut TestBatch) -> Flow {
        let results: Vec<TestOutcome> = t
            .order
            .iter()
            .zip(std::mem::take(&mut t.results))
            .map(|(id, r)| {
                r.unwrap_or_else(|| {
                    let why = "no verdict (the test ended early)".to_string();
                    TestOutcome::failed(*id, ErrorKind::Other, why, now.unix_secs)
                })
            })
            .collect();
        let tested = results.len();
        let passed = results.iter().filter(|r| r.ok).count();
        self.log(format!(
            "config test: {passed} of {tested} passed ({})",
            t.url
        ));
        self.record_tests(TestSource::Request, results.clone());
        Flow::Done(Reply::ConfigTested(Box::new(ConfigTestPayload {
            url: t.url.clone(),
            timeout_ms: t.timeout_ms,
            concurrency: t.concurrency,
            results,
        })))
    }
}
