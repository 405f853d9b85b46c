//! The systems under test, on the same three remotes and the same HTTP target: xrat's daemon
//! (front or direct mode) and mihomo with `select`, `fallback` and `url-test` groups.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cleanup;
use crate::common::cores::{
    free_port, mihomo_bin, socks5_get, ChildGuard, Core, HttpTarget, Proto, RemoteServer,
};
use crate::common::{core_processes, text, Root};
use crate::net::Http;
use crate::place::Place;

/// The three remotes (V2Ray SOCKS servers, as tests/common starts them) and the HTTP target
/// both systems' health checks and the clients' requests go to.
pub struct World {
    pub http: HttpTarget,
    pub servers: Vec<RemoteServer>,
}

impl World {
    pub fn start(place: &Place, remotes: usize) -> World {
        // The target serves the client side: it runs on the client's CPU.
        let http = HttpTarget::start();
        let servers: Vec<RemoteServer> = place.as_server(|| {
            (0..remotes)
                .map(|_| RemoteServer::start_on(Proto::Socks, Core::V2ray))
                .collect()
        });
        for server in &servers {
            cleanup::pid(server.pid(), "xrat-remote");
        }
        World { http, servers }
    }

    /// The health-check URL of both systems.
    pub fn probe_url(&self) -> String {
        self.http.url("/probe")
    }

    /// Whether a GET through 127.0.0.1:`socks` returns the target's page.
    pub fn fetch_ok(&self, socks: u16) -> bool {
        socks5_get(socks, self.http.port(), "/page").is_ok_and(|b| b == self.http.body())
    }
}

/// Polls `cond` every 20 ms for at most `limit`.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// xrat

/// `runtime.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Front,
    Direct,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Front => "front",
            Mode::Direct => "direct",
        }
    }
}

/// One xrat daemon in its own root with the three remotes imported, connected to the first.
pub struct Xrat {
    /// "xrat-front" or "xrat-direct".
    pub name: String,
    pub mode: Mode,
    pub root: Root,
    pub socks_port: u16,
    pub ids: Vec<i64>,
    pub daemon_pid: u32,
}

impl Xrat {
    /// Starts the daemon (on the systems' CPU), imports the remotes, connects the first and
    /// waits until traffic flows. `Err` says why it could not.
    pub fn start(place: &Place, world: &World, mode: Mode, core: Core) -> Result<Xrat, String> {
        let root = Root::new();
        cleanup::root(root.path().to_path_buf());
        let socks_port = free_port();
        // `XRAT_BENCH_SCHED_SLICE_US` sets `daemon.sched_slice_us` (else the daemon's default).
        let slice = std::env::var("XRAT_BENCH_SCHED_SLICE_US")
            .map(|us| format!("sched_slice_us = {us}\n"))
            .unwrap_or_default();
        // `XRAT_BENCH_SPLICE=false` sets `relay.splice` (else the daemon's default), for A/B runs.
        let splice = std::env::var("XRAT_BENCH_SPLICE")
            .map(|on| format!("[relay]\nsplice = {on}\n"))
            .unwrap_or_default();
        root.write_settings(&format!(
            "{splice}[daemon]\nhealth_interval_secs = 1\n{slice}\
             [runtime]\nmode = \"{}\"\n{}socks_port = {socks_port}\n\
             [runtime.rotation]\nenabled = true\ncooldown_secs = 0\npool_size = 4\n\
             [health]\nprobe_url = \"{}\"\ntimeout_ms = 800\n",
            mode.name(),
            core.runtime_settings(),
            world.probe_url(),
        ));
        let mut ids = Vec::new();
        for server in &world.servers {
            let out = root.run(&["config", "import", &server.link(), "--json"]);
            if !out.status.success() {
                return Err(format!("config import: {}", text(&out.stderr)));
            }
            let view: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            ids.push(view["imported"][0]["id"].as_i64().ok_or("no id imported")?);
        }
        let out = place.as_server(|| root.run(&["daemon", "start", "--json"]));
        if !out.status.success() {
            return Err(format!(
                "daemon start: {}\n{}",
                text(&out.stderr),
                root.log()
            ));
        }
        let view: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let daemon_pid = view["pid"].as_u64().ok_or("daemon start printed no pid")? as u32;
        let xrat = Xrat {
            name: format!("xrat-{}", mode.name()),
            mode,
            root,
            socks_port,
            ids,
            daemon_pid,
        };
        let reply = xrat.call(json!({"type": "runtime_connect", "config_id": xrat.ids[0]}))?;
        if reply["code"] != 200 {
            return Err(format!("runtime_connect: {reply}\n{}", xrat.log_tail()));
        }
        let status = xrat.status()?;
        if status["mode"] != mode.name() {
            return Err(format!(
                "runtime_status says mode {} (this build has no {} mode?): {status}",
                status["mode"],
                mode.name()
            ));
        }
        if !xrat.recovered(world, Duration::from_secs(15)) {
            return Err(format!(
                "traffic did not flow within 15 s: {}\n{}",
                xrat.status().unwrap_or_default(),
                xrat.log_tail()
            ));
        }
        Ok(xrat)
    }

    /// One request on a fresh connection to the daemon socket.
    pub fn call(&self, request: Value) -> Result<Value, String> {
        let mut stream = UnixStream::connect(self.root.socket()).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let line = json!({"protocol_version": 1, "id": 1, "request": request});
        stream
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let mut reply = String::new();
        BufReader::new(stream)
            .read_line(&mut reply)
            .map_err(|e| e.to_string())?;
        serde_json::from_str(&reply).map_err(|e| format!("bad reply {reply:?}: {e}"))
    }

    pub fn status(&self) -> Result<Value, String> {
        Ok(self.call(json!({"type": "runtime_status"}))?["payload"].clone())
    }

    /// The remote (index into `World::servers`) the session uses now.
    pub fn active_remote(&self) -> Option<usize> {
        let id = self.status().ok()?["active_config_id"].as_i64()?;
        self.ids.iter().position(|x| *x == id)
    }

    /// A manual switch to remote `to`: the reply and the command's wall time.
    pub fn switch(&self, to: usize) -> (Duration, Result<(), String>) {
        let start = Instant::now();
        let reply = self.call(json!({
            "type": "runtime_replace", "trigger": "manual", "candidate_id": self.ids[to],
        }));
        let took = start.elapsed();
        let result = match reply {
            Ok(r) if r["code"] == 200 && r["payload"]["replaced"] == true => Ok(()),
            Ok(r) => Err(r.to_string()),
            Err(e) => Err(e),
        };
        (took, result)
    }

    /// Waits (at most `limit`) until every remote's member is alive again (front mode) or the
    /// session runs (direct), and a request through the SOCKS port gets the page.
    pub fn recovered(&self, world: &World, limit: Duration) -> bool {
        let want = self.ids.len();
        wait_for(limit, || {
            let Ok(status) = self.status() else {
                return false;
            };
            let settled = match self.mode {
                Mode::Front => {
                    status["pool"]
                        .as_array()
                        .map_or(0, |m| m.iter().filter(|m| m["alive"] == true).count())
                        >= want
                }
                Mode::Direct => status["runtime_status"] == "running",
            };
            settled && world.fetch_ok(self.socks_port)
        })
    }

    /// The daemon and every core it runs.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.daemon_pid];
        pids.extend(descendants(self.daemon_pid));
        for pid in core_processes(&self.root) {
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
        pids
    }

    pub fn log_tail(&self) -> String {
        let log = self.root.log();
        let start = log.len().saturating_sub(3000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        log[start..].to_string()
    }
}

/// Every live descendant of `pid` (by the parent pid in /proc/<pid>/stat).
pub fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let ppid = fields.next()?.parse().ok()?;
            (state != "Z").then_some((p, ppid))
        })
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    // Bounded: every pid is visited at most once.
    while let Some(parent) = frontier.pop() {
        for &(child, ppid) in &parents {
            if ppid == parent && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

/// VmRSS of `pid` in KiB, from /proc/<pid>/status.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The command name of `pid`.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// mihomo

/// The `select` group switched by the REST API.
pub const SELECT: &str = "sel";
/// The `fallback` group.
pub const FALLBACK: &str = "fb";
/// The `url-test` group.
pub const URL_TEST: &str = "ut";
/// The `select` group the rule points at, choosing one of the three groups above.
const TOP: &str = "top";

/// mihomo as a client of the same remotes: one SOCKS port, the REST API on
/// `external-controller`.
pub struct Mihomo {
    pub socks_port: u16,
    pub api_port: u16,
    pub version: String,
    child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Mihomo {
    pub fn start(place: &Place, world: &World) -> Result<Mihomo, String> {
        let dir = tempfile::Builder::new()
            .prefix("xrat-bench-mihomo")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        let (socks_port, api_port) = (free_port(), free_port());
        let names: Vec<String> = (0..world.servers.len()).map(|i| format!("r{i}")).collect();
        let proxies: Vec<Value> = world
            .servers
            .iter()
            .zip(&names)
            .map(|(s, name)| {
                json!({ "name": name, "type": "socks5", "server": "127.0.0.1", "port": s.port() })
            })
            .collect();
        // The same health check as xrat's: the target's probe path, every second, 800 ms.
        let checked = |name: &str, kind: &str| {
            json!({
                "name": name, "type": kind, "proxies": names, "url": world.probe_url(),
                "interval": 1, "timeout": 800, "lazy": false,
            })
        };
        let config = json!({
            "socks-port": socks_port,
            "allow-lan": false,
            "bind-address": "127.0.0.1",
            "external-controller": format!("127.0.0.1:{api_port}"),
            "log-level": "warning",
            "mode": "rule",
            "ipv6": false,
            "find-process-mode": "off",
            "geo-auto-update": false,
            "profile": { "store-selected": false, "store-fake-ip": false },
            "proxies": proxies,
            "proxy-groups": [
                { "name": SELECT, "type": "select", "proxies": names },
                checked(FALLBACK, "fallback"),
                checked(URL_TEST, "url-test"),
                { "name": TOP, "type": "select", "proxies": [SELECT, FALLBACK, URL_TEST] },
            ],
            "rules": [format!("MATCH,{TOP}")],
        });
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap())
            .map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("mihomo.log")).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = place
            .as_server(|| {
                Command::new(mihomo_bin())
                    .arg("-d")
                    .arg(dir.path())
                    .arg("-f")
                    .arg(&config_path)
                    .stdin(Stdio::null())
                    .stdout(log)
                    .stderr(err)
                    .spawn()
            })
            .map_err(|e| format!("cannot start mihomo: {e}"))?;
        cleanup::pid(child.id(), "xrat-bench-mihomo");
        let mut mihomo = Mihomo {
            socks_port,
            api_port,
            version: String::new(),
            child: ChildGuard::new(child),
            _dir: dir,
        };
        let up = wait_for(Duration::from_secs(10), || {
            mihomo
                .get("/version")
                .is_ok_and(|(status, _)| status == 200)
        });
        let log =
            || std::fs::read_to_string(mihomo._dir.path().join("mihomo.log")).unwrap_or_default();
        if !up {
            return Err(format!(
                "mihomo's API did not answer within 10 s\n{}",
                log()
            ));
        }
        mihomo.version = mihomo.get("/version").map(|(_, b)| b).unwrap_or_default();
        if !wait_for(Duration::from_secs(10), || world.fetch_ok(socks_port)) {
            return Err(format!("no traffic through mihomo within 10 s\n{}", log()));
        }
        Ok(mihomo)
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// GET `path` on a fresh connection: status and body.
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        let mut http = Http::connect(self.api_port).map_err(|e| e.to_string())?;
        let r = http.request("GET", path, "").map_err(|e| e.to_string())?;
        Ok((r.status, r.body))
    }

    /// `PUT /proxies/<group>` `{"name": proxy}` on a fresh connection (as a script's curl
    /// would); its wall time.
    pub fn select(&self, group: &str, proxy: &str) -> (Duration, Result<(), String>) {
        let start = Instant::now();
        let result = Http::connect(self.api_port)
            .and_then(|mut http| {
                http.request(
                    "PUT",
                    &format!("/proxies/{group}"),
                    &json!({ "name": proxy }).to_string(),
                )
            })
            .map_err(|e| e.to_string())
            .and_then(|r| match r.status {
                204 | 200 => Ok(()),
                other => Err(format!("PUT /proxies/{group}: {other} {}", r.body)),
            });
        (start.elapsed(), result)
    }

    /// Points the rule at `group` (one of [`SELECT`], [`FALLBACK`], [`URL_TEST`]).
    pub fn use_group(&self, group: &str) -> Result<(), String> {
        self.select(TOP, group).1
    }

    /// The proxy `group` uses now ("r0", "r1", ...).
    pub fn now(&self, group: &str) -> Option<String> {
        let (_, body) = self.get(&format!("/proxies/{group}")).ok()?;
        let view: Value = serde_json::from_str(&body).ok()?;
        view["now"].as_str().map(str::to_owned)
    }

    /// The remote `group` uses now.
    pub fn active_remote(&self, group: &str) -> Option<usize> {
        self.now(group)?.strip_prefix('r')?.parse().ok()
    }

    /// Waits (at most `limit`) until mihomo's last health check saw every remote alive and a
    /// request through the SOCKS port gets the page.
    pub fn recovered(&self, world: &World, limit: Duration) -> bool {
        wait_for(limit, || {
            (0..world.servers.len()).all(|i| {
                self.get(&format!("/proxies/r{i}"))
                    .ok()
                    .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
                    .is_some_and(|v| v["alive"] == true)
            }) && world.fetch_ok(self.socks_port)
        })
    }
}
