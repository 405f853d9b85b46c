//! The simulation's checks for a respawned pool core (front mode): only the session's own pool
//! core that crashed is started again, at once, with the same members (those it had inbounds
//! for), not twice within the window; the session comes back on it within the operation's bound
//! (or the dead core's rotation follows); and the front's hold is bounded: emitted only by a
//! respawn, at most `RESPAWN_HOLD_MS` long, and never in force once the respawn is over.

use super::pool_respawn::{RESPAWN_HOLD_MS, RESPAWN_WINDOW_MS};
use super::sim_world::{Kind, OpModel, World};
use super::{CoreId, CoreSpec};

/// A respawn as the model follows it.
#[derive(Debug)]
pub(super) struct RespawnModel {
    /// The pool core that died.
    pub old_core: CoreId,
    pub config_id: i64,
    /// The new pool core, once started.
    pub core: Option<CoreId>,
}

/// What the model knows of respawns and holds.
#[derive(Debug, Default)]
pub(super) struct RespawnState {
    pub current: Option<RespawnModel>,
    pub last_ms: Option<u64>,
    /// The end of the hold last emitted (None once a route ended it).
    pub hold_until: Option<u64>,
    /// Respawns started, and those that put the session back.
    pub counts: [u64; 2],
}

impl World {
    /// A respawn began: the session's pool core crashed with the trigger armed.
    pub(super) fn respawn_started(&mut self) {
        let now = self.now.monotonic_ms;
        let session = self.sup.session.as_ref().map(|s| (s.info.id, s.core));
        let dead = self
            .dead
            .is_some_and(|d| Some(d.session) == session.map(|s| s.0));
        let pool = session
            .and_then(|s| self.exec.cores.get(&s.1))
            .is_some_and(|c| !c.alive() && matches!(c.spec, CoreSpec::Pool { .. }));
        self.check(
            self.cfg.front && dead && pool && !self.shutting_down,
            || format!("a respawn without a crashed pool core under the session ({session:?})"),
        );
        let recent = self
            .rs
            .last_ms
            .is_some_and(|at| now - at < RESPAWN_WINDOW_MS);
        self.check(!recent, || {
            format!(
                "a second respawn {} ms after the last",
                now - self.rs.last_ms.unwrap_or(0)
            )
        });
        self.rs.last_ms = Some(now);
        self.rs.counts[0] += 1;
        let s = self.sup.session.as_ref().expect("checked");
        self.rs.current = Some(RespawnModel {
            old_core: s.core,
            config_id: s.info.config_id,
            core: None,
        });
    }

    /// The respawn's pool core: the dead one's members, the session's first, once.
    pub(super) fn respawn_start_core(&mut self, core: CoreId, config_ids: &[i64]) {
        let Some(r) = self.rs.current.as_mut() else {
            self.fail("a respawn's StartCore with no respawn");
        };
        let first = r.core.replace(core).is_none();
        let (old_core, config_id) = (r.old_core, r.config_id);
        // The members it reported inbounds for (the ones the supervisor routed).
        let old: Vec<i64> = self
            .exec
            .cores
            .get(&old_core)
            .filter(|c| matches!(c.spec, CoreSpec::Pool { .. }))
            .map(|c| c.inbounds.iter().map(|(id, _)| *id).collect())
            .unwrap_or_default();
        let (mut want, mut got) = (old, config_ids.to_vec());
        want.sort_unstable();
        got.sort_unstable();
        self.check(
            first && want == got && config_ids.first() == Some(&config_id),
            || format!("a respawn started {config_ids:?} for pool {want:?} (session config {config_id})"),
        );
    }

    /// BeginSession during a respawn: the session's member on the new core.
    pub(super) fn respawn_begin(&self, core: CoreId, config_id: i64) {
        let r = self.rs.current.as_ref();
        let right = r.is_some_and(|r| r.core == Some(core) && r.config_id == config_id);
        self.check(right, || {
            format!("a respawn began {}/{config_id}: {r:?}", core.0)
        });
    }

    /// `HoldFront`: a hold only from a respawn in flight, bounded; a release at any time.
    pub(super) fn on_hold(&mut self, until_ms: u64) {
        let now = self.now.monotonic_ms;
        self.check(self.cfg.front, || "a HoldFront in direct mode".into());
        if until_ms > now {
            let respawn = self.op.as_ref().is_some_and(|op| op.kind == Kind::Respawn);
            self.check(respawn && until_ms <= now + RESPAWN_HOLD_MS, || {
                format!("a hold until {until_ms} ms at {now} ms (respawn {respawn})")
            });
        }
        self.rs.hold_until = Some(until_ms);
    }

    /// A respawn ended: the session is back on the new core, or the fallback is due.
    pub(super) fn respawn_ended(&mut self, op: &OpModel) {
        if op.kind != Kind::Respawn {
            return;
        }
        let Some(r) = self.rs.current.take() else {
            self.fail("a respawn ended that the model never saw begin");
        };
        let on_new = self
            .sup
            .session
            .as_ref()
            .is_some_and(|s| Some(s.core) == r.core && s.pid_running);
        self.rs.counts[1] += u64::from(on_new);
    }

    /// After every step: a hold in force (the route is empty, its end ahead) is a respawn's.
    pub(super) fn check_hold(&self) {
        let now = self.now.monotonic_ms;
        let in_force =
            self.rs.hold_until.is_some_and(|until| until > now) && self.fm.route.is_empty();
        let respawn = self.op.as_ref().is_some_and(|op| op.kind == Kind::Respawn);
        self.check(!in_force || respawn || self.shutting_down, || {
            format!(
                "the front holds connections until {:?} ms with no respawn in flight",
                self.rs.hold_until
            )
        });
    }
}
