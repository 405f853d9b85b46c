//! Health accounting and the rotation policy (DESIGN §7): when to probe, when a trigger fires,
//! the cooldown, and what `proxy_status` reports. Timers are data: deadlines in monotonic ms.
//!
//! - `timer`: every `interval_secs` while rotation is enabled; one that meets the cooldown is
//!   skipped to the next interval.
//! - `health_check_failed`: `failure_threshold` failed probes in a row, with rotation and
//!   `health_trigger_enabled` on; one that meets the cooldown waits for its end. A core that
//!   exited counts as reaching the threshold at once and ignores the cooldown: there is no
//!   working session left to protect.
//! - `manual`: `runtime_replace`, always runs.

use crate::ipc::protocol::{
    Code, ProxyStatusPayload, ReplacePayload, Request, RotationPayload, Trigger,
};
use crate::ipc::RawId;

use super::runtime::Session;
use super::{error, Effect, Now, Plan, ReplaceOutcome, Reply, Supervisor, SupervisorConfig};

/// Rotation state.
#[derive(Debug)]
pub(super) struct Rotation {
    enabled: bool,
    next_timer_ms: Option<u64>,
    cooldown_until_ms: u64,
    /// A health trigger that met the cooldown, waiting for its end.
    health_pending: bool,
    probe_in_flight: bool,
    last_trigger: Option<Trigger>,
    last_result: Option<&'static str>,
    last_rotation_at: Option<u64>,
    last_candidate: Option<i64>,
}

impl Rotation {
    pub fn new(config: &SupervisorConfig, now: Now) -> Rotation {
        Rotation {
            enabled: config.rotation_enabled,
            next_timer_ms: config
                .rotation_enabled
                .then(|| now.monotonic_ms + config.rotation_interval_secs * 1000),
            cooldown_until_ms: 0,
            health_pending: false,
            probe_in_flight: false,
            last_trigger: None,
            last_result: None,
            last_rotation_at: None,
            last_candidate: None,
        }
    }
}

fn trigger_name(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Manual => "manual",
        Trigger::Timer => "timer",
        Trigger::HealthCheckFailed => "health_check_failed",
    }
}

impl Supervisor {
    /// The earliest rotation deadline: the timer, or the end of a cooldown a trigger waits on.
    pub(super) fn rotation_deadline(&self) -> Option<u64> {
        let r = &self.rotation;
        let waiting = r.health_pending.then_some(r.cooldown_until_ms);
        [r.next_timer_ms, waiting].into_iter().flatten().min()
    }

    fn cooldown_active(&self, now: Now) -> bool {
        now.monotonic_ms < self.rotation.cooldown_until_ms
    }

    /// On a health tick: probe the running session unless something else is happening to it.
    pub(super) fn start_health_probe(&mut self) {
        let Some(session) = self.session.as_ref().filter(|s| s.pid_running) else {
            return;
        };
        if self.rotation.probe_in_flight || self.pending.is_some() {
            return;
        }
        self.rotation.probe_in_flight = true;
        self.effects.push_back(Effect::Probe {
            session_id: session.info.id,
            socks_addr: session.info.socks_addr.clone(),
        });
    }

    pub(super) fn on_probe_done(&mut self, now: Now, session_id: i64, result: Result<u64, String>) {
        self.rotation.probe_in_flight = false;
        let Some(session) = self.session.as_mut().filter(|s| s.info.id == session_id) else {
            return;
        };
        session.health.last_check_at = Some(now.unix_secs);
        match result {
            Ok(latency) => {
                session.health.last_latency_ms = Some(latency);
                session.health.consecutive_failures = 0;
                session.health.last_error = None;
            }
            Err(why) => {
                session.health.consecutive_failures += 1;
                session.health.last_error = Some(why);
            }
        }
        if session.health.consecutive_failures >= self.config.failure_threshold {
            self.health_trigger(now, false);
        }
    }

    pub(super) fn on_core_exit_rotation(&mut self, now: Now) {
        self.health_trigger(now, true);
    }

    /// A health trigger: runs now, or waits for the cooldown (unless the core is gone).
    fn health_trigger(&mut self, now: Now, core_gone: bool) {
        if !self.rotation.enabled || !self.config.health_trigger_enabled {
            return;
        }
        if self.cooldown_active(now) && !core_gone {
            self.rotation.health_pending = true;
            return;
        }
        if !self.try_rotate(Trigger::HealthCheckFailed) {
            self.rotation.health_pending = true;
        }
    }

    /// Timer and pending-health deadlines.
    pub(super) fn rotation_timers(&mut self, now: Now) {
        let interval_ms = self.config.rotation_interval_secs * 1000;
        if self.rotation.health_pending
            && !self.cooldown_active(now)
            && self.try_rotate(Trigger::HealthCheckFailed)
        {
            self.rotation.health_pending = false;
        }
        let Some(due) = self
            .rotation
            .next_timer_ms
            .filter(|due| now.monotonic_ms >= *due)
        else {
            return;
        };
        self.rotation.next_timer_ms = Some(due.max(now.monotonic_ms) + interval_ms);
        if !self.cooldown_active(now) {
            self.try_rotate(Trigger::Timer);
        }
    }

    /// Starts an automatic rotation when a session exists and nothing else runs.
    fn try_rotate(&mut self, trigger: Trigger) -> bool {
        if self.pending.is_some() || self.shutting_down {
            return false;
        }
        let Some(session) = &self.session else {
            return false;
        };
        let plan = Plan::Replace {
            trigger,
            candidate_id: None,
            session_id: session.info.id,
            config_id: session.info.config_id,
        };
        self.launch(None, RawId::NONE, plan);
        true
    }

    /// `runtime_replace` from a client: manual rotation ignores the cooldown.
    pub(super) fn replace_plan(&self, request: Request) -> Result<Plan, Reply> {
        let Request::RuntimeReplace {
            trigger,
            candidate_id,
        } = request
        else {
            unreachable!("only runtime_replace comes here")
        };
        let Some(session) = &self.session else {
            return Err(error(
                Code::Conflict,
                "no session to replace; connect one with `xrat connect <ID>`".into(),
            ));
        };
        Ok(Plan::Replace {
            trigger,
            candidate_id,
            session_id: session.info.id,
            config_id: session.info.config_id,
        })
    }

    /// Records a finished replace and builds its reply.
    pub(super) fn apply_replace(
        &mut self,
        now: Now,
        trigger: Trigger,
        outcome: ReplaceOutcome,
    ) -> Reply {
        if let Some(info) = outcome.session.clone() {
            self.session = Some(Session::new(info));
        } else if outcome.result != "no_working_candidate" {
            self.session = None;
        }
        let r = &mut self.rotation;
        r.cooldown_until_ms = now.monotonic_ms + self.config.cooldown_secs * 1000;
        r.last_trigger = Some(trigger);
        r.last_result = Some(outcome.result);
        r.last_rotation_at = Some(now.unix_secs);
        r.last_candidate = outcome.candidate;
        if r.enabled {
            r.next_timer_ms = Some(now.monotonic_ms + self.config.rotation_interval_secs * 1000);
        }
        let new = outcome.session.as_ref();
        let kept = self.session.as_ref().map(|s| &s.info);
        Reply::Replaced(Box::new(ReplacePayload {
            trigger,
            replaced: outcome.replaced,
            old_session_id: outcome.old_session_id,
            new_config_id: new.or(kept).map(|s| s.config_id),
            new_session_id: new.or(kept).map(|s| s.id),
            new_pid: new.or(kept).map(|s| s.pid),
            tested_candidates: outcome.tested_candidates,
            result: outcome.result.to_string(),
            detail: outcome.detail,
        }))
    }

    /// `proxy_start` / `proxy_stop`.
    pub(super) fn set_rotation(&mut self, now: Now, enabled: bool) -> Reply {
        let r = &mut self.rotation;
        if enabled && !r.enabled {
            r.next_timer_ms = Some(now.monotonic_ms + self.config.rotation_interval_secs * 1000);
        }
        if !enabled {
            r.next_timer_ms = None;
            r.health_pending = false;
        }
        r.enabled = enabled;
        Reply::Rotation(RotationPayload {
            rotation_enabled: enabled,
        })
    }

    pub(super) fn proxy_status(&self, now: Now) -> ProxyStatusPayload {
        let c = &self.config;
        let r = &self.rotation;
        let to_unix = |ms: u64| now.unix_secs + ms.saturating_sub(now.monotonic_ms).div_ceil(1000);
        let session = self.session.as_ref();
        ProxyStatusPayload {
            rotation_enabled: r.enabled,
            interval_secs: c.rotation_interval_secs,
            health_trigger_enabled: c.health_trigger_enabled,
            cooldown_secs: c.cooldown_secs,
            cooldown_active: self.cooldown_active(now),
            active_config_id: session.map(|s| s.info.config_id),
            last_trigger: r.last_trigger.map(|t| trigger_name(t).to_string()),
            last_result: r.last_result.map(str::to_string),
            last_rotation_at: r.last_rotation_at,
            next_rotation_at: r.next_timer_ms.map(to_unix),
            last_candidate_config_id: r.last_candidate,
            health_failure_threshold: c.failure_threshold,
            consecutive_health_failures: session.map_or(0, |s| s.health.consecutive_failures),
            last_health_error: session.and_then(|s| s.health.last_error.clone()),
        }
    }
}
