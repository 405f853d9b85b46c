//! The simulation's model of timed subscription refreshes: half of the worlds enable them with
//! a random interval and timeout; the executor answers each run after a random time, with a
//! random verdict. Safety: at most one run in flight, none while shutting down, none before
//! the interval since the last end, the configured timeout. Liveness: a due run starts.

use super::refresh::RefreshConfig;
use super::sim_world::World;
use super::{Input, Now, RefreshId, Supervisor};

/// What the world knows about refreshes.
#[derive(Debug, Default)]
pub(super) struct RefreshModel {
    pub config: Option<RefreshConfig>,
    /// The run in flight and when its end is delivered.
    pub running: Option<(RefreshId, u64)>,
    /// When the last run ended (or refreshes were enabled).
    pub last_end_ms: u64,
    pub runs: u64,
}

/// Enables refreshes in half of the worlds.
pub(super) fn setup(rng: &mut super::sim::Rng, sup: &mut Supervisor, now: Now) -> RefreshModel {
    if rng.below(2) == 0 {
        return RefreshModel::default();
    }
    let config = RefreshConfig {
        check_interval_ms: 1_000 + rng.below(60_000),
        timeout_ms: 500 + rng.below(30_000),
        // Not simulated: the world's timer model expects a due rotation at once.
        before_rotation: false,
    };
    sup.enable_refresh(now, config);
    RefreshModel {
        config: Some(config),
        last_end_ms: now.monotonic_ms,
        ..RefreshModel::default()
    }
}

impl World {
    /// When the executor delivers the running refresh's end.
    pub fn refresh_due(&self) -> Option<u64> {
        self.refresh.running.map(|(_, at)| at)
    }

    /// Delivers the running refresh's end (exited or killed at its deadline).
    pub fn refresh_end(&mut self) -> Input {
        let (refresh, _) = self.refresh.running.take().expect("a run is due");
        self.refresh.last_end_ms = self.now.monotonic_ms;
        let result = match self.rng.below(3) {
            0 => Err("exited with status 1".into()),
            _ => Ok(()),
        };
        Input::RefreshDone { refresh, result }
    }

    /// `Effect::RefreshSubscriptions` seen.
    pub fn on_refresh(&mut self, refresh: RefreshId, timeout_ms: u64) {
        let Some(config) = self.refresh.config else {
            self.fail("a refresh run in a world without refreshes");
        };
        let now = self.now.monotonic_ms;
        self.check(self.refresh.running.is_none(), || {
            "a second refresh run while one is in flight".into()
        });
        self.check(!self.sup.is_shutting_down(), || {
            "a refresh run while shutting down".into()
        });
        self.check(
            now >= self.refresh.last_end_ms + config.check_interval_ms,
            || {
                format!(
                    "a refresh run {} ms after the last end (interval {})",
                    now - self.refresh.last_end_ms,
                    config.check_interval_ms
                )
            },
        );
        self.check(timeout_ms == config.timeout_ms, || {
            format!("refresh timeout {timeout_ms} ms")
        });
        // The executor ends a run by its deadline at the latest.
        let ends = now + self.rng.below(timeout_ms + 1);
        self.refresh.running = Some((refresh, ends));
        self.refresh.runs += 1;
        self.stats.refreshes += 1;
    }

    /// Liveness: a run that is due has started (checked after every step).
    pub fn check_refresh(&self) {
        let Some(config) = self.refresh.config else {
            return;
        };
        if self.shutting_down || self.sup.is_shutting_down() || self.refresh.running.is_some() {
            return;
        }
        let due = self.refresh.last_end_ms + config.check_interval_ms;
        self.check(self.now.monotonic_ms <= due, || {
            format!("a refresh due at {due} ms has not started")
        });
    }
}
