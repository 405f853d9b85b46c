//! Unit tests of the supervisor's request rules and the connect / disconnect sequences, driven
//! without a ring: each test plays the executor by hand.

use std::net::SocketAddr;

use super::*;
use crate::ipc::decode_request;

pub(super) fn config() -> SupervisorConfig {
    SupervisorConfig {
        strikes: 3,
        quarantine_secs: 1800,
        probe_url: "http://probe.invalid/".into(),
        pid: 77,
        health_interval_ms: 15_000,
        probe_timeout_ms: 5_000,
        ready_timeout_ms: 5_000,
        rotation_interval_secs: 1800,
        health_trigger_enabled: true,
        cooldown_secs: 300,
        test_concurrency: 8,
        failure_threshold: 3,
        rotation_enabled: false,
        front: false,
        pool_size: 4,
        drain_ms: 30_000,
        retry_interval_ms: 500,
        passive_failures: 2,
        passive_window_ms: 2_000,
        subscriber_queue_max: 1024,
    }
}

pub(super) fn at(ms: u64) -> Now {
    Now {
        monotonic_ms: ms,
        unix_secs: 1_700_000_000 + ms / 1000,
        unix_ms: 1_700_000_000_000 + ms,
    }
}

pub(super) fn id(n: u32) -> RawId {
    let line = format!(r#"{{"protocol_version":1,"id":{n},"request":{{"type":"daemon_ping"}}}}"#);
    decode_request(line.as_bytes()).unwrap().0
}

pub(super) fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub(super) fn session(id: i64, config_id: i64) -> SessionInfo {
    SessionInfo {
        id,
        config_id,
        core: "v2ray".into(),
        pid: 4000 + id as u32,
        socks_addr: addr(1080),
        http_addr: None,
        started_at: 1_700_000_000,
    }
}

/// Feeds one input and returns every effect it caused.
pub(super) fn feed(s: &mut Supervisor, ms: u64, input: Input) -> Vec<Effect> {
    s.handle(at(ms), input);
    drain(s)
}

pub(super) fn request(
    s: &mut Supervisor,
    ms: u64,
    conn: u64,
    n: u32,
    request: Request,
) -> Vec<Effect> {
    let input = Input::Request {
        conn: ConnId(conn),
        id: id(n),
        request: Ok(request),
    };
    feed(s, ms, input)
}

pub(super) fn drain(s: &mut Supervisor) -> Vec<Effect> {
    std::iter::from_fn(|| s.poll_effect()).collect()
}

/// (connection, id, error code) of every reply.
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

pub(super) fn only_reply(effects: &[Effect]) -> &Reply {
    let mut all = effects.iter().filter_map(|e| match e {
        Effect::Reply { reply, .. } => Some(reply),
        _ => None,
    });
    let reply = all
        .next()
        .unwrap_or_else(|| panic!("no reply in {effects:?}"));
    assert!(all.next().is_none(), "more than one reply in {effects:?}");
    reply
}

pub(super) fn inspect_in(effects: &[Effect]) -> (InspectId, Selection) {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::Inspect { inspect, selection } => Some((*inspect, *selection)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Inspect in {effects:?}"))
}

pub(super) fn start_in(effects: &[Effect]) -> (CoreId, CoreSpec) {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::StartCore { core, spec, .. } => Some((*core, spec.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no StartCore in {effects:?}"))
}

pub(super) fn stops_in(effects: &[Effect]) -> Vec<(CoreId, u64)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::StopCore { core, grace_ms } => Some((*core, *grace_ms)),
            _ => None,
        })
        .collect()
}

pub(super) fn probes_in(effects: &[Effect]) -> Vec<(ProbeId, SocketAddr)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Probe { probe, addr, .. } => Some((*probe, *addr)),
            _ => None,
        })
        .collect()
}

pub(super) fn ends_in(effects: &[Effect]) -> Vec<(i64, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::EndSession { session_id, reason } => Some((*session_id, reason.clone())),
            _ => None,
        })
        .collect()
}

/// Every config in `ids` is runnable.
pub(super) fn inspected(inspect: InspectId, ids: &[i64]) -> Input {
    let checks = ids
        .iter()
        .map(|id| ConfigCheck {
            history: Default::default(),
            config_id: *id,
            result: Ok(()),
        })
        .collect();
    Input::Inspected {
        inspect,
        configs: Ok(checks),
    }
}

pub(super) fn started(
    core: CoreId,
    info: Option<SessionInfo>,
    inbounds: Vec<(i64, SocketAddr)>,
) -> Input {
    Input::CoreStarted {
        core,
        pid: 5000 + core.0 as u32,
        session: info,
        inbounds,
    }
}

pub(super) fn exited(core: CoreId) -> Input {
    Input::CoreExited {
        core,
        how: "killed by signal 15".into(),
        log_tail: String::new(),
    }
}

pub(super) fn status(s: &mut Supervisor) -> crate::ipc::protocol::RuntimeStatusPayload {
    match only_reply(&request(s, 0, 99, 99, Request::RuntimeStatus)) {
        Reply::RuntimeStatus(p) => (**p).clone(),
        other => panic!("expected a status reply, got {other:?}"),
    }
}

/// Runs a connect of `config_id` on connection 1 to its end; the new session is `session_id`.
pub(super) fn connect(s: &mut Supervisor, ms: u64, config_id: i64, session_id: i64) -> CoreId {
    let effects = request(s, ms, 1, 1, Request::RuntimeConnect { config_id });
    let (inspect, selection) = inspect_in(&effects);
    assert_eq!(selection, Selection::One(config_id));
    let effects = feed(s, ms, inspected(inspect, &[config_id]));
    let (core, spec) = start_in(&effects);
    assert_eq!(spec, CoreSpec::Session { config_id });
    feed(
        s,
        ms,
        started(core, Some(session(session_id, config_id)), Vec::new()),
    );
    let effects = feed(s, ms, Input::CoreReady { core });
    assert!(matches!(only_reply(&effects), Reply::Connected(p) if p.session_id == session_id));
    core
}

#[test]
fn ping_reports_pid_and_uptime() {
    let mut s = Supervisor::new(config(), at(1_000), None);
    let effects = request(&mut s, 4_500, 1, 1, Request::DaemonPing);
    assert_eq!(
        effects,
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
    let (inspect, _) = inspect_in(&request(
        &mut s,
        1,
        1,
        1,
        Request::RuntimeConnect { config_id: 5 },
    ));
    let mut effects = request(&mut s, 2, 1, 2, Request::DaemonPing);
    effects.extend(request(&mut s, 3, 2, 3, Request::DaemonPing));
    effects.extend(request(&mut s, 4, 2, 4, Request::RuntimeDisconnect));
    assert_eq!(
        replies(&effects),
        [(2, "3".into(), None), (2, "4".into(), Some(Code::Busy))]
    );
    assert!(s.is_busy());
    let effects = feed(&mut s, 5, inspected(inspect, &[]));
    assert_eq!(
        replies(&effects),
        [(1, "1".into(), Some(Code::NotFound)), (1, "2".into(), None)]
    );
    assert!(!s.is_busy());
}

#[test]
fn a_closed_connection_gets_nothing_and_frees_the_operation() {
    let mut s = Supervisor::new(config(), at(0), None);
    let (inspect, _) = inspect_in(&request(
        &mut s,
        1,
        1,
        1,
        Request::RuntimeConnect { config_id: 1 },
    ));
    request(&mut s, 2, 1, 2, Request::DaemonPing);
    feed(&mut s, 3, Input::ConnectionClosed { conn: ConnId(1) });
    assert_eq!(replies(&feed(&mut s, 4, inspected(inspect, &[]))), []);
    assert!(!s.is_busy());
}

#[test]
fn shutdown_replies_then_refuses_new_work() {
    let mut s = Supervisor::new(config(), at(0), None);
    let mut effects = request(&mut s, 1, 1, 1, Request::DaemonShutdown);
    effects.extend(request(&mut s, 2, 2, 2, Request::DaemonPing));
    assert!(
        matches!(&effects[0], Effect::Reply { reply: Reply::Shutdown(p), .. } if !p.daemon_ready && !p.runtime_disconnected)
    );
    assert_eq!(effects[1], Effect::Shutdown);
    assert_eq!(
        replies(&effects[2..]),
        [(2, "2".into(), Some(Code::Unavailable))]
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn shutdown_waits_for_the_operation_then_stops_the_session() {
    let mut s = Supervisor::new(config(), at(0), None);
    let (inspect, _) = inspect_in(&request(
        &mut s,
        1,
        1,
        1,
        Request::RuntimeConnect { config_id: 1 },
    ));
    assert_eq!(feed(&mut s, 2, Input::ShutdownSignal), []);
    let (core, _) = start_in(&feed(&mut s, 3, inspected(inspect, &[1])));
    feed(&mut s, 4, started(core, Some(session(10, 1)), Vec::new()));
    let effects = feed(&mut s, 5, Input::CoreReady { core });
    assert!(matches!(only_reply(&effects), Reply::Connected(_)));
    assert_eq!(
        stops_in(&effects),
        [(core, STOP_GRACE_MS)],
        "then the session is stopped"
    );
    assert!(!effects.contains(&Effect::Shutdown));
    let effects = feed(&mut s, 6, exited(core));
    assert_eq!(ends_in(&effects), [(10, "disconnected".to_string())]);
    assert_eq!(effects.last(), Some(&Effect::Shutdown));
}

#[test]
fn shutdown_with_a_dead_core_exits_at_once() {
    let mut s = Supervisor::new(config(), at(0), Some(session(7, 2)));
    let core = s.adopted_core().unwrap();
    feed(&mut s, 1, exited(core));
    let effects = feed(&mut s, 2, Input::ShutdownSignal);
    assert_eq!(effects.last(), Some(&Effect::Shutdown), "{effects:?}");
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
    let input = Input::Request {
        conn: ConnId(9),
        id: RawId::NONE,
        request: Err(rejection),
    };
    assert!(matches!(
        &feed(&mut s, 1, input)[..],
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
fn connect_then_status_then_same_config_is_already_active() {
    let mut s = Supervisor::new(config(), at(0), None);
    let (inspect, _) = inspect_in(&request(
        &mut s,
        1,
        1,
        1,
        Request::RuntimeConnect { config_id: 3 },
    ));
    assert_eq!(status(&mut s).runtime_status, "starting");
    let effects = feed(&mut s, 2, inspected(inspect, &[3]));
    let (core, spec) = start_in(&effects);
    assert_eq!(spec, CoreSpec::Session { config_id: 3 });
    assert!(stops_in(&effects).is_empty(), "nothing to stop");
    feed(&mut s, 3, started(core, Some(session(10, 3)), Vec::new()));
    let effects = feed(&mut s, 4, Input::CoreReady { core });
    assert!(
        matches!(only_reply(&effects), Reply::Connected(p) if p.session_id == 10 && !p.already_active && p.replaced_session_id.is_none())
    );
    let st = status(&mut s);
    assert_eq!(
        (st.runtime_status.as_str(), st.pid, st.pid_running),
        ("running", Some(4010), true)
    );
    let effects = request(&mut s, 5, 1, 2, Request::RuntimeConnect { config_id: 3 });
    assert!(matches!(only_reply(&effects), Reply::Connected(p) if p.already_active));
    assert!(!s.is_busy());
}

#[test]
fn a_connect_to_another_config_stops_the_old_core_first() {
    let mut s = Supervisor::new(config(), at(0), Some(session(10, 3)));
    let old = s.adopted_core().unwrap();
    let (inspect, _) = inspect_in(&request(
        &mut s,
        1,
        1,
        1,
        Request::RuntimeConnect { config_id: 4 },
    ));
    let effects = feed(&mut s, 2, inspected(inspect, &[4]));
    assert_eq!(stops_in(&effects), [(old, STOP_GRACE_MS)]);
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::StartCore { .. })),
        "not before the old one exited"
    );
    let effects = feed(&mut s, 3, exited(old));
    assert_eq!(ends_in(&effects), [(10, "replaced".to_string())]);
    let (core, _) = start_in(&effects);
    feed(&mut s, 4, started(core, Some(session(11, 4)), Vec::new()));
    let effects = feed(&mut s, 5, Input::CoreReady { core });
    assert!(
        matches!(only_reply(&effects), Reply::Connected(p) if p.replaced_session_id == Some(10))
    );
    assert_eq!(s.session().map(|s| s.id), Some(11));
}

#[test]
fn a_connect_refused_by_the_store_keeps_the_old_session() {
    let mut s = Supervisor::new(config(), at(0), Some(session(10, 3)));
    let (inspect, _) = inspect_in(&request(
        &mut s,
        1,
        1,
        1,
        Request::RuntimeConnect { config_id: 99 },
    ));
    let effects = feed(&mut s, 2, inspected(inspect, &[]));
    assert_eq!(replies(&effects), [(1, "1".into(), Some(Code::NotFound))]);
    assert!(stops_in(&effects).is_empty());
    assert_eq!(status(&mut s).session_id, Some(10));
}

#[test]
fn a_connect_whose_core_is_not_ready_stops_it_then_answers_504_after_its_exit() {
    let mut s = Supervisor::new(config(), at(0), None);
    let (inspect, _) = inspect_in(&request(
        &mut s,
        1,
        1,
        1,
        Request::RuntimeConnect { config_id: 3 },
    ));
    let (core, _) = start_in(&feed(&mut s, 2, inspected(inspect, &[3])));
    feed(&mut s, 3, started(core, Some(session(10, 3)), Vec::new()));
    let failure = StartFailure::NotReady {
        addr: addr(1080),
        log_tail: "    bind: in use".into(),
    };
    let effects = feed(&mut s, 5_003, Input::CoreFailed { core, failure });
    assert_eq!(stops_in(&effects), [(core, 0)]);
    assert_eq!(replies(&effects), [], "the answer waits for the exit");
    assert!(s.is_busy());
    let effects = feed(&mut s, 5_004, exited(core));
    let reply = only_reply(&effects);
    assert!(
        matches!(reply, Reply::Error { code: Code::Timeout, message } if message.contains("127.0.0.1:1080") && message.contains("bind: in use")),
        "{reply:?}"
    );
    assert!(!s.is_busy());
    assert_eq!(s.live_cores(), (0, 0, 0));
    assert_eq!(status(&mut s).runtime_status, "idle");
}

#[test]
fn a_connect_refused_at_spawn_answers_at_once() {
    let mut s = Supervisor::new(config(), at(0), None);
    let (inspect, _) = inspect_in(&request(
        &mut s,
        1,
        1,
        1,
        Request::RuntimeConnect { config_id: 3 },
    ));
    let (core, _) = start_in(&feed(&mut s, 2, inspected(inspect, &[3])));
    let failure = StartFailure::Refused(Rejection::new(Code::Internal, "spawn failed"));
    let effects = feed(&mut s, 3, Input::CoreFailed { core, failure });
    assert_eq!(replies(&effects), [(1, "1".into(), Some(Code::Internal))]);
    assert!(stops_in(&effects).is_empty());
    assert_eq!(s.live_cores(), (0, 0, 0));
}

#[test]
fn a_core_that_exits_at_start_fails_the_connect() {
    let mut s = Supervisor::new(config(), at(0), None);
    let (inspect, _) = inspect_in(&request(
        &mut s,
        1,
        1,
        1,
        Request::RuntimeConnect { config_id: 3 },
    ));
    let (core, _) = start_in(&feed(&mut s, 2, inspected(inspect, &[3])));
    feed(&mut s, 3, started(core, Some(session(10, 3)), Vec::new()));
    let effects = feed(&mut s, 4, exited(core));
    assert_eq!(replies(&effects), [(1, "1".into(), Some(Code::Timeout))]);
    assert_eq!(ends_in(&effects), [(10, "failed".to_string())]);
    assert_eq!(s.session(), None);
}

#[test]
fn disconnect_needs_a_session_and_core_exit_degrades() {
    let mut s = Supervisor::new(config(), at(0), None);
    let effects = request(&mut s, 1, 1, 1, Request::RuntimeDisconnect);
    assert_eq!(replies(&effects), [(1, "1".into(), Some(Code::Conflict))]);

    let mut s = Supervisor::new(config(), at(0), Some(session(7, 2)));
    let core = s.adopted_core().unwrap();
    let input = Input::CoreExited {
        core,
        how: "killed by signal 9".into(),
        log_tail: String::new(),
    };
    let effects = feed(&mut s, 1, input);
    assert_eq!(
        ends_in(&effects),
        [(7, "core_exited: killed by signal 9".to_string())]
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
    let effects = request(&mut s, 2, 1, 2, Request::RuntimeDisconnect);
    assert!(stops_in(&effects).is_empty(), "nothing left to stop");
    assert!(matches!(only_reply(&effects), Reply::Disconnected(p) if p.stopped_session == 7));
    assert_eq!(status(&mut s).runtime_status, "idle");
}

#[test]
fn disconnect_stops_the_core_and_answers_after_its_exit() {
    let mut s = Supervisor::new(config(), at(0), Some(session(7, 2)));
    let core = s.adopted_core().unwrap();
    let effects = request(&mut s, 1, 1, 1, Request::RuntimeDisconnect);
    assert_eq!(stops_in(&effects), [(core, STOP_GRACE_MS)]);
    assert_eq!(replies(&effects), []);
    assert_eq!(status(&mut s).runtime_status, "stopping");
    let effects = feed(&mut s, 2, exited(core));
    assert_eq!(ends_in(&effects), [(7, "disconnected".to_string())]);
    assert!(matches!(only_reply(&effects), Reply::Disconnected(p) if p.stopped_session == 7));
}

#[test]
fn shutdown_stops_the_session_before_exiting() {
    let mut s = Supervisor::new(config(), at(0), Some(session(7, 2)));
    let core = s.adopted_core().unwrap();
    let effects = request(&mut s, 1, 1, 1, Request::DaemonShutdown);
    assert!(
        matches!(&effects[0], Effect::Reply { reply: Reply::Shutdown(p), .. } if p.runtime_disconnected)
    );
    assert_eq!(stops_in(&effects), [(core, STOP_GRACE_MS)]);
    assert!(!effects.contains(&Effect::Shutdown));
    let effects = feed(&mut s, 2, exited(core));
    assert_eq!(effects.last(), Some(&Effect::Shutdown));
}
