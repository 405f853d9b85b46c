//! The measured rows. Each takes the systems that came up and adds its numbers to the results.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cleanup;
use crate::ipc_client;
use crate::net::{self, after, Http, Requests, Source, Tunnel};
use crate::place::Place;
use crate::stats::{latency_fields, median, ms, quantile, us, Results};
use crate::systems::{comm, rss_kib, Mihomo, Mode, World, Xrat, FALLBACK, SELECT, URL_TEST};
use crate::Lengths;

/// Every system that came up.
pub struct Systems {
    pub xrats: Vec<Xrat>,
    pub mihomo: Option<Mihomo>,
}

impl Systems {
    fn front(&self) -> Option<&Xrat> {
        self.xrats.iter().find(|x| x.mode == Mode::Front)
    }

    /// Waits until every system routes over every remote again; notes a system that does not.
    fn settle(&self, world: &World, results: &mut Results) {
        let limit = Duration::from_secs(20);
        for x in &self.xrats {
            if !x.recovered(world, limit) {
                results.note(format!(
                    "{} did not recover within {limit:?}: {}",
                    x.name,
                    x.status().unwrap_or_default()
                ));
            }
        }
        if let Some(m) = &self.mihomo {
            if !m.recovered(world, limit) {
                results.note(format!("mihomo did not recover within {limit:?}"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Idle RSS

/// VmRSS of each system (xrat: the daemon and its cores) after `idle` with no requests.
pub fn idle_rss(systems: &Systems, lengths: &Lengths, results: &mut Results) {
    eprintln!("idle RSS: waiting {:?} with no requests", lengths.idle);
    std::thread::sleep(lengths.idle);
    let mut measure = |name: &str, pids: Vec<u32>| {
        let parts: Vec<Value> = pids
            .iter()
            .filter_map(|&pid| Some(json!({ "pid": pid, "comm": comm(pid), "kib": rss_kib(pid)? })))
            .collect();
        let total: u64 = parts.iter().filter_map(|p| p["kib"].as_u64()).sum();
        results.add(
            "rss",
            "idle_rss",
            name,
            json!({ "kib": total, "processes": parts, "idle_secs": lengths.idle.as_secs() }),
        );
    };
    for x in &systems.xrats {
        measure(&x.name, x.pids());
    }
    if let Some(m) = &systems.mihomo {
        measure("mihomo", vec![m.pid()]);
    }
}

// ---------------------------------------------------------------------------------------------
// IPC against the REST API

/// xrat `daemon_ping` over the Unix socket against mihomo `GET /version` over HTTP, on one
/// persistent connection and on a fresh connection per request; blocks interleaved so both
/// see the same noise.
pub fn ipc(systems: &Systems, lengths: &Lengths, results: &mut Results) {
    let (Some(x), Some(m)) = (systems.xrats.first(), &systems.mihomo) else {
        results.note("ipc: needs an xrat daemon and mihomo".into());
        return;
    };
    let socket = x.root.socket();
    let mut client = ipc_client::Client::new();
    let mut conn = ipc_client::Conn::connect(&socket).expect("connect to the daemon socket");
    let mut http = Http::connect(m.api_port).expect("connect to mihomo's API");
    let version = |http: &mut Http| {
        let r = http.request("GET", "/version", "").expect("GET /version");
        assert_eq!(r.status, 200, "GET /version: {}", r.body);
    };
    let timed = |samples: &mut Vec<f64>, f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        samples.push(us(start.elapsed()));
    };
    // Persistent connections.
    let (mut xs, mut ms_) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        client.ping(&mut conn).expect("daemon_ping");
        version(&mut http);
    }
    for _ in 0..lengths.ipc_blocks {
        for _ in 0..lengths.ipc_block {
            timed(&mut xs, &mut || {
                client.ping(&mut conn).expect("daemon_ping")
            });
        }
        for _ in 0..lengths.ipc_block {
            timed(&mut ms_, &mut || version(&mut http));
        }
    }
    results.add("ipc", "persistent", &x.name, latency_fields(&xs));
    results.add("ipc", "persistent", "mihomo", latency_fields(&ms_));
    // A fresh connection per request.
    let (mut xs, mut ms_) = (Vec::new(), Vec::new());
    let fresh_block = (lengths.ipc_block / 4).max(1);
    for _ in 0..lengths.ipc_blocks {
        for _ in 0..fresh_block {
            timed(&mut xs, &mut || {
                client.connect_ping_close(&socket).expect("daemon_ping")
            });
        }
        for _ in 0..fresh_block {
            timed(&mut ms_, &mut || {
                let mut http = Http::connect(m.api_port).expect("connect to mihomo's API");
                version(&mut http);
            });
        }
    }
    results.add("ipc", "fresh", &x.name, latency_fields(&xs));
    results.add("ipc", "fresh", "mihomo", latency_fields(&ms_));
}

// ---------------------------------------------------------------------------------------------
// Relay cost

fn addr(status: &Value, key: &str) -> Option<SocketAddr> {
    status[key].as_str()?.parse().ok()
}

/// Through the front port against the pool core's internal inbound directly: bulk download
/// throughput and the latency of a small request (fresh connection, and an open tunnel).
pub fn relay(systems: &Systems, source: &Source, lengths: &Lengths, results: &mut Results) {
    let Some(x) = systems.front() else {
        results.note("relay: no front-mode xrat, nothing to measure".into());
        return;
    };
    let status = x.status().unwrap_or_default();
    let (Some(internal), Some(front)) = (
        addr(&status, "socks_addr"),
        addr(&status, "front_socks_addr"),
    ) else {
        results.note(format!(
            "relay: runtime_status lacks socks_addr or front_socks_addr: {status}"
        ));
        return;
    };
    let paths = [("internal", internal), ("front", front)];
    // Bulk: alternate which path goes first, so drift hits both alike.
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for rep in 0..lengths.bulk_reps {
        for k in 0..2 {
            let i = (k + rep) % 2;
            let (name, at) = paths[i];
            match net::download(at, source.port, lengths.bulk_bytes) {
                Ok(took) => {
                    let mib_s = lengths.bulk_bytes as f64 / (1 << 20) as f64 / took.as_secs_f64();
                    eprintln!("relay bulk {name}: {mib_s:.0} MiB/s");
                    rates[i].push(mib_s);
                }
                Err(error) => results.note(format!("relay bulk via {name}: {error}")),
            }
        }
    }
    let (internal_rate, front_rate) = (median(&rates[0]), median(&rates[1]));
    results.add(
        "relay",
        "bulk",
        &x.name,
        json!({
            "bytes": lengths.bulk_bytes,
            "internal_mib_s": internal_rate, "front_mib_s": front_rate,
            "internal_samples": rates[0], "front_samples": rates[1],
            "loss_pct": internal_rate.zip(front_rate).map(|(i, f)| (1.0 - f / i) * 100.0),
        }),
    );
    // The latency rows measure three slots in rotation: the internal inbound, the front, and
    // the internal inbound again. The two internal slots differ only by noise, which says how
    // far the front's added p50 can be trusted.
    let slots = [internal, front, internal];
    // Fresh connection, one small request and its response.
    let mut fresh: [Vec<f64>; 3] = Default::default();
    let mut errors = 0;
    for block in 0..lengths.relay_blocks {
        for k in 0..3 {
            let i = (k + block) % 3;
            for _ in 0..lengths.relay_block {
                match net::echo_fresh(slots[i], source.port) {
                    Ok(took) => fresh[i].push(us(took)),
                    Err(_) => errors += 1,
                }
            }
        }
    }
    added(results, "fresh_request", &x.name, &fresh, errors);
    // An open tunnel, one 64-byte round trip at a time.
    let mut tunnels: Vec<Tunnel> = slots
        .iter()
        .map(|at| Tunnel::open(*at, source.port).expect("open an echo tunnel"))
        .collect();
    let mut rtt: [Vec<f64>; 3] = Default::default();
    for t in tunnels.iter_mut() {
        for _ in 0..100 {
            t.round_trip().expect("echo round trip");
        }
    }
    for block in 0..lengths.relay_blocks {
        for k in 0..3 {
            let i = (k + block) % 3;
            for _ in 0..lengths.relay_block * 4 {
                rtt[i].push(us(tunnels[i].round_trip().expect("echo round trip")));
            }
        }
    }
    added(results, "tunnel_rtt", &x.name, &rtt, 0);
    // The same download to the inbound directly is the control: the pings then wait only for
    // what bulk traffic costs everyone on these CPUs, not for the front.
    for (path, at) in [("internal", internal), ("front", front)] {
        ping_under_bulk(x, path, at, source, lengths, results);
    }
}

/// Pause between two pings while the front moves a bulk download.
const PING_UNDER_BULK_EVERY: Duration = Duration::from_millis(2);

/// `daemon_ping` on a persistent connection, every [`PING_UNDER_BULK_EVERY`], while one bulk
/// download runs through `at`: relayed traffic must not delay IPC (the issue's "a ping stays
/// under 1 ms at p99 while the relay moves 1 GB/s"). The pinging thread runs SCHED_FIFO where
/// allowed, so that waiting behind the client's own download thread on its CPU is not counted.
fn ping_under_bulk(
    x: &Xrat,
    path: &str,
    at: SocketAddr,
    source: &Source,
    lengths: &Lengths,
    results: &mut Results,
) {
    let socket = x.root.socket();
    let mut conn = ipc_client::Conn::connect(&socket).expect("connect to the daemon socket");
    let mut client = ipc_client::Client::new();
    let fifo = realtime_priority();
    let (bytes, port) = (lengths.bulk_bytes, source.port);
    let bulk = std::thread::spawn(move || {
        normal_priority();
        net::download(at, port, bytes)
    });
    let mut pings = Vec::new();
    while !bulk.is_finished() {
        let start = Instant::now();
        client.ping(&mut conn).expect("daemon_ping");
        pings.push(us(start.elapsed()));
        std::thread::sleep(PING_UNDER_BULK_EVERY);
    }
    if fifo {
        normal_priority();
    }
    let mib_s = match bulk.join().expect("bulk thread") {
        Ok(took) => Some(bytes as f64 / (1 << 20) as f64 / took.as_secs_f64()),
        Err(error) => {
            results.note(format!(
                "relay ping under bulk via {path}: the download failed: {error}"
            ));
            None
        }
    };
    let max = pings.iter().copied().fold(0.0_f64, f64::max);
    let mut fields = latency_fields(&pings);
    fields["path"] = json!(path);
    fields["bulk_mib_s"] = json!(mib_s);
    fields["max_us"] = json!(max);
    fields["pinger_fifo"] = json!(fifo);
    results.add("relay", &format!("ping_under_bulk_{path}"), &x.name, fields);
}

/// Puts the calling thread on SCHED_FIFO priority 1; false where that is not allowed.
fn realtime_priority() -> bool {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sets the calling thread's policy; `param` is a valid sched_param.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

/// Puts the calling thread back on SCHED_OTHER (a thread inherits its creator's policy).
fn normal_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: as above.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
}

/// A latency row: p50/p99 of both paths, what the front adds at p50, and the difference of
/// the two internal slots (the noise floor of that number).
fn added(results: &mut Results, metric: &str, system: &str, s: &[Vec<f64>; 3], errors: usize) {
    let internal: Vec<f64> = s[0].iter().chain(&s[2]).copied().collect();
    let p50 = |v: &[f64]| quantile(v, 0.5);
    results.add(
        "relay",
        metric,
        system,
        json!({
            "internal_p50_us": p50(&internal), "front_p50_us": p50(&s[1]),
            "internal_p99_us": quantile(&internal, 0.99), "front_p99_us": quantile(&s[1], 0.99),
            "added_p50_us": p50(&s[1]).zip(p50(&internal)).map(|(f, i)| f - i),
            "internal_a_b_p50_us": p50(&s[2]).zip(p50(&s[0])).map(|(b, a)| b - a),
            "n": s.iter().map(Vec::len).sum::<usize>(), "errors": errors,
        }),
    );
}

// ---------------------------------------------------------------------------------------------
// Manual switches

/// A system that can be switched by a command.
enum Switchable<'a> {
    Xrat(&'a Xrat),
    Mihomo(&'a Mihomo),
}

impl Switchable<'_> {
    fn name(&self) -> String {
        match self {
            Switchable::Xrat(x) => x.name.clone(),
            Switchable::Mihomo(_) => "mihomo-select".into(),
        }
    }
}

/// Requests back to back through each system while it is switched `switches` times (a new
/// remote each time), 30 ms apart.
pub fn switches(systems: &Systems, world: &World, lengths: &Lengths, results: &mut Results) {
    let mut subjects: Vec<Switchable> = systems.xrats.iter().map(Switchable::Xrat).collect();
    if let Some(m) = &systems.mihomo {
        subjects.push(Switchable::Mihomo(m));
    }
    let n = world.servers.len();
    for subject in subjects {
        systems.settle(world, results);
        let name = subject.name();
        let (port, mut active) = match &subject {
            Switchable::Xrat(x) => (x.socks_port, x.active_remote().unwrap_or(0)),
            Switchable::Mihomo(m) => {
                let ready = m.use_group(SELECT).and_then(|()| m.select(SELECT, "r0").1);
                if let Err(error) = ready {
                    results.note(format!("{name}: {error}"));
                    continue;
                }
                (m.socks_port, 0)
            }
        };
        let body = world.http.body().to_string();
        let requests = Requests::start(port, world.http.port(), body, Duration::ZERO);
        std::thread::sleep(Duration::from_millis(200));
        let (mut took, mut errors) = (Vec::new(), Vec::new());
        for _ in 0..lengths.switches {
            active = (active + 1) % n;
            let (t, result) = match &subject {
                Switchable::Xrat(x) => x.switch(active),
                Switchable::Mihomo(m) => m.select(SELECT, &format!("r{active}")),
            };
            took.push(ms(t));
            if let Err(error) = result {
                errors.push(error);
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        std::thread::sleep(Duration::from_millis(200));
        let outcomes = requests.stop();
        let failed: Vec<_> = outcomes.iter().filter(|o| !o.ok).collect();
        // Back to back, so failed requests never overlap: their summed time, with the pause
        // after each, is the time the client saw no service.
        let outage: Duration = failed
            .iter()
            .map(|o| o.ended - o.started + net::RETRY_PAUSE)
            .sum();
        results.add(
            "switch",
            "manual_switches",
            &name,
            json!({
                "switches": lengths.switches,
                "requests": outcomes.len(),
                "failed": failed.len(),
                "outage_ms": ms(outage),
                "first_error": failed.first().map(|o| o.error.clone()),
                "switch_p50_ms": median(&took),
                "switch_max_ms": took.iter().cloned().fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t)))),
                "switch_errors": errors.len(),
                "first_switch_error": errors.first(),
            }),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Failover

/// What happens to the active remote.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// SIGKILL.
    Kill,
    /// SIGSTOP (SIGCONT once the run is over).
    Hang,
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::Kill => "killed_remote",
            Event::Hang => "hung_remote",
        }
    }
}

/// A system whose remote fails under it.
enum Failing<'a> {
    Xrat(&'a Xrat),
    Mihomo(&'a Mihomo, &'static str),
}

impl Failing<'_> {
    fn name(&self) -> String {
        match self {
            Failing::Xrat(x) => x.name.clone(),
            Failing::Mihomo(_, FALLBACK) => "mihomo-fallback".into(),
            Failing::Mihomo(_, _) => "mihomo-url-test".into(),
        }
    }

    fn socks_port(&self) -> u16 {
        match self {
            Failing::Xrat(x) => x.socks_port,
            Failing::Mihomo(m, _) => m.socks_port,
        }
    }

    /// Readies the system and tells which remote it uses now.
    fn prepare(&self) -> Result<usize, String> {
        match self {
            Failing::Xrat(x) => x.active_remote().ok_or_else(|| "no active remote".into()),
            Failing::Mihomo(m, group) => {
                m.use_group(group)?;
                m.active_remote(group)
                    .ok_or_else(|| format!("{group} names no remote"))
            }
        }
    }
}

/// One run: a request every 50 ms (each on its own thread); the active remote is killed or
/// stopped; the run ends 300 ms after the first good request that started after the event, or
/// after `window`. Returns (failed requests, first good, requests made).
fn failover_run(
    world: &mut World,
    place: &Place,
    subject: &Failing,
    event: Event,
    window: Duration,
) -> Result<(usize, Option<Duration>, usize), String> {
    let active = subject.prepare()?;
    let body = world.http.body().to_string();
    let requests = Requests::start(
        subject.socks_port(),
        world.http.port(),
        body,
        Duration::from_millis(50),
    );
    std::thread::sleep(Duration::from_millis(500));
    let at = requests.epoch.elapsed();
    match event {
        Event::Kill => world.servers[active].stop(),
        Event::Hang => world.servers[active].pause(true),
    }
    let deadline = Instant::now() + window;
    while Instant::now() < deadline && !requests.good_since(at) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    // Requests hung on the stopped remote end at their own 5 s deadline, before SIGCONT.
    let outcomes = requests.stop();
    match event {
        Event::Kill => {
            place.as_server(|| world.servers[active].restart());
            cleanup::pid(world.servers[active].pid(), "xrat-remote");
        }
        Event::Hang => world.servers[active].pause(false),
    }
    let (failed, first_good) = after(&outcomes, at);
    Ok((failed, first_good, outcomes.len()))
}

/// First good request and failed requests after a killed and a hung remote, `runs` times for
/// each system, the systems interleaved run by run.
pub fn failover(
    systems: &Systems,
    world: &mut World,
    place: &Place,
    lengths: &Lengths,
    results: &mut Results,
) {
    let mut subjects: Vec<Failing> = systems.xrats.iter().map(Failing::Xrat).collect();
    if let Some(m) = &systems.mihomo {
        subjects.push(Failing::Mihomo(m, FALLBACK));
        subjects.push(Failing::Mihomo(m, URL_TEST));
    }
    let window = Duration::from_secs(8);
    for event in [Event::Kill, Event::Hang] {
        // (first good ms or None, failed, requests) per run, per subject.
        let mut runs: Vec<Vec<(Option<f64>, usize, usize)>> = vec![Vec::new(); subjects.len()];
        for run in 0..lengths.failover_runs {
            for (i, subject) in subjects.iter().enumerate() {
                systems.settle(world, results);
                match failover_run(world, place, subject, event, window) {
                    Ok((failed, first_good, made)) => {
                        eprintln!(
                            "{} {} run {run}: {failed} failed of {made}, first good {first_good:?}",
                            subject.name(),
                            event.name()
                        );
                        runs[i].push((first_good.map(ms), failed, made));
                    }
                    Err(error) => results.note(format!(
                        "{} {}: run {run} skipped: {error}",
                        subject.name(),
                        event.name()
                    )),
                }
            }
        }
        for (subject, runs) in subjects.iter().zip(runs) {
            let good: Vec<f64> = runs.iter().filter_map(|r| r.0).collect();
            let failed: Vec<f64> = runs.iter().map(|r| r.1 as f64).collect();
            results.add(
                "failover",
                event.name(),
                &subject.name(),
                json!({
                    "runs": runs.len(),
                    "first_good_ms_median": median(&good),
                    "first_good_ms": runs.iter().map(|r| r.0).collect::<Vec<_>>(),
                    "no_good_within_window": runs.len() - good.len(),
                    "window_ms": ms(window),
                    "failed_median": median(&failed),
                    "failed": runs.iter().map(|r| r.1).collect::<Vec<_>>(),
                    "requests": runs.iter().map(|r| r.2).sum::<usize>(),
                }),
            );
        }
    }
    systems.settle(world, results);
}
