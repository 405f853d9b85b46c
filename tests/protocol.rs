//! Protocol v1 conformance and bad input, against the real daemon.

mod common;

use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{alive, wait_until, Conn, Root};
use serde_json::{json, Value};

fn daemon() -> (Root, u32) {
    let root = Root::new();
    let pid = root.start();
    (root, pid)
}

fn assert_error(reply: &Value, code: u64, meaning: &str) {
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["code"], code, "{reply}");
    assert_eq!(reply["payload"]["error"], meaning, "{reply}");
    assert_eq!(reply["protocol_version"], 1);
}

#[test]
fn implemented_types_answer_with_their_payloads() {
    let (root, pid) = daemon();
    let mut conn = root.connect();

    let ping = conn.call(json!(7), json!({"type": "daemon_ping"}));
    assert_eq!(ping["id"], 7);
    assert_eq!(
        (
            ping["ok"].clone(),
            ping["code"].clone(),
            ping["message"].clone()
        ),
        (json!(true), json!(200), json!("success"))
    );
    assert_eq!(ping["payload"]["daemon_ready"], true);
    assert_eq!(ping["payload"]["pid"], pid);
    assert_eq!(ping["payload"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(ping["payload"]["uptime_secs"].is_u64());

    let status = conn.call(json!("s-1"), json!({"type": "RuntimeStatus"}));
    assert_eq!(status["id"], "s-1");
    assert_eq!(status["payload"]["runtime_status"], "idle");
    assert_eq!(status["payload"]["pid_running"], false);
    assert_eq!(status["payload"]["health"]["consecutive_failures"], 0);
    for key in [
        "session_id",
        "active_config_id",
        "active_config_name",
        "pid",
        "core",
        "socks_addr",
        "http_addr",
        "started_at",
    ] {
        assert!(status["payload"][key].is_null(), "{key} in {status}");
    }

    let proxy = conn.call(json!(9), json!({"type": "proxy_status"}));
    let p = &proxy["payload"];
    assert_eq!(p["rotation_enabled"], false);
    assert_eq!(
        (p["interval_secs"].clone(), p["cooldown_secs"].clone()),
        (json!(1800), json!(300))
    );
    assert_eq!(p["health_trigger_enabled"], true);
    assert_eq!(p["health_failure_threshold"], 3);
    assert_eq!(
        p.as_object().unwrap().len(),
        15,
        "every proxy_status field of DESIGN §4, and the pool of milestone 2"
    );
    assert_eq!(p["pool"], json!([]), "no session, no pool");
    assert_eq!(
        status["payload"]["mode"], "front",
        "front is the default mode"
    );

    let pascal = conn.call(json!(10), json!({"type": "DaemonPing"}));
    assert_eq!(
        (pascal["id"].clone(), pascal["code"].clone()),
        (json!(10), json!(200))
    );

    let no_id = conn.call(Value::Null, json!({"type": "daemon_ping"}));
    assert!(no_id["id"].is_null());
    let raw = "{\"protocol_version\":1,\"request\":{\"type\":\"daemon_ping\"}}\r\n\r\n";
    conn.send(raw.as_bytes());
    assert_eq!(conn.recv()["code"], 200);

    let bye = conn.call(json!("last"), json!({"type": "daemon_shutdown"}));
    assert_eq!(bye["id"], "last");
    assert_eq!(
        bye["payload"],
        json!({"daemon_ready": false, "runtime_disconnected": false})
    );
    assert!(conn.at_eof());
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)
        && !root.socket().exists()));
}

#[test]
fn runtime_and_proxy_requests_answer_without_a_session() {
    let (root, _) = daemon();
    let mut conn = root.connect();
    let reply = conn.call(
        json!(1),
        json!({"type": "runtime_connect", "config_id": 42}),
    );
    assert_error(&reply, 404, "not_found");
    assert_eq!(
        reply["message"],
        "config 42 not found; list stored configs with `xrat config list`"
    );
    for (n, body) in [
        json!({"type": "RuntimeReplace", "trigger": "manual"}),
        json!({"type": "runtime_replace", "trigger": "timer", "candidate_id": 3}),
    ]
    .into_iter()
    .enumerate()
    {
        let reply = conn.call(json!(n), body);
        assert_error(&reply, 409, "conflict");
        assert_eq!(
            reply["message"],
            "no session to replace; connect one with `xrat connect <ID>`"
        );
    }
    let reply = conn.call(json!(3), json!({"type": "runtime_disconnect"}));
    assert_error(&reply, 409, "conflict");
    let reply = conn.call(json!(4), json!({"type": "ProxyStart"}));
    assert_eq!(reply["payload"], json!({"rotation_enabled": true}));
    let reply = conn.call(json!(5), json!({"type": "proxy_status"}));
    assert_eq!(reply["payload"]["rotation_enabled"], true);
    assert!(reply["payload"]["next_rotation_at"].is_u64());
    let reply = conn.call(json!(6), json!({"type": "proxy_stop"}));
    assert_eq!(reply["payload"], json!({"rotation_enabled": false}));
    let reply = conn.call(
        json!(7),
        json!({"type": "runtime_replace", "trigger": "sideways"}),
    );
    assert_error(&reply, 400, "bad_request");
    assert_eq!(
        reply["message"],
        "unknown trigger \"sideways\"; use manual, timer or health_check_failed"
    );
}

#[test]
fn bad_requests_get_clear_errors_and_keep_the_connection() {
    let (root, _) = daemon();
    let mut conn = root.connect();
    conn.send(b"this is not json\n");
    let reply = conn.recv();
    assert_error(&reply, 400, "bad_request");
    assert!(reply["message"]
        .as_str()
        .unwrap()
        .starts_with("request is not valid JSON"));
    assert_eq!(
        conn.call(json!(1), json!({"type": "daemon_ping"}))["code"],
        200
    );

    let reply = conn.call(json!(2), json!({"type": "teleport"}));
    assert_error(&reply, 400, "bad_request");
    assert_eq!(reply["id"], 2);
    assert!(reply["message"]
        .as_str()
        .unwrap()
        .contains("unknown request type \"teleport\""));

    conn.send(b"{\"protocol_version\":2,\"id\":3,\"request\":{\"type\":\"daemon_ping\"}}\n");
    let reply = conn.recv();
    assert_error(&reply, 426, "unsupported_version");
    assert_eq!(reply["id"], 3);
    assert!(reply["message"]
        .as_str()
        .unwrap()
        .contains("protocol_version 1"));

    conn.send(b"[1,2,3]\n");
    assert_error(&conn.recv(), 400, "bad_request");
    conn.send(b"{\"protocol_version\":1,\"id\":4,\"request\":{\"type\":\"runtime_connect\"}}\n");
    let reply = conn.recv();
    assert_eq!(
        reply["message"],
        "runtime_connect needs the integer field `request.config_id`"
    );
    assert_eq!(
        conn.call(json!(5), json!({"type": "daemon_ping"}))["code"],
        200
    );
}

#[test]
fn an_oversized_line_gets_413_and_the_connection_closes() {
    let (root, _) = daemon();
    // Exactly at the limit is still a request: a ping padded with spaces to 64 KiB.
    let ping = r#"{"protocol_version":1,"id":1,"request":{"type":"daemon_ping"}}"#;
    let mut exact = ping.as_bytes().to_vec();
    exact.resize(64 * 1024, b' ');
    exact.push(b'\n');
    let mut conn = root.connect();
    conn.send(&exact);
    assert_eq!(conn.recv()["code"], 200);

    let mut over = vec![b'x'; 64 * 1024 + 1];
    over.push(b'\n');
    conn.send(&over);
    let reply = conn.recv();
    assert_error(&reply, 413, "frame_too_large");
    assert!(reply["message"].as_str().unwrap().contains("65536 bytes"));
    assert!(conn.at_eof(), "connection must close after 413");

    // The daemon is unharmed.
    assert_eq!(
        root.connect()
            .call(json!(1), json!({"type": "daemon_ping"}))["code"],
        200
    );
}

#[test]
fn partial_frames_and_vanishing_clients_harm_nothing() {
    let (root, pid) = daemon();
    {
        let mut partial = UnixStream::connect(root.socket()).unwrap();
        partial
            .write_all(b"{\"protocol_version\":1,\"id\":1,\"req")
            .unwrap();
    }
    {
        // Many pipelined requests, then gone before reading a single reply.
        let mut vanish = UnixStream::connect(root.socket()).unwrap();
        let line = b"{\"protocol_version\":1,\"id\":1,\"request\":{\"type\":\"daemon_ping\"}}\n";
        vanish.write_all(&line.repeat(2_000)).unwrap();
    }
    let mut slow = root.connect();
    for byte in b"{\"protocol_version\":1,\"id\":\"slow\",\"request\":{\"type\":\"daemon_ping\"}}\n"
    {
        slow.send(&[*byte]);
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(slow.recv()["id"], "slow");
    assert!(alive(pid));
    assert_eq!(
        root.connect()
            .call(json!(1), json!({"type": "daemon_ping"}))["code"],
        200
    );
}

#[test]
fn a_thousand_concurrent_connections_are_each_answered() {
    let (root, _) = daemon();
    let mut conns: Vec<Conn> = (0..1_000).map(|_| root.connect()).collect();
    for (n, conn) in conns.iter_mut().enumerate() {
        conn.send(
            format!(
                "{{\"protocol_version\":1,\"id\":{n},\"request\":{{\"type\":\"daemon_ping\"}}}}\n"
            )
            .as_bytes(),
        );
    }
    for (n, conn) in conns.iter_mut().enumerate() {
        let reply = conn.recv();
        assert_eq!(
            (reply["id"].clone(), reply["code"].clone()),
            (json!(n), json!(200))
        );
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (root, _) = daemon();
    let mut conn = root.connect();
    let mut batch = String::new();
    for n in 0..100 {
        let kind = ["daemon_ping", "runtime_status", "proxy_status", "nope"][n % 4];
        batch.push_str(&format!(
            "{{\"protocol_version\":1,\"id\":\"r{n}\",\"request\":{{\"type\":\"{kind}\"}}}}\n"
        ));
    }
    conn.send(batch.as_bytes());
    for n in 0..100 {
        let reply = conn.recv();
        assert_eq!(reply["id"], format!("r{n}"));
        assert_eq!(reply["code"], if n % 4 == 3 { 400 } else { 200 });
    }
}

#[test]
fn the_connection_limit_evicts_the_longest_idle_then_answers_503() {
    let root = Root::new();
    root.write_settings("[daemon]\nmax_connections = 4\n");
    root.start();
    // The CLI's own connections may still be closing inside the daemon: retry until 4 are ours.
    let mut held: Vec<UnixStream> = Vec::new();
    assert!(wait_until(Duration::from_secs(5), || {
        if held.len() < 4 {
            if let Some(stream) = ping_ok(&root) {
                held.push(stream);
            }
        }
        held.len() == 4
    }));
    // Every held connection is idle: a new client is served, and the longest idle one is told
    // why it is closed.
    assert!(
        ping_ok(&root).is_some(),
        "a new client is served at the limit"
    );
    let mut oldest = common::Conn::new(held.remove(0));
    let reply = oldest.recv();
    assert_error(&reply, 503, "unavailable");
    assert!(
        reply["message"].as_str().unwrap().contains("longest idle"),
        "{reply}"
    );
    assert!(oldest.at_eof());

    // Connections that owe replies are never evicted: with four of them the fifth gets 503.
    drop(held);
    let mut busy: Vec<UnixStream> = Vec::new();
    let pings = "{\"protocol_version\":1,\"request\":{\"type\":\"daemon_ping\"}}\n".repeat(5_000);
    assert!(wait_until(Duration::from_secs(5), || {
        if busy.len() < 4 {
            if let Some(mut stream) = ping_ok(&root) {
                // Unread replies beyond the socket buffer stay in the daemon's backlog.
                stream.set_nonblocking(true).unwrap();
                let _ = stream.write_all(pings.as_bytes());
                busy.push(stream);
            }
        }
        busy.len() == 4
    }));
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = root.connect();
    let reply = extra.recv();
    assert_error(&reply, 503, "unavailable");
    assert!(reply["message"]
        .as_str()
        .unwrap()
        .contains("connection limit reached (daemon.max_connections)"));
    assert!(extra.at_eof());
    drop(busy);
    // Freed slots serve again (the closes may take a moment to reach the daemon).
    assert!(wait_until(Duration::from_secs(5), || ping_ok(&root).is_some()));
}

#[test]
fn a_client_that_does_not_read_is_slowed_not_buffered() {
    let (root, pid) = daemon();
    let stream = UnixStream::connect(root.socket()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    const REQUESTS: usize = 60_000;
    let sender = std::thread::spawn(move || {
        let line = b"{\"protocol_version\":1,\"id\":1,\"request\":{\"type\":\"daemon_ping\"}}\n";
        for _ in 0..REQUESTS / 1_000 {
            writer.write_all(&line.repeat(1_000)).unwrap();
        }
    });
    // While nobody reads, the daemon stops reading too: its memory stays bounded.
    std::thread::sleep(Duration::from_millis(500));
    let rss_kib = rss_kib(pid);
    assert!(
        rss_kib < 64 * 1024,
        "daemon RSS grew to {rss_kib} KiB while the client did not read"
    );
    let mut reader = std::io::BufReader::new(stream);
    reader
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut line = String::new();
    for _ in 0..REQUESTS {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0);
        assert!(line.contains("\"code\":200"));
    }
    sender.join().unwrap();
    let mut rest = [0u8; 1];
    reader
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        reader.read(&mut rest).is_err(),
        "no reply beyond the requests sent"
    );
}

/// Connects and pings; the stream when the daemon answered 200.
fn ping_ok(root: &Root) -> Option<UnixStream> {
    let mut stream = UnixStream::connect(root.socket()).ok()?;
    stream
        .write_all(b"{\"protocol_version\":1,\"request\":{\"type\":\"daemon_ping\"}}\n")
        .ok()?;
    let mut line = String::new();
    std::io::BufReader::new(stream.try_clone().ok()?)
        .read_line(&mut line)
        .ok()?;
    line.contains("\"code\":200").then_some(stream)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn closed_connections_free_their_slots() {
    let root = Root::new();
    root.write_settings("[daemon]\nmax_connections = 2\n");
    root.start();
    let mut served = 0;
    for _ in 0..200 {
        // Each connection is closed before the next opens; if slots leaked, 503s would follow.
        assert!(wait_until(Duration::from_secs(2), || ping_ok(&root).is_some()));
        served += 1;
    }
    assert_eq!(served, 200);
}

/// Sends `bytes`, shuts down the write side (SHUT_WR), and returns every reply until EOF.
fn send_then_shut(root: &Root, bytes: &[u8]) -> Vec<Value> {
    let mut conn = root.connect();
    conn.send(bytes);
    conn.reader
        .get_ref()
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    let mut replies = Vec::new();
    for line in conn.reader.lines() {
        let line = line.expect("replies arrive before the daemon closes");
        replies.push(serde_json::from_str(&line).unwrap());
    }
    replies
}

#[test]
fn a_last_request_ended_by_eof_instead_of_a_newline_is_answered() {
    let (root, pid) = daemon();
    let ping = br#"{"protocol_version":1,"id":"eof","request":{"type":"daemon_ping"}}"#;
    let replies = send_then_shut(&root, ping);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["id"], "eof");
    assert_eq!(replies[0]["payload"]["pid"], pid);

    // Pipelined: a full line, then an unfinished one ended by `\r` and EOF; both, in order.
    let mut two =
        b"{\"protocol_version\":1,\"id\":1,\"request\":{\"type\":\"daemon_ping\"}}\n".to_vec();
    two.extend_from_slice(
        b"{\"protocol_version\":1,\"id\":2,\"request\":{\"type\":\"daemon_reload\"}}\r",
    );
    let replies = send_then_shut(&root, &two);
    let ids: Vec<&Value> = replies.iter().map(|r| &r["id"]).collect();
    assert_eq!(ids, [&json!(1), &json!(2)], "{replies:?}");
    assert_eq!(replies[1]["ok"], true, "{}", replies[1]);

    // A bad unfinished line is refused like a bad line; whitespace alone is nothing.
    let replies = send_then_shut(&root, b"not json");
    assert_eq!(replies.len(), 1);
    assert_error(&replies[0], 400, "bad_request");
    assert!(send_then_shut(&root, b" \r").is_empty());

    // The limit holds at EOF too: one byte over 64 KiB (the room a `\r` would take) is 413.
    let over = vec![b'x'; 64 * 1024 + 1];
    let replies = send_then_shut(&root, &over);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_error(&replies[0], 413, "frame_too_large");

    // The daemon is still fine.
    assert_eq!(
        root.connect()
            .call(json!(9), json!({"type": "daemon_ping"}))["ok"],
        true
    );
}
