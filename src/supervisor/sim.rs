//! Seeded simulation, quinn style (issue 8, DESIGN §8): the real supervisor, a model of the
//! executor with random timings (`sim_exec.rs`), random clients, and a fake clock that jumps to
//! the earliest of [`Supervisor::poll_timeout`], the next executor completion and the next client
//! action (`sim_world.rs`). Safety is checked on every effect and after every step, liveness after
//! every step (`sim_check.rs` and below).
//!
//! Each run draws a fresh seed and prints it; `XRAT_SIM_SEED=<n>` replays one (a failure names the
//! seed of the world that broke); `XRAT_SIM_STEPS=<n>` changes the step budget.

use std::io::Write;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::sim_world::{Stats, World};

/// Split between direct and front worlds (about half each); front steps cost about twice as
/// much or more (relay traffic, the route checks), so the time stays near the old direct-only run.
const STEPS_DEFAULT: u64 = 500_000;

/// splitmix64: tiny, seedable, and good enough to pick events.
#[derive(Debug, Clone)]
pub(super) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.next() % n
    }
}

impl World {
    /// The rules checked after every step.
    pub(super) fn check_step(&mut self) {
        let now = self.now.monotonic_ms;
        self.check(self.sup.is_busy() == self.op.is_some(), || {
            "busy disagrees with the operations seen".into()
        });
        if let Some(op) = &self.op {
            let age = now - op.started_ms;
            self.check(age <= op.bound_ms, || {
                format!(
                    "{:?} in flight for {age} ms, over its bound of {} ms",
                    op.kind, op.bound_ms
                )
            });
        }
        let (sessions, batches, _) = self.exec.live();
        let pools = self.exec.pools_running();
        self.check(sessions <= 1 && batches <= 1, || {
            format!("{sessions} session cores and {batches} batch cores alive")
        });
        let pools_max = if self.cfg.front {
            2 + super::pool::DRAINING_MAX
        } else {
            0
        };
        self.check(pools <= pools_max, || format!("{pools} pool cores alive"));
        if self.cfg.front {
            self.check_front();
            self.check_hold();
        }
        self.check_session();
        self.check_events_step();
        self.check_timer();
        self.check_dead_core();
        if self.shutting_down && !self.shutdown_seen {
            // Nothing left to wait for: the daemon must exit now, not at some later input.
            let idle =
                self.op.is_none() && self.sup.session().is_none() && self.exec.live() == (0, 0, 0);
            self.check(!idle, || {
                "shutdown with nothing left to do was not announced".into()
            });
        }
        if let Some(since) = self.shutdown_since {
            let bound = self.bound(super::sim_world::Kind::Replace)
                + self.bound(super::sim_world::Kind::Disconnect)
                + 10_000;
            self.check(self.shutdown_seen || now - since <= bound, || {
                format!("shutdown began at {since} ms and has not finished")
            });
        }
    }

    /// The supervisor's session is a core the executor runs (or saw exit).
    fn check_session(&mut self) {
        let id = self.sup.session().map(|s| s.id);
        if id != self.health_session {
            self.health_session = id;
            self.health_failures = 0;
        }
        let Some(s) = self.sup.session.as_ref() else {
            return;
        };
        let Some(core) = self.exec.cores.get(&s.core) else {
            self.fail("the session's core was never started");
        };
        let same = match core.spec {
            super::CoreSpec::Pool { .. } => {
                self.exec.front.sessions.get(&s.info.id) == Some(&(s.core, s.info.config_id))
            }
            _ => core.session.as_ref().map(|i| i.id) == Some(s.info.id),
        };
        self.check(same, || "the session does not match its core".into());
        self.check(s.pid_running == core.alive(), || {
            format!(
                "pid_running {} but the core is {:?}",
                s.pid_running, core.life
            )
        });
        self.check(!s.pid_running || core.was_ready, || {
            "a session whose core never got ready".into()
        });
    }

    /// A due timer rotation starts at once when nothing stops it; otherwise it is skipped to the
    /// next interval (or waits for the operation in flight).
    fn check_timer(&mut self) {
        let now = self.now.monotonic_ms;
        if !self.enabled || self.shutting_down || self.op.is_some() {
            return;
        }
        let Some(due) = self.timer_due.filter(|due| *due <= now) else {
            return;
        };
        let can = self.sup.session().is_some() && now >= self.cooldown_until;
        self.check(!can, || {
            format!("the timer rotation due at {due} ms did not start")
        });
        self.timer_due = Some(now + self.cfg.rotation_interval_secs * 1000);
    }

    /// A crashed active core gets a rotation at once, or when the operation in flight ends (after
    /// the cooldown when that operation was a rotation, which already dealt with it).
    fn check_dead_core(&mut self) {
        let Some(dead) = self.dead else {
            return;
        };
        if self.sup.session().map(|s| s.id) != Some(dead.session) {
            self.dead = None;
            return;
        }
        if self.op.is_some() {
            return;
        }
        let late = !dead.replace_in_flight || self.now.monotonic_ms >= self.cooldown_until;
        self.check(!late, || {
            format!(
                "session {}'s core crashed at {} ms and no rotation started",
                dead.session, dead.at_ms
            )
        });
    }
}

/// Runs worlds until `steps` steps were taken. A world ends at shutdown (random, or after its
/// life); the next world's seed comes from this one's, so a printed world seed replays alone.
pub(super) fn run(seed: u64, steps: u64) -> (u64, u64, Stats) {
    let (mut taken, mut worlds, mut world_seed) = (0, 0, seed);
    let mut stats = Stats::default();
    while taken < steps {
        let mut world = World::new(world_seed);
        let life = 2_000 + Rng(world_seed ^ 0x5EED).below(30_000);
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            while !world.shutdown_seen {
                if world.steps == life {
                    world.begin_shutdown();
                    if world.shutdown_seen {
                        break;
                    }
                }
                world.step();
                world.check(world.steps < life + 100_000, || {
                    "shutdown never finished".into()
                });
            }
        }));
        if let Err(panic) = ran {
            // A supervisor assertion does not know the seed.
            let _ = writeln!(
                std::io::stderr(),
                "the world broke at step {}; replay with XRAT_SIM_SEED={world_seed}",
                world.steps
            );
            std::panic::resume_unwind(panic);
        }
        taken += world.steps;
        worlds += 1;
        let s = &world.stats;
        for i in 0..4 {
            stats.results[i] += s.results[i];
        }
        for i in 0..3 {
            stats.auto[i] += s.auto[i];
        }
        stats.fallbacks += s.fallbacks;
        stats.early += s.early;
        stats.busy += s.busy;
        stats.crashes += s.crashes;
        stats.refreshes += s.refreshes;
        stats.respawns[0] += world.rs.counts[0];
        stats.respawns[1] += world.rs.counts[1];
        stats.shutdowns_quiet += s.shutdowns_quiet;
        stats.events += world.ev.published;
        let f = &world.exec.front.counts;
        let m = &world.fm.counts;
        let front = [
            u64::from(world.cfg.front),
            f[0],
            f[1],
            f[2],
            f[3],
            m[0],
            m[1],
            m[2],
            m[3],
        ];
        for (sum, n) in stats.front.iter_mut().zip(front) {
            *sum += n;
        }
        world_seed = Rng(world_seed).next();
    }
    (taken, worlds, stats)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn fresh_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    Rng(nanos ^ (u64::from(std::process::id()) << 32)).next()
}

#[test]
fn simulation_keeps_the_invariants() {
    let steps = env_u64("XRAT_SIM_STEPS").unwrap_or(STEPS_DEFAULT);
    let seed = env_u64("XRAT_SIM_SEED").unwrap_or_else(fresh_seed);
    // Straight to the stream, so that it shows even when the test passes (print! is captured).
    let _ = writeln!(std::io::stderr(), "simulation seed: XRAT_SIM_SEED={seed}");
    let started = Instant::now();
    let (taken, worlds, stats) = run(seed, steps);
    let secs = started.elapsed().as_secs_f64();
    let _ = writeln!(
        std::io::stderr(),
        "{taken} steps in {worlds} worlds, {secs:.1} s ({:.0} steps/s); XRAT_SIM_SEED={seed}",
        taken as f64 / secs
    );
    let _ = writeln!(std::io::stderr(), "{stats:?}");
}

#[test]
fn a_broken_invariant_names_its_seed() {
    let world = World::new(42);
    let failure = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        world.check(false, || "demo".into())
    }));
    let message = *failure.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("XRAT_SIM_SEED=42"), "{message}");
}

#[test]
fn a_seed_replays_exactly() {
    let run_once = |seed| {
        let mut world = World::new(seed);
        while world.steps < 3_000 && !world.shutdown_seen {
            world.step();
        }
        (
            world.now,
            world.steps,
            world.exec.next_due(),
            world.sup.poll_timeout(),
        )
    };
    assert_eq!(run_once(7), run_once(7));
}
