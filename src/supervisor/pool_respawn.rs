//! A routed pool core that exited under the session (killed, crashed; front mode). Its members
//! did nothing wrong (their health was known a moment ago), so there is nothing to choose: the
//! same members start again at once in a new pool core (no inspect, no batch test, no ranking),
//! the session's member first. Meanwhile the front holds new connections instead of refusing
//! them ([`Effect::HoldFront`], at most [`RESPAWN_HOLD_MS`]). Once the new core accepts and the
//! session row is written, the route flips to it; the members are probed right after (the
//! confirmation), and until their probes pass only the session's member is routed.
//!
//! A respawn that fails (the core is refused, never accepts, exits at start, or the row cannot
//! be written) releases the held connections and falls back to the rotation a dead core always
//! got. So does a pool core that dies again within [`RESPAWN_WINDOW_MS`] of the last respawn:
//! a core that keeps dying is not restarted in a loop.

use std::net::SocketAddr;

use crate::ipc::protocol::{Code, ConnectPayload};

use super::ops::{Flow, Job};
use super::pool::Pool;
use super::{
    error, CoreId, Effect, Input, Now, Rejection, Reply, Session, SessionInfo, StartFailure,
    Supervisor,
};

/// How long the front holds new connections while the replacement pool core starts. A core
/// that is not ready by then is late enough that refusing beats a longer silence.
pub const RESPAWN_HOLD_MS: u64 = 2_000;
/// At most one respawn in this long; a pool core that dies again sooner gets a rotation.
pub const RESPAWN_WINDOW_MS: u64 = 30_000;

/// The respawn in flight.
#[derive(Debug)]
pub(super) struct Respawn {
    /// The new pool core.
    pub core: CoreId,
    /// The member the session ran on (and will run on again).
    pub config_id: i64,
    pub members: Vec<i64>,
    pub inbounds: Vec<(i64, SocketAddr)>,
    pub step: RespawnStep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RespawnStep {
    Starting,
    /// Ready; the session row is being written.
    Beginning,
    /// The new core failed and was stopped; the fallback waits for its exit.
    Stopping,
}

impl Supervisor {
    /// The session's pool core `lost` exited: respawn its members when allowed, else the
    /// rotation (the health trigger for a core that is gone).
    pub(super) fn pool_core_lost(&mut self, now: Now, lost: Option<Pool>) {
        let Some(pool) = lost.filter(|_| self.respawn_allowed(now)) else {
            return self.health_trigger(now, true);
        };
        let Some(config_id) = self.session.as_ref().map(|s| s.info.config_id) else {
            return;
        };
        // The session's member first, as every pool core starts.
        let mut members = vec![config_id];
        members.extend(
            pool.members
                .iter()
                .map(|m| m.config_id)
                .filter(|id| *id != config_id),
        );
        self.last_respawn_ms = Some(now.monotonic_ms);
        let core = self.start_pool_core(members.clone());
        self.log(format!(
            "pool core {} exited under the session on config {config_id}; starting pool core {} with the same members {members:?}",
            pool.core.0, core.0
        ));
        self.emit(Effect::HoldFront {
            until_ms: now.monotonic_ms + RESPAWN_HOLD_MS,
        });
        let job = Job::Respawn(Respawn {
            core,
            config_id,
            members,
            inbounds: Vec::new(),
            step: RespawnStep::Starting,
        });
        self.launch(now, None, crate::ipc::RawId::NONE, job);
    }

    /// Respawning is what the health trigger would do for a dead core (rotation and the trigger
    /// on), with nothing else in flight, and not twice within the window.
    fn respawn_allowed(&self, now: Now) -> bool {
        let recent = self
            .last_respawn_ms
            .is_some_and(|at| now.monotonic_ms.saturating_sub(at) < RESPAWN_WINDOW_MS);
        self.config.front
            && self.rotation.enabled
            && self.config.health_trigger_enabled
            && self.op.is_none()
            && !self.shutting_down
            && !recent
            && self.session.as_ref().is_some_and(|s| !s.pid_running)
    }

    pub(super) fn step_respawn(&mut self, now: Now, r: &mut Respawn, input: &Input) -> Flow {
        match (r.step, input) {
            (RespawnStep::Starting, Input::CoreStarted { core, inbounds, .. })
                if *core == r.core =>
            {
                r.inbounds = inbounds.clone();
                Flow::Continue
            }
            (RespawnStep::Starting, Input::CoreReady { core }) if *core == r.core => {
                if Self::member_addr(&r.inbounds, r.config_id).is_none() {
                    let why = format!("it reported no inbound for config {}", r.config_id);
                    return self.respawn_stop(r, why);
                }
                self.emit(Effect::BeginSession {
                    core: r.core,
                    config_id: r.config_id,
                });
                r.step = RespawnStep::Beginning;
                Flow::Continue
            }
            (RespawnStep::Starting, Input::CoreFailed { core, failure }) if *core == r.core => {
                match failure {
                    StartFailure::Refused(rejection) => {
                        self.respawn_failed(now, format!("it was refused: {}", rejection.message))
                    }
                    StartFailure::NotReady { addr, .. } => {
                        let why = format!(
                            "it did not accept on {addr} within {} ms",
                            self.config.ready_timeout_ms
                        );
                        self.respawn_stop(r, why)
                    }
                }
            }
            (
                RespawnStep::Beginning,
                Input::SessionBegun {
                    core,
                    config_id,
                    session,
                },
            ) if (*core, *config_id) == (r.core, r.config_id) => {
                self.respawn_begun(now, r, session)
            }
            // Stopped after a failure that was logged then.
            (RespawnStep::Stopping, Input::CoreExited { core, .. }) if *core == r.core => {
                self.respawn_failed(now, String::new())
            }
            (_, Input::CoreExited { core, how, .. }) if *core == r.core => {
                self.respawn_failed(now, format!("it {how}"))
            }
            _ => Flow::NotMine,
        }
    }

    fn respawn_begun(
        &mut self,
        now: Now,
        r: &mut Respawn,
        session: &Result<SessionInfo, Rejection>,
    ) -> Flow {
        let info = match session {
            Ok(info) => info.clone(),
            Err(rejection) => {
                let why = format!("its session row was not written: {}", rejection.message);
                return self.respawn_stop(r, why);
            }
        };
        // Every member is probed at once (the confirmation); until a probe passes only the
        // session's member is routed, as for an adopted pool.
        let interval = self.config.health_interval_ms;
        let pool = Pool::new(r.core, &r.inbounds, now.monotonic_ms, None, interval);
        self.install_pool(now, pool);
        self.session = Some(Session::new(info.clone(), r.core));
        self.rotation.health_pending = false;
        self.rotation.pending_core_gone = false;
        self.log(format!(
            "pool core {} serves session {} on config {} (members {:?})",
            r.core.0, info.id, info.config_id, r.members
        ));
        // The daemon's own operation: nobody reads the answer.
        Flow::Done(Reply::Connected(ConnectPayload {
            config_id: info.config_id,
            session_id: info.id,
            pid: info.pid,
            replaced_session_id: None,
            already_active: false,
        }))
    }

    /// The new core failed while running: stop it; the fallback follows its exit.
    fn respawn_stop(&mut self, r: &mut Respawn, why: String) -> Flow {
        self.log(format!(
            "the replacement pool core {} failed: {why}; stopping it",
            r.core.0
        ));
        self.emit(Effect::StopCore {
            core: r.core,
            grace_ms: 0,
        });
        r.step = RespawnStep::Stopping;
        Flow::Continue
    }

    /// The respawn is over without a pool core: held connections go (refused), and the dead
    /// core's rotation runs once this operation ended.
    fn respawn_failed(&mut self, now: Now, why: String) -> Flow {
        if !why.is_empty() {
            self.log(format!(
                "the replacement pool core failed: {why}; rotating instead"
            ));
        }
        self.emit(Effect::HoldFront {
            until_ms: now.monotonic_ms,
        });
        // As the health trigger would (it cannot run inside this operation): only while
        // rotation and the trigger are on, which `proxy_stop` may have changed meanwhile.
        if self.rotation.enabled && self.config.health_trigger_enabled {
            self.rotation.health_pending = true;
            self.rotation.pending_core_gone = true;
        }
        Flow::Done(error(
            Code::Unavailable,
            "the pool core could not be started again".to_string(),
        ))
    }
}
