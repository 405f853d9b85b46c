//! Rotation and relay benches: xrat against mihomo on the same three remotes, in the same run,
//! by the same client (docs/BENCHMARKS.md, "Rotation and relay, against mihomo").
//!
//! A plain measured program (no criterion: most rows are events, not loops). Everything runs
//! on 127.0.0.1: three V2Ray SOCKS remotes (as tests/common starts them), a local HTTP target
//! (also the health-check URL of both systems) and a source server for the relay rows. The
//! systems under test: xrat's daemon in front mode and in direct mode (each its own root, the
//! three remotes imported, rotation enabled, health every second with an 800 ms timeout), and
//! mihomo with a `select`, a `fallback` and a `url-test` group over the same remotes (checks
//! every second, 800 ms). Rows, in the order they run:
//!
//! - `rss`: VmRSS of each system (xrat: daemon plus its cores) after an idle spell.
//! - `ipc`: xrat `daemon_ping` over the Unix socket against mihomo `GET /version`, on one
//!   persistent connection and on a fresh connection per request; p50/p99.
//! - `relay` (front mode only): the front port against the pool core's internal inbound
//!   directly: 1 GiB download throughput, and p50 of a small request on a fresh connection and
//!   of a round trip on an open tunnel.
//! - `switch`: requests back to back while 20 manual switches happen (xrat `runtime_replace`
//!   manual with a `candidate_id`; mihomo `PUT /proxies/sel`); failed requests and the
//!   switch command's wall time.
//! - `failover`: a request every 50 ms, each on its own thread; the active remote is killed
//!   (SIGKILL) or hung (SIGSTOP); failed requests and the time to the first good request; five
//!   runs per system and event.
//!
//! Run: `cargo bench --bench rotation` (about 4 minutes), or `python3
//! benches/rotation_report.py`, which runs it and prints the tables. `XRAT_BENCH_QUICK=1` is a
//! smoke run (about a minute). `XRAT_BENCH_PIN=off` leaves CPU placement to the scheduler
//! (default: the client on the first allowed CPU, the systems under test on the second).
//! `XRAT_BENCH_CORE=v2ray|sing-box` picks xrat's core (default sing-box),
//! `XRAT_BENCH_MODES=front,direct` which xrat modes run, `XRAT_BENCH_ROWS=rss,ipc,relay,switch,failover`
//! which rows. `XRAT_BENCH_SPLICE=false` sets xrat's `relay.splice`. Results go to `XRAT_BENCH_OUT`
//! (default `target/rotation-results.json`). Without `--bench` (as `cargo test --benches` runs
//! it) it only says how to run it.

use std::time::Duration;

use serde_json::json;

#[path = "rotation/cleanup.rs"]
mod cleanup;
#[allow(unused_imports)]
#[path = "../tests/common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "ipc/client.rs"]
mod ipc_client;
#[path = "rotation/net.rs"]
mod net;
#[path = "rotation/place.rs"]
mod place;
#[path = "rotation/rows.rs"]
mod rows;
#[path = "rotation/stats.rs"]
mod stats;
#[path = "rotation/systems.rs"]
mod systems;

use common::cores::Core;
use systems::{Mihomo, Mode, World, Xrat};

/// Set to anything but "0" for a smoke run.
const QUICK_ENV: &str = "XRAT_BENCH_QUICK";

/// How much each row measures.
pub struct Lengths {
    quick: bool,
    idle: Duration,
    ipc_blocks: usize,
    ipc_block: usize,
    bulk_bytes: u64,
    bulk_reps: usize,
    relay_blocks: usize,
    relay_block: usize,
    switches: usize,
    failover_runs: usize,
}

impl Lengths {
    fn from_env() -> Lengths {
        let quick = std::env::var_os(QUICK_ENV).is_some_and(|v| v != "0");
        if quick {
            Lengths {
                quick,
                idle: Duration::from_secs(1),
                ipc_blocks: 4,
                ipc_block: 250,
                bulk_bytes: 64 << 20,
                bulk_reps: 1,
                relay_blocks: 2,
                relay_block: 50,
                switches: 5,
                failover_runs: 1,
            }
        } else {
            Lengths {
                quick,
                idle: Duration::from_secs(5),
                ipc_blocks: 20,
                ipc_block: 1000,
                bulk_bytes: 1 << 30,
                bulk_reps: 3,
                relay_blocks: 10,
                relay_block: 100,
                switches: 20,
                failover_runs: 5,
            }
        }
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("rotation: a measured program; run `cargo bench --bench rotation` (or python3 benches/rotation_report.py)");
        return;
    }
    cleanup::install();
    let lengths = Lengths::from_env();
    let place = place::Place::from_env();
    let core = match std::env::var("XRAT_BENCH_CORE").as_deref() {
        Ok("v2ray") => Core::V2ray,
        Ok("sing-box") | Ok("") | Err(_) => Core::SingBox,
        Ok(other) => panic!("XRAT_BENCH_CORE={other:?}: expected v2ray or sing-box"),
    };
    let modes: Vec<Mode> = std::env::var("XRAT_BENCH_MODES")
        .unwrap_or_else(|_| "front,direct".into())
        .split(',')
        .filter(|m| !m.is_empty())
        .map(|m| match m.trim() {
            "front" => Mode::Front,
            "direct" => Mode::Direct,
            other => panic!("XRAT_BENCH_MODES: unknown mode {other:?}"),
        })
        .collect();
    eprintln!("cpus: {}", place.describe);

    let mut world = World::start(&place, 3);
    let source = net::Source::start();
    let mut results = stats::Results::new(json!({
        "quick": lengths.quick,
        "cpus": place.describe,
        "xrat_core": core.name(),
        "remotes": world.servers.len(),
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }));
    let mut xrats = Vec::new();
    for mode in modes {
        match Xrat::start(&place, &world, mode, core) {
            Ok(x) => xrats.push(x),
            Err(why) => results.note(format!("xrat-{} left out: {why}", mode.name())),
        }
    }
    let mihomo = match Mihomo::start(&place, &world) {
        Ok(m) => Some(m),
        Err(why) => {
            results.note(format!("mihomo left out: {why}"));
            None
        }
    };
    if let Some(m) = &mihomo {
        results.note(format!("mihomo {}", m.version));
    }
    let systems = rows::Systems { xrats, mihomo };

    let wanted = std::env::var("XRAT_BENCH_ROWS").unwrap_or_default();
    let run = |row: &str| wanted.is_empty() || wanted.split(',').any(|w| w.trim() == row);
    if run("rss") {
        rows::idle_rss(&systems, &lengths, &mut results);
    }
    if run("ipc") {
        rows::ipc(&systems, &lengths, &mut results);
    }
    if run("relay") {
        rows::relay(&systems, &source, &lengths, &mut results);
    }
    if run("switch") {
        rows::switches(&systems, &world, &lengths, &mut results);
    }
    if run("failover") {
        rows::failover(&systems, &mut world, &place, &lengths, &mut results);
    }
    eprintln!("results: {}", results.path().display());
    // The systems stop (daemon stop, SIGKILL of mihomo) before the remotes do.
    drop(systems);
}
