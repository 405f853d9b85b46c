//! Bounded everything (issue 10), against the real binary: a descriptor limit of 1024 with more
//! idle clients than it allows, clients that hold partial frames, idle clients, and millions of
//! pipelined requests behind an operation in flight. Counts are kept small enough for CI.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::{text, Root};
use serde_json::{json, Value};

const PING: &[u8] = b"{\"protocol_version\":1,\"request\":{\"type\":\"daemon_ping\"}}\n";

/// Raises this test process's own descriptor limit (it holds over a thousand sockets).
fn raise_own_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

/// Starts the daemon with a hard descriptor limit of `fds` (as in a container).
fn start_limited(root: &Root, fds: u64) -> u32 {
    let mut command = root.command(&["daemon", "start", "--json"]);
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: fds,
                rlim_max: fds,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            Ok(())
        });
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        root.log()
    );
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    view["pid"].as_u64().unwrap() as u32
}

/// CPU seconds the process has used (utime + stime).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no memory effects.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn more_idle_clients_than_descriptors_cannot_lock_the_owner_out() {
    raise_own_fd_limit();
    let root = Root::new();
    let pid = start_limited(&root, 1024);
    assert!(
        root.log().contains("serving at most"),
        "the limit is clamped with a warning: {}",
        root.log()
    );
    let mut idle = Vec::new();
    for _ in 0..1_100 {
        match UnixStream::connect(root.socket()) {
            Ok(stream) => idle.push(stream),
            Err(e) => panic!("connect {}: {e}", idle.len()),
        }
    }
    let cpu_before = cpu_secs(pid);
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_secs(pid) - cpu_before;
    assert!(spent < 0.5, "the daemon spun: {spent:.2} CPU s in 2 s");
    for args in [["status", "--json"], ["daemon", "status"]] {
        let out = root.run(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
    let log_bytes = root.log().len();
    assert!(log_bytes < 64 * 1024, "the log grew to {log_bytes} bytes");
    let out = root.run(&["daemon", "stop"]);
    assert!(out.status.success(), "stop: {}", text(&out.stderr));
    eprintln!("1,100 idle clients at fd limit 1024: daemon CPU {spent:.3} s over 2 s, log {log_bytes} bytes; status and stop answered");
}

#[test]
fn partial_frames_time_out_with_408_and_never_hold_the_socket() {
    let root = Root::new();
    root.write_settings("[daemon]\nmax_connections = 64\nframe_timeout_ms = 700\n");
    root.start();
    let mut partial: Vec<UnixStream> = (0..64)
        .map(|_| {
            let mut s = UnixStream::connect(root.socket()).unwrap();
            s.write_all(b"{\"protocol_version\":1,\"request\":")
                .unwrap();
            s
        })
        .collect();
    // The owner still gets through: a partial-frame holder owes nothing and can be evicted.
    let started = Instant::now();
    let out = root.run(&["daemon", "status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(2));
    // Every holder that was not evicted gets the 408 line, then EOF.
    let mut timed_out = 0;
    for stream in &mut partial {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let reply: Value = serde_json::from_str(&line).unwrap();
        if reply["code"] == 408 {
            assert_eq!(reply["payload"]["error"], "frame_timeout");
            assert!(
                reply["message"]
                    .as_str()
                    .unwrap()
                    .contains("daemon.frame_timeout_ms"),
                "{reply}"
            );
            timed_out += 1;
        } else {
            assert_eq!(reply["code"], 503, "evicted: {reply}");
        }
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "nothing after the last line");
    }
    assert!(timed_out >= 60, "only {timed_out} of 64 got 408");
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    let root = Root::new();
    root.write_settings("[daemon]\nidle_timeout_secs = 1\n");
    root.start();
    let mut conn = root.connect();
    assert_eq!(
        conn.call(json!(1), json!({"type": "daemon_ping"}))["code"],
        200
    );
    let started = Instant::now();
    assert!(conn.at_eof(), "the idle connection was closed");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

/// A stand-in core that answers the version probe but never listens, so a connect stays in
/// flight for `ready_timeout_ms`.
fn never_ready_core(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("v2ray");
    std::fs::write(
        &path,
        "#!/bin/sh\ncase \"$1\" in -version|version) echo 'V2Ray 4.34.0 (fake)'; exit 0;; esac\nexec sleep 60\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

#[test]
fn pipelined_requests_behind_a_slow_connect_stay_bounded() {
    const PINGS: usize = 300_000;
    let root = Root::new();
    std::fs::create_dir_all(root.path()).unwrap();
    let fake = never_ready_core(root.path());
    let port = common::cores::free_port();
    root.write_settings(&format!(
        "[runtime]\ncore = \"v2ray\"\ncore_path = \"{}\"\nsocks_port = {port}\nready_timeout_ms = 4000\n",
        fake.display()
    ));
    let pid = root.start();
    let out = root.run(&["config", "import", "socks://127.0.0.1:9#x", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["imported"][0]["id"].clone();
    let stream = UnixStream::connect(root.socket()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let connect = json!({"protocol_version": 1, "id": 0, "request": {"type": "runtime_connect", "config_id": id}});
    writer.write_all(format!("{connect}\n").as_bytes()).unwrap();
    let sender = std::thread::spawn(move || {
        for _ in 0..PINGS / 1000 {
            writer.write_all(&PING.repeat(1000)).unwrap();
        }
    });
    let mut peak = 0;
    for _ in 0..30 {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut reader = BufReader::new(stream);
    reader
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(
        line.contains("\"code\":504"),
        "the connect answers first: {line}"
    );
    for n in 0..PINGS {
        line.clear();
        let got = reader.read_line(&mut line).unwrap_or_else(|e| {
            let log = root.log();
            let tail: Vec<&str> = log.lines().rev().take(12).collect();
            panic!("reply {n}: {e}\n{tail:#?}")
        });
        assert!(got > 0, "reply {n} missing");
        if n % 10_000 == 0 {
            peak = peak.max(rss_kib(pid));
        }
    }
    sender.join().unwrap();
    assert!(peak < 64 * 1024, "RSS peaked at {peak} KiB");
    eprintln!("{PINGS} pings pipelined behind a 4 s connect: daemon RSS peak {peak} KiB");
}
