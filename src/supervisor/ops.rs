//! Runtime operations: the one in flight, the replies held behind it, and the connect and
//! disconnect sequences (the replace sequence is in `replace.rs`).
//!
//! Connect: look at the config (404/409 leave the running session alone) → stop the old core
//! (SIGTERM, SIGKILL after [`STOP_GRACE_MS`]) → start the new one → ready. A core that fails to
//! become ready is stopped, and the reply waits for its exit, so no orphan outlives the answer.
//! Disconnect: stop the core, end the session row.

use std::collections::VecDeque;

use crate::ipc::protocol::{Code, ConnectPayload, DisconnectPayload};
use crate::ipc::RawId;

use super::replace::Replace;
use super::{
    error, ConnId, CoreId, CoreRole, CoreSpec, Effect, Input, InspectId, Now, OpId, Reply,
    Selection, Session, SessionInfo, StartFailure, Supervisor, STOP_GRACE_MS,
};

/// The runtime operation in flight.
#[derive(Debug)]
pub(super) struct Operation {
    pub op: OpId,
    /// None for operations the daemon starts itself (reconnect on start, shutdown).
    pub conn: Option<ConnId>,
    pub id: RawId,
    /// False once the connection closed: the outcome is then dropped, not sent.
    pub conn_open: bool,
    pub held: VecDeque<(RawId, Reply, bool)>,
    pub job: Job,
}

impl Operation {
    /// The job's own next deadline (a batch decision).
    pub fn deadline(&self) -> Option<u64> {
        match &self.job {
            Job::Replace(replace) => replace.deadline(),
            _ => None,
        }
    }
}

/// What the operation does.
#[derive(Debug)]
pub(super) enum Job {
    Connect(Connect),
    Disconnect(Disconnect),
    Replace(Box<Replace>),
    PoolSwitch(super::pool_switch::PoolSwitch),
    Test(Box<super::test_batch::TestBatch>),
    /// Front mode: the session's pool core exited; the same members start again.
    Respawn(super::pool_respawn::Respawn),
}

impl Job {
    pub fn connect(config_id: i64) -> Job {
        Job::Connect(Connect {
            config_id,
            replacing: None,
            step: ConnectStep::Inspecting(InspectId(0)),
            new: None,
            inbounds: Vec::new(),
        })
    }

    pub fn disconnect() -> Job {
        Job::Disconnect(Disconnect { stopping: None })
    }
}

/// How a job took an input.
pub(super) enum Flow {
    /// Not this job's.
    NotMine,
    /// Taken; the job goes on.
    Continue,
    /// The job is over; this is the answer.
    Done(Reply),
}

#[derive(Debug)]
pub(super) struct Connect {
    pub config_id: i64,
    /// The session stopped (or, in front mode, replaced) on the way.
    pub replacing: Option<i64>,
    pub step: ConnectStep,
    /// The new session, once its core was spawned.
    pub new: Option<SessionInfo>,
    /// Front mode: the new pool core's members.
    pub inbounds: Vec<(i64, std::net::SocketAddr)>,
}

#[derive(Debug)]
pub(super) enum ConnectStep {
    Inspecting(InspectId),
    StoppingOld(CoreId),
    Starting(CoreId),
    /// Front mode: the pool core is ready; its session row is being written.
    Beginning(CoreId),
    /// A failed core was stopped; the answer leaves once it exited.
    Cleanup(CoreId, Reply),
}

#[derive(Debug)]
pub(super) struct Disconnect {
    stopping: Option<(CoreId, i64)>,
}

impl Supervisor {
    /// Starts an operation; `conn` is None for the daemon's own operations.
    pub(super) fn launch(&mut self, now: Now, conn: Option<ConnId>, id: RawId, job: Job) {
        debug_assert!(self.op.is_none(), "two runtime operations in flight");
        let op = OpId(self.fresh());
        let mut operation = Operation {
            op,
            conn,
            id,
            conn_open: conn.is_some(),
            held: VecDeque::new(),
            job,
        };
        match &operation.job {
            Job::Replace(r) => self.rotation_began(now, r.trigger, Some(r.old_config)),
            Job::PoolSwitch(s) if !s.connect => {
                self.rotation_began(now, s.trigger, Some(s.old_config))
            }
            _ => {}
        }
        let flow = match &mut operation.job {
            Job::Connect(c) => self.begin_connect(c),
            Job::Disconnect(d) => self.begin_disconnect(d),
            Job::Replace(r) => self.begin_replace(now, r),
            Job::PoolSwitch(s) => self.begin_pool_switch(s),
            Job::Test(t) => self.begin_test(t),
            // Its core was asked for before the launch.
            Job::Respawn(_) => Flow::Continue,
        };
        self.settle_op(now, operation, flow);
    }

    /// Offers `input` to the operation in flight; true when it took it.
    pub(super) fn step_op(&mut self, now: Now, input: &Input) -> bool {
        let Some(mut operation) = self.op.take() else {
            return false;
        };
        let flow = match &mut operation.job {
            Job::Connect(c) => self.step_connect(now, c, input),
            Job::Disconnect(d) => self.step_disconnect(now, d, input),
            Job::Replace(r) => self.step_replace(now, r, input),
            Job::PoolSwitch(s) => self.step_pool_switch(now, s, input),
            Job::Test(t) => self.step_test(now, t, input),
            Job::Respawn(r) => self.step_respawn(now, r, input),
        };
        let taken = !matches!(flow, Flow::NotMine);
        self.settle_op(now, operation, flow);
        taken
    }

    fn settle_op(&mut self, now: Now, operation: Operation, flow: Flow) {
        match flow {
            Flow::Done(reply) => self.finish_op(now, operation, reply),
            Flow::NotMine | Flow::Continue => self.op = Some(operation),
        }
    }

    /// Sends the answer, then every reply held behind it.
    pub(super) fn finish_op(&mut self, now: Now, operation: Operation, reply: Reply) {
        let was_replace = matches!(operation.job, Job::Replace(_) | Job::PoolSwitch(_));
        self.rotation_ended(now, &reply);
        if let (Some(conn), true) = (operation.conn, operation.conn_open) {
            self.push_reply(conn, operation.id, reply, false);
            for (id, reply, close_after) in operation.held {
                self.push_reply(conn, id, reply, close_after);
            }
        }
        self.after_op(now, was_replace);
    }

    pub(super) fn on_closed(&mut self, conn: ConnId) {
        self.unsubscribe(conn);
        if let Some(op) = self.op.as_mut().filter(|op| op.conn == Some(conn)) {
            op.conn_open = false;
            op.held.clear();
        }
    }

    /// Starts a connect the daemon decided on itself (reconnect on start).
    pub fn reconnect(&mut self, now: Now, config_id: i64) {
        if self.op.is_none() && self.session.is_none() && !self.shutting_down {
            self.launch(now, None, RawId::NONE, Job::connect(config_id));
        }
    }

    /// Starts a session core for `config_id`.
    pub(super) fn start_session_core(&mut self, config_id: i64) -> CoreId {
        self.start_core(CoreRole::Session, CoreSpec::Session { config_id })
    }

    /// Names and tracks a new core, and asks the executor to start it.
    pub(super) fn start_core(&mut self, role: CoreRole, spec: CoreSpec) -> CoreId {
        let core = CoreId(self.fresh());
        self.cores.insert(core, role);
        self.emit(Effect::StartCore {
            core,
            spec,
            ready_timeout_ms: self.config.ready_timeout_ms,
        });
        core
    }

    /// Stops the active session's core; None when it already exited (the row is then ended at
    /// once with `reason`).
    pub(super) fn stop_session(&mut self, reason: &str) -> Option<(CoreId, i64)> {
        let session = self.session.as_ref()?;
        let (core, session_id) = (session.core, session.info.id);
        if session.pid_running {
            self.emit(Effect::StopCore {
                core,
                grace_ms: STOP_GRACE_MS,
            });
            return Some((core, session_id));
        }
        self.end_session(session_id, reason);
        None
    }

    pub(super) fn end_session(&mut self, session_id: i64, reason: &str) {
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.info.id == session_id)
        {
            self.session = None;
        }
        self.emit(Effect::EndSession {
            session_id,
            reason: reason.into(),
        });
    }

    fn begin_connect(&mut self, c: &mut Connect) -> Flow {
        let inspect = InspectId(self.fresh());
        c.step = ConnectStep::Inspecting(inspect);
        let selection = if self.config.front {
            Selection::WithEnabled(c.config_id)
        } else {
            Selection::One(c.config_id)
        };
        self.emit(Effect::Inspect { inspect, selection });
        Flow::Continue
    }

    fn step_connect(&mut self, now: Now, c: &mut Connect, input: &Input) -> Flow {
        let _ = now;
        match (&c.step, input) {
            (ConnectStep::Inspecting(want), Input::Inspected { inspect, configs })
                if want == inspect =>
            {
                let check = configs
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|checks| {
                        checks
                            .iter()
                            .find(|check| check.config_id == c.config_id)
                            .map(|check| check.result.clone())
                            .unwrap_or_else(|| Err(super::Rejection::new(Code::NotFound, format!("config {} not found; list stored configs with `xrat config list`", c.config_id))))
                    });
                if let Err(rejection) = check {
                    return Flow::Done(error(rejection.code, rejection.message));
                }
                if self.config.front {
                    return self.front_connect(now, c, configs.as_deref().unwrap_or(&[]));
                }
                c.replacing = self.session.as_ref().map(|s| s.info.id);
                match self.stop_session("replaced") {
                    Some((core, _)) => c.step = ConnectStep::StoppingOld(core),
                    None => c.step = ConnectStep::Starting(self.start_session_core(c.config_id)),
                }
                Flow::Continue
            }
            (ConnectStep::StoppingOld(old), Input::CoreExited { core, .. }) if old == core => {
                if let Some(id) = c.replacing {
                    self.end_session(id, "replaced");
                }
                c.step = ConnectStep::Starting(self.start_session_core(c.config_id));
                Flow::Continue
            }
            (ConnectStep::Starting(want), input)
                if input_core(input) == Some(*want) && self.config.front =>
            {
                self.front_connect_starting(c, *want, input)
            }
            (ConnectStep::Beginning(want), Input::SessionBegun { core, session, .. })
                if want == core =>
            {
                self.front_connect_begun(now, c, *want, session)
            }
            // The new pool core died while its session row was being written: nothing was
            // routed to it, and the row, once written, is ended as an orphan.
            (
                ConnectStep::Beginning(want),
                Input::CoreExited {
                    core, how, log_tail,
                },
            ) if want == core => Flow::Done(error(
                Code::Timeout,
                format!("the pool core {how} while its session was being recorded; the running session was left alone; {log_tail}"),
            )),
            (ConnectStep::Starting(want), input) if input_core(input) == Some(*want) => {
                self.connect_starting(c, *want, input)
            }
            (ConnectStep::Cleanup(want, reply), Input::CoreExited { core, .. }) if want == core => {
                Flow::Done(reply.clone())
            }
            _ => Flow::NotMine,
        }
    }

    fn connect_starting(&mut self, c: &mut Connect, core: CoreId, input: &Input) -> Flow {
        match input {
            Input::CoreStarted { session, .. } => {
                c.new = session.clone();
                Flow::Continue
            }
            Input::CoreReady { .. } => {
                let Some(info) = c.new.take() else {
                    return Flow::Done(error(
                        Code::Internal,
                        "the executor reported a session core without its session".into(),
                    ));
                };
                let payload = ConnectPayload {
                    config_id: info.config_id,
                    session_id: info.id,
                    pid: info.pid,
                    replaced_session_id: c.replacing,
                    already_active: false,
                };
                self.session = Some(Session::new(info, core));
                // A health trigger waiting for the cooldown was about the session just replaced.
                self.rotation.health_pending = false;
                self.rotation.pending_core_gone = false;
                Flow::Done(Reply::Connected(payload))
            }
            Input::CoreFailed {
                failure: StartFailure::Refused(rejection),
                ..
            } => Flow::Done(error(rejection.code, rejection.message.clone())),
            Input::CoreFailed {
                failure: StartFailure::NotReady { addr, log_tail },
                ..
            } => {
                let (name, id) = c
                    .new
                    .as_ref()
                    .map_or(("core", 0), |s| (s.core.as_str(), s.id));
                let message = format!(
                    "the core ({name}) did not accept connections on {addr} within {} ms (runtime.ready_timeout_ms) and was stopped; {log_tail}",
                    self.config.ready_timeout_ms
                );
                self.emit(Effect::StopCore { core, grace_ms: 0 });
                self.emit(Effect::EndSession {
                    session_id: id,
                    reason: "not_ready".into(),
                });
                c.step = ConnectStep::Cleanup(core, error(Code::Timeout, message));
                Flow::Continue
            }
            Input::CoreExited { how, log_tail, .. } => {
                let Some(new) = c.new.take() else {
                    return Flow::Done(error(Code::Internal, format!("the core {how} at start")));
                };
                self.emit(Effect::EndSession {
                    session_id: new.id,
                    reason: "failed".into(),
                });
                Flow::Done(error(
                    Code::Timeout,
                    format!(
                        "the core ({}) {how} before its inbound {} accepted connections; {log_tail}",
                        new.core, new.socks_addr
                    ),
                ))
            }
            _ => Flow::NotMine,
        }
    }

    fn begin_disconnect(&mut self, d: &mut Disconnect) -> Flow {
        let session_id = self.session.as_ref().map_or(0, |s| s.info.id);
        match self.stop_session("disconnected") {
            Some(stopping) => {
                d.stopping = Some(stopping);
                Flow::Continue
            }
            None => Flow::Done(Reply::Disconnected(DisconnectPayload {
                stopped_session: session_id,
            })),
        }
    }

    fn step_disconnect(&mut self, _now: Now, d: &mut Disconnect, input: &Input) -> Flow {
        match (d.stopping, input) {
            (Some((want, session_id)), Input::CoreExited { core, .. }) if want == *core => {
                self.end_session(session_id, "disconnected");
                Flow::Done(Reply::Disconnected(DisconnectPayload {
                    stopped_session: session_id,
                }))
            }
            _ => Flow::NotMine,
        }
    }
}

/// The core an executor report is about.
pub(super) fn input_core(input: &Input) -> Option<CoreId> {
    match input {
        Input::CoreStarted { core, .. }
        | Input::CoreReady { core }
        | Input::CoreFailed { core, .. }
        | Input::CoreExited { core, .. } => Some(*core),
        _ => None,
    }
}
