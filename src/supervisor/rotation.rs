//! Health accounting and the rotation triggers (DESIGN §7): when to probe, when a trigger fires,
//! the cooldown, and what `proxy_status` reports. Timers are data: deadlines in monotonic ms.
//!
//! - `timer`: every `interval_secs` while rotation is enabled; one that meets the cooldown is
//!   skipped to the next interval.
//! - `health_check_failed`: `failure_threshold` failed probes in a row, with rotation and
//!   `health_trigger_enabled` on; one that meets the cooldown waits for its end. A core that
//!   exited counts as reaching the threshold at once and ignores the cooldown: there is no
//!   working session left to protect.
//! - `manual`: `runtime_replace`, always runs.

use crate::ipc::protocol::{ProxyStatusPayload, RotationPayload, Trigger};
use crate::ipc::RawId;

use super::ops::Job;
use super::replace::Replace;
use super::SupervisorConfig;
use super::{trigger_name, Effect, Now, ProbeId, ProbeKind, ReplaceResult, Reply, Supervisor};

/// Rotation state.
#[derive(Debug)]
pub(super) struct Rotation {
    pub enabled: bool,
    pub next_timer_ms: Option<u64>,
    pub cooldown_until_ms: u64,
    /// A health trigger that could not run yet (cooldown, or an operation in flight).
    pub health_pending: bool,
    /// The pending health trigger is for a core that exited: it ignores the cooldown.
    pub pending_core_gone: bool,
    pub last_trigger: Option<Trigger>,
    pub last_result: Option<ReplaceResult>,
    pub last_rotation_at: Option<u64>,
    pub last_candidate: Option<i64>,
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
            pending_core_gone: false,
            last_trigger: None,
            last_result: None,
            last_rotation_at: None,
            last_candidate: None,
        }
    }
}

impl Supervisor {
    /// The earliest rotation deadline: the timer, or the end of a cooldown a trigger waits on.
    pub(super) fn rotation_deadline(&self) -> Option<u64> {
        let r = &self.rotation;
        if self.op.is_some() {
            // Due triggers are looked at again when the operation ends.
            return None;
        }
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
        if self.health_probe.is_some() || self.op.is_some() {
            return;
        }
        let addr = session.info.socks_addr;
        let probe = ProbeId(self.fresh());
        self.health_probe = Some(probe);
        // Probes start on every tick, start to start: a probe that could outlast the interval
        // (a hung core or remote) would make the next tick skip, halving the failure rate.
        let interval = self.config.health_interval_ms;
        let timeout_ms = self
            .config
            .probe_timeout_ms
            .min((interval - interval / 10).max(1));
        self.emit(Effect::Probe {
            probe,
            addr,
            kind: ProbeKind::Http,
            timeout_ms,
        });
    }

    pub(super) fn on_health_probe_done(&mut self, now: Now, result: Result<u64, String>) {
        let Some(session) = self.session.as_mut().filter(|s| s.pid_running) else {
            return;
        };
        session.health.last_check_at = Some(now.unix_secs);
        match result {
            Ok(latency) => {
                session.health.last_latency_ms = Some(latency);
                session.health.consecutive_failures = 0;
                session.health.last_error = None;
                // The session recovered: a trigger waiting for the cooldown lapses.
                self.rotation.health_pending = false;
            }
            Err(why) => {
                session.health.consecutive_failures += 1;
                session.health.last_error = Some(why);
            }
        }
        let failing = session.health.consecutive_failures >= self.config.failure_threshold;
        self.publish_health();
        if failing {
            self.health_trigger(now, false);
        }
    }

    /// A health trigger: runs now, or waits for the cooldown (unless the core is gone) or for
    /// the operation in flight.
    pub(super) fn health_trigger(&mut self, now: Now, core_gone: bool) {
        if !self.rotation.enabled || !self.config.health_trigger_enabled {
            return;
        }
        if (core_gone || !self.cooldown_active(now))
            && self.try_rotate(now, Trigger::HealthCheckFailed)
        {
            return;
        }
        self.rotation.health_pending = true;
        self.rotation.pending_core_gone |= core_gone;
    }

    /// After an operation: a dead core whose rotation had to wait gets it now, unless the
    /// operation was itself a rotation (which already dealt with it) or changed the session.
    pub(super) fn after_op(&mut self, now: Now, was_replace: bool) {
        if self.shutting_down {
            return;
        }
        let dead = self.session.as_ref().is_some_and(|s| !s.pid_running);
        if self.rotation.pending_core_gone && dead && !was_replace {
            self.rotation.health_pending = false;
            self.rotation.pending_core_gone = false;
            self.try_rotate(now, Trigger::HealthCheckFailed);
            return;
        }
        if !dead {
            self.rotation.pending_core_gone = false;
        }
        self.rotation_timers(now);
    }

    /// Timer and pending-health deadlines.
    pub(super) fn rotation_timers(&mut self, now: Now) {
        let interval_ms = self.config.rotation_interval_secs * 1000;
        // A pending trigger whose session is gone is dropped (its deadline would stay due).
        if self.rotation.health_pending
            && !self.cooldown_active(now)
            && (self.session.is_none() || self.try_rotate(now, Trigger::HealthCheckFailed))
        {
            self.rotation.health_pending = false;
            self.rotation.pending_core_gone = false;
        }
        let Some(due) = self
            .rotation
            .next_timer_ms
            .filter(|due| now.monotonic_ms >= *due)
        else {
            return;
        };
        if self.op.is_some() {
            // Looked at again when the operation ends (the deadline stays due).
            return;
        }
        self.rotation.next_timer_ms = Some(due.max(now.monotonic_ms) + interval_ms);
        if !self.cooldown_active(now) && !self.refresh_before_rotation() {
            self.try_rotate(now, Trigger::Timer);
        }
    }

    /// The timer rotation that waited for a subscription refresh
    /// (`runtime.rotation.refresh_subscriptions`).
    pub(super) fn timer_rotation_after_refresh(&mut self, now: Now) {
        if self.rotation.enabled && !self.cooldown_active(now) {
            self.try_rotate(now, Trigger::Timer);
        }
    }

    /// Starts an automatic rotation when a session exists and nothing else runs.
    fn try_rotate(&mut self, now: Now, trigger: Trigger) -> bool {
        if self.op.is_some() || self.shutting_down {
            return false;
        }
        if trigger == Trigger::HealthCheckFailed {
            if let Some(to) = self.warm_member(None) {
                self.start_pool_switch(now, None, RawId::NONE, to, trigger, false);
                return true;
            }
        }
        let Some(session) = &self.session else {
            return false;
        };
        let job = Job::Replace(Box::new(Replace::new(trigger, None, session)));
        self.launch(now, None, RawId::NONE, job);
        true
    }

    /// Records a finished rotation: cooldown, timer restart, history.
    pub(super) fn rotation_finished(
        &mut self,
        now: Now,
        trigger: Trigger,
        result: ReplaceResult,
        candidate: Option<i64>,
    ) {
        let r = &mut self.rotation;
        r.cooldown_until_ms = now.monotonic_ms + self.config.cooldown_secs * 1000;
        r.last_trigger = Some(trigger);
        r.last_result = Some(result);
        r.last_rotation_at = Some(now.unix_secs);
        r.last_candidate = candidate;
        if r.enabled {
            r.next_timer_ms = Some(now.monotonic_ms + self.config.rotation_interval_secs * 1000);
        }
        if result != ReplaceResult::NoWorkingCandidate {
            r.health_pending = false;
            r.pending_core_gone = false;
        }
    }

    /// Settings read again: the new periods and thresholds apply from now; whether rotation is
    /// on stays as `proxy_start`/`proxy_stop` left it.
    pub(super) fn on_reload(
        &mut self,
        now: Now,
        from: Option<(super::ConnId, crate::ipc::RawId)>,
        result: Result<super::Reloaded, String>,
    ) {
        let reply = match result {
            Err(why) => {
                self.log(format!("reload refused: {why}"));
                super::error(crate::ipc::protocol::Code::Conflict, why)
            }
            Ok(reloaded) => {
                let old = std::mem::replace(&mut self.config, reloaded.config);
                self.config.pid = old.pid;
                self.config.rotation_enabled = old.rotation_enabled;
                if self.config.health_interval_ms != old.health_interval_ms {
                    self.next_health_ms = now.monotonic_ms + self.config.health_interval_ms;
                }
                if self.config.rotation_interval_secs != old.rotation_interval_secs {
                    if let Some(next) = self.rotation.next_timer_ms.as_mut() {
                        *next = now.monotonic_ms + self.config.rotation_interval_secs * 1000;
                    }
                }
                self.publish_config(None, "reloaded");
                self.log(format!(
                    "settings reloaded; applied: [{}]; need a restart: [{}]",
                    reloaded.applied.join(", "),
                    reloaded.restart_needed.join(", ")
                ));
                Reply::Reloaded(crate::ipc::protocol::ReloadPayload {
                    reloaded: true,
                    applied: reloaded.applied,
                    restart_needed: reloaded.restart_needed,
                })
            }
        };
        if let Some((conn, id)) = from {
            self.reply(conn, id, reply, false);
        }
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
            r.pending_core_gone = false;
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
            last_result: r.last_result.map(|result| result.name().to_string()),
            last_rotation_at: r.last_rotation_at,
            next_rotation_at: r.next_timer_ms.map(to_unix),
            last_candidate_config_id: r.last_candidate,
            health_failure_threshold: c.failure_threshold,
            consecutive_health_failures: session.map_or(0, |s| s.health.consecutive_failures),
            last_health_error: session.and_then(|s| s.health.last_error.clone()),
            pool: self.pool_view(),
        }
    }
}
