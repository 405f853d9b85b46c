//! The busy-poll curve (`daemon.busy_poll_us`): ping round trip and the daemon's CPU use against
//! the polling window, at three request rates, client and daemon on different CPUs.
//!
//! A plain measured program. For each window a fresh daemon starts (as the IPC bench starts it:
//! `xrat daemon run-server`, pinned to the second CPU, the client on the first). The client sends
//! one `daemon_ping` at a time on a persistent connection, paced to the rate (a request every
//! 1/rate s; when a round trip is longer than that, requests go back to back). The daemon's CPU
//! use is its utime + stime over the run's wall time, from /proc/<pid>/stat.
//!
//! Run: `cargo bench --bench busy_poll` (about a minute and a half). `XRAT_BENCH_QUICK=1` is a
//! smoke run. `XRAT_BENCH_WINDOWS=0,50,200` picks the windows (µs), `XRAT_BENCH_BACKEND` the
//! backend (default io_uring),
//! `XRAT_BENCH_PIN=same` puts client and daemon on one CPU.

use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "ipc/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "ipc/peers.rs"]
mod peers;
#[allow(dead_code)]
#[path = "ipc/servers.rs"]
mod servers;

use client::{Client, Conn};
use servers::Placement;

/// Windows measured by default, in µs (0 = off).
const WINDOWS_US: [u64; 6] = [0, 10, 25, 50, 100, 200];

/// Request rates (per second) and how long each is measured.
const RATES: [(u64, Duration); 3] = [
    (1, Duration::from_secs(6)),
    (1_000, Duration::from_secs(3)),
    (100_000, Duration::from_secs(2)),
];

/// Clock ticks per second of /proc/<pid>/stat's utime and stime.
fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("busy-poll bench: run it with `cargo bench --bench busy_poll`");
        return;
    }
    let quick = std::env::var_os("XRAT_BENCH_QUICK").is_some_and(|v| v != "0");
    let windows: Vec<u64> = match std::env::var("XRAT_BENCH_WINDOWS") {
        Ok(list) => list
            .split(',')
            .map(|w| w.trim().parse().expect("XRAT_BENCH_WINDOWS: µs numbers"))
            .collect(),
        Err(_) => WINDOWS_US.to_vec(),
    };
    let backend = std::env::var("XRAT_BENCH_BACKEND").unwrap_or_else(|_| "io_uring".into());
    // Split by default (the curve is about cross-CPU wake-ups); `XRAT_BENCH_PIN=same` checks
    // that polling costs nothing when client and daemon share a CPU.
    let placement = match std::env::var("XRAT_BENCH_PIN").as_deref() {
        Ok("same") => Placement::same(),
        _ => Placement::split(),
    }
    .expect("two CPUs for the split layout");
    placement.pin_client().expect("pin the client");
    eprintln!("cpus: {}; backend {backend}", placement.describe());
    println!("| window | rate (req/s) | achieved | p50 RTT | p99 RTT | daemon CPU |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for window in windows {
        let settings = format!("[daemon]\nbusy_poll_us = {window}\n");
        let server = servers::start_xrat("xrat", &backend, &settings, Some(placement))
            .unwrap_or_else(|why| panic!("{why}"));
        for (rate, length) in RATES {
            let length = if quick { length / 10 } else { length };
            let row = measure(&server, rate, length);
            println!(
                "| {window} µs | {rate} | {:.0} | {:.1} µs | {:.1} µs | {:.1}% |",
                row.achieved, row.p50_us, row.p99_us, row.cpu_percent
            );
        }
    }
}

struct Row {
    achieved: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_percent: f64,
}

/// Paced pings for `length`; the daemon's CPU over the same span.
fn measure(server: &servers::Server, rate: u64, length: Duration) -> Row {
    let mut client = Client::new();
    let mut conn = Conn::connect(&server.socket).expect("connect");
    // One round trip first, so the connection is accepted before the clock starts.
    client.ping(&mut conn).expect("ping");
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let cpu_before = cpu_ticks(server.pid());
    let start = Instant::now();
    let mut next = start;
    let mut rtts = Vec::new();
    while start.elapsed() < length {
        let now = Instant::now();
        if now < next {
            // Sleep for the long gaps, spin the last stretch, so the request leaves on time.
            let gap = next - now;
            if gap > Duration::from_micros(200) {
                std::thread::sleep(gap - Duration::from_micros(100));
            }
            continue;
        }
        let sent = Instant::now();
        client.ping(&mut conn).expect("ping");
        rtts.push(sent.elapsed());
        next += period;
        if next < Instant::now() {
            next = Instant::now();
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(server.pid()) - cpu_before) as f64 / ticks_per_sec();
    rtts.sort_unstable();
    let at = |p: usize| rtts[(rtts.len() - 1) * p / 100].as_secs_f64() * 1e6;
    Row {
        achieved: rtts.len() as f64 / wall,
        p50_us: at(50),
        p99_us: at(99),
        cpu_percent: cpu / wall * 100.0,
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}
