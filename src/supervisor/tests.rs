//! Unit tests of the supervisor's rules, driven without a ring.

use super::*;
use crate::ipc::decode_request;

pub(super) fn config() -> SupervisorConfig {
    SupervisorConfig {
        pid: 77,
        health_interval_ms: 15_000,
        rotation_interval_secs: 1800,
        health_trigger_enabled: true,
        cooldown_secs: 300,
        failure_threshold: 3,
        rotation_enabled: false,
    }
}

pub(super) fn at(ms: u64) -> Now {
    Now {
        monotonic_ms: ms,
        unix_secs: 1_700_000_000 + ms / 1000,
    }
}

pub(super) fn id(n: u32) -> RawId {
    let line = format!(r#"{{"protocol_version":1,"id":{n},"request":{{"type":"daemon_ping"}}}}"#);
    decode_request(line.as_bytes()).unwrap().0
}

pub(super) fn request(s: &mut Supervisor, ms: u64, conn: u64, n: u32, request: Request) {
    s.handle(
        at(ms),
        Input::Request {
            conn: ConnId(conn),
            id: id(n),
            request: Ok(request),
        },
    );
}

pub(super) fn failed() -> Rejection {
    Rejection {
        code: Code::Internal,
        message: "spawn failed".into(),
        close: false,
    }
}

pub(super) fn session(id: i64, config_id: i64) -> SessionInfo {
    SessionInfo {
        id,
        config_id,
        core: "v2ray".into(),
        pid: 4242,
        socks_addr: "127.0.0.1:1080".into(),
        http_addr: None,
        started_at: 1_700_000_000,
    }
}

pub(super) fn take_op(s: &mut Supervisor) -> (OpId, Plan) {
    match s.poll_effect() {
        Some(Effect::Operation { op, plan }) => (op, plan),
        other => panic!("expected an operation, got {other:?}"),
    }
}

pub(super) fn status(s: &mut Supervisor) -> crate::ipc::protocol::RuntimeStatusPayload {
    request(s, 0, 99, 99, Request::RuntimeStatus);
    match s.poll_effect() {
        Some(Effect::Reply {
            reply: Reply::RuntimeStatus(p),
            ..
        }) => *p,
        other => panic!("expected a status reply, got {other:?}"),
    }
}

pub(super) fn drain(s: &mut Supervisor) -> Vec<Effect> {
    std::iter::from_fn(|| s.poll_effect()).collect()
}

pub(super) fn replies(effects: &[Effect]) -> Vec<(u64, String, Option<Code>)> {
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
    let mut s = Supervisor::new(config(), at(1_000), None);
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
    let mut s = Supervisor::new(config(), at(0), None);
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
    let rejection = failed();
    s.handle(
        at(5),
        Input::OperationDone {
            op,
            outcome: Err(rejection),
        },
    );
    assert_eq!(
        replies(&drain(&mut s)),
        [(1, "1".into(), Some(Code::Internal)), (1, "2".into(), None)]
    );
    assert!(!s.is_busy());
}

#[test]
fn a_closed_connection_gets_nothing_and_frees_the_operation() {
    let mut s = Supervisor::new(config(), at(0), None);
    request(&mut s, 1, 1, 1, Request::RuntimeConnect { config_id: 1 });
    let Some(Effect::Operation { op, .. }) = s.poll_effect() else {
        panic!()
    };
    request(&mut s, 2, 1, 2, Request::DaemonPing);
    s.handle(at(3), Input::ConnectionClosed { conn: ConnId(1) });
    let rejection = failed();
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
    let mut s = Supervisor::new(config(), at(0), None);
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
    let mut s = Supervisor::new(config(), at(0), None);
    request(&mut s, 1, 1, 1, Request::RuntimeConnect { config_id: 1 });
    let Some(Effect::Operation { op, .. }) = s.poll_effect() else {
        panic!()
    };
    s.handle(at(2), Input::ShutdownSignal);
    assert_eq!(drain(&mut s), []);
    let rejection = failed();
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
    let mut s = Supervisor::new(config(), at(100), None);
    assert_eq!(s.poll_timeout(), Some(15_100));
    s.handle(at(15_099), Input::Timer);
    assert_eq!(s.health_ticks(), 0);
    s.handle(at(45_200), Input::Timer);
    assert_eq!(s.health_ticks(), 3);
    assert_eq!(s.poll_timeout(), Some(60_100));
}

#[test]
fn rejections_keep_their_code_and_may_close() {
    let mut s = Supervisor::new(config(), at(0), None);
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
    let mut s = Supervisor::new(config(), at(0), None);
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
    assert!(
        matches!(s.poll_effect(), Some(Effect::Reply { reply: Reply::Rotation(p), .. }) if p.rotation_enabled)
    );
}

#[test]
fn connect_then_status_then_same_config_is_already_active() {
    let mut s = Supervisor::new(config(), at(0), None);
    request(&mut s, 1, 1, 1, Request::RuntimeConnect { config_id: 3 });
    let (op, plan) = take_op(&mut s);
    assert_eq!(
        plan,
        Plan::Connect {
            config_id: 3,
            replacing: None
        }
    );
    assert_eq!(status(&mut s).runtime_status, "starting");
    let outcome = Ok(OperationOutput::Connected {
        session: session(10, 3),
        replaced: None,
    });
    s.handle(at(2), Input::OperationDone { op, outcome });
    let effects = drain(&mut s);
    assert!(
        matches!(&effects[..], [Effect::Reply { reply: Reply::Connected(p), .. }] if p.session_id == 10 && !p.already_active)
    );
    let st = status(&mut s);
    assert_eq!(
        (st.runtime_status.as_str(), st.pid, st.pid_running),
        ("running", Some(4242), true)
    );
    request(&mut s, 3, 1, 2, Request::RuntimeConnect { config_id: 3 });
    assert!(
        matches!(s.poll_effect(), Some(Effect::Reply { reply: Reply::Connected(p), .. }) if p.already_active)
    );
    request(&mut s, 4, 1, 3, Request::RuntimeConnect { config_id: 4 });
    assert_eq!(
        take_op(&mut s).1,
        Plan::Connect {
            config_id: 4,
            replacing: Some(10)
        }
    );
}

#[test]
fn a_failed_replacing_connect_leaves_no_session_once_the_old_one_ended() {
    let mut s = Supervisor::new(config(), at(0), Some(session(10, 3)));
    request(&mut s, 1, 1, 1, Request::RuntimeConnect { config_id: 4 });
    let (op, _) = take_op(&mut s);
    s.handle(at(2), Input::SessionEnded { session_id: 10 });
    s.handle(
        at(2),
        Input::OperationDone {
            op,
            outcome: Err(failed()),
        },
    );
    drain(&mut s);
    assert_eq!(status(&mut s).runtime_status, "idle");
}

#[test]
fn disconnect_needs_a_session_and_core_exit_degrades() {
    let mut s = Supervisor::new(config(), at(0), None);
    request(&mut s, 1, 1, 1, Request::RuntimeDisconnect);
    assert_eq!(
        replies(&drain(&mut s)),
        [(1, "1".into(), Some(Code::Conflict))]
    );

    let mut s = Supervisor::new(config(), at(0), Some(session(7, 2)));
    s.handle(
        at(1),
        Input::CoreExited {
            session_id: 7,
            description: "core killed by signal 9".into(),
        },
    );
    let st = status(&mut s);
    assert_eq!(
        (st.runtime_status.as_str(), st.pid_running),
        ("degraded", false)
    );
    assert_eq!(
        st.health.last_error.as_deref(),
        Some("core killed by signal 9")
    );
    request(&mut s, 2, 1, 2, Request::RuntimeDisconnect);
    let (op, plan) = take_op(&mut s);
    assert_eq!(plan, Plan::Disconnect { session_id: 7 });
    s.handle(
        at(3),
        Input::OperationDone {
            op,
            outcome: Ok(OperationOutput::Disconnected { session_id: 7 }),
        },
    );
    assert!(
        matches!(s.poll_effect(), Some(Effect::Reply { reply: Reply::Disconnected(p), .. }) if p.stopped_session == 7)
    );
    assert_eq!(status(&mut s).runtime_status, "idle");
}

#[test]
fn shutdown_stops_the_session_before_exiting() {
    let mut s = Supervisor::new(config(), at(0), Some(session(7, 2)));
    request(&mut s, 1, 1, 1, Request::DaemonShutdown);
    let effects = drain(&mut s);
    assert!(
        matches!(&effects[0], Effect::Reply { reply: Reply::Shutdown(p), .. } if p.runtime_disconnected)
    );
    let Effect::Operation { op, ref plan } = effects[1] else {
        panic!("{effects:?}")
    };
    assert_eq!(*plan, Plan::Disconnect { session_id: 7 });
    assert_eq!(effects.len(), 2);
    s.handle(
        at(2),
        Input::OperationDone {
            op,
            outcome: Ok(OperationOutput::Disconnected { session_id: 7 }),
        },
    );
    assert_eq!(drain(&mut s), [Effect::Shutdown]);
}

#[test]
fn a_connect_refused_before_stopping_keeps_the_old_session() {
    let mut s = Supervisor::new(config(), at(0), Some(session(10, 3)));
    request(&mut s, 1, 1, 1, Request::RuntimeConnect { config_id: 99 });
    let (op, _) = take_op(&mut s);
    s.handle(
        at(2),
        Input::OperationDone {
            op,
            outcome: Err(failed()),
        },
    );
    drain(&mut s);
    assert_eq!(status(&mut s).session_id, Some(10));
}
