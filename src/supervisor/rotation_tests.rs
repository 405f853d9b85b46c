//! Unit tests of the rotation policy: the switch sequence with its fallback and restore, the
//! early decision, the triggers, the cooldown and health accounting.

use crate::ipc::protocol::Trigger;

use super::tests::{
    addr, at, config, connect, ends_in, exited, feed, inspect_in, inspected, only_reply, probes_in,
    replies, request, session, start_in, started, status, stops_in,
};
use super::*;

fn rotating() -> SupervisorConfig {
    SupervisorConfig {
        rotation_enabled: true,
        rotation_interval_secs: 100,
        cooldown_secs: 50,
        test_concurrency: 2,
        ..config()
    }
}

fn inbound(config_id: i64) -> std::net::SocketAddr {
    addr(2000 + config_id as u16)
}

fn manual(candidate_id: Option<i64>) -> Request {
    Request::RuntimeReplace {
        trigger: Trigger::Manual,
        candidate_id,
    }
}

fn persisted(effects: &[Effect]) -> Option<RotationEvent> {
    effects.iter().find_map(|e| match e {
        Effect::Persist(event) => Some(event.clone()),
        _ => None,
    })
}

fn replaced(effects: &[Effect]) -> crate::ipc::protocol::ReplacePayload {
    match only_reply(effects) {
        Reply::Replaced(p) => (**p).clone(),
        other => panic!("expected a replace reply, got {other:?}"),
    }
}

/// A session on config 1 (session 1, adopted) and a manual rotation on connection 1 with
/// configs 1..=`n` enabled; returns (old core, batch core, probe per candidate) once the batch
/// is ready at 1 000 ms.
fn batch_ready(s: &mut Supervisor, n: i64) -> (CoreId, CoreId, Vec<(ProbeId, i64)>) {
    let old = s.adopted_core().expect("adopted");
    let (inspect, selection) = inspect_in(&request(s, 10, 1, 1, manual(None)));
    assert_eq!(selection, Selection::Enabled);
    let ids: Vec<i64> = (1..=n).collect();
    let (batch, spec) = start_in(&feed(s, 20, inspected(inspect, &ids)));
    assert_eq!(
        spec,
        CoreSpec::Batch {
            config_ids: (2..=n).collect()
        },
        "the active config is no candidate"
    );
    let inbounds = (2..=n).map(|id| (id, inbound(id))).collect();
    feed(s, 30, started(batch, None, inbounds));
    let probes = probes_in(&feed(s, 1_000, Input::CoreReady { core: batch }));
    let probes = probes
        .into_iter()
        .map(|(probe, a)| (probe, i64::from(a.port()) - 2000))
        .collect();
    (old, batch, probes)
}

fn probe_of(probes: &[(ProbeId, i64)], config_id: i64) -> ProbeId {
    probes.iter().find(|p| p.1 == config_id).expect("probed").0
}

fn done(probe: ProbeId, result: Result<u64, &str>) -> Input {
    Input::ProbeDone {
        probe,
        result: result.map_err(String::from),
    }
}

/// Starts `config_id` on the user's ports as the next step of a switch; returns its core.
fn takes_over(
    s: &mut Supervisor,
    effects: &[Effect],
    ms: u64,
    config_id: i64,
    session_id: i64,
) -> (CoreId, Vec<Effect>) {
    let (core, spec) = start_in(effects);
    assert_eq!(spec, CoreSpec::Session { config_id });
    feed(
        s,
        ms,
        started(core, Some(session(session_id, config_id)), Vec::new()),
    );
    (core, feed(s, ms + 1, Input::CoreReady { core }))
}

#[test]
fn replace_needs_a_session() {
    let mut s = Supervisor::new(config(), at(0), None);
    let effects = request(&mut s, 1, 1, 1, manual(None));
    assert_eq!(replies(&effects), [(1, "1".into(), Some(Code::Conflict))]);
}

#[test]
fn the_best_candidate_is_switched_to_and_the_answer_waits_for_the_batch_core() {
    let mut s = Supervisor::new(rotating(), at(0), Some(session(1, 1)));
    let (old, batch, probes) = batch_ready(&mut s, 3);
    assert_eq!(probes.len(), 2);
    feed(&mut s, 1_060, done(probe_of(&probes, 3), Ok(60)));
    let effects = feed(&mut s, 1_070, done(probe_of(&probes, 2), Ok(70)));
    assert_eq!(stops_in(&effects), [(batch, 0), (old, STOP_GRACE_MS)]);
    let effects = feed(&mut s, 1_100, exited(old));
    assert_eq!(ends_in(&effects), [(1, "rotated".to_string())]);
    let (core, effects) = takes_over(&mut s, &effects, 1_200, 3, 2);
    let [(verify, a)] = probes_in(&effects)[..] else {
        panic!("one verify probe: {effects:?}")
    };
    assert_eq!(a, addr(1080), "verified on the user's port");
    let effects = feed(&mut s, 1_300, done(verify, Ok(30)));
    let event = persisted(&effects).expect("recorded");
    assert_eq!(
        (event.result, event.from_config_id, event.to_config_id),
        (ReplaceResult::Switched, Some(1), Some(3))
    );
    assert_eq!(replies(&effects), [], "the batch core has not exited yet");
    assert!(s.is_busy());
    let effects = feed(&mut s, 1_400, exited(batch));
    let p = replaced(&effects);
    assert_eq!(
        (
            p.result.as_str(),
            p.replaced,
            p.new_config_id,
            p.new_session_id
        ),
        ("switched", true, Some(3), Some(2))
    );
    assert_eq!(p.tested_candidates, 2);
    assert!(!s.is_busy());
    assert_eq!(s.session().map(|s| s.config_id), Some(3));
    assert_eq!(s.adopted_core(), Some(core));
}

#[test]
fn the_batch_is_decided_early_at_the_deadline_poll_timeout_gives() {
    let mut s = Supervisor::new(rotating(), at(0), Some(session(1, 1)));
    let (_, batch, probes) = batch_ready(&mut s, 3);
    assert!(feed(&mut s, 1_040, done(probe_of(&probes, 2), Ok(40))).is_empty());
    assert_eq!(
        s.poll_timeout(),
        Some(1_041),
        "once config 3 ran longer than 40 ms"
    );
    let effects = feed(&mut s, 1_041, Input::Timer);
    assert_eq!(stops_in(&effects)[0], (batch, 0));
    let core = s.adopted_core().unwrap();
    let effects = feed(&mut s, 1_050, exited(core));
    assert_eq!(
        start_in(&effects).1,
        CoreSpec::Session { config_id: 2 },
        "never the undecided one"
    );
    assert!(
        feed(&mut s, 1_060, done(probe_of(&probes, 3), Ok(20))).is_empty(),
        "a late answer is ignored"
    );
}

#[test]
fn a_candidate_that_fails_its_verify_probe_is_stopped_and_the_next_one_tried() {
    let mut s = Supervisor::new(rotating(), at(0), Some(session(1, 1)));
    let (old, batch, probes) = batch_ready(&mut s, 3);
    feed(&mut s, 1_050, done(probe_of(&probes, 2), Ok(50)));
    feed(&mut s, 1_080, done(probe_of(&probes, 3), Ok(80)));
    feed(&mut s, 1_090, exited(batch));
    let effects = feed(&mut s, 1_100, exited(old));
    let (first, effects) = takes_over(&mut s, &effects, 1_200, 2, 2);
    let verify = probes_in(&effects)[0].0;
    let effects = feed(&mut s, 1_300, done(verify, Err("timeout")));
    assert_eq!(stops_in(&effects), [(first, STOP_GRACE_MS)]);
    let effects = feed(&mut s, 1_400, exited(first));
    assert_eq!(ends_in(&effects), [(2, "failed_probe".to_string())]);
    let (_, effects) = takes_over(&mut s, &effects, 1_500, 3, 3);
    let effects = feed(&mut s, 1_600, done(probes_in(&effects)[0].0, Ok(10)));
    let p = replaced(&effects);
    assert_eq!((p.result.as_str(), p.new_config_id), ("switched", Some(3)));
    assert!(
        p.detail
            .contains("config 2 failed its probe after the switch"),
        "{}",
        p.detail
    );
}

#[test]
fn the_old_config_is_restored_when_every_candidate_fails() {
    let mut s = Supervisor::new(rotating(), at(0), Some(session(1, 1)));
    let (old, batch, probes) = batch_ready(&mut s, 2);
    feed(&mut s, 1_050, done(probe_of(&probes, 2), Ok(50)));
    feed(&mut s, 1_060, exited(batch));
    let effects = feed(&mut s, 1_100, exited(old));
    let (c2, _) = start_in(&effects);
    feed(&mut s, 1_150, started(c2, Some(session(2, 2)), Vec::new()));
    let failure = StartFailure::NotReady {
        addr: addr(1080),
        log_tail: String::new(),
    };
    let effects = feed(&mut s, 6_150, Input::CoreFailed { core: c2, failure });
    assert_eq!(stops_in(&effects), [(c2, 0)]);
    let effects = feed(&mut s, 6_151, exited(c2));
    assert_eq!(ends_in(&effects), [(2, "not_ready".to_string())]);
    let (_, effects) = takes_over(&mut s, &effects, 6_200, 1, 3);
    assert!(
        probes_in(&effects).is_empty(),
        "the restore is not verified"
    );
    assert_eq!(
        persisted(&effects).map(|e| e.result),
        Some(ReplaceResult::Restored)
    );
    let p = replaced(&effects);
    assert_eq!(
        (
            p.result.as_str(),
            p.replaced,
            p.new_config_id,
            p.new_session_id
        ),
        ("restored", false, Some(1), Some(3))
    );
}

#[test]
fn nothing_runs_when_the_restore_fails_too() {
    let mut s = Supervisor::new(rotating(), at(0), Some(session(1, 1)));
    let (old, batch, probes) = batch_ready(&mut s, 2);
    feed(&mut s, 1_050, done(probe_of(&probes, 2), Ok(50)));
    feed(&mut s, 1_060, exited(batch));
    let effects = feed(&mut s, 1_100, exited(old));
    let refused = |core| Input::CoreFailed {
        core,
        failure: StartFailure::Refused(Rejection::new(Code::Internal, "port in use")),
    };
    let effects = feed(&mut s, 1_200, refused(start_in(&effects).0));
    let (restore, spec) = start_in(&effects);
    assert_eq!(spec, CoreSpec::Session { config_id: 1 });
    let effects = feed(&mut s, 1_300, refused(restore));
    assert_eq!(
        persisted(&effects).map(|e| (e.result, e.to_config_id)),
        Some((ReplaceResult::Failed, None))
    );
    assert_eq!(replaced(&effects).result, "failed");
    assert_eq!(s.session(), None);
    assert_eq!(status(&mut s).runtime_status, "idle");
}

#[test]
fn no_working_candidate_leaves_the_old_session_untouched() {
    let mut s = Supervisor::new(rotating(), at(0), Some(session(1, 1)));
    let (_, batch, probes) = batch_ready(&mut s, 3);
    feed(&mut s, 1_100, done(probe_of(&probes, 2), Err("refused")));
    let effects = feed(&mut s, 6_000, done(probe_of(&probes, 3), Err("timeout")));
    assert_eq!(
        stops_in(&effects),
        [(batch, 0)],
        "only the batch core is stopped"
    );
    assert!(ends_in(&effects).is_empty());
    assert_eq!(
        persisted(&effects).map(|e| e.result),
        Some(ReplaceResult::NoWorkingCandidate)
    );
    let p = replaced(&feed(&mut s, 6_001, exited(batch)));
    assert_eq!(
        (p.result.as_str(), p.replaced, p.new_session_id),
        ("no_working_candidate", false, Some(1))
    );
    assert_eq!(status(&mut s).runtime_status, "running");
}

#[test]
fn a_named_candidate_that_does_not_exist_is_404() {
    let mut s = Supervisor::new(rotating(), at(0), Some(session(1, 1)));
    let (inspect, selection) = inspect_in(&request(&mut s, 1, 1, 1, manual(Some(9))));
    assert_eq!(selection, Selection::One(9));
    let effects = feed(&mut s, 2, inspected(inspect, &[]));
    assert_eq!(replies(&effects), [(1, "1".into(), Some(Code::NotFound))]);
    assert_eq!(persisted(&effects), None);
    assert!(!s.is_busy());
}

#[test]
fn a_named_candidate_is_the_only_one_tested() {
    let mut s = Supervisor::new(rotating(), at(0), Some(session(1, 1)));
    let (inspect, _) = inspect_in(&request(&mut s, 1, 1, 1, manual(Some(3))));
    let (_, spec) = start_in(&feed(&mut s, 2, inspected(inspect, &[3])));
    assert_eq!(
        spec,
        CoreSpec::Batch {
            config_ids: vec![3]
        }
    );
}

#[test]
fn a_batch_core_that_crashed_is_not_stopped_again() {
    let mut s = Supervisor::new(rotating(), at(0), Some(session(1, 1)));
    let (_, batch, probes) = batch_ready(&mut s, 2);
    feed(&mut s, 1_010, exited(batch));
    let effects = feed(
        &mut s,
        1_011,
        done(probe_of(&probes, 2), Err("connection reset")),
    );
    assert_eq!(stops_in(&effects), []);
    assert_eq!(replaced(&effects).result, "no_working_candidate");
}

#[test]
fn the_timer_rotates_and_the_cooldown_skips_one() {
    let cfg = SupervisorConfig {
        cooldown_secs: 150,
        ..rotating()
    };
    let mut s = Supervisor::new(cfg, at(0), Some(session(1, 1)));
    assert_eq!(
        s.poll_timeout(),
        Some(15_000),
        "the health tick comes first"
    );
    let effects = feed(&mut s, 100_000, Input::Timer);
    let (inspect, selection) = inspect_in(&effects);
    assert_eq!(selection, Selection::Enabled);
    let effects = feed(&mut s, 100_010, inspected(inspect, &[1]));
    let event = persisted(&effects).expect("recorded");
    assert_eq!(
        (event.trigger, event.result),
        (Trigger::Timer, ReplaceResult::NoWorkingCandidate)
    );
    assert_eq!(replies(&effects), [], "nobody asked");
    let st = s.proxy_status(at(100_010));
    assert!(st.cooldown_active);
    assert_eq!(st.next_rotation_at, Some(1_700_000_000 + 200));
    // Due at 200 s, inside the cooldown (until 250 s): skipped to 300 s.
    let effects = feed(&mut s, 200_010, Input::Timer);
    assert!(!effects.iter().any(|e| matches!(e, Effect::Inspect { .. })));
    assert_eq!(
        s.proxy_status(at(200_010)).next_rotation_at,
        Some(1_700_000_000 + 300)
    );
    let effects = feed(&mut s, 300_010, Input::Timer);
    inspect_in(&effects);
}

#[test]
fn a_manual_rotation_runs_inside_the_cooldown() {
    let mut s = Supervisor::new(rotating(), at(0), Some(session(1, 1)));
    let (inspect, _) = inspect_in(&feed(&mut s, 100_000, Input::Timer));
    feed(&mut s, 100_010, inspected(inspect, &[1]));
    let (inspect, _) = inspect_in(&request(&mut s, 100_020, 1, 1, manual(None)));
    let p = replaced(&feed(&mut s, 100_030, inspected(inspect, &[1])));
    assert_eq!(
        (p.trigger, p.result.as_str()),
        (Trigger::Manual, "no_working_candidate")
    );
    let st = s.proxy_status(at(100_030));
    assert_eq!(
        (st.last_trigger.as_deref(), st.last_result.as_deref()),
        (Some("manual"), Some("no_working_candidate"))
    );
}

fn failing_tick(s: &mut Supervisor, ms: u64) -> Vec<Effect> {
    let probes = probes_in(&feed(s, ms, Input::Timer));
    assert_eq!(probes.len(), 1, "one health probe");
    assert_eq!(probes[0].1, addr(1080));
    let (events, rest): (Vec<Effect>, Vec<Effect>) =
        feed(s, ms + 10, done(probes[0].0, Err("timeout")))
            .into_iter()
            .partition(|e| matches!(e, Effect::Publish(_)));
    // The failed probe is published, and is the only event: the rest is what the tests look at.
    let names: Vec<&str> = events
        .iter()
        .map(|e| match e {
            Effect::Publish(event) => event.body.name(),
            _ => unreachable!(),
        })
        .collect();
    assert!(names.starts_with(&["health_checked"]), "{names:?}");
    rest.into_iter().chain(events.into_iter().skip(1)).collect()
}

#[test]
fn health_failures_rotate_but_wait_for_the_cooldown() {
    let mut s = Supervisor::new(rotating(), at(0), Some(session(1, 1)));
    assert!(failing_tick(&mut s, 15_000).is_empty());
    assert!(failing_tick(&mut s, 30_000).is_empty());
    assert_eq!(status(&mut s).health.consecutive_failures, 2);
    let (inspect, _) = inspect_in(&failing_tick(&mut s, 45_000));
    let effects = feed(&mut s, 46_000, inspected(inspect, &[1]));
    assert_eq!(
        persisted(&effects).map(|e| e.trigger),
        Some(Trigger::HealthCheckFailed)
    );
    assert_eq!(
        status(&mut s).session_id,
        Some(1),
        "the old session is kept"
    );
    // Still failing inside the cooldown (until 96 s): the trigger waits for its end.
    assert!(failing_tick(&mut s, 60_000).is_empty());
    assert_eq!(s.poll_timeout(), Some(75_000));
    inspect_in(&feed(&mut s, 96_000, Input::Timer));
}

#[test]
fn a_waiting_health_trigger_lapses_when_the_session_recovers() {
    let mut s = Supervisor::new(rotating(), at(0), Some(session(1, 1)));
    failing_tick(&mut s, 15_000);
    failing_tick(&mut s, 30_000);
    let (inspect, _) = inspect_in(&failing_tick(&mut s, 45_000));
    feed(&mut s, 46_000, inspected(inspect, &[1]));
    failing_tick(&mut s, 60_000);
    let probe = probes_in(&feed(&mut s, 75_000, Input::Timer))[0].0;
    feed(&mut s, 75_010, done(probe, Ok(20)));
    let effects = feed(&mut s, 96_000, Input::Timer);
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Inspect { .. })),
        "{effects:?}"
    );
}

#[test]
fn a_waiting_health_trigger_lapses_when_a_connect_replaces_the_session() {
    let cfg = SupervisorConfig {
        failure_threshold: 1,
        ..rotating()
    };
    let mut s = Supervisor::new(cfg, at(0), Some(session(1, 1)));
    let (inspect, _) = inspect_in(&failing_tick(&mut s, 15_000));
    feed(&mut s, 16_000, inspected(inspect, &[1]));
    assert!(
        failing_tick(&mut s, 30_000).is_empty(),
        "waits for the cooldown"
    );
    let old = s.adopted_core().unwrap();
    let (inspect, _) = inspect_in(&request(
        &mut s,
        40_000,
        1,
        1,
        Request::RuntimeConnect { config_id: 2 },
    ));
    feed(&mut s, 40_001, inspected(inspect, &[2]));
    let (core, _) = start_in(&feed(&mut s, 40_002, exited(old)));
    feed(
        &mut s,
        40_003,
        started(core, Some(session(2, 2)), Vec::new()),
    );
    feed(&mut s, 40_004, Input::CoreReady { core });
    let effects = feed(&mut s, 66_000, Input::Timer);
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Inspect { .. })),
        "{effects:?}"
    );
}

#[test]
fn a_dead_core_rotates_at_once_even_in_cooldown_but_only_when_enabled() {
    let mut s = Supervisor::new(rotating(), at(0), Some(session(1, 1)));
    let (inspect, _) = inspect_in(&request(&mut s, 1, 1, 1, manual(None)));
    feed(&mut s, 2, inspected(inspect, &[1]));
    assert!(s.proxy_status(at(3)).cooldown_active);
    let core = s.adopted_core().unwrap();
    let effects = feed(&mut s, 3, exited(core));
    assert_eq!(ends_in(&effects)[0].0, 1);
    let (inspect, _) = inspect_in(&effects);
    let effects = feed(&mut s, 4, inspected(inspect, &[1]));
    assert_eq!(
        persisted(&effects).map(|e| e.trigger),
        Some(Trigger::HealthCheckFailed)
    );

    let mut s = Supervisor::new(config(), at(0), Some(session(1, 1)));
    let core = s.adopted_core().unwrap();
    let effects = feed(&mut s, 3, exited(core));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Inspect { .. })));
    assert_eq!(status(&mut s).runtime_status, "degraded");
}

#[test]
fn a_core_that_dies_during_a_connect_is_rotated_once_the_connect_fails() {
    let mut s = Supervisor::new(rotating(), at(0), Some(session(1, 1)));
    let (inspect, _) = inspect_in(&request(
        &mut s,
        1,
        1,
        1,
        Request::RuntimeConnect { config_id: 9 },
    ));
    let core = s.adopted_core().unwrap();
    let effects = feed(&mut s, 2, exited(core));
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Inspect { .. })),
        "busy"
    );
    let effects = feed(&mut s, 3, inspected(inspect, &[]));
    assert_eq!(replies(&effects), [(1, "1".into(), Some(Code::NotFound))]);
    assert_eq!(inspect_in(&effects).1, Selection::Enabled);
}

#[test]
fn proxy_status_reports_settings_and_the_last_rotation() {
    let mut s = Supervisor::new(config(), at(0), None);
    let st = s.proxy_status(at(1));
    assert!(!st.rotation_enabled && !st.cooldown_active);
    assert_eq!(
        (
            st.interval_secs,
            st.cooldown_secs,
            st.health_failure_threshold
        ),
        (1800, 300, 3)
    );
    assert_eq!((st.next_rotation_at, st.last_result.clone()), (None, None));
    let effects = request(&mut s, 1_000, 1, 1, Request::ProxyStart);
    assert!(matches!(only_reply(&effects), Reply::Rotation(p) if p.rotation_enabled));
    assert_eq!(
        s.proxy_status(at(1_000)).next_rotation_at,
        Some(1_700_000_001 + 1800)
    );
    connect(&mut s, 2_000, 1, 1);
    let (inspect, _) = inspect_in(&request(&mut s, 3_000, 1, 2, manual(None)));
    let (batch, _) = start_in(&feed(&mut s, 3_001, inspected(inspect, &[1, 2])));
    feed(&mut s, 3_002, started(batch, None, vec![(2, inbound(2))]));
    let probe = probes_in(&feed(&mut s, 3_003, Input::CoreReady { core: batch }))[0].0;
    let effects = feed(&mut s, 3_010, done(probe, Ok(7)));
    let old = stops_in(&effects)[1].0;
    feed(&mut s, 3_011, exited(batch));
    let effects = feed(&mut s, 3_012, exited(old));
    let (_, effects) = takes_over(&mut s, &effects, 3_013, 2, 2);
    feed(&mut s, 4_000, done(probes_in(&effects)[0].0, Ok(9)));
    let st = s.proxy_status(at(4_000));
    assert_eq!(st.last_trigger.as_deref(), Some("manual"));
    assert_eq!(st.last_result.as_deref(), Some("switched"));
    assert_eq!(st.last_candidate_config_id, Some(2));
    assert_eq!(st.last_rotation_at, Some(1_700_000_004));
    assert_eq!(st.active_config_id, Some(2));
    assert!(st.cooldown_active);
    assert_eq!(st.next_rotation_at, Some(1_700_000_004 + 1800));
    request(&mut s, 5_000, 1, 3, Request::ProxyStop);
    assert_eq!(s.proxy_status(at(5_000)).next_rotation_at, None);
}

#[test]
fn a_waiting_health_trigger_is_dropped_with_its_session() {
    let cfg = SupervisorConfig {
        failure_threshold: 1,
        ..rotating()
    };
    let mut s = Supervisor::new(cfg, at(0), Some(session(1, 1)));
    let (inspect, _) = inspect_in(&failing_tick(&mut s, 15_000));
    feed(&mut s, 16_000, inspected(inspect, &[1]));
    assert!(
        failing_tick(&mut s, 30_000).is_empty(),
        "waits for the cooldown (until 66 s)"
    );
    let core = s.adopted_core().unwrap();
    request(&mut s, 40_000, 1, 1, Request::RuntimeDisconnect);
    feed(&mut s, 40_001, exited(core));
    feed(&mut s, 66_000, Input::Timer);
    let next = s.poll_timeout().unwrap();
    assert!(next > 66_000, "the deadline {next} stays in the past");
}
