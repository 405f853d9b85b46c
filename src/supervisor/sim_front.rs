//! The simulation's model of the front (front mode): the route it follows, session rows written
//! on `BeginSession`, relayed openings that fail on sick members and are retried down the route
//! (each failed target reported as `RelayFailed`), stalled openings that stay on their member
//! until a `Reroute` moves them down the route, remotes that die and come back, and pool cores
//! that report `CoreDrained` some time after they left the route (or never).

use std::collections::{BTreeMap, BTreeSet};

use crate::ipc::protocol::Code;

use super::sim::Rng;
use super::sim_exec::{Exec, Life};
use super::{CoreId, Input, Rejection, RelayFailure, RouteTarget, SessionInfo};

/// `BeginSession` is answered within this long.
pub(super) const BEGIN_MS: u64 = 30;

/// One relayed connection whose opening is being tried down the route.
#[derive(Debug)]
struct Opening {
    tried: Vec<(CoreId, i64)>,
    next_ms: u64,
}

/// A connection whose opening stalled on its member (the last of `tried`): it stays open.
#[derive(Debug)]
struct Held {
    tried: Vec<(CoreId, i64)>,
    /// When the front reports the stall (once).
    report_ms: Option<u64>,
}

/// Stalled connections kept; past it the oldest one's client gives up.
const HELD_MAX: usize = 16;

/// The front.
#[derive(Debug, Default)]
pub(super) struct FrontExec {
    pub route: Vec<RouteTarget>,
    /// Session rows written by `BeginSession`: row id → (pool core, member).
    pub sessions: BTreeMap<i64, (CoreId, i64)>,
    drain_ms: u64,
    begins: Vec<(u64, CoreId, i64)>,
    open_gap_ms: u64,
    next_open_ms: Option<u64>,
    openings: Vec<Opening>,
    /// Stalled openings, reported once their member's stall time passed.
    held: Vec<Held>,
    /// CoreDrained due for cores that left the route.
    drained: BTreeMap<CoreId, u64>,
    next_remote_ms: Option<u64>,
    /// A remote that was killed: (config index, its ok_pct before).
    killed: Option<(usize, u64)>,
    /// Relayed openings tried, failures reported, remotes killed, stalled openings rerouted.
    pub counts: [u64; 4],
}

impl FrontExec {
    pub fn new(on: bool, drain_ms: u64, now: u64, rng: &mut Rng) -> FrontExec {
        FrontExec {
            drain_ms,
            open_gap_ms: [20, 200, 2_000][rng.below(3) as usize],
            next_remote_ms: on.then(|| now + 2_000 + rng.below(60_000)),
            ..FrontExec::default()
        }
    }

    pub fn next_due(&self) -> Option<u64> {
        let begins = self.begins.iter().map(|b| b.0);
        let stalls = self.held.iter().filter_map(|h| h.report_ms);
        let openings = self.openings.iter().map(|o| o.next_ms);
        [self.next_open_ms, self.next_remote_ms]
            .into_iter()
            .flatten()
            .chain(begins)
            .chain(stalls)
            .chain(openings)
            .chain(self.drained.values().copied())
            .min()
    }

    /// The core exited: nothing more is reported for it.
    pub fn core_gone(&mut self, core: CoreId) {
        self.drained.remove(&core);
        self.held
            .retain(|h| h.tried.last().is_some_and(|t| t.0 != core));
    }

    /// `Reroute`: the member's stalled openings go on down the route, as failed ones would.
    pub fn on_reroute(&mut self, now: u64, core: CoreId, config_id: i64) {
        let on = |h: &Held| h.tried.last() == Some(&(core, config_id));
        let (moved, kept): (Vec<Held>, Vec<Held>) = self.held.drain(..).partition(on);
        self.held = kept;
        for h in moved {
            self.counts[3] += 1;
            self.openings.push(Opening {
                tried: h.tried,
                next_ms: now,
            });
        }
    }
}

impl Exec {
    pub fn on_begin(&mut self, now: u64, core: CoreId, config_id: i64, rng: &mut Rng) {
        let after = if rng.below(10) == 0 {
            BEGIN_MS
        } else {
            rng.below(BEGIN_MS / 3 + 1)
        };
        self.front.begins.push((now + after, core, config_id));
    }

    /// The supervisor emitted a route: cores that left it drain (reported at a random time, or
    /// never); openings start while it is not empty.
    pub fn on_route(&mut self, now: u64, targets: Vec<RouteTarget>, rng: &mut Rng) {
        let f = &mut self.front;
        let before: BTreeSet<CoreId> = f.route.iter().map(|t| t.core).collect();
        let after: BTreeSet<CoreId> = targets.iter().map(|t| t.core).collect();
        for core in before.difference(&after) {
            let alive = self.cores.get(core).is_some_and(|c| c.alive());
            if alive && rng.below(3) != 0 {
                let at = now + rng.below(f.drain_ms + f.drain_ms / 2 + 1);
                f.drained.insert(*core, at);
            }
        }
        for core in &after {
            f.drained.remove(core);
        }
        if targets.is_empty() {
            f.next_open_ms = None;
            f.openings.clear();
        } else if f.next_open_ms.is_none() {
            f.next_open_ms = Some(now + 1 + rng.below(f.open_gap_ms));
        }
        f.route = targets;
    }

    /// The front's completion due at `now`, if it has one (None: something happened that the
    /// supervisor does not hear about).
    pub fn front_pop(&mut self, now: u64, unix: u64, rng: &mut Rng) -> Option<Input> {
        let f = &mut self.front;
        if let Some(i) = f.begins.iter().position(|b| b.0 <= now) {
            let (_, core, config_id) = f.begins.remove(i);
            return Some(self.begun(core, config_id, unix, rng));
        }
        if let Some(h) = f
            .held
            .iter_mut()
            .find(|h| h.report_ms.is_some_and(|at| at <= now))
        {
            h.report_ms = None;
            let &(core, config_id) = h.tried.last().expect("a stalled target");
            return Some(Input::RelayFailed {
                core,
                config_id,
                failure: RelayFailure::Stalled,
            });
        }
        if let Some((&core, _)) = f.drained.iter().find(|(_, at)| **at <= now) {
            f.drained.remove(&core);
            return Some(Input::CoreDrained { core });
        }
        if f.next_remote_ms.is_some_and(|at| at <= now) {
            self.remote_event(now, rng);
            return None;
        }
        if let Some(i) = f.openings.iter().position(|o| o.next_ms <= now) {
            return self.attempt(i, now, rng);
        }
        if f.next_open_ms.is_some_and(|at| at <= now) {
            f.next_open_ms = Some(now + 1 + rng.below(f.open_gap_ms));
            f.openings.push(Opening {
                tried: Vec::new(),
                next_ms: now,
            });
            f.counts[0] += 1;
            let last = f.openings.len() - 1;
            return self.attempt(last, now, rng);
        }
        None
    }

    fn begun(&mut self, core: CoreId, config_id: i64, unix: u64, rng: &mut Rng) -> Input {
        if rng.below(25) == 0 {
            return Input::SessionBegun {
                core,
                config_id,
                session: Err(Rejection::new(Code::Internal, "the store is locked")),
            };
        }
        let c = &self.cores[&core];
        let socks_addr = c
            .inbounds
            .iter()
            .find(|(id, _)| *id == config_id)
            .map_or(super::sim_exec::addr(0), |(_, a)| *a);
        let info = SessionInfo {
            id: self.next_session,
            config_id,
            core: "v2ray".into(),
            pid: 10_000 + core.0 as u32,
            socks_addr,
            http_addr: None,
            started_at: unix,
        };
        self.next_session += 1;
        self.front.sessions.insert(info.id, (core, config_id));
        Input::SessionBegun {
            core,
            config_id,
            session: Ok(info),
        }
    }

    /// Kills a remote (its config's probes and openings all fail), or revives the one killed.
    fn remote_event(&mut self, now: u64, rng: &mut Rng) {
        match self.front.killed.take() {
            Some((i, pct)) => {
                self.configs[i].ok_pct = pct;
                self.front.next_remote_ms = Some(now + 2_000 + rng.below(60_000));
            }
            None => {
                let i = rng.below(self.configs.len() as u64) as usize;
                self.front.killed = Some((i, self.configs[i].ok_pct));
                self.configs[i].ok_pct = 0;
                self.front.counts[2] += 1;
                self.front.next_remote_ms = Some(now + 1_000 + rng.below(30_000));
            }
        }
    }

    /// Tries opening `i` on the next target of the current route it has not tried.
    fn attempt(&mut self, i: usize, now: u64, rng: &mut Rng) -> Option<Input> {
        let f = &mut self.front;
        let opening = &mut f.openings[i];
        let Some(target) = f
            .route
            .iter()
            .find(|t| !opening.tried.contains(&(t.core, t.config_id)))
            .copied()
        else {
            // Every target failed: the client is refused.
            f.openings.remove(i);
            return None;
        };
        let up = self
            .cores
            .get(&target.core)
            .is_some_and(|c| c.life == Life::Running);
        let ok_pct = self.configs[(target.config_id - 1) as usize].ok_pct;
        let failure = if !up {
            RelayFailure::Refused
        } else if rng.below(100) < ok_pct {
            f.openings.remove(i);
            return None;
        } else {
            match rng.below(5) {
                0 => RelayFailure::Refused,
                1 => RelayFailure::SocksReply(1 + rng.below(8) as u8),
                2 => RelayFailure::HttpStatus([502, 503, 403][rng.below(3) as usize]),
                3 => RelayFailure::ClosedEarly,
                _ => RelayFailure::Stalled,
            }
        };
        opening.tried.push((target.core, target.config_id));
        if failure == RelayFailure::Stalled {
            // The connection stays open; the front reports it once the stall time passed.
            let tried = f.openings.remove(i).tried;
            if f.held.len() == HELD_MAX {
                f.held.remove(0);
            }
            f.held.push(Held {
                tried,
                report_ms: Some(now + target.stall_ms),
            });
            return None;
        }
        f.counts[1] += 1;
        opening.next_ms = now + rng.below(3);
        Some(Input::RelayFailed {
            core: target.core,
            config_id: target.config_id,
            failure,
        })
    }
}
