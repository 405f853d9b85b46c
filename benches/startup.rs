//! Start-up bench: what a script pays per `xrat` process, against a 30-line C client doing the
//! same (benches/startup/ping.c: connect, one `daemon_ping`, print the reply) and `/bin/true`.
//!
//! A plain measured program (no criterion: each sample is a whole process). One daemon runs in
//! a private root; every command is spawned and reaped with `wait4`, which also gives its minor
//! page faults. Commands are interleaved round by round, so a noisy spell hits all of them.
//!
//! Rows: `true`, `c-ping`, then for each xrat binary `--bogus` (a usage error before any I/O),
//! `daemon status` and `status`. The binary cargo built for this bench is `xrat`;
//! `XRAT_BENCH_BINS=name=path,...` adds others to the same run (for example a static build, see
//! docs/BENCHMARKS.md "Start-up"). `XRAT_BENCH_QUICK=1` is a smoke run. Everything is pinned to
//! the first allowed CPU (children inherit it), so no cross-CPU wake-up is in the numbers;
//! `XRAT_BENCH_PIN=off` leaves placement to the scheduler.
//!
//! Run: `cargo bench --bench startup` (about a minute). Instructions per run are not measured
//! here (perf's counters are not available on every machine): `valgrind --tool=callgrind` gives
//! them, see docs/BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs of each command before measuring (page cache, daemon warm).
const WARMUP_RUNS: usize = 30;
/// Measured runs of each command.
const RUNS: usize = 600;
/// Measured runs in a smoke run.
const QUICK_RUNS: usize = 20;
/// How long the daemon gets to answer after `xrat daemon start` returned.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("startup bench: run it with `cargo bench --bench startup`");
        return;
    }
    let quick = std::env::var_os("XRAT_BENCH_QUICK").is_some_and(|v| v != "0");
    pin();
    let dir = tempfile::Builder::new()
        .prefix("xrat-startup-")
        .tempdir()
        .expect("a temporary directory");
    let root = dir.path().join("root");
    let c_ping = build_c_client(dir.path());
    let bins = binaries();
    let daemon = Daemon::start(&bins[0].1, &root);
    let mut rows = vec![
        Row::new("true", vec!["/bin/true".into()]),
        Row::new("c-ping", vec![c_ping.display().to_string()]),
    ];
    for (name, path) in &bins {
        let path = path.display().to_string();
        for args in [&["--bogus"][..], &["daemon", "status"], &["status"]] {
            let mut argv = vec![path.clone()];
            argv.extend(args.iter().map(|a| a.to_string()));
            rows.push(Row::new(&format!("{name} {}", args.join(" ")), argv));
        }
    }
    for _ in 0..WARMUP_RUNS {
        for row in &rows {
            row.run(&root);
        }
    }
    let runs = if quick { QUICK_RUNS } else { RUNS };
    for _ in 0..runs {
        for row in rows.iter_mut() {
            let sample = row.run(&root);
            row.samples.push(sample);
        }
    }
    drop(daemon);
    report(&rows);
}

/// The xrat binaries to measure: cargo's build first (it also runs the daemon), then
/// `XRAT_BENCH_BINS`.
fn binaries() -> Vec<(String, PathBuf)> {
    let mut bins = vec![(
        "xrat".to_string(),
        PathBuf::from(env!("CARGO_BIN_EXE_xrat")),
    )];
    let extra = std::env::var("XRAT_BENCH_BINS").unwrap_or_default();
    for entry in extra.split(',').filter(|e| !e.is_empty()) {
        let Some((name, path)) = entry.split_once('=') else {
            panic!("XRAT_BENCH_BINS entry {entry:?}: expected name=path");
        };
        assert!(
            Path::new(path).is_file(),
            "XRAT_BENCH_BINS: {path} is not a file"
        );
        bins.push((name.to_string(), PathBuf::from(path)));
    }
    bins
}

/// Compiles the C floor with the system's C compiler.
fn build_c_client(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/startup/ping.c");
    let out = dir.join("c-ping");
    let status = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .unwrap_or_else(|e| panic!("cannot run cc ({e}); install gcc (apt-get install gcc)"));
    assert!(status.success(), "cc failed on {}", source.display());
    out
}

/// Pins this process (and so every child) to the first allowed CPU, unless asked not to.
fn pin() {
    if std::env::var("XRAT_BENCH_PIN").is_ok_and(|v| v == "off") {
        eprintln!("note: nothing is pinned (XRAT_BENCH_PIN=off)");
        return;
    }
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the valid empty set, and every
    // pointer and size below describes `set`, which outlives the calls.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) != 0 {
            return;
        }
        let Some(cpu) = (0..libc::CPU_SETSIZE as usize).find(|&c| libc::CPU_ISSET(c, &set)) else {
            return;
        };
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        if libc::sched_setaffinity(0, std::mem::size_of_val(&one), &one) == 0 {
            eprintln!("cpus: everything on CPU {cpu}");
        }
    }
}

/// The daemon every row talks to, stopped when dropped.
struct Daemon {
    bin: PathBuf,
    root: PathBuf,
}

impl Daemon {
    fn start(bin: &Path, root: &Path) -> Daemon {
        std::fs::create_dir_all(root).expect("the daemon's root");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        std::fs::write(
            root.join("config.toml"),
            format!("[runtime]\nsocks_port = {port}\n"),
        )
        .expect("config.toml");
        let daemon = Daemon {
            bin: bin.to_path_buf(),
            root: root.to_path_buf(),
        };
        let started = daemon.xrat(&["daemon", "start"]);
        assert!(started, "`xrat daemon start` failed in {}", root.display());
        let deadline = Instant::now() + READY_TIMEOUT;
        while !daemon.xrat(&["daemon", "status"]) {
            assert!(Instant::now() < deadline, "the daemon did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    fn xrat(&self, args: &[&str]) -> bool {
        Command::new(&self.bin)
            .args(args)
            .env("XRAT_ROOT", &self.root)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.xrat(&["daemon", "stop"]) {
            eprintln!("note: `xrat daemon stop` failed in {}", self.root.display());
        }
    }
}

/// One command and its samples: (wall time, minor page faults).
struct Row {
    name: String,
    argv: Vec<String>,
    samples: Vec<(Duration, i64)>,
}

impl Row {
    fn new(name: &str, argv: Vec<String>) -> Row {
        Row {
            name: name.to_string(),
            argv,
            samples: Vec::new(),
        }
    }

    /// Spawns the command once and reaps it with `wait4` (std's `wait` gives no rusage).
    #[allow(clippy::zombie_processes)]
    fn run(&self, root: &Path) -> (Duration, i64) {
        let start = Instant::now();
        let child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .env("XRAT_ROOT", root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start: {e}", self.name));
        let pid = child.id() as libc::pid_t;
        let mut status = 0;
        // SAFETY: all zeroes is a valid rusage, which wait4 fills in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our unreaped child (std's Child never waits unless asked); the
        // pointers describe live locals.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        let elapsed = start.elapsed();
        assert_eq!(reaped, pid, "{}: wait4 failed", self.name);
        let expect_usage_error = self.argv.iter().any(|a| a == "--bogus");
        let code = libc::WEXITSTATUS(status);
        let ok = libc::WIFEXITED(status) && (code == 0 || (expect_usage_error && code == 2));
        assert!(ok, "{}: exited with status {status:#x}", self.name);
        (elapsed, usage.ru_minflt)
    }
}

/// Prints the table: medians, p90 and page faults, and the ratio to the C client.
fn report(rows: &[Row]) {
    let median = |row: &Row| percentile(row, 50);
    let floor = rows.iter().find(|r| r.name == "c-ping").map(median);
    println!("| command | median | p90 | page faults | vs c-ping |");
    println!("|---|---:|---:|---:|---:|");
    for row in rows {
        let mut faults: Vec<i64> = row.samples.iter().map(|s| s.1).collect();
        faults.sort_unstable();
        let ratio = floor.map_or("–".into(), |f| {
            format!("{:.2}", median(row).as_secs_f64() / f.as_secs_f64())
        });
        println!(
            "| {} | {:.0} µs | {:.0} µs | {} | {ratio} |",
            row.name,
            median(row).as_secs_f64() * 1e6,
            percentile(row, 90).as_secs_f64() * 1e6,
            faults[faults.len() / 2],
        );
    }
}

fn percentile(row: &Row, p: usize) -> Duration {
    let mut times: Vec<Duration> = row.samples.iter().map(|s| s.0).collect();
    times.sort_unstable();
    times[(times.len() - 1) * p / 100]
}
