//! Front-mode connect: make-before-break. The new pool core (the asked-for config plus up to
//! `pool_size` warm members) starts beside the running one; only once it accepts and its
//! session row is written does the route flip to it, and the old pool core drains.

use std::net::SocketAddr;

use crate::ipc::protocol::{Code, ConnectPayload};

use super::ops::{Connect, ConnectStep, Flow};
use super::pool::Pool;
use super::{
    error, ConfigCheck, CoreId, CoreRole, CoreSpec, Effect, Input, Now, Rejection, Reply, Session,
    SessionInfo, StartFailure, Supervisor,
};

impl Supervisor {
    /// Starts a pool core for `config_ids` (the first is the one the session will run).
    pub(super) fn start_pool_core(&mut self, config_ids: Vec<i64>) -> CoreId {
        self.start_core(CoreRole::Pool, CoreSpec::Pool { config_ids })
    }

    /// `first`, then up to `pool_size` of `others` (not failed recently, not quarantined, fastest
    /// known first).
    pub(super) fn pick_members(
        &self,
        now: Now,
        first: i64,
        others: impl IntoIterator<Item = i64>,
    ) -> Vec<i64> {
        let known = |id: i64| {
            self.pool
                .as_ref()
                .and_then(|p| p.member(id))
                .and_then(|m| m.latency_ms)
                .unwrap_or(u64::MAX)
        };
        let mut rest: Vec<i64> = others
            .into_iter()
            .filter(|id| {
                *id != first && !self.failed_recently(now, *id) && !self.quarantined(now, *id)
            })
            .collect();
        rest.sort_by_key(|id| (known(*id), *id));
        rest.dedup();
        rest.truncate(self.config.pool_size as usize);
        let mut members = vec![first];
        members.extend(rest);
        members
    }

    /// The config checked out: start its pool core beside whatever runs now.
    pub(super) fn front_connect(
        &mut self,
        now: Now,
        c: &mut Connect,
        checks: &[ConfigCheck],
    ) -> Flow {
        let others = checks
            .iter()
            .filter(|check| check.result.is_ok())
            .map(|check| check.config_id);
        let members = self.pick_members(now, c.config_id, others);
        c.replacing = self.session.as_ref().map(|s| s.info.id);
        c.step = ConnectStep::Starting(self.start_pool_core(members));
        Flow::Continue
    }

    pub(super) fn front_connect_starting(
        &mut self,
        c: &mut Connect,
        core: CoreId,
        input: &Input,
    ) -> Flow {
        match input {
            Input::CoreStarted { inbounds, .. } => {
                c.inbounds = inbounds.clone();
                Flow::Continue
            }
            Input::CoreReady { .. } if Self::member_addr(&c.inbounds, c.config_id).is_none() => {
                let message = format!(
                    "the pool core reported no inbound for config {} and was stopped; the running session was left alone",
                    c.config_id
                );
                self.emit(Effect::StopCore { core, grace_ms: 0 });
                c.step = ConnectStep::Cleanup(core, error(Code::Internal, message));
                Flow::Continue
            }
            Input::CoreReady { .. } => {
                self.emit(Effect::BeginSession {
                    core,
                    config_id: c.config_id,
                });
                c.step = ConnectStep::Beginning(core);
                Flow::Continue
            }
            Input::CoreFailed {
                failure: StartFailure::Refused(rejection),
                ..
            } => Flow::Done(error(rejection.code, rejection.message.clone())),
            Input::CoreFailed {
                failure: StartFailure::NotReady { addr, log_tail },
                ..
            } => {
                let message = format!(
                    "the pool core did not accept connections on {addr} within {} ms (runtime.ready_timeout_ms) and was stopped; the running session was left alone; {log_tail}",
                    self.config.ready_timeout_ms
                );
                self.emit(Effect::StopCore { core, grace_ms: 0 });
                c.step = ConnectStep::Cleanup(core, error(Code::Timeout, message));
                Flow::Continue
            }
            Input::CoreExited { how, log_tail, .. } => Flow::Done(error(
                Code::Timeout,
                format!("the pool core {how} before its inbounds accepted connections; the running session was left alone; {log_tail}"),
            )),
            _ => Flow::NotMine,
        }
    }

    /// The new session row is written: flip the route; the old pool core drains.
    pub(super) fn front_connect_begun(
        &mut self,
        now: Now,
        c: &mut Connect,
        core: CoreId,
        session: &Result<SessionInfo, Rejection>,
    ) -> Flow {
        let info = match session {
            Ok(info) => info.clone(),
            Err(rejection) => {
                self.emit(Effect::StopCore { core, grace_ms: 0 });
                let reply = error(rejection.code, rejection.message.clone());
                c.step = ConnectStep::Cleanup(core, reply);
                return Flow::Continue;
            }
        };
        if let Some(old) = c.replacing {
            self.end_session(old, "replaced");
        }
        let pool = Pool::new(
            core,
            &c.inbounds,
            now.monotonic_ms,
            None,
            self.config.health_interval_ms,
        );
        self.install_pool(now, pool);
        self.session = Some(Session::new(info.clone(), core));
        self.rotation.health_pending = false;
        self.rotation.pending_core_gone = false;
        Flow::Done(Reply::Connected(ConnectPayload {
            config_id: info.config_id,
            session_id: info.id,
            pid: info.pid,
            replaced_session_id: c.replacing,
            already_active: false,
        }))
    }

    /// The member's internal SOCKS inbound in a started pool core's report.
    pub(super) fn member_addr(
        inbounds: &[(i64, SocketAddr)],
        config_id: i64,
    ) -> Option<SocketAddr> {
        inbounds
            .iter()
            .find(|(id, _)| *id == config_id)
            .map(|(_, addr)| *addr)
    }
}
