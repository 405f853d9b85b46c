//! IPC benchmarks: xrat's daemon against three peer servers speaking the same JSON-lines
//! protocol (DESIGN §4) over a Unix stream socket.
//!
//! Servers: "xrat-uring" and "xrat-epoll" (`xrat daemon run-server` with `XRAT_BACKEND` set to
//! each reactor backend; a server that does not come up is skipped with a note),
//! "tokio" (current-thread runtime, task per connection), "tokio-uring" (0.5) and "blocking"
//! (thread per connection). Every server is its own process, pinned to one CPU while the client
//! runs on another (see `servers::Placement`), and every server meets the same client code.
//!
//! Groups, each with the five servers as inputs:
//! - `ping_rtt`: one `daemon_ping` round trip on a persistent connection.
//! - `connect_request_close`: connect, one ping, read the reply, close.
//! - `pipelined_16x16`: 16 connections, each sent 16 pipelined pings in one write, then every
//!   reply read and checked; throughput in requests per second.
//!
//! Run: `cargo bench --bench ipc` (about 1.5 minutes; `python3 benches/report.py` runs it and
//! prints medians and ratios). `XRAT_BENCH_QUICK=1` shortens every measurement to a smoke run of
//! a few seconds. `XRAT_BENCH_PIN=same` puts client and servers on one CPU and `=off` leaves
//! placement to the scheduler. `XRAT_BACKEND=epoll` (or `io_uring`) reaches xrat's daemon through
//! the environment it inherits. `cargo bench --bench ipc --no-run` only compiles (what CI does);
//! `cargo test --bench ipc` runs every benchmark once against every server.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};

#[path = "ipc/client.rs"]
mod client;
#[path = "ipc/peers.rs"]
mod peers;
#[path = "ipc/servers.rs"]
mod servers;

use client::{Client, Conn};
use servers::{Placement, Server};

/// Set to anything but "0" for a smoke run: tiny samples, a few seconds in all.
const QUICK_ENV: &str = "XRAT_BENCH_QUICK";

/// CPU layout: "split" (default: client and servers on different CPUs), "same" (all on one
/// CPU) or "off" (left to the scheduler).
const PIN_ENV: &str = "XRAT_BENCH_PIN";

/// Connections of `pipelined_16x16`.
const PIPELINE_CONNECTIONS: usize = 16;

/// Requests in flight per connection in `pipelined_16x16`.
const PIPELINE_DEPTH: u64 = 16;

fn main() {
    // A re-executed copy of this binary serving as a peer never reaches criterion.
    peers::serve_if_asked();

    // Before any server starts: criterion exits here on --help or a bad argument.
    let mut criterion = Criterion::default().configure_from_args();
    let lengths = Lengths::from_env();
    let placement = place_client();
    let servers = servers::start_all(placement);
    let names: Vec<&str> = servers.iter().map(|s| s.name).collect();
    eprintln!("servers: {}", names.join(", "));

    ping_rtt(&mut criterion, &servers, &lengths);
    connect_request_close(&mut criterion, &servers, &lengths);
    pipelined(&mut criterion, &servers, &lengths);
    criterion.final_summary();
    // Stops every server (SIGTERM, then wait) before the process exits.
    drop(servers);
}

/// Chooses the CPU layout from [`PIN_ENV`] and pins this process (the client) accordingly.
fn place_client() -> Option<Placement> {
    let layout = std::env::var(PIN_ENV).unwrap_or_default();
    let placement = match layout.as_str() {
        "" | "split" => Placement::split(),
        "same" => Placement::same(),
        "off" | "0" => None,
        other => panic!("{PIN_ENV}={other:?}: expected split, same or off"),
    };
    match placement {
        Some(placement) => match placement.pin_client() {
            Ok(()) => {
                eprintln!("cpus: {}", placement.describe());
                Some(placement)
            }
            Err(error) => {
                eprintln!("note: cannot pin the client ({error}); nothing is pinned");
                None
            }
        },
        None => {
            eprintln!("note: nothing is pinned ({PIN_ENV}={layout:?}, or fewer than 2 CPUs)");
            None
        }
    }
}

/// How long each group warms up and measures.
struct Lengths {
    quick: bool,
}

impl Lengths {
    /// Full lengths unless [`QUICK_ENV`] asks for a smoke run.
    fn from_env() -> Lengths {
        let quick = std::env::var_os(QUICK_ENV).is_some_and(|v| v != "0");
        Lengths { quick }
    }

    /// Applies the lengths to a group; `samples` is the full-run sample count.
    ///
    /// Fifteen benchmarks share the run, so each gets about 6 s plus analysis: enough for stable
    /// medians of microsecond operations, short enough for about 2.5 minutes in all.
    fn apply(&self, group: &mut BenchmarkGroup<'_, WallTime>, samples: usize) {
        if self.quick {
            group
                .sample_size(10)
                .warm_up_time(Duration::from_millis(100))
                .measurement_time(Duration::from_millis(300));
        } else {
            group
                .sample_size(samples)
                .warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(5));
        }
    }
}

/// A failed request fails the run: a number from a broken server would mislead.
fn must(server: &str, result: std::io::Result<()>) {
    if let Err(error) = result {
        panic!("{server}: {error}");
    }
}

/// A persistent connection to `server`, or a panic naming it.
fn connect(server: &Server) -> Conn {
    Conn::connect(&server.socket)
        .unwrap_or_else(|error| panic!("{}: cannot connect: {error}", server.name))
}

/// One `daemon_ping` round trip on a persistent connection.
fn ping_rtt(criterion: &mut Criterion, servers: &[Server], lengths: &Lengths) {
    let mut group = criterion.benchmark_group("ping_rtt");
    lengths.apply(&mut group, 60);
    for server in servers {
        let mut client = Client::new();
        // Outside the routine: criterion calls it once per sample, and the connection must
        // persist across all of them.
        let mut conn = connect(server);
        group.bench_function(BenchmarkId::from_parameter(server.name), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    must(server.name, client.ping(&mut conn));
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

/// Connect, one ping, read the reply, close.
fn connect_request_close(criterion: &mut Criterion, servers: &[Server], lengths: &Lengths) {
    let mut group = criterion.benchmark_group("connect_request_close");
    lengths.apply(&mut group, 50);
    for server in servers {
        let mut client = Client::new();
        let socket: &Path = &server.socket;
        group.bench_function(BenchmarkId::from_parameter(server.name), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    must(server.name, client.connect_ping_close(socket));
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

/// 16 connections × 16 pipelined pings per iteration.
fn pipelined(criterion: &mut Criterion, servers: &[Server], lengths: &Lengths) {
    let mut group = criterion.benchmark_group("pipelined_16x16");
    lengths.apply(&mut group, 30);
    group.throughput(Throughput::Elements(
        PIPELINE_CONNECTIONS as u64 * PIPELINE_DEPTH,
    ));
    for server in servers {
        let mut client = Client::new();
        let mut conns: Vec<Conn> = (0..PIPELINE_CONNECTIONS).map(|_| connect(server)).collect();
        group.bench_function(BenchmarkId::from_parameter(server.name), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    must(server.name, client.pipeline(&mut conns, PIPELINE_DEPTH));
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}
