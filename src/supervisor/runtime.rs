//! The session part of the supervisor: the runtime requests that change it, what a core exit
//! means, and what `runtime_status` reports.

use crate::ipc::protocol::{Code, ConnectPayload, Request, RuntimeStatusPayload};
use crate::ipc::RawId;

use super::ops::Job;
use super::replace::Replace;
use super::{error, ConnId, CoreId, Now, Reply, Supervisor};

impl Supervisor {
    /// Starts the operation a runtime request asks for, or answers it at once (busy, conflict,
    /// already active).
    pub(super) fn start_runtime_request(
        &mut self,
        now: Now,
        conn: ConnId,
        id: RawId,
        request: Request,
    ) -> Option<Reply> {
        if let Some(op) = &self.op {
            return Some(error(
                Code::Busy,
                format!(
                    "another runtime operation is in flight (op {}); retry {} when it finishes",
                    op.op.0,
                    request.name()
                ),
            ));
        }
        let job = match request {
            Request::RuntimeConnect { config_id } => {
                if let Some(s) = self
                    .session
                    .as_ref()
                    .filter(|s| s.info.config_id == config_id && s.pid_running)
                {
                    return Some(Reply::Connected(ConnectPayload {
                        config_id,
                        session_id: s.info.id,
                        pid: s.info.pid,
                        replaced_session_id: None,
                        already_active: true,
                    }));
                }
                if self.warm_member(Some(config_id)).is_some() {
                    let trigger = crate::ipc::protocol::Trigger::Manual;
                    self.start_pool_switch(now, Some(conn), id, config_id, trigger, true);
                    return None;
                }
                Job::connect(config_id)
            }
            Request::RuntimeDisconnect => {
                if self.session.is_none() {
                    return Some(error(
                        Code::Conflict,
                        "no session is running; connect one with `xrat connect <ID>`".into(),
                    ));
                }
                Job::disconnect()
            }
            Request::RuntimeReplace {
                trigger,
                candidate_id,
            } => {
                if self.session.is_some() && trigger != crate::ipc::protocol::Trigger::Timer {
                    if let Some(to) = self.warm_member(candidate_id) {
                        self.start_pool_switch(now, Some(conn), id, to, trigger, false);
                        return None;
                    }
                }
                let Some(session) = &self.session else {
                    return Some(error(
                        Code::Conflict,
                        "no session to replace; connect one with `xrat connect <ID>`".into(),
                    ));
                };
                Job::Replace(Box::new(Replace::new(trigger, candidate_id, session)))
            }
            request @ Request::ConfigTest { .. } => self.test_job(request),
            other => unreachable!("{} is not a runtime operation", other.name()),
        };
        self.launch(now, Some(conn), id, job);
        None
    }

    /// `config_test`, with the settings' defaults for what the request leaves out.
    fn test_job(&self, request: Request) -> Job {
        let c = &self.config;
        let test = super::test_batch::TestBatch::new(
            request,
            &c.probe_url,
            c.probe_timeout_ms,
            c.test_concurrency,
        );
        Job::Test(Box::new(test))
    }

    /// A core exit no operation was waiting for. Only the active session's matters: it is now
    /// degraded, its row is ended, and a health rotation may run (the cooldown does not apply:
    /// nothing is left to protect).
    pub(super) fn on_session_core_exited(
        &mut self,
        now: Now,
        core: CoreId,
        how: String,
        lost: Option<super::pool::Pool>,
    ) {
        let Some(session) = self.session.as_mut().filter(|s| s.core == core) else {
            return;
        };
        session.pid_running = false;
        session.health.consecutive_failures += 1;
        session.health.last_error = Some(format!("core {how}"));
        let (session_id, pid) = (session.info.id, session.info.pid);
        self.log(format!("session {session_id}'s core (pid {pid}) {how}"));
        self.emit(super::Effect::EndSession {
            session_id,
            reason: format!("core_exited: {how}"),
        });
        // A probe in flight no longer concerns a live session; its answer is ignored.
        self.health_probe = None;
        // A pool core is started again with the same members; any other core gets a rotation.
        self.pool_core_lost(now, lost);
    }

    pub(super) fn runtime_status(&self) -> RuntimeStatusPayload {
        let state = match (self.op.as_ref().map(|op| &op.job), &self.session) {
            (Some(Job::Connect(_)), _) | (Some(Job::Replace(_)), None) => "starting",
            (Some(Job::Disconnect(_)), Some(_)) => "stopping",
            // A failing probe (a hung core or remote) shows until a probe succeeds; the reason
            // is `health.last_error`.
            (_, Some(s)) if s.pid_running && s.health.consecutive_failures == 0 => "running",
            (_, Some(_)) => "degraded",
            (_, None) => "idle",
        };
        let s = self.session.as_ref();
        RuntimeStatusPayload {
            runtime_status: state.into(),
            session_id: s.map(|s| s.info.id),
            active_config_id: s.map(|s| s.info.config_id),
            // Filled by the executor, which owns the database.
            active_config_name: None,
            pid: s.map(|s| s.info.pid),
            pid_running: s.is_some_and(|s| s.pid_running),
            core: s.map(|s| s.info.core.clone()),
            socks_addr: s.map(|s| s.info.socks_addr.to_string()),
            http_addr: s.and_then(|s| s.info.http_addr.map(|a| a.to_string())),
            started_at: s.map(|s| s.info.started_at),
            health: s.map(|s| s.health.clone()).unwrap_or_default(),
            // Filled by the executor, which owns the database.
            store_error: None,
            mode: if self.config.front { "front" } else { "direct" }.into(),
            // The front's addresses and counters are the executor's.
            front_socks_addr: None,
            front_http_addr: None,
            pool: self.pool_view(),
            relay: None,
        }
    }
}
