//! A front-mode daemon (the daemon binds the SOCKS port and relays to a pool core) with several
//! remote servers, and a client that makes requests through it and records every outcome.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::cores::{free_port, socks5_get, Core, HttpTarget, Proto, RemoteServer};
use super::{text, wait_until, Root};

/// Settings of a front rig.
pub struct Opts {
    pub core: Core,
    pub remotes: usize,
    pub pool_size: u32,
    pub drain_secs: u64,
    /// `false` keeps the defaults of `[daemon] health_interval_secs` and `[health] timeout_ms`.
    pub fast_health: bool,
    /// `[runtime]` core lines instead of `core`'s (mihomo, which the test `Core` has not).
    pub core_lines: Option<String>,
}

impl Opts {
    pub fn new(core: Core, remotes: usize) -> Opts {
        Opts {
            core,
            remotes,
            pool_size: 4,
            drain_secs: 30,
            fast_health: true,
            core_lines: None,
        }
    }

    /// mihomo as the pool core (remotes stay V2Ray).
    pub fn mihomo(remotes: usize) -> Opts {
        let bin = super::cores::mihomo_bin();
        Opts {
            core_lines: Some(format!(
                "core = \"mihomo\"\ncore_path = \"{}\"\n",
                bin.display()
            )),
            ..Opts::new(Core::SingBox, remotes)
        }
    }
}

/// The daemon, its target, the remotes (SOCKS servers on V2Ray) and their config ids.
pub struct Front {
    pub root: Root,
    pub http: HttpTarget,
    pub servers: Vec<RemoteServer>,
    pub ids: Vec<i64>,
    pub socks_port: u16,
    pub daemon_pid: u32,
}

/// Starts a front-mode daemon with rotation (and so failover) enabled.
pub fn front(opts: Opts) -> Front {
    let mut f = front_unstarted(opts);
    f.daemon_pid = f.root.start();
    f
}

/// [`front`] with everything but the daemon: settings written, remotes up, configs imported;
/// `daemon_pid` is 0 until the caller starts one (socket-activated, say).
pub fn front_unstarted(opts: Opts) -> Front {
    let root = Root::new();
    let http = HttpTarget::start();
    let socks_port = free_port();
    let (interval, timeout) = if opts.fast_health {
        ("[daemon]\nhealth_interval_secs = 1\n", "timeout_ms = 800\n")
    } else {
        ("", "")
    };
    root.write_settings(&format!(
        "{interval}[runtime]\nmode = \"front\"\n{}socks_port = {socks_port}\n[runtime.rotation]\nenabled = true\npool_size = {}\ndrain_secs = {}\n[health]\nprobe_url = \"{}\"\n{timeout}",
        opts.core_lines.clone().unwrap_or_else(|| opts.core.runtime_settings()),
        opts.pool_size,
        opts.drain_secs,
        http.url("/probe"),
    ));
    let servers: Vec<RemoteServer> = (0..opts.remotes)
        .map(|_| RemoteServer::start_on(Proto::Socks, Core::V2ray))
        .collect();
    let ids = servers
        .iter()
        .map(|s| {
            let out = root.run(&["config", "import", &s.link(), "--json"]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            let view: Value = serde_json::from_slice(&out.stdout).unwrap();
            view["imported"][0]["id"].as_i64().unwrap()
        })
        .collect();
    Front {
        root,
        http,
        servers,
        ids,
        socks_port,
        daemon_pid: 0,
    }
}

impl Front {
    pub fn call(&self, body: Value) -> Value {
        self.root.connect().call(json!(1), body)
    }

    pub fn connect(&self, id: i64) -> Value {
        let reply = self.call(json!({"type": "runtime_connect", "config_id": id}));
        assert_eq!(reply["code"], 200, "{reply}\n{}", self.root.log());
        reply["payload"].clone()
    }

    pub fn status(&self) -> Value {
        self.call(json!({"type": "runtime_status"}))["payload"].clone()
    }

    pub fn active(&self) -> Option<i64> {
        self.status()["active_config_id"].as_i64()
    }

    /// The remote serving config `id`.
    pub fn server_of(&mut self, id: i64) -> &mut RemoteServer {
        let i = self
            .ids
            .iter()
            .position(|x| *x == id)
            .expect("a config of the rig");
        &mut self.servers[i]
    }

    /// Waits (at most 10 s) until `count` pool members are alive.
    pub fn wait_alive(&self, count: usize) {
        let ok = wait_until(Duration::from_secs(10), || {
            let status = self.status();
            let alive = status["pool"]
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["alive"] == true).count());
            alive >= count
        });
        assert!(
            ok,
            "pool never had {count} alive members: {}\n{}",
            self.status(),
            self.root.log()
        );
    }

    pub fn get(&self) -> Result<String, String> {
        socks5_get(self.socks_port, self.http.port(), "/page")
    }
}

/// One request of a [`Client`]: when it started (since the client started), whether it got the
/// page, and when it ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub started: Duration,
    pub ok: bool,
    pub ended: Duration,
    pub error: String,
}

/// Requests started every `gap` (each on its own thread, so a hung one does not hold back the
/// next), until stopped. Bounded by `REQUESTS_MAX`.
pub struct Client {
    pub epoch: Instant,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    thread: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

const REQUESTS_MAX: usize = 4_000;

impl Client {
    pub fn start(f: &Front, gap: Duration) -> Client {
        let (socks, target, body) = (f.socks_port, f.http.port(), f.http.body().to_string());
        let epoch = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, outcomes) = (stop.clone(), outcomes.clone());
            std::thread::spawn(move || {
                let mut threads = Vec::new();
                while !stop.load(Ordering::SeqCst) && threads.len() < REQUESTS_MAX {
                    let (outcomes, body) = (outcomes.clone(), body.clone());
                    let request = move || {
                        let started = epoch.elapsed();
                        let result = socks5_get(socks, target, "/page");
                        let ok = result.as_ref().is_ok_and(|b| *b == body);
                        let error = result.err().unwrap_or_default();
                        let ended = epoch.elapsed();
                        outcomes.lock().unwrap().push(Outcome {
                            started,
                            ok,
                            ended,
                            error,
                        });
                    };
                    if gap.is_zero() {
                        request();
                    } else {
                        threads.push(std::thread::spawn(request));
                        std::thread::sleep(gap);
                    }
                }
                threads
            })
        };
        Client {
            epoch,
            stop,
            outcomes,
            thread: Some(thread),
        }
    }

    /// Stops starting requests, waits for those in flight, and returns every outcome by start.
    pub fn stop(mut self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.thread.take().unwrap().join().unwrap() {
            t.join().unwrap();
        }
        let mut all = self.outcomes.lock().unwrap().clone();
        all.sort_by_key(|o| o.started);
        all
    }
}

/// Failed requests that ended after `at`, and how long after `at` the first request that
/// started after it succeeded (its end).
pub fn after(outcomes: &[Outcome], at: Duration) -> (usize, Option<Duration>) {
    // A request cut in flight by the event counts as failed too.
    let failed = outcomes.iter().filter(|o| !o.ok && o.ended >= at).count();
    let first_good = outcomes
        .iter()
        .filter(|o| o.ok && o.started >= at)
        .map(|o| o.ended)
        .min();
    (failed, first_good.map(|end| end - at))
}
