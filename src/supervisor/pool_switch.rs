//! A switch inside the pool (front mode): the session moves to another warm member. No process
//! starts or stops and open connections stay where they are; only the session row changes, so
//! the answer leaves as soon as the executor recorded it.

use crate::ipc::protocol::{ConnectPayload, ReplacePayload, Trigger};
use crate::ipc::RawId;

use super::ops::{Flow, Job};
use super::{
    error, trigger_name, ConnId, CoreId, Effect, Input, Now, ReplaceResult, Reply, RotationEvent,
    Session, Supervisor,
};

/// A switch to a member of the routed pool.
#[derive(Debug)]
pub(super) struct PoolSwitch {
    pub trigger: Trigger,
    /// Answer as `runtime_connect` (the member was asked for by id).
    pub connect: bool,
    pub to: i64,
    pub core: CoreId,
    pub old_session: i64,
    pub old_config: i64,
}

impl Supervisor {
    /// Starts a switch of the session to pool member `to`.
    pub(super) fn start_pool_switch(
        &mut self,
        now: Now,
        conn: Option<ConnId>,
        id: RawId,
        to: i64,
        trigger: Trigger,
        connect: bool,
    ) {
        let (Some(pool), Some(session)) = (self.pool.as_ref(), self.session.as_ref()) else {
            return;
        };
        let job = PoolSwitch {
            trigger,
            connect,
            to,
            core: pool.core,
            old_session: session.info.id,
            old_config: session.info.config_id,
        };
        self.launch(now, conn, id, Job::PoolSwitch(job));
    }

    /// The pool core of a switch in flight exited: the switch cannot finish (its member is
    /// gone), so it ends now, and the exit is handled as if it came first (the respawn).
    pub(super) fn abort_pool_switch(&mut self, now: Now, core: CoreId) {
        let Some(operation) = self
            .op
            .take_if(|op| matches!(&op.job, Job::PoolSwitch(s) if s.core == core))
        else {
            return;
        };
        let why = format!(
            "pool core {} exited during the switch; the session is started again on a new pool core",
            core.0
        );
        self.log(why.clone());
        let reply = error(crate::ipc::protocol::Code::Unavailable, why);
        self.finish_op(now, operation, reply);
    }

    pub(super) fn begin_pool_switch(&mut self, s: &PoolSwitch) -> Flow {
        self.emit(Effect::BeginSession {
            core: s.core,
            config_id: s.to,
        });
        Flow::Continue
    }

    pub(super) fn step_pool_switch(&mut self, now: Now, s: &PoolSwitch, input: &Input) -> Flow {
        let Input::SessionBegun {
            core,
            config_id,
            session,
        } = input
        else {
            return Flow::NotMine;
        };
        if (*core, *config_id) != (s.core, s.to) {
            return Flow::NotMine;
        }
        let info = match session {
            Ok(info) => info.clone(),
            Err(rejection) => {
                self.log(format!(
                    "switch to pool member config {} was not recorded: {}",
                    s.to, rejection.message
                ));
                return Flow::Done(error(rejection.code, rejection.message.clone()));
            }
        };
        let reason = if s.connect { "replaced" } else { "rotated" };
        self.end_session(s.old_session, reason);
        let mut next = Session::new(info.clone(), s.core);
        next.health.last_latency_ms = self
            .pool
            .as_ref()
            .and_then(|p| p.member(s.to))
            .and_then(|m| m.latency_ms);
        self.session = Some(next);
        self.rotation.health_pending = false;
        self.rotation.pending_core_gone = false;
        if s.connect {
            return Flow::Done(Reply::Connected(ConnectPayload {
                config_id: info.config_id,
                session_id: info.id,
                pid: info.pid,
                replaced_session_id: Some(s.old_session),
                already_active: false,
            }));
        }
        let latency = self
            .pool
            .as_ref()
            .and_then(|p| p.member(s.to))
            .and_then(|m| m.latency_ms)
            .map_or("untested".to_string(), |ms| format!("{ms} ms"));
        let detail = format!(
            "switched from config {} to warm pool member config {} ({latency}); no process started",
            s.old_config, s.to
        );
        self.emit(Effect::Persist(RotationEvent {
            at: now.unix_secs,
            trigger: s.trigger,
            from_config_id: Some(s.old_config),
            to_config_id: Some(s.to),
            result: ReplaceResult::Switched,
            detail: detail.clone(),
        }));
        self.log(format!(
            "rotation ({}) switched: {detail}",
            trigger_name(s.trigger)
        ));
        self.rotation_finished(now, s.trigger, ReplaceResult::Switched, Some(s.to));
        Flow::Done(Reply::Replaced(Box::new(ReplacePayload {
            trigger: s.trigger,
            replaced: true,
            old_session_id: s.old_session,
            new_config_id: Some(info.config_id),
            new_session_id: Some(info.id),
            new_pid: Some(info.pid),
            tested_candidates: 0,
            result: ReplaceResult::Switched.name().to_string(),
            detail,
        })))
    }
}
