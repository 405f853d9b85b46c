//! Seeded simulation: random requests from many connections, closes, operation completions,
//! timer ticks and shutdown signals, with the invariants of DESIGN §8 checked after every step.
//!
//! `XRAT_SIM_SEED=<n>` replays one seed; `XRAT_SIM_STEPS=<n>` changes the step budget.

use std::collections::{BTreeMap, VecDeque};

use super::*;
use crate::ipc::protocol::Trigger;
use crate::ipc::RawId;

const CONNECTIONS_LIVE_MAX: u64 = 8;
const STEPS_DEFAULT: u64 = 100_000;

/// splitmix64: tiny, seedable, and good enough to pick events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the model expects of one connection.
#[derive(Default)]
struct ConnModel {
    /// Request ids sent and not yet answered, oldest first.
    awaiting: VecDeque<u64>,
    /// A request with `close` was sent: nothing may follow it.
    closing: bool,
}

struct World {
    seed: u64,
    step: u64,
    now: Now,
    sup: Supervisor,
    conns: BTreeMap<u64, ConnModel>,
    next_conn: u64,
    next_request: u64,
    op_in_flight: Option<(OpId, Plan)>,
    shutdown_seen: bool,
    /// The session the model expects the supervisor to track.
    session: Option<i64>,
    next_session: i64,
    /// The active session's core exited (a health rotation may then ignore the cooldown).
    core_dead: bool,
    cooldown_until_ms: u64,
    probe_in_flight: Option<i64>,
}

impl World {
    fn new(seed: u64) -> World {
        let config = SupervisorConfig {
            pid: 1,
            health_interval_ms: 15_000,
            // Short periods so that a run sees many timer and health rotations and cooldowns.
            rotation_interval_secs: 120,
            health_trigger_enabled: !seed.is_multiple_of(3),
            cooldown_secs: 60,
            failure_threshold: 3,
            rotation_enabled: seed.is_multiple_of(2),
        };
        let now = Now::default();
        World {
            seed,
            step: 0,
            now,
            sup: Supervisor::new(config, now, None),
            conns: BTreeMap::new(),
            next_conn: 1,
            next_request: 1,
            op_in_flight: None,
            shutdown_seen: false,
            session: None,
            next_session: 1,
            core_dead: false,
            cooldown_until_ms: 0,
            probe_in_flight: None,
        }
    }

    fn check(&self, ok: bool, what: &str) {
        assert!(
            ok,
            "simulation invariant broken at step {}: {what}; replay with XRAT_SIM_SEED={}",
            self.step, self.seed
        );
    }

    fn step(&mut self, rng: &mut Rng) {
        self.step += 1;
        self.now.monotonic_ms += rng.below(2_000);
        self.now.unix_secs = self.now.monotonic_ms / 1000;
        // Held 423s leave when the operation completes, so "busy" is judged before this step.
        let busy_before = self.op_in_flight.is_some();
        let inputs = match rng.below(100) {
            0..=59 => self.random_request(rng).into_iter().collect(),
            60..=69 => self.random_close(rng).into_iter().collect(),
            70..=81 => self.finish_operation(rng),
            82..=83 => self.core_exit().into_iter().collect(),
            84 => self.probe_done(rng).into_iter().collect(),
            85..=98 => vec![Input::Timer],
            _ => (rng.below(20) == 0)
                .then_some(Input::ShutdownSignal)
                .into_iter()
                .collect(),
        };
        for input in inputs {
            self.sup.handle(self.now, input);
        }
        while let Some(effect) = self.sup.poll_effect() {
            self.observe(effect, busy_before);
        }
        self.check(
            self.sup.is_busy() == self.op_in_flight.is_some(),
            "busy state disagrees with the operations seen",
        );
        self.check(
            self.sup.session().map(|s| s.id) == self.session,
            "the supervisor's session disagrees with the operations' outcomes",
        );
    }

    fn random_request(&mut self, rng: &mut Rng) -> Option<Input> {
        let conn = if self.conns.len() as u64 >= CONNECTIONS_LIVE_MAX || rng.below(4) != 0 {
            let index = rng.below(self.conns.len().max(1) as u64) as usize;
            *self.conns.keys().nth(index)?
        } else {
            self.next_conn += 1;
            self.conns.insert(self.next_conn, ConnModel::default());
            self.next_conn
        };
        let model = self.conns.get_mut(&conn)?;
        if model.closing {
            return None;
        }
        let n = self.next_request;
        self.next_request += 1;
        model.awaiting.push_back(n);
        let request = match rng.below(12) {
            0 => Ok(Request::RuntimeConnect {
                config_id: rng.below(5) as i64,
            }),
            1 => Ok(Request::RuntimeDisconnect),
            2 => Ok(Request::RuntimeReplace {
                trigger: Trigger::Manual,
                candidate_id: None,
            }),
            3 => Ok(Request::RuntimeStatus),
            4 => Ok(Request::ProxyStatus),
            5 if rng.below(2) == 0 => Ok(Request::ProxyStart),
            5 => Ok(Request::ProxyStop),
            6 if rng.below(50) == 0 => Ok(Request::DaemonShutdown),
            7 => {
                let close = rng.below(4) == 0;
                model.closing = close;
                Err(Rejection {
                    code: if close {
                        Code::FrameTooLarge
                    } else {
                        Code::BadRequest
                    },
                    message: "bad".into(),
                    close,
                })
            }
            _ => Ok(Request::DaemonPing),
        };
        Some(Input::Request {
            conn: ConnId(conn),
            id: raw_id(n),
            request,
        })
    }

    fn random_close(&mut self, rng: &mut Rng) -> Option<Input> {
        let index = rng.below(self.conns.len().max(1) as u64) as usize;
        let conn = *self.conns.keys().nth(index)?;
        self.conns.remove(&conn);
        Some(Input::ConnectionClosed { conn: ConnId(conn) })
    }

    /// Completes the operation in flight, succeeding three times in four. A failed replacing
    /// connect may or may not have stopped the old session first.
    fn finish_operation(&mut self, rng: &mut Rng) -> Vec<Input> {
        let Some((op, plan)) = self.op_in_flight.take() else {
            return Vec::new();
        };
        let mut inputs = Vec::new();
        let fail = Rejection {
            code: Code::Timeout,
            message: "core not ready".into(),
            close: false,
        };
        let outcome = match plan {
            _ if rng.below(4) == 0 => {
                if let Plan::Connect {
                    replacing: Some(old),
                    ..
                } = plan
                {
                    if rng.below(2) == 0 {
                        inputs.push(Input::SessionEnded { session_id: old });
                        self.session = None;
                    }
                }
                Err(fail)
            }
            Plan::Connect {
                config_id,
                replacing,
            } => {
                self.check(
                    replacing == self.session,
                    "connect replaces another session than the active one",
                );
                if let Some(old) = replacing {
                    inputs.push(Input::SessionEnded { session_id: old });
                }
                let session = SessionInfo {
                    id: self.next_session,
                    config_id,
                    core: "v2ray".into(),
                    pid: 100,
                    socks_addr: "127.0.0.1:1080".into(),
                    http_addr: None,
                    started_at: 0,
                };
                self.next_session += 1;
                self.session = Some(session.id);
                self.core_dead = false;
                Ok(OperationOutput::Connected {
                    session,
                    replaced: replacing,
                })
            }
            Plan::Disconnect { session_id } => {
                self.check(
                    Some(session_id) == self.session,
                    "disconnect of a session that is not active",
                );
                self.session = None;
                Ok(OperationOutput::Disconnected { session_id })
            }
            Plan::Replace {
                session_id,
                config_id,
                ..
            } => {
                self.check(
                    Some(session_id) == self.session,
                    "replace of a session that is not active",
                );
                Ok(self.replace_outcome(rng, session_id, config_id, &mut inputs))
            }
        };
        inputs.push(Input::OperationDone { op, outcome });
        inputs
    }

    /// One of the four ways a rotation ends, with the session changes it implies.
    fn replace_outcome(
        &mut self,
        rng: &mut Rng,
        old: i64,
        config_id: i64,
        inputs: &mut Vec<Input>,
    ) -> OperationOutput {
        self.cooldown_until_ms = self.now.monotonic_ms + 60_000;
        let (result, new_config) = match rng.below(4) {
            0 => ("switched", Some(config_id + 1)),
            1 => ("restored", Some(config_id)),
            2 => ("failed", None),
            _ => ("no_working_candidate", None),
        };
        let session = if result == "no_working_candidate" {
            None
        } else {
            inputs.push(Input::SessionEnded { session_id: old });
            self.session = None;
            self.core_dead = false;
            new_config.map(|config_id| {
                let id = self.next_session;
                self.next_session += 1;
                self.session = Some(id);
                SessionInfo {
                    id,
                    config_id,
                    core: "v2ray".into(),
                    pid: 100,
                    socks_addr: "127.0.0.1:1080".into(),
                    http_addr: None,
                    started_at: 0,
                }
            })
        };
        OperationOutput::Replaced(Box::new(ReplaceOutcome {
            replaced: result == "switched",
            old_session_id: old,
            session,
            tested_candidates: 2,
            candidate: new_config,
            result,
            detail: String::new(),
        }))
    }

    fn probe_done(&mut self, rng: &mut Rng) -> Option<Input> {
        let session_id = self.probe_in_flight.take()?;
        let result = if rng.below(3) == 0 {
            Err("timeout".into())
        } else {
            Ok(rng.below(500))
        };
        Some(Input::ProbeDone { session_id, result })
    }

    fn core_exit(&mut self) -> Option<Input> {
        let session_id = self.session?;
        self.core_dead = true;
        Some(Input::CoreExited {
            session_id,
            description: "killed by signal 9".into(),
        })
    }

    fn observe(&mut self, effect: Effect, busy_before: bool) {
        match effect {
            Effect::Reply {
                conn,
                id,
                reply,
                close_after,
            } => {
                let Some(model) = self.conns.get_mut(&conn.0) else {
                    return self.check(false, "reply to a closed connection");
                };
                let expected = model.awaiting.pop_front();
                let got = std::str::from_utf8(id.as_json())
                    .ok()
                    .and_then(|t| t.parse().ok());
                let in_order = expected.is_some() && expected == got;
                if close_after {
                    self.conns.remove(&conn.0);
                }
                self.check(in_order, "reply out of order, or a reply nobody asked for");
                if let Reply::Error {
                    code: Code::Busy, ..
                } = reply
                {
                    self.check(busy_before || self.op_in_flight.is_some(), "423 while idle");
                }
            }
            Effect::Operation { op, plan } => {
                self.check(
                    self.op_in_flight.is_none(),
                    "two runtime operations in flight",
                );
                if let Plan::Replace { trigger, .. } = plan {
                    let in_cooldown = self.now.monotonic_ms < self.cooldown_until_ms;
                    let allowed = match trigger {
                        Trigger::Manual => true,
                        Trigger::Timer => !in_cooldown,
                        Trigger::HealthCheckFailed => !in_cooldown || self.core_dead,
                    };
                    self.check(allowed, "timer or health rotation inside the cooldown");
                }
                self.op_in_flight = Some((op, plan));
            }
            Effect::Probe { session_id, .. } => {
                self.check(
                    self.probe_in_flight.is_none(),
                    "two health probes in flight",
                );
                self.check(
                    Some(session_id) == self.session,
                    "probe of a session that is not active",
                );
                self.check(!self.core_dead, "probe of a session whose core exited");
                self.probe_in_flight = Some(session_id);
            }
            Effect::Shutdown => {
                self.check(
                    self.session.is_none(),
                    "shutdown with a session still running",
                );
                self.check(!self.shutdown_seen, "shutdown effect twice");
                self.check(
                    self.op_in_flight.is_none(),
                    "shutdown with an operation in flight",
                );
                self.shutdown_seen = true;
            }
        }
    }

    /// Completes everything outstanding and checks that every request got its one reply.
    fn settle(&mut self, rng: &mut Rng) {
        // Shutdown may chain a disconnect after the operation in flight: finish them all.
        for _ in 0..4 {
            for input in self.finish_operation(rng) {
                self.sup.handle(self.now, input);
            }
            while let Some(effect) = self.sup.poll_effect() {
                self.observe(effect, true);
            }
        }
        for (conn, model) in &self.conns {
            self.check(
                model.awaiting.is_empty(),
                &format!("connection {conn} still waits for {:?}", model.awaiting),
            );
        }
    }
}

fn raw_id(n: u64) -> RawId {
    let line = format!(r#"{{"protocol_version":1,"id":{n},"request":{{"type":"daemon_ping"}}}}"#);
    crate::ipc::decode_request(line.as_bytes()).unwrap().0
}

/// Runs worlds until `steps` steps were taken; a world ends at shutdown and a new one starts.
/// Each world draws from its own generator, so the seed it prints replays it alone.
fn run(seed: u64, steps: u64) {
    let mut taken = 0;
    let mut world_seed = seed;
    while taken < steps {
        let mut rng = Rng(world_seed);
        let mut world = World::new(world_seed);
        while taken < steps && !world.shutdown_seen {
            world.step(&mut rng);
            taken += 1;
        }
        world.settle(&mut rng);
        world_seed = rng.next();
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn simulation_keeps_the_invariants() {
    let steps = env_u64("XRAT_SIM_STEPS").unwrap_or(STEPS_DEFAULT);
    match env_u64("XRAT_SIM_SEED") {
        Some(seed) => run(seed, steps),
        None => {
            for seed in 1..=4 {
                run(seed, steps / 4);
            }
        }
    }
}

#[test]
fn a_broken_invariant_names_its_seed() {
    let world = World::new(42);
    let failure = std::panic::catch_unwind(|| world.check(false, "demo"));
    let message = *failure.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("XRAT_SIM_SEED=42"), "{message}");
}
