use super::*;
use crate::reactor::opening::parse_socks_message;

const GREETING: [u8; 3] = [5, 1, 0];
const REQUEST: [u8; 10] = [5, 1, 0, 1, 10, 0, 0, 1, 0, 80];
const CONNECT: &[u8] = b"CONNECT example.com:443 HTTP/1.1\r\n\r\n";
const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

fn target(core: u64, config_id: i64) -> RouteTarget {
    RouteTarget {
        core: CoreId(core),
        config_id,
        stall_ms: 1_000,
    }
}

#[test]
fn socks_success_forwards_both_replies_then_the_remote() {
    let mut o = Observer::new(FrontPort::Socks);
    assert_eq!(o.step(&[5], None), Step::More);
    assert_eq!(
        o.step(&[5, 0], None),
        Step::Handshake {
            len: 2,
            forward: true
        }
    );
    assert_eq!(o.step(&socks_reply(0)[..9], None), Step::More);
    let mut held = socks_reply(0).to_vec();
    held.extend_from_slice(b"HTTP/1.1 200");
    assert_eq!(
        o.step(&held, None),
        Step::Handshake {
            len: 10,
            forward: true
        }
    );
    assert!(o.done());
    assert_eq!(o.step(b"HTTP/1.1 200", None), Step::Remote);
}

#[test]
fn socks_failure_is_held_and_a_retry_swallows_what_the_client_got() {
    let mut o = Observer::new(FrontPort::Socks);
    assert!(matches!(
        o.step(&[5, 0], None),
        Step::Handshake { forward: true, .. }
    ));
    // Host unreachable: a failure, not forwarded (the client still waits for its reply).
    assert_eq!(
        o.step(&socks_reply(4), None),
        Step::Failed(RelayFailure::SocksReply(4))
    );
    assert_eq!(o.forwarded(), 1);
    o.restart();
    // The next member's method reply is swallowed, its success reply is the client's.
    assert_eq!(
        o.step(&[5, 0], None),
        Step::Handshake {
            len: 2,
            forward: false
        }
    );
    assert_eq!(
        o.step(&socks_reply(0), None),
        Step::Handshake {
            len: 10,
            forward: true
        }
    );
    // Closed early after success: on a third member both replies are swallowed.
    o.restart();
    assert!(matches!(
        o.step(&[5, 0], None),
        Step::Handshake { forward: false, .. }
    ));
    assert!(matches!(
        o.step(&socks_reply(0), None),
        Step::Handshake { forward: false, .. }
    ));
}

#[test]
fn socks_other_methods_and_garbage_pass_through() {
    let mut o = Observer::new(FrontPort::Socks);
    assert_eq!(o.step(&[5, 0xFF], None), Step::PassThrough);
    assert!(o.done());
    let mut o = Observer::new(FrontPort::Socks);
    assert_eq!(o.step(b"HTTP/1.1 400", None), Step::PassThrough);
}

#[test]
fn http_connect_status_decides_and_plain_requests_are_remote() {
    let mut o = Observer::new(FrontPort::Http);
    assert_eq!(o.step(b"", None), Step::More);
    assert_eq!(o.step(&ESTABLISHED[..10], Some(true)), Step::More);
    assert_eq!(
        o.step(ESTABLISHED, Some(true)),
        Step::Handshake {
            len: ESTABLISHED.len(),
            forward: true
        }
    );
    let mut o = Observer::new(FrontPort::Http);
    assert_eq!(
        o.step(b"HTTP/1.1 502 Bad Gateway\r\n\r\n", Some(true)),
        Step::Failed(RelayFailure::HttpStatus(502))
    );
    o.restart();
    assert!(matches!(
        o.step(ESTABLISHED, Some(true)),
        Step::Handshake { forward: true, .. }
    ));
    let mut o = Observer::new(FrontPort::Http);
    assert_eq!(
        o.step(b"HTTP/1.1 404 Not Found\r\n", Some(false)),
        Step::Remote
    );
    let mut o = Observer::new(FrontPort::Http);
    assert_eq!(o.step(b"x", None), Step::PassThrough);
}

#[test]
fn replay_keeps_up_to_the_limit_then_gives_up() {
    let mut r = Replay::new(16);
    assert!(r.keep(&GREETING));
    assert!(r.keep(&REQUEST));
    assert_eq!(r.bytes().len(), 13);
    assert!(r.complete());
    assert!(!r.keep(&[0; 4]));
    assert!(!r.complete());
    assert_eq!(r.bytes().len(), 13, "a replay under way still has them");
    assert!(!r.keep(&[0]), "once over, always over");
    let mut r = Replay::new(16);
    r.keep(&GREETING);
    r.stop();
    assert!(!r.complete());
    assert_eq!(r.bytes(), GREETING, "kept for a replay under way");
    r.release();
    assert!(r.bytes().is_empty());
}

#[test]
fn next_target_skips_tried_members_and_follows_the_current_route() {
    let route = [target(1, 10), target(1, 11), target(2, 12)];
    assert_eq!(next_target(&route, &[], None), Some(route[0]));
    assert_eq!(
        next_target(&route, &[(CoreId(1), 10)], None),
        Some(route[1])
    );
    assert_eq!(
        next_target(&route, &[(CoreId(1), 10), (CoreId(1), 11)], None),
        Some(route[2])
    );
    let tried = [(CoreId(1), 10), (CoreId(1), 11), (CoreId(2), 12)];
    assert_eq!(next_target(&route, &tried, None), None);
    // A member tried earlier but no longer routed is not a reason to skip a new one.
    assert_eq!(
        next_target(&[target(3, 13)], &tried, None),
        Some(target(3, 13))
    );
    assert_eq!(next_target(&[], &[], None), None);
}

#[test]
fn next_target_skips_every_member_of_a_core_that_refused() {
    let route = [target(1, 10), target(1, 11), target(2, 12)];
    // Member 10's inbound refused: its sibling 11 lives in the same (exiting) core.
    let tried = [(CoreId(1), 10)];
    assert_eq!(next_target(&route, &tried, Some(CoreId(1))), Some(route[2]));
    // Only that core routed: nothing to try (the relay waits for a route, route_wait.rs).
    assert_eq!(next_target(&route[..2], &tried, Some(CoreId(1))), None);
    // The respawned core's members are new targets.
    let respawned = [target(3, 10), target(3, 11)];
    assert_eq!(
        next_target(&respawned, &tried, Some(CoreId(1))),
        Some(respawned[0])
    );
}

#[test]
fn opening_lengths() {
    let mut socks = GREETING.to_vec();
    assert_eq!(client_opening_len(FrontPort::Socks, &socks), None);
    socks.extend_from_slice(&REQUEST);
    assert_eq!(client_opening_len(FrontPort::Socks, &socks), Some(13));
    socks.extend_from_slice(b"GET");
    assert_eq!(client_opening_len(FrontPort::Socks, &socks), Some(13));
    assert_eq!(
        client_opening_len(FrontPort::Http, CONNECT),
        Some(CONNECT.len())
    );
    assert_eq!(
        client_opening_len(FrontPort::Http, b"GET http://a/ HTTP/1.1\r\n\r\n"),
        Some(0)
    );
    assert_eq!(client_opening_len(FrontPort::Http, b"GET http://a/"), None);
    assert_eq!(http_connect(CONNECT), Some(true));
    assert_eq!(http_connect(b"CONNECT a:1 HTTP/1.1\r\n"), None);
    assert_eq!(socks_code_for(RelayFailure::SocksReply(5)), 5);
    assert_eq!(socks_code_for(RelayFailure::Refused), 1);
}

#[test]
fn socks_refusal_answers_greeting_then_request() {
    let mut r = Refusal::new(FrontPort::Socks, 1, Vec::new(), false);
    let mut out = Vec::new();
    assert_eq!(r.step(&GREETING[..2], &mut out), Ok(false));
    assert!(out.is_empty());
    assert_eq!(r.step(&GREETING, &mut out), Ok(false));
    assert_eq!(out, [5, 0]);
    let mut all = GREETING.to_vec();
    all.extend_from_slice(&REQUEST[..5]);
    assert_eq!(r.step(&all, &mut out), Ok(false));
    all.extend_from_slice(&REQUEST[5..]);
    assert_eq!(r.step(&all, &mut out), Ok(true));
    assert_eq!(&out[..2], [5, 0]);
    assert_eq!(parse_socks_message(&out[2..]).unwrap().unwrap().code, 1);
    // A member had answered the greeting already: only the final reply.
    let mut r = Refusal::new(FrontPort::Socks, 4, Vec::new(), true);
    let mut out = Vec::new();
    assert_eq!(r.step(&all, &mut out), Ok(true));
    assert_eq!(out, socks_reply(4));
    // No acceptable method: 0xFF and done; garbage: an error (closed unanswered).
    let mut out = Vec::new();
    let mut r = Refusal::new(FrontPort::Socks, 1, Vec::new(), false);
    assert_eq!(r.step(&[5, 1, 2], &mut out), Ok(true));
    assert_eq!(out, [5, 0xFF]);
    let mut r = Refusal::new(FrontPort::Socks, 1, Vec::new(), false);
    assert!(r.step(b"GET / HTTP/1.1", &mut Vec::new()).is_err());
}

#[test]
fn http_refusal_waits_for_the_head() {
    let mut r = Refusal::new(FrontPort::Http, 1, http_no_session(), false);
    let mut out = Vec::new();
    assert_eq!(r.step(&CONNECT[..10], &mut out), Ok(false));
    assert_eq!(r.step(CONNECT, &mut out), Ok(true));
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{text}"
    );
    assert!(text.ends_with("xrat connect <id>\n"), "{text}");
    assert!(String::from_utf8(http_at_limit(7))
        .unwrap()
        .contains("daemon.relay_connections_max"));
    assert!(
        String::from_utf8(http_gave_up(RelayFailure::HttpStatus(503)))
            .unwrap()
            .starts_with("HTTP/1.1 502 Bad Gateway\r\n")
    );
}

#[test]
fn a_no_auth_greeting_is_answered_once_and_every_members_method_reply_swallowed() {
    let mut o = Observer::new(FrontPort::Socks);
    assert!(!o.greet(&GREETING[..2]), "incomplete");
    assert!(o.greet(&GREETING));
    assert_eq!(o.forwarded(), 1);
    let mut all = GREETING.to_vec();
    all.extend_from_slice(&REQUEST);
    assert!(!o.greet(&all), "answered once");
    // The member's own method reply: swallowed; its success reply: the client's.
    assert_eq!(
        o.step(&[5, 0], None),
        Step::Handshake {
            len: 2,
            forward: false
        }
    );
    assert_eq!(
        o.step(&socks_reply(4), None),
        Step::Failed(RelayFailure::SocksReply(4))
    );
    // On the next member: its method reply swallowed again, no second answer.
    o.restart();
    assert!(!o.greet(&all));
    assert_eq!(
        o.step(&[5, 0], None),
        Step::Handshake {
            len: 2,
            forward: false
        }
    );
    assert_eq!(
        o.step(&socks_reply(0), None),
        Step::Handshake {
            len: 10,
            forward: true
        }
    );
    assert_eq!(o.forwarded(), 2);
}

#[test]
fn other_greetings_are_left_to_the_core() {
    // Only user/password offered: the core answers (0xFF or its choice), passed through.
    let mut o = Observer::new(FrontPort::Socks);
    assert!(!o.greet(&[5, 1, 2]));
    assert_eq!(o.forwarded(), 0);
    assert_eq!(o.step(&[5, 0xFF], None), Step::PassThrough);
    // Not SOCKS5: never answered, even if valid bytes follow.
    let mut o = Observer::new(FrontPort::Socks);
    assert!(!o.greet(b"GET"));
    assert!(!o.greet(&GREETING));
    assert!(matches!(
        o.step(&[5, 0], None),
        Step::Handshake { forward: true, .. }
    ));
    // The HTTP port has no greeting.
    let mut o = Observer::new(FrontPort::Http);
    assert!(!o.greet(&GREETING));
    assert_eq!(o.forwarded(), 0);
}

#[test]
fn after_the_fronts_answer_a_member_choosing_another_method_failed() {
    let mut o = Observer::new(FrontPort::Socks);
    assert!(o.greet(&GREETING));
    assert_eq!(o.step(&[5, 2], None), Step::Failed(RelayFailure::Refused));
    let mut o = Observer::new(FrontPort::Socks);
    assert!(o.greet(&GREETING));
    assert_eq!(o.step(b"HT", None), Step::Failed(RelayFailure::Refused));
    // Likewise on a retry after a member forwarded its own method reply.
    let mut o = Observer::new(FrontPort::Socks);
    assert!(matches!(
        o.step(&[5, 0], None),
        Step::Handshake { forward: true, .. }
    ));
    o.restart();
    assert_eq!(
        o.step(&[5, 0xFF], None),
        Step::Failed(RelayFailure::Refused)
    );
}
