//! Front mode, zero-gap switching: the daemon owns the SOCKS port and relays to a pool core, so
//! a manual switch refuses nothing and open connections survive a switch and a pool
//! replacement. Real cores on loopback: V2Ray and sing-box as the pool core, V2Ray remotes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use common::cores::{Core, STREAM_CHUNK, STREAM_CHUNKS};
use common::front::{front, Client, Front, Opts};
use common::{core_processes, wait_until};

fn manual_switches_lose_nothing(core: Core) {
    let f = front(Opts::new(core, 3));
    f.connect(f.ids[0]);
    f.wait_alive(3);
    let client = Client::start(&f, Duration::ZERO);
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let reply = f.call(json!({"type": "runtime_replace", "trigger": "manual"}));
        slowest = slowest.max(t.elapsed());
        assert_eq!(reply["code"], 200, "{reply}");
        assert_eq!(reply["payload"]["replaced"], true, "{reply}");
        std::thread::sleep(Duration::from_millis(30));
    }
    let outcomes = client.stop();
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.ok).collect();
    assert!(
        outcomes.len() >= 20,
        "only {} requests made",
        outcomes.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during 20 switches: {:?}\n{}",
        failed.len(),
        outcomes.len(),
        failed.first(),
        f.root.log()
    );
    // No process started: the pool core is the only core the whole time.
    assert_eq!(
        core_processes(&f.root).len(),
        1,
        "{:?}",
        core_processes(&f.root)
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a switch took {slowest:?}"
    );
    eprintln!(
        "{}: 20 switches, {} requests, 0 failed, slowest switch {slowest:?}",
        core.name(),
        outcomes.len()
    );
}

#[test]
fn manual_switches_lose_nothing_v2ray() {
    manual_switches_lose_nothing(Core::V2ray);
}

#[test]
fn manual_switches_lose_nothing_sing_box() {
    manual_switches_lose_nothing(Core::SingBox);
}

/// Starts a 5 s download of `/stream` through the front; returns the socket after the
/// response head, and reads the body on a thread.
fn download(f: &Front) -> std::thread::JoinHandle<Result<usize, String>> {
    let (socks, target) = (f.socks_port, f.http.port());
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", socks)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&[5, 1, 0]).map_err(|e| e.to_string())?;
        let mut two = [0u8; 2];
        s.read_exact(&mut two).map_err(|e| e.to_string())?;
        let [hi, lo] = target.to_be_bytes();
        s.write_all(&[5, 1, 0, 1, 127, 0, 0, 1, hi, lo])
            .map_err(|e| e.to_string())?;
        let mut reply = [0u8; 10];
        s.read_exact(&mut reply).map_err(|e| e.to_string())?;
        if reply[1] != 0 {
            return Err(format!("SOCKS reply {}", reply[1]));
        }
        s.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut all = Vec::new();
        s.read_to_end(&mut all)
            .map_err(|e| format!("after {} bytes: {e}", all.len()))?;
        let head = all
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no head")?
            + 4;
        let body = &all[head..];
        for (i, chunk) in body.chunks(STREAM_CHUNK).enumerate() {
            if chunk.iter().any(|b| *b != i as u8) {
                return Err(format!("chunk {i} is corrupt"));
            }
        }
        Ok(body.len())
    })
}

fn downloads_survive(core: Core) {
    let mut opts = Opts::new(core, 3);
    opts.pool_size = 1;
    let f = front(opts);
    f.connect(f.ids[0]);
    f.wait_alive(2);
    let first = download(&f);
    std::thread::sleep(Duration::from_millis(800));
    // A switch inside the pool.
    let reply = f.call(json!({"type": "runtime_replace", "trigger": "manual"}));
    assert_eq!(reply["payload"]["replaced"], true, "{reply}");
    let second = download(&f);
    std::thread::sleep(Duration::from_millis(800));
    // A config outside the pool: a new pool core, the old one drains.
    f.connect(f.ids[2]);
    assert!(
        core_processes(&f.root).len() >= 2,
        "the old pool core was stopped at once"
    );
    let want = STREAM_CHUNKS * STREAM_CHUNK;
    assert_eq!(first.join().unwrap(), Ok(want), "{}", f.root.log());
    assert_eq!(second.join().unwrap(), Ok(want), "{}", f.root.log());
    assert!(f.get().is_ok(), "traffic after the replacement");
    // With its last connection closed, the drained core is stopped well before drain_secs.
    let drained = wait_until(Duration::from_secs(10), || {
        core_processes(&f.root).len() == 1
    });
    assert!(
        drained,
        "cores: {:?}\n{}",
        core_processes(&f.root),
        f.root.log()
    );
}

#[test]
fn downloads_survive_a_switch_and_a_pool_replacement_v2ray() {
    downloads_survive(Core::V2ray);
}

#[test]
fn downloads_survive_a_switch_and_a_pool_replacement_sing_box() {
    downloads_survive(Core::SingBox);
}

#[test]
fn status_shows_mode_front_addresses_pool_and_relay_counters() {
    let f = front(Opts::new(Core::SingBox, 2));
    f.connect(f.ids[0]);
    f.wait_alive(2);
    assert!(f.get().is_ok());
    let status = f.status();
    assert_eq!(status["mode"], "front", "{status}");
    assert_eq!(
        status["front_socks_addr"],
        format!("127.0.0.1:{}", f.socks_port),
        "{status}"
    );
    assert_ne!(status["socks_addr"], status["front_socks_addr"], "{status}");
    let pool = status["pool"].as_array().unwrap();
    assert_eq!(pool.len(), 2, "{status}");
    assert_eq!(pool[0]["active"], true);
    assert_eq!(pool[0]["config_id"], f.ids[0]);
    assert!(
        pool.iter().all(|m| m["latency_ms"].as_u64().is_some()),
        "{status}"
    );
    let relay = &status["relay"];
    assert!(
        relay["connections_total"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert!(relay["bytes_down"].as_u64().unwrap() > 0, "{status}");
    let proxy = f.call(json!({"type": "proxy_status"}))["payload"].clone();
    assert_eq!(proxy["pool"].as_array().unwrap().len(), 2, "{proxy}");
    // Text mode shows the user's port (the front's), the mode and the pool.
    let out = f.root.run(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let front = format!("127.0.0.1:{}", f.socks_port);
    for want in ["Mode:    front", &front, "Pool:", "active", "Relay:"] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
}

#[test]
fn a_restarted_daemon_adopts_the_pool_core_and_binds_the_front_again() {
    let f = front(Opts::new(Core::SingBox, 3));
    let connected = f.connect(f.ids[0]);
    f.wait_alive(3);
    let cores = core_processes(&f.root);
    // SAFETY: plain kill(2) of the daemon this test started.
    unsafe { libc::kill(f.daemon_pid as i32, libc::SIGKILL) };
    let gone = wait_until(Duration::from_secs(5), || !common::alive(f.daemon_pid));
    assert!(gone, "the daemon survived SIGKILL");
    // The front died with the daemon: its port refuses until the next daemon binds it.
    assert!(f.get().is_err(), "the front answered with no daemon");
    f.root.start();
    let status = f.status();
    assert_eq!(status["session_id"], connected["session_id"], "{status}");
    assert_eq!(status["pid"], connected["pid"], "{status}");
    assert_eq!(
        core_processes(&f.root),
        cores,
        "no core was started or stopped"
    );
    assert_eq!(status["pool"].as_array().unwrap().len(), 3, "{status}");
    assert!(
        f.get().is_ok(),
        "traffic through the new front\n{}",
        f.root.log()
    );
    f.wait_alive(3);
    // The adopted pool is a pool: a manual switch moves inside it.
    let reply = f.call(json!({"type": "runtime_replace", "trigger": "manual"}));
    assert_eq!(reply["payload"]["replaced"], true, "{reply}");
    assert_eq!(reply["payload"]["new_pid"], connected["pid"], "{reply}");
    assert!(f.get().is_ok());
}
