//! Pool renders run by the real cores: every member's SOCKS and HTTP inbound listens, and a
//! connection through either reaches that member's outbound and no other. The outbounds are
//! SOCKS5 "servers" that are plain listeners of this test, so seeing a connection arrive on one
//! proves the routing without any network.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::fixtures::{real_mihomo, real_sing_box, real_v2ray};
use super::*;
use crate::links::parse_link;

/// How long a core gets to start and relay (mihomo relays a little after it accepts).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one attempt waits for the connection to arrive upstream.
const ARRIVAL_WAIT: Duration = Duration::from_millis(300);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An upstream "SOCKS server": a listener that only counts arrivals.
fn upstream() -> (TcpListener, Outbound) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let outbound = parse_link(&format!("socks://127.0.0.1:{port}"))
        .unwrap()
        .outbound;
    (listener, outbound)
}

/// The opening a client sends on each kind of inbound, for a CONNECT to example.com:80.
fn opening(http: bool) -> Vec<u8> {
    if http {
        return b"CONNECT example.com:80 HTTP/1.1\r\nHost: example.com:80\r\n\r\n".to_vec();
    }
    let mut bytes = vec![5, 1, 0, 5, 1, 0, 3, 11];
    bytes.extend_from_slice(b"example.com");
    bytes.extend_from_slice(&80u16.to_be_bytes());
    bytes
}

/// Whether a connection through `inbound` arrives at `want` (retrying while the core starts),
/// and, once it did, that nothing arrived at `other`. Both ends are kept open in `held` until
/// the test ends: a core whose upstream or client goes away dials again (mihomo does, for
/// seconds), and that late arrival would land in a later check.
fn reaches(
    child: &mut Child,
    held: &mut Vec<TcpStream>,
    (inbound, http): (SocketAddr, bool),
    want: &TcpListener,
    other: &TcpListener,
) -> bool {
    // Arrivals from the attempts of the checks before are not this check's.
    while let Ok((stream, _)) = want.accept().or_else(|_| other.accept()) {
        held.push(stream);
    }
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        if let Ok(mut client) = TcpStream::connect_timeout(&inbound, ARRIVAL_WAIT) {
            let _ = client.write_all(&opening(http));
            held.push(client);
            if let Some(mut arrived) = arrival(want) {
                let mut first = [0u8; 1];
                let read = arrived.read(&mut first);
                held.push(arrived);
                return read.is_ok_and(|n| n == 1) && first[0] == 5 && other.accept().is_err();
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A connection arriving at `listener` within [`ARRIVAL_WAIT`], made blocking with that timeout.
fn arrival(listener: &TcpListener) -> Option<TcpStream> {
    let waited = Instant::now();
    while waited.elapsed() < ARRIVAL_WAIT {
        if let Ok((stream, _)) = listener.accept() {
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(ARRIVAL_WAIT)).unwrap();
            return Some(stream);
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

fn pool_routes_every_inbound(core: &CoreBinary) {
    let dir = tempfile::tempdir().unwrap();
    let (up_a, out_a) = upstream();
    let (up_b, out_b) = upstream();
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let members = [
        PoolInbound {
            socks_port: ports[0],
            http_port: Some(ports[1]),
            outbound: &out_a,
        },
        PoolInbound {
            socks_port: ports[2],
            http_port: Some(ports[3]),
            outbound: &out_b,
        },
    ];
    let listen = IpAddr::from([127, 0, 0, 1]);
    let text = render_pool(core, listen, &members).unwrap();
    let path = dir.path().join("pool-0-0.json");
    std::fs::write(&path, &text).unwrap();
    let mut child = Command::new(&core.path)
        .args(run_args(core, &path))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let at = |port| SocketAddr::new(listen, port);
    let mut held = Vec::new();
    let results = [
        reaches(&mut child, &mut held, (at(ports[0]), false), &up_a, &up_b),
        reaches(&mut child, &mut held, (at(ports[1]), true), &up_a, &up_b),
        reaches(&mut child, &mut held, (at(ports[2]), false), &up_b, &up_a),
        reaches(&mut child, &mut held, (at(ports[3]), true), &up_b, &up_a),
    ];
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        results, [true; 4],
        "{} {}: which of [A socks, A http, B socks, B http] reached only their member\n{text}",
        core.kind, core.version
    );
}

#[test]
fn pool_cores_route_each_inbound_to_its_member() {
    for core in [real_v2ray(), real_sing_box(), real_mihomo()] {
        pool_routes_every_inbound(&core);
    }
}
