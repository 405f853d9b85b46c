//! Subscription refresh on the daemon's timer. The supervisor only decides when: every
//! `check_interval_ms` after the previous run ended it emits [`Effect::RefreshSubscriptions`]
//! (the executor runs `xrat sub update --due` as a pidfd-watched child with a deadline), and
//! never has two in flight. Which subscriptions are due is the child's business (the store
//! knows each one's interval), so a slow provider never blocks the loop.

use super::{Effect, Now, RefreshId, Supervisor};

/// When and how long refresh runs may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshConfig {
    /// Pause between the end of one run and the start of the next.
    pub check_interval_ms: u64,
    /// A run is killed after this long.
    pub timeout_ms: u64,
    /// `runtime.rotation.refresh_subscriptions`: a timer rotation waits for a run first.
    pub before_rotation: bool,
}

/// Refresh state.
#[derive(Debug)]
pub(super) struct Refresh {
    config: RefreshConfig,
    /// When the next run starts; `None` while one runs.
    next_ms: Option<u64>,
    running: Option<RefreshId>,
    runs: u64,
    /// A timer rotation waits for the run in flight.
    rotate_after: bool,
}

impl Supervisor {
    /// Turns timed refreshes on: the first run starts `check_interval_ms` from `now`.
    pub fn enable_refresh(&mut self, now: Now, config: RefreshConfig) {
        self.refresh = Some(Refresh {
            config,
            next_ms: Some(now.monotonic_ms + config.check_interval_ms),
            running: None,
            runs: 0,
            rotate_after: false,
        });
    }

    /// Refresh runs started so far.
    pub fn refresh_runs(&self) -> u64 {
        self.refresh.as_ref().map_or(0, |r| r.runs)
    }

    /// The run in flight.
    pub fn refresh_running(&self) -> Option<RefreshId> {
        self.refresh.as_ref().and_then(|r| r.running)
    }

    /// When the next run is due.
    pub(super) fn refresh_deadline(&self) -> Option<u64> {
        self.refresh.as_ref().and_then(|r| r.next_ms)
    }

    /// On a timer: start a run when one is due (never while shutting down).
    pub(super) fn refresh_timer(&mut self, now: Now) {
        let due = self.refresh.as_ref().is_some_and(|r| {
            r.running.is_none() && r.next_ms.is_some_and(|due| now.monotonic_ms >= due)
        });
        if !due {
            return;
        }
        let refresh = RefreshId(self.fresh());
        let r = self.refresh.as_mut().expect("checked above");
        r.running = Some(refresh);
        r.next_ms = None;
        r.runs += 1;
        let timeout_ms = r.config.timeout_ms;
        self.emit(Effect::RefreshSubscriptions {
            refresh,
            timeout_ms,
        });
    }

    /// A due timer rotation with `before_rotation`: start a run now (or join the one in flight)
    /// and rotate when it ends. False when the rotation should go ahead at once.
    pub(super) fn refresh_before_rotation(&mut self) -> bool {
        if !self
            .refresh
            .as_ref()
            .is_some_and(|r| r.config.before_rotation)
        {
            return false;
        }
        if self.refresh_running().is_none() {
            let refresh = RefreshId(self.fresh());
            let r = self.refresh.as_mut().expect("checked above");
            r.running = Some(refresh);
            r.next_ms = None;
            r.runs += 1;
            let timeout_ms = r.config.timeout_ms;
            self.emit(Effect::RefreshSubscriptions {
                refresh,
                timeout_ms,
            });
        }
        self.refresh.as_mut().expect("checked above").rotate_after = true;
        true
    }

    /// A run ended: log a failure and schedule the next one.
    pub(super) fn on_refresh_done(
        &mut self,
        now: Now,
        refresh: RefreshId,
        result: Result<(), String>,
    ) {
        let Some(r) = self.refresh.as_mut().filter(|r| r.running == Some(refresh)) else {
            return;
        };
        r.running = None;
        r.next_ms = Some(now.monotonic_ms + r.config.check_interval_ms);
        let rotate = std::mem::take(&mut r.rotate_after);
        if result.is_ok() {
            // `xrat sub update` may have added, changed or removed any number of configs.
            self.publish_config(None, "refreshed");
        }
        if let Err(why) = result {
            self.emit(Effect::Log(format!(
                "subscription refresh (`xrat sub update --due`) failed: {why}; `xrat sub list` shows each subscription's last error"
            )));
        }
        if rotate {
            // The timer rotation that waited; it is skipped if its moment passed meanwhile
            // (rotation stopped, a cooldown or another operation began).
            self.timer_rotation_after_refresh(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::{Input, Supervisor};

    fn at(ms: u64) -> Now {
        Now {
            monotonic_ms: ms,
            unix_secs: 1_700_000_000 + ms / 1000,
            unix_ms: 1_700_000_000_000 + ms,
        }
    }

    fn refreshes(sup: &mut Supervisor) -> Vec<(RefreshId, u64)> {
        std::iter::from_fn(|| sup.poll_effect())
            .filter_map(|e| match e {
                Effect::RefreshSubscriptions {
                    refresh,
                    timeout_ms,
                } => Some((refresh, timeout_ms)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn one_run_at_a_time_end_to_start() {
        let mut sup = Supervisor::new(crate::supervisor::tests::config(), at(0), None);
        let config = RefreshConfig {
            check_interval_ms: 1_000,
            timeout_ms: 500,
            before_rotation: false,
        };
        sup.enable_refresh(at(0), config);
        assert!(sup.poll_timeout().unwrap() <= 1_000);
        sup.handle(at(999), Input::Timer);
        assert!(refreshes(&mut sup).is_empty());
        sup.handle(at(1_000), Input::Timer);
        let started = refreshes(&mut sup);
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].1, 500);
        // Still running: a later timer starts nothing.
        sup.handle(at(5_000), Input::Timer);
        assert!(refreshes(&mut sup).is_empty());
        assert_eq!(sup.refresh_running(), Some(started[0].0));
        let done = Input::RefreshDone {
            refresh: started[0].0,
            result: Err("exit status 1".into()),
        };
        sup.handle(at(5_100), done);
        let logged: Vec<Effect> = std::iter::from_fn(|| sup.poll_effect()).collect();
        assert!(logged
            .iter()
            .any(|e| matches!(e, Effect::Log(l) if l.contains("exit status 1"))));
        assert_eq!(sup.refresh_running(), None);
        sup.handle(at(6_099), Input::Timer);
        assert!(refreshes(&mut sup).is_empty());
        sup.handle(at(6_100), Input::Timer);
        assert_eq!(refreshes(&mut sup).len(), 1);
        assert_eq!(sup.refresh_runs(), 2);
    }

    #[test]
    fn a_timer_rotation_waits_for_the_refresh_before_it() {
        use crate::supervisor::tests::{feed, session};
        let cfg = crate::supervisor::SupervisorConfig {
            rotation_enabled: true,
            rotation_interval_secs: 100,
            ..crate::supervisor::tests::config()
        };
        let mut sup = Supervisor::new(cfg, at(0), Some(session(1, 1)));
        let config = RefreshConfig {
            check_interval_ms: 1_000_000,
            timeout_ms: 30_000,
            before_rotation: true,
        };
        sup.enable_refresh(at(0), config);
        let effects = feed(&mut sup, 100_000, Input::Timer);
        let refresh = effects.iter().find_map(|e| match e {
            Effect::RefreshSubscriptions { refresh, .. } => Some(*refresh),
            _ => None,
        });
        let refresh = refresh.expect("the due rotation starts a refresh first");
        assert!(!effects.iter().any(|e| matches!(e, Effect::Inspect { .. })));
        assert!(!sup.is_busy());
        let done = Input::RefreshDone {
            refresh,
            result: Ok(()),
        };
        let effects = feed(&mut sup, 104_000, done);
        assert!(
            effects.iter().any(|e| matches!(e, Effect::Inspect { .. })),
            "the rotation runs once the refresh ended: {effects:?}"
        );
        assert!(sup.is_busy());
    }
}
