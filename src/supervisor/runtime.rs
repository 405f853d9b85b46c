//! The session part of the supervisor: which session runs, the runtime requests that change it,
//! and what `runtime_status` reports.

use crate::ipc::protocol::{
    Code, ConnectPayload, DisconnectPayload, HealthView, Request, RuntimeStatusPayload,
};
use crate::ipc::RawId;

use super::{error, ConnId, Now, OperationOutput, Plan, Rejection, Reply, SessionInfo, Supervisor};

/// The active session and what is known of its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Session {
    pub info: SessionInfo,
    pub pid_running: bool,
    pub health: HealthView,
}

impl Session {
    pub fn new(info: SessionInfo) -> Session {
        Session {
            info,
            pid_running: true,
            health: HealthView::default(),
        }
    }
}

impl Supervisor {
    /// Starts the operation a runtime request asks for, or answers it at once (busy, conflict,
    /// already active, not implemented).
    pub(super) fn start_runtime_request(
        &mut self,
        conn: ConnId,
        id: RawId,
        request: Request,
    ) -> Option<Reply> {
        if let Some(pending) = &self.pending {
            return Some(error(
                Code::Busy,
                format!(
                    "another runtime operation is in flight (op {}); retry {} when it finishes",
                    pending.op.0,
                    request.name()
                ),
            ));
        }
        let plan = match request {
            Request::RuntimeConnect { config_id } => {
                if let Some(s) = self
                    .session
                    .as_ref()
                    .filter(|s| s.info.config_id == config_id)
                {
                    if s.pid_running {
                        return Some(Reply::Connected(ConnectPayload {
                            config_id,
                            session_id: s.info.id,
                            pid: s.info.pid,
                            replaced_session_id: None,
                            already_active: true,
                        }));
                    }
                }
                Plan::Connect {
                    config_id,
                    replacing: self.session.as_ref().map(|s| s.info.id),
                }
            }
            Request::RuntimeDisconnect => match &self.session {
                Some(s) => Plan::Disconnect {
                    session_id: s.info.id,
                },
                None => {
                    return Some(error(
                        Code::Conflict,
                        "no session is running; connect one with `xrat connect <ID>`".into(),
                    ))
                }
            },
            Request::RuntimeReplace { .. } => match self.replace_plan(request) {
                Ok(plan) => plan,
                Err(reply) => return Some(reply),
            },
            other => unreachable!("{} is not a runtime operation", other.name()),
        };
        self.launch(Some(conn), id, plan);
        None
    }

    /// Starts a connect the daemon decided on itself (reconnect on start).
    pub fn reconnect(&mut self, config_id: i64) {
        if self.pending.is_none() && self.session.is_none() && !self.shutting_down {
            self.launch(
                None,
                RawId::NONE,
                Plan::Connect {
                    config_id,
                    replacing: None,
                },
            );
        }
    }

    /// Records an operation's result and builds the reply for whoever asked.
    pub(super) fn apply_outcome(
        &mut self,
        now: Now,
        plan: &Plan,
        outcome: Result<OperationOutput, Rejection>,
    ) -> Reply {
        match outcome {
            Ok(OperationOutput::Replaced(outcome)) => {
                let Plan::Replace { trigger, .. } = plan else {
                    unreachable!("a replace outcome answers a replace plan")
                };
                self.apply_replace(now, *trigger, *outcome)
            }
            Ok(OperationOutput::Connected { session, replaced }) => {
                let payload = ConnectPayload {
                    config_id: session.config_id,
                    session_id: session.id,
                    pid: session.pid,
                    replaced_session_id: replaced,
                    already_active: false,
                };
                self.session = Some(Session::new(session));
                Reply::Connected(payload)
            }
            Ok(OperationOutput::Disconnected { session_id }) => {
                self.session = None;
                Reply::Disconnected(DisconnectPayload {
                    stopped_session: session_id,
                })
            }
            // A replaced session that was already stopped was reported by SessionEnded.
            Err(rejection) => error(rejection.code, rejection.message),
        }
    }

    pub(super) fn on_core_exited(&mut self, session_id: i64, description: String) {
        if let Some(session) = self.session.as_mut().filter(|s| s.info.id == session_id) {
            session.pid_running = false;
            session.health.consecutive_failures += 1;
            session.health.last_error = Some(description);
        }
    }

    /// The active session, if any.
    pub fn session(&self) -> Option<&SessionInfo> {
        self.session.as_ref().map(|s| &s.info)
    }

    pub(super) fn runtime_status(&self) -> RuntimeStatusPayload {
        let plan = self.pending.as_ref().map(|p| &p.plan);
        let state = match (plan, &self.session) {
            (Some(Plan::Connect { .. }), _) | (Some(Plan::Replace { .. }), None) => "starting",
            (Some(Plan::Disconnect { .. }), Some(_)) => "stopping",
            (_, Some(s)) if s.pid_running => "running",
            (_, Some(_)) => "degraded",
            (_, None) => "idle",
        };
        let s = self.session.as_ref();
        RuntimeStatusPayload {
            runtime_status: state.into(),
            session_id: s.map(|s| s.info.id),
            active_config_id: s.map(|s| s.info.config_id),
            pid: s.map(|s| s.info.pid),
            pid_running: s.is_some_and(|s| s.pid_running),
            core: s.map(|s| s.info.core.clone()),
            socks_addr: s.map(|s| s.info.socks_addr.clone()),
            http_addr: s.and_then(|s| s.info.http_addr.clone()),
            started_at: s.map(|s| s.info.started_at),
            health: s.map(|s| s.health.clone()).unwrap_or_default(),
        }
    }
}
