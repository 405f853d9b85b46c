//! The simulation's model of the executor: cores that start, get ready, fail, crash and exit
//! after a stop; probes with random latencies; looks at a random store. Every completion is
//! scheduled at a future time and delivered by the driver as one [`Input`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::ipc::protocol::Code;

use super::sim::Rng;
use super::{
    ConfigCheck, CoreId, CoreSpec, Input, InspectId, ProbeId, Rejection, Selection, SessionInfo,
    StartFailure, TestHistory, TestRecord,
};

/// SIGKILL takes effect within this long.
pub(super) const KILL_MS: u64 = 5;
/// Spawning (or refusing) takes at most this long.
pub(super) const SPAWN_MS: u64 = 30;
/// Inspect answers within this long.
pub(super) const INSPECT_MS: u64 = 30;

/// Where a core is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Life {
    /// StartCore seen; CoreStarted (or a refusal) pending.
    Spawning,
    /// CoreStarted delivered; ready, not-ready or an exit pending.
    Starting,
    /// Ready delivered.
    Running,
    /// CoreFailed{NotReady} delivered; still runs until stopped.
    NotReady,
    /// StopCore seen; the exit is pending.
    Stopping,
    /// Refused, or CoreExited delivered.
    Gone,
}

/// What a core does next on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Started,
    Refused,
    Ready,
    NotReady,
    ExitAtStart,
    Crash,
    Exit,
}

#[derive(Debug)]
pub(super) struct CoreModel {
    pub spec: CoreSpec,
    pub life: Life,
    pub session: Option<SessionInfo>,
    pub inbounds: Vec<(i64, SocketAddr)>,
    pub ready_timeout_ms: u64,
    pub spawned_ms: u64,
    /// The exit was not asked for (a crash after ready).
    pub crashed: bool,
    /// Ready was delivered once.
    pub was_ready: bool,
    next: Option<(u64, Next)>,
}

impl CoreModel {
    /// Started (or starting) and not yet seen to exit.
    pub fn alive(&self) -> bool {
        !matches!(self.life, Life::Gone)
    }
}

/// What a probe goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// A session core's inbound.
    Session(CoreId),
    /// A batch core's inbound for one config.
    Batch(CoreId, i64),
    /// A pool core's internal inbound for one member (front mode).
    Pool(CoreId, i64),
    /// Nothing listens there.
    Nothing,
}

#[derive(Debug)]
pub(super) struct ProbeModel {
    pub target: Target,
    pub due_ms: u64,
    pub result: Result<u64, String>,
}

/// One stored config.
#[derive(Debug, Clone)]
pub(super) struct StoredConfig {
    pub enabled: bool,
    pub runnable: bool,
    /// Chance in percent that a probe through it passes.
    pub ok_pct: u64,
    /// Its stored test results (the model of `config_tests`).
    pub history: TestHistory,
}

/// The executor.
#[derive(Debug)]
pub(super) struct Exec {
    pub cores: BTreeMap<CoreId, CoreModel>,
    pub probes: BTreeMap<ProbeId, ProbeModel>,
    inspects: Vec<(u64, InspectId, Selection)>,
    pub configs: Vec<StoredConfig>,
    addrs: BTreeMap<SocketAddr, Target>,
    next_port: u32,
    pub(super) next_session: i64,
    crash_pct: u64,
    adopted: Option<SessionInfo>,
    /// The cores not yet gone (the only ones with something pending).
    live_ids: Vec<CoreId>,
    /// The front (front mode).
    pub front: super::sim_front::FrontExec,
}

pub(super) fn addr(n: u32) -> SocketAddr {
    let ip = Ipv4Addr::new(127, 1 + (n >> 16) as u8, (n >> 8) as u8, n as u8);
    SocketAddr::new(IpAddr::V4(ip), 1080)
}

impl Exec {
    pub fn new(rng: &mut Rng) -> Exec {
        let n = 1 + rng.below(6) as usize;
        let configs = (0..n)
            .map(|_| StoredConfig {
                enabled: rng.below(10) != 0,
                runnable: rng.below(8) != 0,
                ok_pct: [100, 95, 70, 30, 0][rng.below(5) as usize],
                history: TestHistory::default(),
            })
            .collect();
        Exec {
            cores: BTreeMap::new(),
            probes: BTreeMap::new(),
            inspects: Vec::new(),
            configs,
            addrs: BTreeMap::new(),
            next_port: 1,
            next_session: 1,
            crash_pct: [0, 10, 30, 60][rng.below(4) as usize],
            adopted: None,
            live_ids: Vec::new(),
            front: Default::default(),
        }
    }

    fn fresh_addr(&mut self, target: Target) -> SocketAddr {
        let a = addr(self.next_port);
        self.next_port += 1;
        self.addrs.insert(a, target);
        a
    }

    /// A session left by a previous daemon, for [`Supervisor::new`](super::Supervisor::new).
    pub fn adopt_info(&mut self, unix: u64) -> SessionInfo {
        let info = SessionInfo {
            id: self.next_session,
            config_id: 1,
            core: "v2ray".into(),
            pid: 9_999,
            socks_addr: addr(self.next_port),
            http_addr: None,
            started_at: unix,
        };
        self.next_port += 1;
        self.next_session += 1;
        self.adopted = Some(info.clone());
        info
    }

    /// The supervisor named the adopted session's core.
    pub fn adopt(&mut self, core: CoreId) {
        let info = self.adopted.take().expect("adopt_info first");
        self.addrs.insert(info.socks_addr, Target::Session(core));
        let model = CoreModel {
            spec: CoreSpec::Session {
                config_id: info.config_id,
            },
            life: Life::Running,
            session: Some(info),
            inbounds: Vec::new(),
            ready_timeout_ms: 0,
            spawned_ms: 0,
            crashed: false,
            was_ready: true,
            next: None,
        };
        self.cores.insert(core, model);
        self.live_ids.push(core);
    }

    /// Session, batch and pool cores alive.
    pub fn live(&self) -> (usize, usize, usize) {
        let alive = self.live_ids.iter().map(|id| &self.cores[id]);
        let (mut sessions, mut batches, mut pools) = (0, 0, 0);
        for c in alive {
            match c.spec {
                CoreSpec::Session { .. } => sessions += 1,
                CoreSpec::Batch { .. } => batches += 1,
                CoreSpec::Pool { .. } => pools += 1,
            }
        }
        (sessions, batches, pools)
    }

    /// Pool cores alive that were not asked to stop.
    pub fn pools_running(&self) -> usize {
        let alive = self.live_ids.iter().map(|id| &self.cores[id]);
        alive
            .filter(|c| matches!(c.spec, CoreSpec::Pool { .. }) && c.life != Life::Stopping)
            .count()
    }

    /// When the next completion is due.
    pub fn next_due(&self) -> Option<u64> {
        let cores = self
            .live_ids
            .iter()
            .filter_map(|id| self.cores[id].next.map(|n| n.0));
        let probes = self.probes.values().map(|p| p.due_ms);
        let inspects = self.inspects.iter().map(|i| i.0);
        let front = self.front.next_due();
        cores.chain(probes).chain(inspects).chain(front).min()
    }

    /// The completion due at `now` (the driver calls it at [`Exec::next_due`]).
    pub fn pop(&mut self, now: u64, unix: u64, rng: &mut Rng) -> Option<Input> {
        if let Some(i) = self.inspects.iter().position(|i| i.0 <= now) {
            let (_, inspect, selection) = self.inspects.remove(i);
            let configs = self.inspect(selection, rng);
            return Some(Input::Inspected { inspect, configs });
        }
        let due_probe = self.probes.iter().find(|(_, p)| p.due_ms <= now);
        if let Some((&probe, _)) = due_probe {
            let p = self.probes.remove(&probe).expect("found");
            return Some(Input::ProbeDone {
                probe,
                result: p.result,
            });
        }
        let core = self
            .live_ids
            .iter()
            .find(|id| self.cores[id].next.is_some_and(|n| n.0 <= now));
        match core {
            Some(&core) => Some(self.core_event(core, now, unix, rng)),
            None => self.front_pop(now, unix, rng),
        }
    }

    fn inspect(
        &mut self,
        selection: Selection,
        rng: &mut Rng,
    ) -> Result<Vec<ConfigCheck>, Rejection> {
        if rng.below(40) == 0 {
            return Err(Rejection::new(Code::Internal, "the store is locked"));
        }
        let check = |id: i64, c: &StoredConfig, rng: &mut Rng| ConfigCheck {
            config_id: id,
            history: c.history,
            result: if !c.enabled {
                Err(Rejection::new(
                    Code::NotFound,
                    format!("config {id} is disabled"),
                ))
            } else if !c.runnable || rng.below(30) == 0 {
                Err(Rejection::new(Code::Conflict, "no core supports it"))
            } else {
                Ok(())
            },
        };
        let all = self
            .configs
            .iter()
            .enumerate()
            .map(|(i, c)| (i as i64 + 1, c));
        Ok(match selection {
            Selection::All => all.map(|(id, c)| check(id, c, rng)).collect(),
            Selection::Enabled => all
                .filter(|(_, c)| c.enabled)
                .map(|(id, c)| check(id, c, rng))
                .collect(),
            Selection::One(want) => match all.clone().find(|(id, _)| *id == want) {
                Some((id, c)) => vec![check(id, c, rng)],
                None => Vec::new(),
            },
            Selection::WithEnabled(want) => {
                let mut checks: Vec<ConfigCheck> = match all.clone().find(|(id, _)| *id == want) {
                    Some((id, c)) => vec![check(id, c, rng)],
                    None => Vec::new(),
                };
                for (id, c) in all.filter(|(id, c)| c.enabled && *id != want) {
                    checks.push(check(id, c, rng));
                }
                checks
            }
        })
    }

    /// `Effect::RecordTests`: the store model takes the results (configs it does not hold are
    /// skipped, as the store skips removed ones).
    pub fn on_record(&mut self, results: &[TestRecord]) {
        for r in results {
            let index = usize::try_from(r.config_id - 1).ok();
            if let Some(c) = index.and_then(|i| self.configs.get_mut(i)) {
                super::quarantine::record(&mut c.history, r.at, r.ok);
            }
        }
    }

    pub fn on_inspect(
        &mut self,
        now: u64,
        inspect: InspectId,
        selection: Selection,
        rng: &mut Rng,
    ) {
        self.inspects
            .push((now + rng.below(INSPECT_MS + 1), inspect, selection));
    }

    pub fn on_start(
        &mut self,
        now: u64,
        core: CoreId,
        spec: CoreSpec,
        ready_ms: u64,
        rng: &mut Rng,
    ) {
        let next = if rng.below(14) == 0 {
            Next::Refused
        } else {
            Next::Started
        };
        let model = CoreModel {
            spec,
            life: Life::Spawning,
            session: None,
            inbounds: Vec::new(),
            ready_timeout_ms: ready_ms,
            spawned_ms: now,
            crashed: false,
            was_ready: false,
            next: Some((now + rng.below(SPAWN_MS + 1), next)),
        };
        self.cores.insert(core, model);
        self.live_ids.push(core);
    }

    /// SIGTERM, then SIGKILL after `grace_ms`. Err when the core cannot be stopped.
    pub fn on_stop(
        &mut self,
        now: u64,
        core: CoreId,
        grace_ms: u64,
        rng: &mut Rng,
    ) -> Result<(), String> {
        let Some(c) = self.cores.get_mut(&core) else {
            return Err(format!(
                "StopCore of core {} that was never started",
                core.0
            ));
        };
        match c.life {
            Life::Starting | Life::Running | Life::NotReady => {}
            life => return Err(format!("StopCore of core {} in state {life:?}", core.0)),
        }
        let after = if grace_ms == 0 || rng.below(8) == 0 {
            grace_ms + rng.below(KILL_MS + 1)
        } else {
            rng.below(grace_ms)
        };
        c.life = Life::Stopping;
        c.next = Some((now + after, Next::Exit));
        Ok(())
    }

    pub fn on_probe(
        &mut self,
        now: u64,
        probe: ProbeId,
        at: SocketAddr,
        timeout_ms: u64,
        rng: &mut Rng,
    ) -> Target {
        let target = self.addrs.get(&at).copied().unwrap_or(Target::Nothing);
        let (core, config) = match target {
            Target::Session(core) => (
                Some(core),
                self.cores[&core].session.as_ref().map(|s| s.config_id),
            ),
            Target::Batch(core, config) | Target::Pool(core, config) => (Some(core), Some(config)),
            Target::Nothing => (None, None),
        };
        let up = core.is_some_and(|c| self.cores[&c].life == Life::Running);
        let ok_pct = config.map_or(0, |id| self.configs[(id - 1) as usize].ok_pct);
        let (after, result) = if !up {
            (
                rng.below(KILL_MS + 1),
                Err("connection refused".to_string()),
            )
        } else if rng.below(100) < ok_pct {
            let latency = 1 + rng.below(timeout_ms + timeout_ms / 5);
            if latency >= timeout_ms {
                (timeout_ms, Err(format!("no answer within {timeout_ms} ms")))
            } else {
                (latency, Ok(latency))
            }
        } else {
            (
                rng.below(timeout_ms + 1),
                Err("SOCKS5 reply 5 (connection refused)".into()),
            )
        };
        let model = ProbeModel {
            target,
            due_ms: now + after,
            result,
        };
        self.probes.insert(probe, model);
        target
    }

    fn core_event(&mut self, core: CoreId, now: u64, unix: u64, rng: &mut Rng) -> Input {
        let c = self.cores.get_mut(&core).expect("a due core");
        let (_, next) = c.next.take().expect("due");
        if matches!(
            next,
            Next::Refused | Next::ExitAtStart | Next::Crash | Next::Exit
        ) {
            self.live_ids.retain(|id| *id != core);
        }
        let c = self.cores.get_mut(&core).expect("a due core");
        match next {
            Next::Refused => {
                c.life = Life::Gone;
                let rejection = Rejection::new(Code::Internal, "spawn failed: ENOENT");
                Input::CoreFailed {
                    core,
                    failure: StartFailure::Refused(rejection),
                }
            }
            Next::Started => self.started(core, now, unix, rng),
            Next::Ready => {
                c.life = Life::Running;
                c.was_ready = true;
                let pct = if !matches!(c.spec, CoreSpec::Batch { .. }) {
                    self.crash_pct
                } else {
                    self.crash_pct / 4
                };
                // Pool cores crash sooner: a respawn (and a second death within its window)
                // must come up within a world's life.
                let within = if matches!(c.spec, CoreSpec::Pool { .. }) {
                    40_000
                } else {
                    400_000
                };
                if rng.below(100) < pct {
                    c.next = Some((now + 1 + rng.below(within), Next::Crash));
                }
                Input::CoreReady { core }
            }
            Next::NotReady => {
                c.life = Life::NotReady;
                let addr = c
                    .session
                    .as_ref()
                    .map(|s| s.socks_addr)
                    .or(c.inbounds.first().map(|i| i.1))
                    .unwrap_or(addr(0));
                Input::CoreFailed {
                    core,
                    failure: StartFailure::NotReady {
                        addr,
                        log_tail: "    listen: address in use".into(),
                    },
                }
            }
            Next::ExitAtStart | Next::Crash | Next::Exit => {
                c.crashed = next == Next::Crash;
                c.life = Life::Gone;
                self.fail_probes_through(core, now);
                self.front.core_gone(core);
                let how = match next {
                    Next::Exit => "killed by signal 15",
                    _ => "exited with status 1",
                };
                Input::CoreExited {
                    core,
                    how: how.into(),
                    log_tail: "    panic: boom".into(),
                }
            }
        }
    }

    fn started(&mut self, core: CoreId, now: u64, unix: u64, rng: &mut Rng) -> Input {
        let spec = self.cores[&core].spec.clone();
        let (session, inbounds) = match &spec {
            CoreSpec::Session { config_id } => {
                let socks_addr = self.fresh_addr(Target::Session(core));
                let info = SessionInfo {
                    id: self.next_session,
                    config_id: *config_id,
                    core: "v2ray".into(),
                    pid: 10_000 + core.0 as u32,
                    socks_addr,
                    http_addr: None,
                    started_at: unix,
                };
                self.next_session += 1;
                (Some(info), Vec::new())
            }
            CoreSpec::Batch { config_ids } | CoreSpec::Pool { config_ids } => {
                let pool = matches!(spec, CoreSpec::Pool { .. });
                let mut inbounds = Vec::new();
                for id in config_ids {
                    let target = if pool {
                        Target::Pool(core, *id)
                    } else {
                        Target::Batch(core, *id)
                    };
                    let a = self.fresh_addr(target);
                    if rng.below(40) != 0 {
                        inbounds.push((*id, a));
                    }
                }
                (None, inbounds)
            }
        };
        let c = self.cores.get_mut(&core).expect("started");
        c.life = Life::Starting;
        c.session = session.clone();
        c.inbounds = inbounds.clone();
        let deadline = c.spawned_ms + c.ready_timeout_ms;
        let left = deadline.saturating_sub(now).max(1);
        c.next = Some(match rng.below(100) {
            0..=6 => (deadline.max(now), Next::NotReady),
            7..=12 => (now + rng.below(left), Next::ExitAtStart),
            _ => (now + rng.below(left), Next::Ready),
        });
        Input::CoreStarted {
            core,
            pid: 10_000 + core.0 as u32,
            session,
            inbounds,
        }
    }

    /// Probes through a core that just exited fail at once.
    fn fail_probes_through(&mut self, core: CoreId, now: u64) {
        for p in self.probes.values_mut() {
            let through = match p.target {
                Target::Session(c) | Target::Batch(c, _) | Target::Pool(c, _) => c == core,
                Target::Nothing => false,
            };
            if through && p.due_ms > now + 1 {
                p.due_ms = now + 1;
                p.result = Err("connection reset".into());
            }
        }
    }
}
