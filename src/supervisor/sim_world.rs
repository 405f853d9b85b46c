//! The simulation world: the real supervisor, the executor model, random clients, and the
//! model of what the supervisor must do, kept from the inputs and the effects alone (the
//! supervisor's state is read only to name the operation in flight and the active session).
//!
//! One step delivers one input at the earliest of the supervisor's deadline
//! ([`Supervisor::poll_timeout`]), the next executor completion and the next client action, then
//! drains and checks every effect (`sim_check.rs`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::OnceLock;

use crate::ipc::protocol::{Code, Request, Trigger};
use crate::ipc::RawId;

use super::sim::Rng;
use super::sim_exec::Exec;
use super::{
    ConnId, CoreId, Input, Now, OpId, ProbeId, Rejection, ReplaceResult, Supervisor,
    SupervisorConfig,
};

/// Distinct request ids per connection (reused once answered).
const IDS: usize = 4096;
const CONNS_MAX: usize = 6;
const UNIX_BASE: u64 = 1_700_000_000;

/// Request ids 0..IDS as the decoder makes them.
pub(super) fn raw_id(n: usize) -> RawId {
    static CACHE: OnceLock<Vec<RawId>> = OnceLock::new();
    CACHE.get_or_init(|| {
        (0..IDS)
            .map(|n| {
                let line = format!(
                    r#"{{"protocol_version":1,"id":{n},"request":{{"type":"daemon_ping"}}}}"#
                );
                crate::ipc::decode_request(line.as_bytes())
                    .expect("an id")
                    .0
            })
            .collect()
    })[n]
}

/// What a reply must be, decided when the request was sent.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expect {
    Error(Code),
    Ping,
    Status,
    Shutdown,
    Rotation(bool),
    ProxyStatus {
        enabled: bool,
        cooldown_active: bool,
        next_rotation_at: Option<u64>,
    },
    /// A runtime operation, or its immediate answer.
    Runtime,
    /// `subscribe`: the snapshot, or 409 (and close) behind an operation of the same connection.
    Subscribe,
}

#[derive(Debug)]
pub(super) struct Awaiting {
    pub n: usize,
    pub expect: Expect,
    /// This request started the operation in flight.
    pub op: bool,
}

#[derive(Debug, Default)]
pub(super) struct Conn {
    pub awaiting: VecDeque<Awaiting>,
    pub closing: bool,
    next_n: usize,
}

/// What kind of operation, as the model knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Connect(i64),
    Disconnect,
    Replace,
    /// Front mode: the session moves to a warm member of its pool core.
    PoolSwitch,
    /// `config_test`: a batch core, probes, no switch.
    Test,
    /// Front mode: the session's crashed pool core starts again with the same members.
    Respawn,
}

/// A rotation as the model follows it.
#[derive(Debug)]
pub(super) struct Rot {
    pub trigger: Trigger,
    pub candidate_id: Option<i64>,
    pub old_session: i64,
    pub old_core: CoreId,
    pub old_config: i64,
    pub batch: Option<CoreId>,
    pub batch_probes: BTreeMap<ProbeId, i64>,
    pub passed: BTreeSet<i64>,
    /// Session cores started, with their config, in order.
    pub tried: Vec<(CoreId, i64)>,
    pub verify: BTreeMap<ProbeId, CoreId>,
    pub verified: BTreeSet<CoreId>,
    pub persisted: Option<ReplaceResult>,
}

/// The operation in flight, as the model follows it.
#[derive(Debug)]
pub(super) struct OpModel {
    pub id: OpId,
    pub kind: Kind,
    pub started_ms: u64,
    pub bound_ms: u64,
    pub client: Option<u64>,
    pub replied: bool,
    pub stopped: BTreeSet<CoreId>,
    pub rot: Option<Rot>,
    pub switch: Option<super::sim_front_check::SwitchModel>,
    /// `config_test`: its batch core, once started.
    pub test_batch: Option<CoreId>,
}

/// The active session's core crashed with the health trigger armed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dead {
    pub session: i64,
    pub at_ms: u64,
    /// A rotation was in flight: the retry may wait for its cooldown.
    pub replace_in_flight: bool,
}

/// What a run exercised.
#[derive(Debug, Default, Clone)]
pub(super) struct Stats {
    /// Rotation results: switched, no_working_candidate, restored, failed.
    pub results: [u64; 4],
    /// Automatic rotations started: timer, health (core alive), health (core dead).
    pub auto: [u64; 3],
    /// Rotations that tried more than one candidate.
    pub fallbacks: u64,
    /// Batches decided early (a probe still running).
    pub early: u64,
    pub busy: u64,
    pub crashes: u64,
    pub shutdowns_quiet: u64,
    /// Events published (issue 13).
    pub events: u64,
    /// Front mode: worlds, relayed openings, relay failures, remotes killed, stalled openings
    /// rerouted, passive failovers, pool cores retired, stopped once drained, stopped at their
    /// drain deadline.
    pub front: [u64; 9],
    /// Subscription refresh runs started.
    pub refreshes: u64,
    /// Pool cores respawned, and respawns that put the session back.
    pub respawns: [u64; 2],
}

/// The world.
pub(super) struct World {
    pub stats: Stats,
    pub seed: u64,
    pub steps: u64,
    pub now: Now,
    pub sup: Supervisor,
    pub cfg: SupervisorConfig,
    pub exec: Exec,
    /// Front mode: the model of the route, the members and the draining cores.
    pub fm: super::sim_front_check::FrontModel,
    pub rng: Rng,
    pub conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    client_gap_ms: u64,
    pub next_client_ms: Option<u64>,
    pub shutting_down: bool,
    pub shutdown_since: Option<u64>,
    pub shutdown_seen: bool,
    pub enabled: bool,
    pub timer_due: Option<u64>,
    pub cooldown_until: u64,
    pub op: Option<OpModel>,
    pub ended: Option<OpModel>,
    pub op_before: Option<OpId>,
    pub dead: Option<Dead>,
    pub health_session: Option<i64>,
    pub health_failures: u32,
    pub health_probes: BTreeMap<ProbeId, CoreId>,
    /// Ended session rows: was the first end a core exit?
    pub ended_sessions: BTreeMap<i64, bool>,
    /// The client request delivered in this step: (connection, request).
    pub last_request: Option<(u64, Request)>,
    stalled_steps: u32,
    /// `XRAT_SIM_TRACE` set: print every input.
    trace: bool,
    /// Timed subscription refreshes.
    pub refresh: super::sim_refresh::RefreshModel,
    /// The events published.
    pub ev: super::sim_events::EventModel,
    /// Respawned pool cores and the front's hold.
    pub rs: super::sim_respawn::RespawnState,
}

fn random_config(rng: &mut Rng) -> SupervisorConfig {
    SupervisorConfig {
        pid: 4242,
        health_interval_ms: 2_000 + rng.below(20_000),
        probe_timeout_ms: 200 + rng.below(3_000),
        ready_timeout_ms: 300 + rng.below(3_000),
        rotation_interval_secs: 5 + rng.below(120),
        health_trigger_enabled: rng.below(4) != 0,
        cooldown_secs: [0, 5, 30, 120][rng.below(4) as usize],
        test_concurrency: 1 + rng.below(4) as u32,
        failure_threshold: 1 + rng.below(4) as u32,
        rotation_enabled: rng.below(3) != 0,
        front: rng.below(2) == 0,
        pool_size: rng.below(4) as u32,
        drain_ms: [0, 1_000, 30_000][rng.below(3) as usize],
        retry_interval_ms: 100 + rng.below(900),
        passive_failures: 1 + rng.below(3) as u32,
        passive_window_ms: 500 + rng.below(3_000),
        probe_url: "http://probe.invalid/".into(),
        strikes: 1 + rng.below(3) as u32,
        quarantine_secs: [0, 30, 600, 3_600][rng.below(4) as usize],
        subscriber_queue_max: 1024,
    }
}

/// Stored test results at the start: untested, passed, or a failure streak that may have put the
/// config in quarantine (some of which end during the run).
fn seed_histories(exec: &mut Exec, cfg: &SupervisorConfig, unix: u64, rng: &mut Rng) {
    for c in &mut exec.configs {
        match rng.below(3) {
            0 => {}
            1 => super::quarantine::record(&mut c.history, unix - rng.below(600), true),
            _ => {
                let at = unix - rng.below(cfg.quarantine_secs + 60);
                for _ in 0..1 + rng.below(4) {
                    super::quarantine::record(&mut c.history, at, false);
                }
            }
        }
    }
}

impl World {
    pub fn new(seed: u64) -> World {
        let mut rng = Rng(seed);
        let cfg = random_config(&mut rng);
        let mut exec = Exec::new(&mut rng);
        let now = Now {
            monotonic_ms: rng.below(1_000_000),
            unix_secs: 0,
            unix_ms: 0,
        };
        let now = Now {
            unix_secs: UNIX_BASE + now.monotonic_ms / 1000,
            unix_ms: UNIX_BASE * 1000 + now.monotonic_ms,
            ..now
        };
        exec.front =
            super::sim_front::FrontExec::new(cfg.front, cfg.drain_ms, now.monotonic_ms, &mut rng);
        seed_histories(&mut exec, &cfg, now.unix_secs, &mut rng);
        // A front-mode daemon adopting a direct-mode session is left out (see the report in
        // docs/ARCHITECTURE.md).
        let adopted = (!cfg.front && rng.below(2) == 0).then(|| exec.adopt_info(now.unix_secs));
        let mut sup = Supervisor::new(cfg.clone(), now, adopted);
        let refresh = super::sim_refresh::setup(&mut rng, &mut sup, now);
        if let Some(core) = sup.adopted_core() {
            exec.adopt(core);
        }
        World {
            stats: Stats::default(),
            seed,
            steps: 0,
            now,
            enabled: cfg.rotation_enabled,
            timer_due: cfg
                .rotation_enabled
                .then(|| now.monotonic_ms + cfg.rotation_interval_secs * 1000),
            client_gap_ms: [50, 500, 3_000, 20_000][rng.below(4) as usize],
            next_client_ms: Some(now.monotonic_ms),
            sup,
            cfg,
            exec,
            fm: Default::default(),
            rng,
            conns: BTreeMap::new(),
            next_conn: 1,
            shutting_down: false,
            shutdown_since: None,
            shutdown_seen: false,
            cooldown_until: 0,
            op: None,
            ended: None,
            op_before: None,
            dead: None,
            health_session: None,
            health_failures: 0,
            health_probes: BTreeMap::new(),
            ended_sessions: BTreeMap::new(),
            last_request: None,
            stalled_steps: 0,
            trace: std::env::var_os("XRAT_SIM_TRACE").is_some(),
            refresh,
            ev: Default::default(),
            rs: Default::default(),
        }
    }

    /// Fails the test, naming the seed.
    pub fn fail(&self, what: &str) -> ! {
        if self.trace {
            eprintln!("supervisor: {:#?}", self.sup);
        }
        panic!(
            "simulation invariant broken at step {} (t={} ms): {what}; replay with XRAT_SIM_SEED={}",
            self.steps, self.now.monotonic_ms, self.seed
        )
    }

    pub fn check(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(&what());
        }
    }

    /// Starts shutdown (the end of a world).
    pub fn begin_shutdown(&mut self) {
        if !self.shutting_down {
            if self.rng.below(2) == 0 {
                // Quiet clients: shutdown must finish on the executor's reports alone.
                self.next_client_ms = None;
            }
            self.deliver(Input::ShutdownSignal);
        }
    }

    /// One step: the earliest event, delivered and checked.
    pub fn step(&mut self) {
        self.steps += 1;
        let t_sup = self.sup.poll_timeout();
        let t_exec = self.exec.next_due();
        let t_refresh = self.refresh_due();
        let Some(t) = [t_sup, t_exec, self.next_client_ms, t_refresh]
            .into_iter()
            .flatten()
            .min()
        else {
            self.fail("nothing is pending and the daemon did not shut down (stalled)");
        };
        let t = t.max(self.now.monotonic_ms);
        if t == self.now.monotonic_ms {
            self.stalled_steps += 1;
            self.check(self.stalled_steps < 1_000, || {
                format!("1000 steps without the clock moving (poll_timeout {t_sup:?})")
            });
        } else {
            self.stalled_steps = 0;
        }
        self.now = Now {
            monotonic_ms: t,
            unix_secs: UNIX_BASE + t / 1000,
            unix_ms: UNIX_BASE * 1000 + t,
        };
        let input = if t_sup.is_some_and(|d| d <= t) {
            Input::Timer
        } else if t_refresh.is_some_and(|d| d <= t) {
            self.refresh_end()
        } else if t_exec.is_some_and(|d| d <= t) {
            match self.exec.pop(t, self.now.unix_secs, &mut self.rng) {
                Some(input) => input,
                // The front did something the supervisor does not hear about (an opening that
                // went through, a remote that died).
                None if self.cfg.front => return,
                None => self.fail("the executor had nothing due"),
            }
        } else {
            match self.client_input() {
                Some(input) => input,
                None => return,
            }
        };
        self.deliver(input);
    }

    /// Feeds one input to the supervisor and checks what it did.
    pub fn deliver(&mut self, input: Input) {
        if self.trace {
            eprintln!("{} t={} {input:?}", self.steps, self.now.monotonic_ms);
        }
        self.op_before = self.sup.op.as_ref().map(|op| op.op);
        self.before(&input);
        self.sup.handle(self.now, input);
        self.after();
        self.check_refresh();
        self.last_request = None;
        self.answer_relay_sample();
    }

    /// Model updates that depend on the state before the input.
    fn before(&mut self, input: &Input) {
        if self.cfg.front {
            self.front_before(input);
        }
        match input {
            Input::ShutdownSignal => self.shutdown_started(),
            Input::CoreExited { core, .. } => self.core_exited(*core),
            Input::ProbeDone { probe, result } => self.probe_done(*probe, result.is_ok()),
            _ => {}
        }
    }

    pub fn shutdown_started(&mut self) {
        if !self.shutting_down {
            self.shutting_down = true;
            self.shutdown_since = Some(self.now.monotonic_ms);
            self.dead = None;
        }
    }

    fn core_exited(&mut self, core: CoreId) {
        let active = self
            .sup
            .session
            .as_ref()
            .is_some_and(|s| s.core == core && s.pid_running);
        let crashed = self.exec.cores.get(&core).is_some_and(|c| c.crashed);
        self.stats.crashes += u64::from(active && crashed);
        if active
            && crashed
            && self.enabled
            && self.cfg.health_trigger_enabled
            && !self.shutting_down
        {
            let session = self.sup.session().expect("active").id;
            self.dead = Some(Dead {
                session,
                at_ms: self.now.monotonic_ms,
                replace_in_flight: self.op.as_ref().is_some_and(|op| op.kind == Kind::Replace),
            });
        }
    }

    fn probe_done(&mut self, probe: ProbeId, ok: bool) {
        if let Some(core) = self.health_probes.remove(&probe) {
            let live = self
                .sup
                .session
                .as_ref()
                .is_some_and(|s| s.core == core && s.pid_running);
            if live {
                self.health_failures = if ok { 0 } else { self.health_failures + 1 };
            }
        }
        let rot = self.op.as_mut().and_then(|op| op.rot.as_mut());
        if let Some(rot) = rot {
            if let Some(config) = rot.batch_probes.get(&probe) {
                if ok {
                    rot.passed.insert(*config);
                }
            }
            if let Some(core) = rot.verify.get(&probe) {
                if ok {
                    rot.verified.insert(*core);
                }
            }
        }
    }

    /// A client acts: a request, a close, or rarely a shutdown signal.
    fn client_input(&mut self) -> Option<Input> {
        let gap = 1 + self.rng.below(self.client_gap_ms);
        self.next_client_ms = Some(self.now.monotonic_ms + gap);
        if self.shutting_down && self.rng.below(4) == 0 {
            // Clients go quiet: shutdown must finish without further inputs.
            self.next_client_ms = None;
        }
        match self.rng.below(1000) {
            0 => Some(Input::ShutdownSignal),
            1..=60 => self.close_one(),
            _ => self.request(),
        }
    }

    fn close_one(&mut self) -> Option<Input> {
        let index = self.rng.below(self.conns.len().max(1) as u64) as usize;
        let conn = *self.conns.keys().nth(index)?;
        self.conns.remove(&conn);
        Some(Input::ConnectionClosed { conn: ConnId(conn) })
    }

    fn pick_conn(&mut self) -> u64 {
        if self.conns.len() >= CONNS_MAX || (!self.conns.is_empty() && self.rng.below(4) != 0) {
            let index = self.rng.below(self.conns.len() as u64) as usize;
            return *self.conns.keys().nth(index).expect("an index in range");
        }
        self.next_conn += 1;
        self.conns.insert(self.next_conn, Conn::default());
        self.next_conn
    }

    fn random_request(&mut self) -> Result<Request, Rejection> {
        let configs = self.exec.configs.len() as u64 + 1;
        let rng = &mut self.rng;
        Ok(match rng.below(100) {
            0..=14 => Request::RuntimeConnect {
                config_id: 1 + rng.below(configs) as i64,
            },
            15..=21 => Request::RuntimeDisconnect,
            22..=34 => Request::RuntimeReplace {
                trigger: [Trigger::Manual, Trigger::Manual, Trigger::Timer][rng.below(3) as usize],
                candidate_id: (rng.below(3) == 0).then(|| 1 + rng.below(configs) as i64),
            },
            35..=44 => Request::RuntimeStatus,
            45..=51 => Request::ProxyStatus,
            52..=58 => Request::ProxyStart,
            59..=61 => Request::ProxyStop,
            62..=64 => {
                let close = rng.below(4) == 0;
                let code = if close {
                    Code::FrameTooLarge
                } else {
                    Code::BadRequest
                };
                return Err(Rejection {
                    code,
                    message: "bad frame".into(),
                    close,
                });
            }
            65 if rng.below(20) == 0 => Request::DaemonShutdown,
            66..=69 => Request::ConfigTest {
                config_ids: (0..rng.below(3))
                    .map(|_| 1 + rng.below(configs) as i64)
                    .collect(),
                url: None,
                timeout_ms: None,
                concurrency: (rng.below(2) == 0).then(|| 1 + rng.below(3) as u32),
            },
            70..=72 => super::sim_events::random_subscribe(rng),
            _ => Request::DaemonPing,
        })
    }

    fn request(&mut self) -> Option<Input> {
        let conn = self.pick_conn();
        let request = self.random_request();
        let model = self.conns.get(&conn)?;
        if model.closing || model.awaiting.len() >= IDS {
            return None;
        }
        let expect = self.expect(&request);
        let model = self.conns.get_mut(&conn).expect("picked");
        let n = model.next_n;
        model.next_n = (n + 1) % IDS;
        // Nothing is read after subscribe: the connection is the daemon's to write.
        model.closing = matches!(&request, Err(r) if r.close)
            || matches!(&request, Ok(Request::Subscribe { .. }));
        model.awaiting.push_back(Awaiting {
            n,
            expect,
            op: false,
        });
        if let Ok(request) = &request {
            self.last_request = Some((conn, request.clone()));
        }
        Some(Input::Request {
            conn: ConnId(conn),
            id: raw_id(n),
            request,
        })
    }

    /// What the answer to `request` must be, with the model updates sending it implies.
    fn expect(&mut self, request: &Result<Request, Rejection>) -> Expect {
        let request = match request {
            Err(rejection) => return Expect::Error(rejection.code),
            Ok(_) if self.shutting_down => return Expect::Error(Code::Unavailable),
            Ok(request) => request,
        };
        if request.is_runtime_operation() {
            if self.op.is_some() {
                return Expect::Error(Code::Busy);
            }
            return Expect::Runtime;
        }
        match request {
            Request::DaemonPing => Expect::Ping,
            Request::Subscribe { .. } => Expect::Subscribe,
            Request::RuntimeStatus => Expect::Status,
            Request::DaemonShutdown => {
                self.shutdown_started();
                Expect::Shutdown
            }
            Request::ProxyStart | Request::ProxyStop => {
                let on = *request == Request::ProxyStart;
                self.set_enabled(on);
                Expect::Rotation(on)
            }
            _ => Expect::ProxyStatus {
                enabled: self.enabled,
                cooldown_active: self.now.monotonic_ms < self.cooldown_until,
                next_rotation_at: self.timer_due.map(|due| self.to_unix(due)),
            },
        }
    }

    pub fn to_unix(&self, ms: u64) -> u64 {
        let now = self.now;
        now.unix_secs + ms.saturating_sub(now.monotonic_ms).div_ceil(1000)
    }

    fn set_enabled(&mut self, on: bool) {
        if on && !self.enabled {
            self.timer_due = Some(self.now.monotonic_ms + self.cfg.rotation_interval_secs * 1000);
        }
        if !on {
            self.timer_due = None;
            self.dead = None;
        }
        self.enabled = on;
    }
}
