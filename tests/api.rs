//! `xrat api serve` against the real binary: the token, browser protection, binding rules,
//! HTTP errors, and every endpoint against a live daemon with a real V2Ray session. Everything
//! listens on and dials 127.0.0.1; every child is killed on drop; every wait is bounded.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use common::api::{live, raw_request, read_reply, Api, START_LIMIT};
use common::cores::{free_port, socks5_get};
use common::{wait_until, Root};
use serde_json::json;

/// Runs `xrat ARGS` to completion, killed after [`START_LIMIT`].
fn run_bounded(root: &Root, args: &[&str]) -> (Option<i32>, String) {
    let mut command = root.command(args);
    let child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn();
    let mut child = common::cores::ChildGuard::new(child.unwrap());
    let status = wait_until(START_LIMIT, || matches!(child.0.try_wait(), Ok(Some(_))));
    assert!(status, "`xrat {}` still running", args.join(" "));
    let (mut stderr, mut pipe) = (String::new(), child.0.stderr.take().unwrap());
    pipe.read_to_string(&mut stderr).unwrap();
    (child.0.wait().unwrap().code(), stderr)
}

#[test]
fn the_token_is_required_and_browsers_are_refused() {
    let root = Root::new();
    let api = Api::start(&root);
    let meta = std::fs::metadata(root.path().join("api.token")).unwrap();
    let mode = meta.permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(api.token.len(), 64);
    assert!(api.token.bytes().all(|b| b.is_ascii_hexdigit()));

    let none = api.send("GET", "/v1/daemon", &[], "");
    assert_eq!(none.expect(401)["payload"]["error"], "unauthorized");
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let flipped = if api.token.starts_with('0') { "1" } else { "0" };
    let wrong = format!("Bearer {flipped}{}", &api.token[1..]);
    for value in [wrong.as_str(), "Bearer", &format!("Basic {}", api.token)] {
        let reply = api.send("GET", "/v1/runtime", &[("Authorization", value)], "");
        reply.expect(401);
    }
    let auth = api.auth();
    for header in ["Origin", "Referer"] {
        let headers = [
            ("Authorization", auth.as_str()),
            (header, "http://example.test/"),
        ];
        let reply = api.send("GET", "/v1/daemon", &headers, "");
        assert_eq!(reply.expect(403)["payload"]["error"], "forbidden");
        // Browser requests are refused before the token is even looked at.
        api.send("POST", "/v1/proxy/stop", &[(header, "null")], "")
            .expect(403);
    }

    let token = api.token.clone();
    drop(api);
    assert_eq!(
        Api::start(&root).token,
        token,
        "the token is kept across starts"
    );
}

#[test]
fn daemon_down_and_bad_requests_get_clear_errors() {
    let root = Root::new();
    let api = Api::start(&root);
    let socket = root.socket().display().to_string();
    for (method, path, body) in [
        ("GET", "/v1/daemon", ""),
        ("GET", "/v1/runtime", ""),
        ("GET", "/v1/proxy", ""),
        ("POST", "/v1/runtime/connect", r#"{"config_id": 1}"#),
        ("POST", "/v1/runtime/disconnect", ""),
        ("POST", "/v1/proxy/start", ""),
        ("POST", "/v1/proxy/stop", "{}"),
        ("POST", "/v1/proxy/rotate", ""),
    ] {
        let reply = api.send(method, path, &[("Authorization", &api.auth())], body);
        let message = reply.expect(503)["message"].as_str().unwrap().to_owned();
        assert_eq!(
            message,
            format!("daemon not running at {socket}; start it with `xrat daemon start`")
        );
    }
    // The store answers without the daemon.
    assert_eq!(api.get("/v1/configs").payload()["configs"], json!([]));

    assert_eq!(
        api.get("/v1/nope").expect(404)["payload"]["error"],
        "not_found"
    );
    let reply = api.post("/v1/daemon", "");
    assert_eq!(reply.expect(405)["payload"]["error"], "method_not_allowed");
    assert_eq!(reply.header("allow"), Some("GET"));
    assert_eq!(api.get("/v1/proxy/rotate").header("allow"), Some("POST"));
    for body in ["{", "[1]", r#"{"config_id": "x"}"#, r#"{"id": 1}"#, ""] {
        api.post("/v1/runtime/connect", body).expect(400);
    }
    api.post("/v1/proxy/rotate", r#"{"config_id": 1, "extra": 2}"#)
        .expect(400);
    let big = format!(
        "{{\"config_id\": 1, \"pad\": \"{}\"}}",
        "x".repeat(64 * 1024)
    );
    assert_eq!(
        api.post("/v1/proxy/rotate", &big).expect(413)["payload"]["error"],
        "body_too_large"
    );

    // Keep-alive (HTTP/1.1's default, so hyper sends no `Connection` header): two requests on
    // one connection.
    let stream = api.open();
    let auth = api.auth();
    let get = raw_request("GET", "/v1/configs", &[("Authorization", &auth)], "");
    (&stream).write_all(&get).unwrap();
    let mut reader = BufReader::new(stream);
    assert_ne!(read_reply(&mut reader).header("connection"), Some("close"));
    reader.get_ref().write_all(&get).unwrap();
    read_reply(&mut reader).expect(200);
}

#[test]
fn only_loopback_binds_without_allow_remote() {
    let root = Root::new();
    let port = free_port();
    for addr in [format!("0.0.0.0:{port}"), format!("[::]:{port}")] {
        let (code, stderr) = run_bounded(&root, &["api", "serve", "--listen", &addr]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("refusing to listen on {addr}")),
            "{stderr}"
        );
        assert!(stderr.contains("--allow-remote"), "{stderr}");
    }
    let (code, stderr) = run_bounded(&root, &["api", "serve", "--listen", "localhost"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("IP:PORT"), "{stderr}");
    // All of 127.0.0.0/8 is loopback.
    let api = Api::start_on(&root, "127.0.0.2:0");
    let addr = SocketAddr::from(([127, 0, 0, 2], api.port));
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_ok());
}

#[test]
fn a_full_house_evicts_the_oldest_waiting_connection_and_sigterm_stops_cleanly() {
    let root = Root::new();
    let mut api = Api::start(&root);
    let idle: Vec<TcpStream> = (0..64).map(|_| api.open()).collect();
    // Every slot holds a connection that has sent nothing. The 65th is served all the same...
    let reply = api.get("/v1/configs");
    reply.expect(200);
    // ...and the connection that had waited longest was told why it was closed.
    let mut oldest = BufReader::new(idle[0].try_clone().unwrap());
    let evicted = read_reply(&mut oldest);
    assert_eq!(evicted.expect(503)["payload"]["error"], "unavailable");
    assert_eq!(evicted.header("retry-after"), Some("1"));
    let mut rest = Vec::new();
    assert_eq!(oldest.read_to_end(&mut rest).unwrap(), 0, "then closed");
    drop(idle);
    assert!(
        wait_until(Duration::from_secs(5), || api.get("/v1/configs").status
            == 200),
        "slots come back when clients leave"
    );

    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(api.child.id() as i32, libc::SIGTERM) };
    let exited = wait_until(START_LIMIT, || matches!(api.child.try_wait(), Ok(Some(_))));
    assert!(exited, "SIGTERM did not stop the API");
    assert!(api.child.wait().unwrap().success());
    let last = api.lines.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(last, "API stopped (SIGTERM).");
}

/// Slow clients in the attack below.
const SLOW_CLIENTS: usize = 200;
/// Each slow client sends one header byte per this.
const SLOW_BYTE_EVERY: Duration = Duration::from_secs(2);
/// The bound a legitimate request must meet during the attack.
const LEGIT_LATENCY_MAX: Duration = Duration::from_secs(1);

/// What the slow clients saw: connections opened, and the status lines the server sent them.
#[derive(Debug, Default)]
struct SlowReport {
    opened: usize,
    statuses: std::collections::BTreeMap<String, usize>,
}

/// Keeps [`SLOW_CLIENTS`] connections open, each sending one byte of a request head every
/// [`SLOW_BYTE_EVERY`]; a connection the server answers or closes is opened again at once, as a
/// real attacker would. Runs until `stop`.
fn slowloris(port: u16, stop: &std::sync::atomic::AtomicBool) -> SlowReport {
    use std::sync::atomic::Ordering;
    let head = b"GET /v1/daemon HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".repeat(8);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut report = SlowReport::default();
    let open = |report: &mut SlowReport| {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        stream.set_nonblocking(true).unwrap();
        report.opened += 1;
        (stream, 0usize)
    };
    let mut conns: Vec<(TcpStream, usize)> = (0..SLOW_CLIENTS).map(|_| open(&mut report)).collect();
    while !stop.load(Ordering::SeqCst) {
        for conn in conns.iter_mut() {
            let mut buf = [0u8; 4096];
            let mut answer = Vec::new();
            let closed = loop {
                match (&conn.0).read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            };
            if !answer.is_empty() {
                let text = String::from_utf8_lossy(&answer);
                let status = text.lines().next().unwrap_or_default().to_owned();
                *report.statuses.entry(status).or_default() += 1;
            }
            let sent = !closed && (&conn.0).write_all(&head[conn.1..conn.1 + 1]).is_ok();
            if sent {
                conn.1 = (conn.1 + 1) % head.len();
            } else {
                *conn = open(&mut report);
                let _ = (&conn.0).write_all(&head[..1]);
                conn.1 = 1;
            }
        }
        let until = std::time::Instant::now() + SLOW_BYTE_EVERY;
        while std::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    report
}

#[test]
fn slow_clients_cannot_starve_a_legitimate_request() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let root = Root::new();
    let api = Api::start(&root);
    let stop = Arc::new(AtomicBool::new(false));
    let port = api.port;
    let attack = {
        let stop = stop.clone();
        std::thread::spawn(move || slowloris(port, &stop))
    };
    // Let every slow client connect and send its first bytes: the 64 slots are full of them.
    std::thread::sleep(SLOW_BYTE_EVERY + Duration::from_millis(500));
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let reply = api.get("/v1/configs");
        let took = started.elapsed();
        assert_eq!(reply.status, 200, "during the attack: {reply:?}");
        latencies.push(took);
        std::thread::sleep(Duration::from_millis(900));
    }
    stop.store(true, Ordering::SeqCst);
    let report = attack.join().unwrap();
    println!("legitimate request latencies under {SLOW_CLIENTS} slow clients: {latencies:?}");
    println!("slow clients: {report:?}");
    for took in &latencies {
        assert!(*took < LEGIT_LATENCY_MAX, "{latencies:?}");
    }
    // The attack was real: more clients than slots, so the server had to evict them.
    let evicted = report
        .statuses
        .get("HTTP/1.1 503 Service Unavailable")
        .copied()
        .unwrap_or(0);
    assert!(
        report.opened >= SLOW_CLIENTS && evicted >= SLOW_CLIENTS - 64,
        "{report:?}"
    );
}

#[test]
fn every_endpoint_works_against_a_live_daemon() {
    let live = live();
    let (a, b) = (live.ids[0], live.ids[1]);
    let api = Api::start(&live.root);
    let ping = api.get("/v1/daemon");
    assert_eq!(ping.payload()["daemon_ready"], true);
    assert_eq!(ping.payload()["pid"], live.daemon_pid);

    let configs = api.get("/v1/configs");
    let listed = configs.payload()["configs"].as_array().unwrap();
    let listed_ids: Vec<i64> = listed.iter().map(|c| c["id"].as_i64().unwrap()).collect();
    assert_eq!(listed_ids, vec![a, b]);
    for config in listed {
        assert!(config.get("raw_link").is_none() && config.get("outbound").is_none());
        assert_eq!(config["scheme"], "socks");
        assert_eq!(config["enabled"], true);
    }
    assert_eq!(api.get("/v1/runtime").payload()["runtime_status"], "idle");
    assert_eq!(api.get("/v1/proxy").payload()["rotation_enabled"], false);
    api.post("/v1/proxy/rotate", "").expect(409);

    let connected = api.post("/v1/runtime/connect", &format!(r#"{{"config_id": {a}}}"#));
    assert_eq!(connected.payload()["config_id"], a);
    let status = api.get("/v1/runtime");
    assert_eq!(status.payload()["runtime_status"], "running");
    assert_eq!(status.payload()["active_config_id"], a);
    assert_eq!(status.payload()["core"], "v2ray");
    let fetched = socks5_get(live.socks_port, live.http.port(), "/through-api");
    assert_eq!(fetched.as_deref(), Ok(live.http.body()));
    let missing = api.post("/v1/runtime/connect", r#"{"config_id": 999999}"#);
    assert_eq!(missing.expect(404)["payload"]["error"], "not_found");

    assert_eq!(
        api.post("/v1/proxy/start", "").payload()["rotation_enabled"],
        true
    );
    assert_eq!(api.get("/v1/proxy").payload()["rotation_enabled"], true);
    assert_eq!(
        api.post("/v1/proxy/stop", "{}").payload()["rotation_enabled"],
        false
    );
    assert_eq!(api.get("/v1/proxy").payload()["rotation_enabled"], false);

    let rotated = api.post("/v1/proxy/rotate", "");
    assert_eq!(rotated.payload()["replaced"], true, "{rotated:?}");
    assert_eq!(rotated.payload()["trigger"], "manual");
    assert_eq!(rotated.payload()["new_config_id"], b);
    assert_eq!(api.get("/v1/runtime").payload()["active_config_id"], b);
    let back = api.post("/v1/proxy/rotate", &format!(r#"{{"config_id": {a}}}"#));
    assert_eq!(back.payload()["new_config_id"], a, "{back:?}");
    assert_eq!(api.get("/v1/proxy").payload()["last_trigger"], "manual");

    let stopped = api.post("/v1/runtime/disconnect", "");
    assert!(stopped.payload()["stopped_session"].as_i64().is_some());
    assert_eq!(api.get("/v1/runtime").payload()["runtime_status"], "idle");
    api.post("/v1/runtime/disconnect", "").expect(409);
}

#[test]
fn the_header_deadline_comes_from_config_toml() {
    let root = Root::new();
    root.write_settings("[api]\nheader_timeout_ms = 0\n");
    let (code, stderr) = run_bounded(&root, &["api", "serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(1), "{stderr}");
    let file = root.path().join("config.toml");
    assert!(
        stderr.contains("`api.header_timeout_ms` = 0") && stderr.contains(&*file.to_string_lossy()),
        "{stderr}"
    );

    root.write_settings("[api]\nheader_timeout_ms = 400\n");
    let api = Api::start(&root);
    let stream = api.open();
    let started = std::time::Instant::now();
    (&stream)
        .write_all(b"GET /v1/configs HTTP/1.1\r\nHost: 127.")
        .unwrap();
    let reply = read_reply(&mut BufReader::new(stream));
    let took = started.elapsed();
    println!("a partial head was answered 408 after {took:?} (api.header_timeout_ms = 400)");
    assert_eq!(reply.expect(408)["payload"]["error"], "timeout");
    assert!(
        reply.body["message"].as_str().unwrap().contains("400 ms"),
        "{reply:?}"
    );
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(3),
        "{took:?}"
    );
}
