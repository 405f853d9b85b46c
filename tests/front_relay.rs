//! The front relay against the real binary, with plain loopback servers as pool members (the
//! debug build's `XRAT_TEST_FRONT_ROUTE`), so nothing here depends on the pool policy: the
//! refusals with no session, a bind failure, transparent retry of a failed SOCKS5 or HTTP
//! CONNECT opening, the answer when every member failed, half-close, and bulk traffic while
//! pings are answered.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{text, Root};
use serde_json::{json, Value};

const GREETING: [u8; 3] = [5, 1, 0];
const REQUEST: [u8; 10] = [5, 1, 0, 1, 10, 0, 0, 1, 0, 80];
const SUCCESS: [u8; 10] = [5, 0, 0, 1, 0, 0, 0, 0, 0, 0];
const CONNECT: &[u8] = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";

fn free_port() -> u16 {
    common::cores::free_port()
}

/// What a fake member does with each connection.
#[derive(Clone, Copy)]
enum Member {
    /// SOCKS5: method reply, then this reply code and close.
    SocksFails(u8),
    /// SOCKS5: success, then echo.
    SocksEcho,
    /// SOCKS5: says nothing until it has the greeting and the request, then the method reply,
    /// success, and echo (a client talking to it directly would wait forever).
    SocksLate,
    /// SOCKS5: answers the greeting choosing this method, then closes.
    SocksMethod(u8),
    /// HTTP CONNECT answered 502, then close.
    HttpFails,
    /// HTTP CONNECT answered 200, then echo.
    HttpEcho,
}

/// A fake member on loopback; records the first bytes of each connection's opening.
fn member(kind: Member) -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let record = record.clone();
            std::thread::spawn(move || serve(kind, stream, &record));
        }
    });
    (addr, seen)
}

fn serve(kind: Member, mut s: TcpStream, record: &Mutex<Vec<Vec<u8>>>) {
    let mut opening = Vec::new();
    let mut take = |s: &mut TcpStream, n: usize| {
        let mut buf = vec![0; n];
        s.read_exact(&mut buf).ok()?;
        opening.extend_from_slice(&buf);
        Some(())
    };
    let ok = match kind {
        Member::SocksFails(_) | Member::SocksEcho => {
            take(&mut s, 3).and_then(|_| s.write_all(&[5, 0]).ok());
            take(&mut s, 10).is_some()
        }
        Member::SocksLate => take(&mut s, 13)
            .and_then(|_| s.write_all(&[5, 0]).ok())
            .is_some(),
        Member::SocksMethod(method) => {
            take(&mut s, 3).and_then(|_| s.write_all(&[5, method]).ok());
            false
        }
        Member::HttpFails | Member::HttpEcho => take(&mut s, CONNECT.len()).is_some(),
    };
    record.lock().unwrap().push(opening);
    if !ok {
        return;
    }
    match kind {
        Member::SocksFails(code) => {
            let _ = s.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]);
            return;
        }
        Member::HttpFails => {
            let _ = s.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
            return;
        }
        Member::SocksEcho | Member::SocksLate => s.write_all(&SUCCESS).unwrap(),
        Member::SocksMethod(_) => return,
        Member::HttpEcho => s
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .unwrap(),
    }
    let mut buf = vec![0; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = s.shutdown(Shutdown::Write);
}

struct Front {
    root: Root,
    socks: u16,
    http: u16,
}

/// A daemon in front mode whose route is `route` (`socks` or `socks|http` addresses).
fn front(route: Option<String>) -> Front {
    front_with(route, "")
}

/// As [`front`], with `extra` settings (whole tables) after `[runtime]`.
fn front_with(route: Option<String>, extra: &str) -> Front {
    let root = Root::new();
    let (socks, http) = (free_port(), free_port());
    root.write_settings(&format!(
        "[runtime]\nsocks_port = {socks}\nhttp_port = {http}\n{extra}"
    ));
    let mut command = root.command(&["daemon", "start", "--json"]);
    match &route {
        Some(route) => command.env("XRAT_TEST_FRONT_ROUTE", route),
        None => command.env_remove("XRAT_TEST_FRONT_ROUTE"),
    };
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        root.log()
    );
    Front { root, socks, http }
}

impl Front {
    fn client(&self, port: u16) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    fn relay_status(&self) -> Value {
        let status = self
            .root
            .connect()
            .call(json!(1), json!({"type": "runtime_status"}));
        status["payload"].clone()
    }
}

fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn with_no_session_clients_get_their_protocols_refusal() {
    let f = front(None);
    let mut s = f.client(f.socks);
    s.write_all(&GREETING).unwrap();
    assert_eq!(read_n(&mut s, 2), [5, 0]);
    s.write_all(&REQUEST).unwrap();
    let reply = read_to_end(&mut s);
    assert_eq!(reply, [5, 1, 0, 1, 0, 0, 0, 0, 0, 0], "general failure");

    let mut h = f.client(f.http);
    h.write_all(CONNECT).unwrap();
    let answer = text(&read_to_end(&mut h));
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(answer.contains("no session is running; connect one with xrat connect <id>"));

    let status = f.relay_status();
    assert_eq!(status["mode"], "front");
    assert_eq!(status["front_socks_addr"], format!("127.0.0.1:{}", f.socks));
    assert_eq!(status["front_http_addr"], format!("127.0.0.1:{}", f.http));
    assert_eq!(status["relay"]["connections_total"], 0);
    assert_eq!(status["relay"]["connections_open"], 0);
}

#[test]
fn a_taken_port_is_a_startup_error_naming_the_key() {
    let root = Root::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    root.write_settings(&format!("[runtime]\nsocks_port = {port}\n"));
    let out = root.run(&["daemon", "start"]);
    assert!(!out.status.success());
    let said = format!("{}{}", text(&out.stderr), root.log());
    assert!(
        said.contains(&format!("127.0.0.1:{port} (runtime.socks_port)")),
        "{said}"
    );
}

#[test]
fn a_failed_socks_opening_is_replayed_on_the_next_member() {
    let (bad, _) = member(Member::SocksFails(4));
    let (good, seen) = member(Member::SocksEcho);
    let f = front(Some(format!("{bad},{good}")));
    let mut s = f.client(f.socks);
    s.write_all(&GREETING).unwrap();
    assert_eq!(read_n(&mut s, 2), [5, 0]);
    s.write_all(&REQUEST).unwrap();
    // The failure (host unreachable) was held back; the client sees the next member's success.
    assert_eq!(read_n(&mut s, 10), SUCCESS);
    s.write_all(b"hello").unwrap();
    assert_eq!(read_n(&mut s, 5), b"hello");
    let mut opening = GREETING.to_vec();
    opening.extend_from_slice(&REQUEST);
    assert_eq!(seen.lock().unwrap().as_slice(), [opening]);
    let relay = &f.relay_status()["relay"];
    assert_eq!(relay["retries"], 1, "{relay}");
    assert_eq!(relay["failures"], 1, "{relay}");
    assert_eq!(relay["connections_open"], 1, "{relay}");
}

#[test]
fn the_front_answers_a_no_auth_greeting_and_swallows_each_members_method_reply() {
    let (late, seen) = member(Member::SocksLate);
    let f = front(Some(late.to_string()));
    let mut s = f.client(f.socks);
    s.write_all(&GREETING).unwrap();
    // Only the front can have said this: the member waits for the request first.
    assert_eq!(read_n(&mut s, 2), [5, 0]);
    s.write_all(&REQUEST).unwrap();
    // The member's own method reply is not passed on: the next bytes are its success reply.
    assert_eq!(read_n(&mut s, 10), SUCCESS);
    s.write_all(b"hello").unwrap();
    assert_eq!(read_n(&mut s, 5), b"hello");
    let mut opening = GREETING.to_vec();
    opening.extend_from_slice(&REQUEST);
    assert_eq!(seen.lock().unwrap().as_slice(), [opening.clone()]);

    // On a retry too: the first member chose another method after the front's answer (its
    // failure), the next member's method reply is swallowed exactly once.
    let (other, _) = member(Member::SocksMethod(2));
    let (late, seen) = member(Member::SocksLate);
    let f = front(Some(format!("{other},{late}")));
    let mut s = f.client(f.socks);
    s.write_all(&GREETING).unwrap();
    assert_eq!(read_n(&mut s, 2), [5, 0]);
    s.write_all(&REQUEST).unwrap();
    assert_eq!(read_n(&mut s, 10), SUCCESS);
    s.write_all(b"again").unwrap();
    assert_eq!(read_n(&mut s, 5), b"again");
    assert_eq!(seen.lock().unwrap().as_slice(), [opening]);
    let relay = &f.relay_status()["relay"];
    assert_eq!(relay["retries"], 1, "{relay}");
    assert_eq!(relay["failures"], 1, "{relay}");
}

#[test]
fn a_greeting_without_no_auth_is_the_members_to_answer() {
    let (other, _) = member(Member::SocksMethod(2));
    let f = front(Some(other.to_string()));
    // User/password only: the member's choice reaches the client as it said it.
    let mut s = f.client(f.socks);
    s.write_all(&[5, 1, 2]).unwrap();
    assert_eq!(read_to_end(&mut s), [5, 2]);
    // No authentication, which the front answered: the member's other choice failed the
    // opening, and with no member left the client gets a general failure for its request.
    let mut s = f.client(f.socks);
    s.write_all(&GREETING).unwrap();
    assert_eq!(read_n(&mut s, 2), [5, 0]);
    s.write_all(&REQUEST).unwrap();
    assert_eq!(read_to_end(&mut s), [5, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(f.relay_status()["relay"]["failures"], 1);
}

#[test]
fn a_refused_member_is_skipped_and_a_half_close_is_passed_on() {
    let refused = format!("127.0.0.1:{}", free_port());
    let (good, _) = member(Member::SocksEcho);
    let f = front(Some(format!("{refused},{good}")));
    let mut s = f.client(f.socks);
    // Everything at once, then the write side closed: the echo comes back, then EOF.
    let mut all = GREETING.to_vec();
    all.extend_from_slice(&REQUEST);
    all.extend_from_slice(b"ping");
    s.write_all(&all).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut expected = vec![5, 0];
    expected.extend_from_slice(&SUCCESS);
    expected.extend_from_slice(b"ping");
    assert_eq!(read_to_end(&mut s), expected);
    assert!(common::wait_until(Duration::from_secs(5), || {
        f.relay_status()["relay"]["connections_open"] == 0
    }));
    assert_eq!(f.relay_status()["relay"]["failures"], 1);
}

#[test]
fn when_every_member_fails_the_client_gets_the_failure_code() {
    let (bad, _) = member(Member::SocksFails(5));
    let f = front(Some(bad.to_string()));
    let mut s = f.client(f.socks);
    s.write_all(&GREETING).unwrap();
    assert_eq!(read_n(&mut s, 2), [5, 0]);
    s.write_all(&REQUEST).unwrap();
    assert_eq!(read_to_end(&mut s), [5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn a_failed_http_connect_is_replayed_and_a_lost_one_is_a_502() {
    let (s1, _) = member(Member::SocksEcho);
    let (h1, _) = member(Member::HttpFails);
    let (s2, _) = member(Member::SocksEcho);
    let (h2, seen) = member(Member::HttpEcho);
    let f = front(Some(format!("{s1}|{h1},{s2}|{h2}")));
    let mut c = f.client(f.http);
    c.write_all(CONNECT).unwrap();
    let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
    assert_eq!(read_n(&mut c, established.len()), established);
    c.write_all(b"tls").unwrap();
    assert_eq!(read_n(&mut c, 3), b"tls");
    assert_eq!(seen.lock().unwrap().as_slice(), [CONNECT.to_vec()]);

    let (s3, _) = member(Member::SocksEcho);
    let (h3, _) = member(Member::HttpFails);
    let lost = front(Some(format!("{s3}|{h3}")));
    let mut c = lost.client(lost.http);
    c.write_all(CONNECT).unwrap();
    let answer = text(&read_to_end(&mut c));
    assert!(
        answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{answer}"
    );
    assert!(answer.contains("the core answered HTTP 502"), "{answer}");
}

#[test]
fn bulk_traffic_flows_while_pings_are_answered() {
    let (_, relay) = bulk_both_ways("");
    // Both directions went bulk after the opening and were spliced (the default).
    assert_eq!(relay["spliced"], 2, "{relay}");
}

#[test]
fn bulk_traffic_flows_through_buffers_when_splice_is_off() {
    let (_, relay) = bulk_both_ways("[relay]\nsplice = false\n");
    assert_eq!(relay["spliced"], 0, "{relay}");
}

#[test]
fn bulk_traffic_is_spliced_on_the_epoll_backend_too() {
    // The epoll backend waits for a spliced side's readiness with the same one-shot polls.
    let (f, relay) = bulk_both_ways("[daemon]\nbackend = \"epoll\"\n");
    assert_eq!(relay["spliced"], 2, "{relay}");
    let status = f
        .root
        .connect()
        .call(json!(3), json!({"type": "daemon_ping"}));
    assert_eq!(status["payload"]["backend"], "epoll", "{status}");
}

/// 64 MiB each way through an echoing member, every byte checked, pings meanwhile, then each
/// side's half-close passed on; returns the daemon and its relay counters.
fn bulk_both_ways(extra: &str) -> (Front, Value) {
    let (good, _) = member(Member::SocksEcho);
    let f = front_with(Some(good.to_string()), extra);
    let mut s = f.client(f.socks);
    s.write_all(&GREETING).unwrap();
    s.write_all(&REQUEST).unwrap();
    assert_eq!(read_n(&mut s, 12).len(), 12);
    const TOTAL: usize = 64 * 1024 * 1024;
    let mut writer = s.try_clone().unwrap();
    let started = Instant::now();
    // A byte's value is its offset mod 251 (a prime, so chunk and buffer sizes never line up
    // with it): a byte lost, doubled or reordered anywhere, say while a direction moves to a
    // bulk buffer, shows.
    const CHUNK: usize = 256 * 1024;
    let pattern: Arc<Vec<u8>> = Arc::new((0..CHUNK + 251).map(|at| (at % 251) as u8).collect());
    let sent = pattern.clone();
    let sender = std::thread::spawn(move || {
        for i in 0..TOTAL / CHUNK {
            let at = i * CHUNK % 251;
            writer.write_all(&sent[at..at + CHUNK]).unwrap();
        }
        writer
    });
    let mut conn = f.root.connect();
    let mut pings = Vec::new();
    let mut received = 0;
    let mut buf = vec![0; CHUNK];
    while received < TOTAL {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {received} bytes");
        let at = received % 251;
        assert!(
            buf[..n] == pattern[at..at + n],
            "the bytes after offset {received} are not the ones sent"
        );
        received += n;
        if pings.len() < received / CHUNK {
            let at = Instant::now();
            let reply = conn.call(json!(2), json!({"type": "daemon_ping"}));
            assert_eq!(reply["code"], 200);
            pings.push(at.elapsed());
        }
    }
    let writer = sender.join().unwrap();
    let secs = started.elapsed().as_secs_f64();
    pings.sort();
    let p99 = pings[pings.len() * 99 / 100];
    eprintln!(
        "relayed {} MiB each way in {secs:.2} s ({:.0} MiB/s); {} pings meanwhile, p50 {:?}, p99 {:?}",
        TOTAL >> 20,
        (TOTAL >> 20) as f64 / secs,
        pings.len(),
        pings[pings.len() / 2],
        p99
    );
    // The client's half-close reaches the member, whose own comes back as EOF: nothing more.
    writer.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut s), b"", "bytes after the echo");
    assert!(common::wait_until(Duration::from_secs(5), || {
        f.relay_status()["relay"]["connections_open"] == 0
    }));
    let relay = f.relay_status()["relay"].clone();
    assert!(
        relay["bytes_up"].as_u64().unwrap() >= TOTAL as u64,
        "{relay}"
    );
    assert!(
        relay["bytes_down"].as_u64().unwrap() >= TOTAL as u64,
        "{relay}"
    );
    (f, relay)
}
