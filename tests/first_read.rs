//! A fresh connection whose bytes are already queued when the daemon accepts it: the daemon
//! peeks them, answers, and consumes them only afterwards (src/reactor/first_read.rs). The
//! daemon is stopped (SIGSTOP) while the clients connect and write, so every connection here
//! takes that path, on both backends.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;

use common::{text, Conn, Root};
use serde_json::{json, Value};

fn ping(id: usize) -> String {
    format!("{{\"protocol_version\":1,\"id\":{id},\"request\":{{\"type\":\"daemon_ping\"}}}}\n")
}

fn start(backend: &str) -> (Root, u32) {
    let root = Root::new();
    let out = root
        .command(&["daemon", "start", "--json"])
        .env("XRAT_BACKEND", backend)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    (root, view["pid"].as_u64().unwrap() as u32)
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: a plain kill(2) on the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

/// Connects and writes `bytes` while the daemon is stopped, so they wait in the socket
/// before it accepts.
fn queued(root: &Root, pid: u32, writes: &[&[u8]], shut: bool) -> Vec<Conn> {
    signal(pid, libc::SIGSTOP);
    let conns = writes
        .iter()
        .map(|bytes| {
            let mut stream = UnixStream::connect(root.socket()).unwrap();
            stream.write_all(bytes).unwrap();
            if shut {
                stream.shutdown(std::net::Shutdown::Write).unwrap();
            }
            Conn::new(stream)
        })
        .collect();
    signal(pid, libc::SIGCONT);
    conns
}

/// Reads to the end: a clean end of file, never a reset (bytes left unread at close would turn
/// the client's end of file into ECONNRESET).
fn rest(conn: &mut Conn) -> String {
    let mut out = String::new();
    match conn.reader.read_to_string(&mut out) {
        Ok(_) => out,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => panic!("reset after {out:?}"),
        Err(e) => panic!("read failed after {out:?}: {e}"),
    }
}

fn check(backend: &str) {
    let (root, pid) = start(backend);
    let many: String = (0..200).map(ping).collect();
    assert!(many.len() > 4096, "more than one receive buffer");
    let mut over = vec![b'x'; 64 * 1024 + 1];
    over.push(b'\n');
    let first = ping(1);
    let three = format!("{}{}{}", ping(10), ping(11), ping(12));
    let mut conns = queued(
        &root,
        pid,
        &[first.as_bytes(), three.as_bytes(), many.as_bytes()],
        false,
    );
    // One request, then a second on the same connection once the first is answered.
    assert_eq!(conns[0].recv()["id"], 1);
    assert_eq!(
        conns[0].call(json!(2), json!({"type": "daemon_ping"}))["id"],
        2
    );
    for id in 10..13 {
        assert_eq!(conns[1].recv()["id"], id, "{backend}");
    }
    for id in 0..200 {
        let reply = conns[2].recv();
        assert_eq!(
            (reply["id"].clone(), reply["code"].clone()),
            (json!(id), json!(200))
        );
    }

    // Half-closed after writing: every request answered, then a clean end of file.
    let mut shut = queued(&root, pid, &[three.as_bytes(), &over], true);
    let replies: Vec<Value> = rest(&mut shut[0])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&Value> = replies.iter().map(|r| &r["id"]).collect();
    assert_eq!(ids, [&json!(10), &json!(11), &json!(12)], "{backend}");
    // Oversized: 413, and the daemon closes without leaving the client's bytes unread.
    let answer = rest(&mut shut[1]);
    let reply: Value = serde_json::from_str(answer.lines().next().unwrap()).unwrap();
    assert_eq!(reply["code"], 413, "{backend}: {answer}");

    // Gone before the daemon accepts: its replies fail to send, and the daemon closes it.
    signal(pid, libc::SIGSTOP);
    for bytes in [many.as_bytes(), first.as_bytes()] {
        UnixStream::connect(root.socket())
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }
    signal(pid, libc::SIGCONT);
    let mut after = queued(&root, pid, &[first.as_bytes()], false);
    assert_eq!(after[0].recv()["id"], 1, "{backend}: {}", root.log());

    // The connections left open above are answered and the daemon serves new ones.
    assert_eq!(
        root.connect()
            .call(json!(3), json!({"type": "daemon_ping"}))["code"],
        200
    );
    let out = root.run(&["daemon", "stop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn queued_requests_on_a_fresh_connection_are_answered_once_in_order_io_uring() {
    check("io_uring");
}

#[test]
fn queued_requests_on_a_fresh_connection_are_answered_once_in_order_epoll() {
    check("epoll");
}

/// Clients that vanish with requests unanswered, next to one that is still talking: the
/// replies to the vanished ones fail to send, and the daemon closes them and nothing else.
#[test]
fn vanishing_clients_next_to_a_slow_one_harm_nothing() {
    let (root, pid) = start("io_uring");
    let many: String = (0..2_000).map(ping).collect();
    for round in 0..20 {
        UnixStream::connect(root.socket())
            .unwrap()
            .write_all(b"{\"protocol_version\":1,\"id\":1,\"req")
            .unwrap();
        UnixStream::connect(root.socket())
            .unwrap()
            .write_all(many.as_bytes())
            .unwrap();
        let mut slow = Conn::new(UnixStream::connect(root.socket()).unwrap());
        for byte in ping(round).as_bytes() {
            slow.send(&[*byte]);
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        assert_eq!(slow.recv()["id"], round, "{}", root.log());
    }
    assert!(common::alive(pid), "{}", root.log());
}
