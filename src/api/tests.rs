//! Unit tests of the API's pure parts and of its HTTP layer over a real loopback socket.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use super::auth::{constant_time_eq, Token};
use super::http::{parse_head, Connection, Deadlines, ReadError, Request, BODY_BYTES_MAX};
use super::routes::{http_status, respond, route, Context, Endpoint, RouteError, ROUTES};
use super::server::{pick_victim, Phase};
use super::{check_listen, ServeOptions, TOKEN_FILE};
use crate::paths::Paths;

fn options(addr: &str, allow_remote: bool) -> ServeOptions {
    ServeOptions {
        listen: addr.parse().unwrap(),
        allow_remote,
        json: false,
    }
}

#[test]
fn only_loopback_binds_without_allow_remote() {
    for addr in [
        "127.0.0.1:8787",
        "127.9.8.7:1",
        "[::1]:8787",
        "[::ffff:127.0.0.1]:80",
    ] {
        assert!(check_listen(&options(addr, false)).is_ok(), "{addr}");
    }
    for addr in ["0.0.0.0:8787", "192.168.1.5:8787", "[::]:8787"] {
        let err = check_listen(&options(addr, false)).unwrap_err().to_string();
        assert!(
            err.contains(addr) && err.contains("--allow-remote"),
            "{err}"
        );
        assert!(check_listen(&options(addr, true)).is_ok(), "{addr}");
    }
}

#[test]
fn protocol_codes_map_to_http_statuses() {
    for code in [200, 400, 404, 409, 413, 423, 500, 501, 503, 504] {
        assert_eq!(http_status(code), code);
    }
    assert_eq!(http_status(426), 400);
    assert_eq!(http_status(418), 502);
}

#[test]
fn routes_answer_404_and_405_with_allow() {
    for (method, path, endpoint) in ROUTES {
        assert_eq!(route(method, path), Ok(endpoint));
    }
    assert_eq!(route("GET", "/v1/nope"), Err(RouteError::NotFound));
    assert_eq!(route("GET", "/v1/daemon/"), Err(RouteError::NotFound));
    assert_eq!(
        route("POST", "/v1/daemon"),
        Err(RouteError::MethodNotAllowed("GET"))
    );
    assert_eq!(
        route("GET", "/v1/proxy/rotate"),
        Err(RouteError::MethodNotAllowed("POST"))
    );
    assert_eq!(route("GET", "/v1/configs"), Ok(Endpoint::Configs));
}

#[test]
fn constant_time_eq_compares_whole_inputs() {
    assert!(constant_time_eq(b"abcdef", b"abcdef"));
    assert!(!constant_time_eq(b"abcdef", b"abcdeg"));
    assert!(!constant_time_eq(b"xbcdef", b"abcdef"));
    assert!(!constant_time_eq(b"abc", b"abcdef"));
    assert!(constant_time_eq(b"", b""));
}

#[test]
fn token_is_made_private_once_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(TOKEN_FILE);
    let token = Token::load_or_create(&path).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    let value = text.trim();
    assert_eq!(value.len(), 64);
    assert!(value.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "kept across loads"
    );
    let _ = Token::load_or_create(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

    let header = format!("Bearer {value}");
    let authorizes = |values: &[&str]| token.authorizes(values.iter().map(|v| v.as_bytes()));
    assert!(authorizes(&[&header]));
    assert!(authorizes(&[&format!("bearer {value}")]));
    assert!(!authorizes(&[]));
    assert!(!authorizes(&[&format!("Basic {value}")]));
    assert!(!authorizes(&[&format!("Bearer {value}x")]));
    assert!(!authorizes(&[value]));
    assert!(!authorizes(&[&header, &header]), "two headers are refused");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Token::load_or_create(&path).unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, "\n").unwrap();
    let err = Token::load_or_create(&path).unwrap_err().to_string();
    assert!(err.contains("delete it"), "{err}");
}

#[test]
fn heads_parse_with_keep_alive_rules() {
    let (len, request) = parse_head(b"GET /v1/runtime?x=1 HTTP/1.1\r\nHost: a\r\n\r\nrest")
        .unwrap()
        .unwrap();
    assert_eq!(len, 41);
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("GET", "/v1/runtime")
    );
    assert!(request.keep_alive);
    let close = parse_head(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(!close.1.keep_alive);
    let old = parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
    assert!(!old.1.keep_alive);
    assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost"), Ok(None));
    assert!(matches!(
        parse_head(b"GET\0 / HTTP/1.1\r\n\r\n"),
        Err(ReadError::Malformed(_))
    ));
}

/// Writes `bytes` from a client thread and reads requests from the server side until the
/// connection fails; returns what each read gave.
fn read_all(bytes: Vec<u8>) -> Vec<Result<Request, ReadError>> {
    read_timed(bytes, Deadlines::default(), None)
        .into_iter()
        .map(|(result, _)| result)
        .collect()
}

/// Like [`read_all`] with `deadlines`; the client keeps its side open for `hold` (None: it
/// half-closes at once). Each result comes with the time since the accept.
fn read_timed(
    bytes: Vec<u8>,
    deadlines: Deadlines,
    hold: Option<Duration>,
) -> Vec<(Result<Request, ReadError>, Duration)> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let _ = stream.write_all(&bytes);
        match hold {
            Some(hold) => std::thread::sleep(hold),
            None => {
                let _ = stream.shutdown(std::net::Shutdown::Write);
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink);
            }
        }
    });
    let accepted = Instant::now();
    let mut conn = Connection::new(listener.accept().unwrap().0, deadlines, accepted).unwrap();
    let mut results = Vec::new();
    loop {
        let result = conn.read_request();
        let done = result.is_err();
        results.push((result, accepted.elapsed()));
        if done {
            break;
        }
    }
    drop(conn);
    client.join().unwrap();
    results
}

const SHORT: Deadlines = Deadlines {
    header: Duration::from_millis(300),
    body: Duration::from_millis(400),
    idle: Duration::from_millis(500),
};

/// Asserts `took` is at least `limit` and not much more (a loaded machine gets slack).
fn about(took: Duration, limit: Duration) {
    assert!(
        took >= limit && took < limit + Duration::from_millis(1500),
        "took {took:?}, limit {limit:?}"
    );
}

#[test]
fn a_head_late_past_the_header_deadline_gets_408() {
    let hold = Some(Duration::from_secs(3));
    let results = read_timed(b"GET /v1/daemon HT".to_vec(), SHORT, hold);
    let (last, took) = results.last().unwrap();
    assert_eq!(last, &Err(ReadError::HeadTimeout(SHORT.header)));
    about(*took, SHORT.header);
    let response = last.as_ref().unwrap_err().response().unwrap();
    assert_eq!(response.status, 408);
    let body = String::from_utf8(response.body).unwrap();
    assert!(body.contains("300 ms (api.header_timeout_ms)"), "{body}");
}

#[test]
fn a_silent_client_is_closed_unanswered_at_the_header_deadline() {
    let results = read_timed(Vec::new(), SHORT, Some(Duration::from_secs(3)));
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].0, Err(ReadError::Closed));
    about(results[0].1, SHORT.header);
    assert!(ReadError::Closed.response().is_none());
}

#[test]
fn a_body_late_past_its_deadline_gets_408() {
    let head = b"POST /v1/connect HTTP/1.1\r\nContent-Length: 10\r\n\r\n{\"a".to_vec();
    let results = read_timed(head, SHORT, Some(Duration::from_secs(3)));
    let (last, took) = results.last().unwrap();
    assert_eq!(last, &Err(ReadError::BodyTimeout(SHORT.body)));
    about(*took, SHORT.body);
    assert_eq!(last.as_ref().unwrap_err().response().unwrap().status, 408);
}

#[test]
fn keep_alive_connections_close_when_idle() {
    let one = b"GET /a HTTP/1.1\r\n\r\n".to_vec();
    let results = read_timed(one, SHORT, Some(Duration::from_secs(3)));
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].0.as_ref().unwrap().path, "/a");
    assert_eq!(results[1].0, Err(ReadError::Closed));
    about(results[1].1, SHORT.idle);
}

#[test]
fn eviction_picks_closing_then_the_longest_reading_never_busy() {
    let t0 = Instant::now();
    let at = |ms| Phase::Reading(t0 + Duration::from_millis(ms));
    assert_eq!(
        pick_victim([(1, Phase::Busy), (2, Phase::Busy)].into_iter()),
        None
    );
    assert_eq!(pick_victim(std::iter::empty()), None);
    let table = [(1, Phase::Busy), (2, at(50)), (3, at(10)), (4, at(30))];
    assert_eq!(pick_victim(table.into_iter()), Some(3));
    let table = [(1, at(0)), (5, Phase::Closing), (9, Phase::Closing)];
    assert_eq!(pick_victim(table.into_iter()), Some(5));
    // Equal ages: the older connection (lower id) goes.
    assert_eq!(pick_victim([(8, at(5)), (7, at(5))].into_iter()), Some(7));
}

#[test]
fn pipelined_requests_with_bodies_are_split() {
    let results = read_all(
        b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n".to_vec(),
    );
    assert_eq!(results.len(), 3);
    let first = results[0].as_ref().unwrap();
    assert_eq!(
        (first.path.as_str(), first.body.as_slice()),
        ("/a", &b"hello"[..])
    );
    assert_eq!(results[1].as_ref().unwrap().path, "/b");
    assert_eq!(results[2], Err(ReadError::Closed));
}

/// A predicate on the error a case must end with.
type Check = fn(&ReadError) -> bool;

#[test]
fn framing_errors_are_named() {
    let huge = format!(
        "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        BODY_BYTES_MAX + 1
    );
    let cases: Vec<(Vec<u8>, Check)> = vec![
        (huge.into_bytes(), |e| {
            matches!(e, ReadError::BodyTooLarge(_))
        }),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            |e| *e == ReadError::LengthRequired,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec(),
            |e| matches!(e, ReadError::Malformed(_)),
        ),
        (
            format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000)).into_bytes(),
            |e| *e == ReadError::HeadTooLarge,
        ),
        (
            format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(40)).into_bytes(),
            |e| *e == ReadError::HeadTooLarge,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nshort".to_vec(),
            |e| *e == ReadError::Closed,
        ),
    ];
    for (bytes, expected) in cases {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).into_owned();
        let results = read_all(bytes);
        let last = results.last().unwrap().as_ref().unwrap_err();
        assert!(expected(last), "{shown:?} gave {last:?}");
    }
}

fn request(headers: &[(&str, &str)], method: &str, path: &str, body: &str) -> Request {
    Request {
        method: method.into(),
        path: path.into(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
            .collect(),
        body: body.as_bytes().to_vec(),
        keep_alive: true,
    }
}

#[test]
fn respond_checks_browser_headers_then_token_then_route() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::at(dir.path());
    let token = Token::load_or_create(&dir.path().join(TOKEN_FILE)).unwrap();
    let bearer = format!(
        "Bearer {}",
        std::fs::read_to_string(token.path()).unwrap().trim()
    );
    let ctx = Context { paths, token };
    let auth = ("Authorization", bearer.as_str());
    let status = |headers: &[(&str, &str)], method: &str, path: &str, body: &str| {
        respond(&ctx, &request(headers, method, path, body)).status
    };
    assert_eq!(
        status(&[("Origin", "http://x")], "GET", "/v1/daemon", ""),
        403
    );
    assert_eq!(
        status(&[auth, ("Referer", "http://x/")], "GET", "/v1/daemon", ""),
        403
    );
    let unauthorized = respond(&ctx, &request(&[], "GET", "/nope", ""));
    assert_eq!(unauthorized.status, 401);
    assert!(unauthorized
        .headers
        .contains(&("WWW-Authenticate", "Bearer".into())));
    assert_eq!(status(&[auth], "GET", "/nope", ""), 404);
    assert_eq!(status(&[auth], "PUT", "/v1/proxy/stop", ""), 405);
    assert_eq!(status(&[auth], "POST", "/v1/runtime/connect", ""), 400);
    assert_eq!(
        status(&[auth], "POST", "/v1/runtime/connect", "{\"id\": 1}"),
        400
    );
    assert_eq!(status(&[auth], "POST", "/v1/proxy/rotate", "[1]"), 400);
    assert_eq!(status(&[auth], "GET", "/v1/configs", ""), 200);
    let down = respond(&ctx, &request(&[auth], "POST", "/v1/proxy/rotate", "{}"));
    assert_eq!(down.status, 503);
    let body: serde_json::Value = serde_json::from_slice(&down.body).unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("daemon not running at"), "{message}");
    assert!(message.contains("xrat daemon start"), "{message}");
}
