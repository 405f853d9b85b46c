//! Unit tests of the supervisor's rules, driven without a ring.

use super::*;
use crate::ipc::decode_request;

fn config() -> SupervisorConfig {
    SupervisorConfig {
        pid: 77,
        health_interval_ms: 15_000,
        rotation_interval_secs: 1800,
        health_trigger_enabled: true,
        cooldown_secs: 300,
        failure_threshold: 3,
    }
}

fn at(ms: u64) -> Now {
    Now {
        monotonic_ms: ms,
        unix_secs: 1_700_000_000 + ms / 1000,
    }
}

fn id(n: u32) -> RawId {
    let line = format!(r#"{{"protocol_version":1,"id":{n},"request":{{"type":"daemon_ping"}}}}"#);
    decode_request(line.as_bytes()).unwrap().0
}

fn request(s: &mut Supervisor, ms: u64, conn: u64, n: u32, request: Request) {
    s.handle(
        at(ms),
        Input::Request {
            conn: ConnId(conn),
            id: id(n),
            request: Ok(request),
        },
    );
}

fn drain(s: &mut Supervisor) -> Vec<Effect> {
    std::iter::from_fn(|| s.poll_effect()).collect()
}

fn replies(effects: &[Effect]) -> Vec<(u64, String, Option<Code>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reply {
                conn, id, reply, ..
            } => Some((
                conn.0,
                String::from_utf8(id.as_json().to_vec()).unwrap(),
                match reply {
                    Reply::Error { code, .. } => Some(*code),
                    _ => None,
                },
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn ping_reports_pid_and_uptime() {
    let mut s = Supervisor::new(config(), at(1_000));
    request(&mut s, 4_500, 1, 1, Request::DaemonPing);
    assert_eq!(
        drain(&mut s),
        [Effect::Reply {
            conn: ConnId(1),
            id: id(1),
            reply: Reply::Ping {
                pid: 77,
                uptime_secs: 3
            },
            close_after: false,
        }]
    );
}

#[test]
fn replies_wait_behind_an_operation_on_the_same_connection_only() {
    let mut s = Supervisor::new(config(), at(0));
    request(&mut s, 1, 1, 1, Request::RuntimeConnect { config_id: 5 });
    let effects = drain(&mut s);
    let [Effect::Operation { op, .. }] = effects[..] else {
        panic!("{effects:?}")
    };
    request(&mut s, 2, 1, 2, Request::DaemonPing);
    request(&mut s, 3, 2, 3, Request::DaemonPing);
    request(&mut s, 4, 2, 4, Request::RuntimeDisconnect);
    assert_eq!(
        replies(&drain(&mut s)),
        [(2, "3".into(), None), (2, "4".into(), Some(Code::Busy))]
    );
    assert!(s.is_busy());
    let rejection = operation_not_implemented(Request::RuntimeConnect { config_id: 5 });
    s.handle(
        at(5),
        Input::OperationDone {
            op,
            outcome: Err(rejection),
        },
    );
    assert_eq!(
        replies(&drain(&mut s)),
        [
            (1, "1".into(), Some(Code::NotImplemented)),
            (1, "2".into(), None)
        ]
    );
    assert!(!s.is_busy());
}

#[test]
fn a_closed_connection_gets_nothing_and_frees_the_operation() {
    let mut s = Supervisor::new(config(), at(0));
    request(&mut s, 1, 1, 1, Request::RuntimeDisconnect);
    let Some(Effect::Operation { op, .. }) = s.poll_effect() else {
        panic!()
    };
    request(&mut s, 2, 1, 2, Request::DaemonPing);
    s.handle(at(3), Input::ConnectionClosed { conn: ConnId(1) });
    let rejection = operation_not_implemented(Request::RuntimeDisconnect);
    s.handle(
        at(4),
        Input::OperationDone {
            op,
            outcome: Err(rejection),
        },
    );
    assert_eq!(drain(&mut s), []);
    assert!(!s.is_busy());
}

#[test]
fn shutdown_replies_then_refuses_new_work() {
    let mut s = Supervisor::new(config(), at(0));
    request(&mut s, 1, 1, 1, Request::DaemonShutdown);
    request(&mut s, 2, 2, 2, Request::DaemonPing);
    let effects = drain(&mut s);
    assert!(
        matches!(&effects[0], Effect::Reply { reply: Reply::Shutdown(p), .. } if !p.daemon_ready)
    );
    assert_eq!(effects[1], Effect::Shutdown);
    assert_eq!(
        replies(&effects[2..]),
        [(2, "2".into(), Some(Code::Unavailable))]
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn shutdown_waits_for_the_operation_in_flight() {
    let mut s = Supervisor::new(config(), at(0));
    request(&mut s, 1, 1, 1, Request::RuntimeConnect { config_id: 1 });
    let Some(Effect::Operation { op, .. }) = s.poll_effect() else {
        panic!()
    };
    s.handle(at(2), Input::ShutdownSignal);
    assert_eq!(drain(&mut s), []);
    let rejection = operation_not_implemented(Request::RuntimeConnect { config_id: 1 });
    s.handle(
        at(3),
        Input::OperationDone {
            op,
            outcome: Err(rejection),
        },
    );
    let effects = drain(&mut s);
    assert_eq!(effects.len(), 2);
    assert_eq!(effects[1], Effect::Shutdown);
}

#[test]
fn timer_counts_health_ticks_and_reports_the_next_deadline() {
    let mut s = Supervisor::new(config(), at(100));
    assert_eq!(s.poll_timeout(), Some(15_100));
    s.handle(at(15_099), Input::Timer);
    assert_eq!(s.health_ticks(), 0);
    s.handle(at(45_200), Input::Timer);
    assert_eq!(s.health_ticks(), 3);
    assert_eq!(s.poll_timeout(), Some(60_100));
}

#[test]
fn rejections_keep_their_code_and_may_close() {
    let mut s = Supervisor::new(config(), at(0));
    let rejection = Rejection {
        code: Code::FrameTooLarge,
        message: "too big".into(),
        close: true,
    };
    s.handle(
        at(1),
        Input::Request {
            conn: ConnId(9),
            id: RawId::NONE,
            request: Err(rejection),
        },
    );
    let effects = drain(&mut s);
    assert!(matches!(
        &effects[..],
        [Effect::Reply {
            close_after: true,
            reply: Reply::Error {
                code: Code::FrameTooLarge,
                ..
            },
            ..
        }]
    ));
}

#[test]
fn proxy_status_reports_rotation_off_with_settings_values() {
    let mut s = Supervisor::new(config(), at(0));
    request(&mut s, 1, 1, 1, Request::ProxyStatus);
    let Some(Effect::Reply {
        reply: Reply::ProxyStatus(p),
        ..
    }) = s.poll_effect()
    else {
        panic!()
    };
    assert!(!p.rotation_enabled);
    assert_eq!(
        (p.interval_secs, p.cooldown_secs, p.health_failure_threshold),
        (1800, 300, 3)
    );
    request(&mut s, 1, 1, 2, Request::ProxyStart);
    assert_eq!(
        replies(&drain(&mut s)),
        [(1, "2".into(), Some(Code::NotImplemented))]
    );
}
