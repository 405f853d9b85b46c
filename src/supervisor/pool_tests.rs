//! Front mode: the pool, the route, passive failover, make-before-break and drain.

use super::respawn_tests::respawn_refused;
use super::tests::*;
use super::*;
use std::net::SocketAddr;

use crate::ipc::protocol::{Code, Request, Trigger};

pub(super) fn front() -> SupervisorConfig {
    SupervisorConfig {
        front: true,
        rotation_enabled: true,
        pool_size: 2,
        ..config()
    }
}

pub(super) fn member_addr(core: CoreId, config_id: i64) -> SocketAddr {
    addr(10_000 + core.0 as u16 * 10 + config_id as u16)
}

pub(super) fn routes(effects: &[Effect]) -> Vec<Vec<i64>> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Route { targets } => Some(targets.iter().map(|t| t.config_id).collect()),
            _ => None,
        })
        .collect()
}

pub(super) fn begun(core: CoreId, config_id: i64, session_id: i64) -> Input {
    let mut info = session(session_id, config_id);
    info.socks_addr = member_addr(core, config_id);
    Input::SessionBegun {
        core,
        config_id,
        session: Ok(info),
    }
}

/// Connects `config_id` in front mode with `others` enabled; returns the pool core.
pub(super) fn front_connect(
    s: &mut Supervisor,
    ms: u64,
    config_id: i64,
    others: &[i64],
    sid: i64,
) -> CoreId {
    let effects = request(s, ms, 1, 1, Request::RuntimeConnect { config_id });
    let (inspect, selection) = inspect_in(&effects);
    assert_eq!(selection, Selection::WithEnabled(config_id));
    let mut ids = vec![config_id];
    ids.extend_from_slice(others);
    let effects = feed(s, ms, inspected(inspect, &ids));
    let (core, spec) = start_in(&effects);
    let CoreSpec::Pool { config_ids } = spec else {
        panic!("expected a pool core, got {spec:?}");
    };
    assert_eq!(config_ids[0], config_id);
    let inbounds = config_ids
        .iter()
        .map(|id| (*id, member_addr(core, *id)))
        .collect();
    feed(s, ms, started(core, None, inbounds));
    let effects = feed(s, ms, Input::CoreReady { core });
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::BeginSession { config_id: c, .. } if *c == config_id)),
        "{effects:?}"
    );
    let effects = feed(s, ms, begun(core, config_id, sid));
    assert!(matches!(only_reply(&effects), Reply::Connected(p) if p.session_id == sid));
    assert_eq!(routes(&effects), [vec![config_id]]);
    core
}

/// Answers every probe in `effects` with `result` for the members in `ok`, failure otherwise.
fn answer_probes(
    s: &mut Supervisor,
    ms: u64,
    effects: &[Effect],
    ok: &[i64],
    core: CoreId,
) -> Vec<Effect> {
    let mut out = Vec::new();
    for (probe, addr) in probes_in(effects) {
        let config_id = (addr.port() - 10_000 - core.0 as u16 * 10) as i64;
        let result = if ok.contains(&config_id) {
            Ok(5 + config_id as u64)
        } else {
            Err("connection refused".into())
        };
        out.extend(feed(s, ms, Input::ProbeDone { probe, result }));
    }
    out
}

#[test]
fn connect_starts_a_pool_and_routes_alive_members_after_their_probes() {
    let mut s = Supervisor::new(front(), at(0), None);
    let core = front_connect(&mut s, 0, 1, &[2, 3, 4], 10);
    // pool_size 2: members 1, 2, 3.
    let effects = feed(&mut s, 1, Input::Timer);
    assert_eq!(probes_in(&effects).len(), 3, "{effects:?}");
    let effects = answer_probes(&mut s, 2, &effects, &[1, 3], core);
    assert_eq!(routes(&effects).last().unwrap(), &vec![1, 3]);
    let status = status(&mut s);
    assert_eq!(status.mode, "front");
    assert_eq!(status.pool.len(), 3);
    assert!(status.pool[0].active && status.pool[0].config_id == 1);
    assert!(!status.pool.iter().find(|m| m.config_id == 2).unwrap().alive);
}

#[test]
fn manual_replace_to_a_warm_member_starts_no_process() {
    let mut s = Supervisor::new(front(), at(0), None);
    let core = front_connect(&mut s, 0, 1, &[2, 3], 10);
    let effects = feed(&mut s, 1, Input::Timer);
    answer_probes(&mut s, 2, &effects, &[1, 2, 3], core);
    let replace = Request::RuntimeReplace {
        trigger: Trigger::Manual,
        candidate_id: None,
    };
    let effects = request(&mut s, 3, 1, 2, replace);
    assert!(start_in_opt(&effects).is_none());
    assert!(stops_in(&effects).is_empty());
    let effects = feed(&mut s, 3, begun(core, 2, 11));
    match only_reply(&effects) {
        Reply::Replaced(p) => {
            assert!(p.replaced);
            assert_eq!(p.new_config_id, Some(2));
            assert_eq!(p.new_session_id, Some(11));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ends_in(&effects), [(10, "rotated".to_string())]);
    assert_eq!(routes(&effects).last().unwrap(), &vec![2, 1, 3]);
}

#[test]
fn passive_failures_move_the_route_at_once_and_switch_without_cooldown() {
    let mut s = Supervisor::new(front(), at(0), None);
    let core = front_connect(&mut s, 0, 1, &[2, 3], 10);
    let effects = feed(&mut s, 1, Input::Timer);
    answer_probes(&mut s, 2, &effects, &[1, 2, 3], core);
    // A rotation just ran, so the cooldown is on; passive failover ignores it.
    s.rotation.cooldown_until_ms = 1_000_000;
    let fail = |config_id| Input::RelayFailed {
        core,
        config_id,
        failure: RelayFailure::SocksReply(5),
    };
    assert!(routes(&feed(&mut s, 100, fail(1))).is_empty());
    let effects = feed(&mut s, 150, fail(1));
    assert_eq!(routes(&effects), [vec![2, 3]], "{effects:?}");
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::BeginSession { config_id: 2, .. })),
        "{effects:?}"
    );
    let effects = feed(&mut s, 151, begun(core, 2, 11));
    assert_eq!(s.session().unwrap().config_id, 2);
    assert!(stops_in(&effects).is_empty());
    // The failed member is re-probed after retry_interval_ms; passing brings it back.
    let effects = feed(&mut s, 150 + 500, Input::Timer);
    let probes = probes_in(&effects);
    assert_eq!(probes.len(), 1);
    let effects = answer_probes(&mut s, 700, &effects, &[1], core);
    // Member 1 answers fastest (6 ms) of the others.
    assert_eq!(routes(&effects).last().unwrap(), &vec![2, 1, 3]);
}

#[test]
fn passive_failures_outside_the_window_do_not_add_up() {
    let mut s = Supervisor::new(front(), at(0), None);
    let core = front_connect(&mut s, 0, 1, &[2], 10);
    let effects = feed(&mut s, 1, Input::Timer);
    answer_probes(&mut s, 2, &effects, &[1, 2], core);
    let fail = Input::RelayFailed {
        core,
        config_id: 1,
        failure: RelayFailure::Refused,
    };
    feed(&mut s, 100, fail.clone());
    let effects = feed(&mut s, 100 + 2_000, fail);
    assert!(routes(&effects).is_empty(), "{effects:?}");
    assert_eq!(s.route()[0].config_id, 1);
}

#[test]
fn a_stall_earns_a_quick_reprobe_whose_failure_fails_over() {
    let mut s = Supervisor::new(front(), at(0), None);
    let core = front_connect(&mut s, 0, 1, &[2], 10);
    let effects = feed(&mut s, 1, Input::Timer);
    answer_probes(&mut s, 2, &effects, &[1, 2], core);
    let effects = feed(
        &mut s,
        1_000,
        Input::RelayFailed {
            core,
            config_id: 1,
            failure: RelayFailure::Stalled,
        },
    );
    assert!(routes(&effects).is_empty());
    let effects = feed(&mut s, 1_000, Input::Timer);
    let probes = probes_in(&effects);
    assert_eq!(probes.len(), 1);
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Probe {
            timeout_ms: 500,
            ..
        }
    )));
    // The re-probe times out: the member was already suspect, so it is dead now.
    let effects = answer_probes(&mut s, 1_500, &effects, &[], core);
    assert_eq!(routes(&effects), [vec![2]]);
    // Its stalled openings move to member 2, after the route that leaves member 1 out.
    let route_at = effects
        .iter()
        .position(|e| matches!(e, Effect::Route { .. }));
    let rerouted = reroutes(&effects);
    assert_eq!(
        rerouted.iter().map(|r| r.1).collect::<Vec<_>>(),
        [(core, 1)]
    );
    assert!(route_at < Some(rerouted[0].0), "{effects:?}");
    // Once per death.
    assert!(reroutes(&feed(&mut s, 1_600, Input::Timer)).is_empty());
}

/// The `Reroute` effects among `effects`: (position, (core, member)).
fn reroutes(effects: &[Effect]) -> Vec<(usize, (CoreId, i64))> {
    let at = |(i, e): (usize, &Effect)| match e {
        Effect::Reroute { core, config_id } => Some((i, (*core, *config_id))),
        _ => None,
    };
    effects.iter().enumerate().filter_map(at).collect()
}

#[test]
fn a_dead_member_left_as_the_last_resort_keeps_its_openings() {
    let mut s = Supervisor::new(front(), at(0), None);
    let core = front_connect(&mut s, 0, 1, &[2], 10);
    let effects = feed(&mut s, 1, Input::Timer);
    answer_probes(&mut s, 2, &effects, &[1, 2], core);
    let fail = |config_id| Input::RelayFailed {
        core,
        config_id,
        failure: RelayFailure::ClosedEarly,
    };
    feed(&mut s, 100, fail(2));
    let effects = feed(&mut s, 101, fail(2));
    assert_eq!(routes(&effects), [vec![1]]);
    assert_eq!(reroutes(&effects).len(), 1, "{effects:?}");
    // Now the active member dies too: it stays routed (nothing else is alive), and its
    // openings stay with it.
    feed(&mut s, 200, fail(1));
    let effects = feed(&mut s, 201, fail(1));
    assert_eq!(s.route().len(), 1, "{effects:?}");
    assert!(reroutes(&effects).is_empty(), "{effects:?}");
}

#[test]
fn connect_to_another_config_is_make_before_break_and_the_old_pool_drains() {
    let mut s = Supervisor::new(front(), at(0), None);
    let (old, effects) = connect_to_5(&mut s, &[5, 1]);
    let (new, _) = start_in(&effects);
    assert!(stops_in(&effects).is_empty(), "the old pool core runs on");
    feed(
        &mut s,
        11,
        started(
            new,
            None,
            vec![(5, member_addr(new, 5)), (1, member_addr(new, 1))],
        ),
    );
    feed(&mut s, 20, Input::CoreReady { core: new });
    let effects = feed(&mut s, 20, begun(new, 5, 11));
    assert!(
        matches!(only_reply(&effects), Reply::Connected(p) if p.replaced_session_id == Some(10))
    );
    assert_eq!(ends_in(&effects), [(10, "replaced".to_string())]);
    assert!(
        stops_in(&effects).is_empty(),
        "the old pool core drains first"
    );
    assert_eq!(s.draining().get(&old), Some(&(20 + 30_000)));
    let effects = feed(&mut s, 500, Input::CoreDrained { core: old });
    assert_eq!(stops_in(&effects), [(old, STOP_GRACE_MS)]);
}

#[test]
fn a_pool_core_that_never_drains_is_stopped_at_its_deadline() {
    let mut s = Supervisor::new(front(), at(0), None);
    let (old, effects) = connect_to_5(&mut s, &[5]);
    let (new, _) = start_in(&effects);
    feed(
        &mut s,
        11,
        started(new, None, vec![(5, member_addr(new, 5))]),
    );
    feed(&mut s, 20, Input::CoreReady { core: new });
    feed(&mut s, 20, begun(new, 5, 11));
    assert!(s.poll_timeout().unwrap() <= 20 + 30_000);
    let effects = feed(&mut s, 20 + 29_999, Input::Timer);
    assert!(!stops_in(&effects).iter().any(|(c, _)| *c == old));
    let effects = feed(&mut s, 20 + 30_000, Input::Timer);
    assert!(stops_in(&effects).iter().any(|(c, _)| *c == old));
}

#[test]
fn a_failed_pool_start_leaves_the_running_session_alone() {
    let mut s = Supervisor::new(front(), at(0), None);
    let (old, effects) = connect_to_5(&mut s, &[5]);
    let (new, _) = start_in(&effects);
    feed(
        &mut s,
        11,
        started(new, None, vec![(5, member_addr(new, 5))]),
    );
    let effects = feed(
        &mut s,
        5_011,
        Input::CoreFailed {
            core: new,
            failure: StartFailure::NotReady {
                addr: member_addr(new, 5),
                log_tail: String::new(),
            },
        },
    );
    assert_eq!(stops_in(&effects), [(new, 0)]);
    let effects = feed(&mut s, 5_020, exited(new));
    assert!(matches!(
        only_reply(&effects),
        Reply::Error {
            code: Code::Timeout,
            ..
        }
    ));
    assert_eq!(s.session().unwrap().id, 10);
    assert_eq!(s.route()[0].core, old);
}

#[test]
fn a_pool_core_that_exits_while_its_session_is_recorded_leaves_the_running_session_alone() {
    let mut s = Supervisor::new(front(), at(0), None);
    let (old, effects) = connect_to_5(&mut s, &[5]);
    let new = run_pool(&mut s, 11, &effects);
    let effects = feed(&mut s, 12, Input::CoreReady { core: new });
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::BeginSession { config_id: 5, .. })),
        "{effects:?}"
    );
    // The core dies before the row it asked for is written.
    let effects = feed(&mut s, 13, exited(new));
    assert!(
        matches!(
            only_reply(&effects),
            Reply::Error { code: Code::Timeout, message }
                if message.contains("while its session was being recorded")
                    && message.contains("killed by signal 15")
        ),
        "{effects:?}"
    );
    assert!(routes(&effects).is_empty(), "{effects:?}");
    assert_eq!(s.session().unwrap().id, 10);
    assert_eq!(s.route()[0].core, old);
    // The row, written after all, is ended at once and the running session stays.
    let effects = feed(&mut s, 14, begun(new, 5, 11));
    assert_eq!(ends_in(&effects), [(11, "failed".to_string())]);
    assert_eq!(s.session().unwrap().id, 10);
    assert_eq!(s.route()[0].core, old);
}

fn start_in_opt(effects: &[Effect]) -> Option<CoreId> {
    effects.iter().find_map(|e| match e {
        Effect::StartCore { core, .. } => Some(*core),
        _ => None,
    })
}

/// Starts the pool core a connect or rotation asked for in `effects`, every member listening.
/// A front session on config 1 (session 10), then `runtime_connect` to config 5 whose new pool
/// would hold `members`: the old pool core, and the effects that start the new one.
fn connect_to_5(s: &mut Supervisor, members: &[i64]) -> (CoreId, Vec<Effect>) {
    let old = front_connect(s, 0, 1, &[], 10);
    let effects = request(s, 10, 1, 2, Request::RuntimeConnect { config_id: 5 });
    let (inspect, _) = inspect_in(&effects);
    (old, feed(s, 10, inspected(inspect, members)))
}

/// A front rotation's batch test (its request's effects in `effects`): `ids` inspected, the
/// batch core started for `tested`, ready, and its probe passed at 13 ms. Returns the batch core
/// and what the pass emitted (the new pool core's start).
fn batch_passes(
    s: &mut Supervisor,
    effects: &[Effect],
    ids: &[i64],
    tested: i64,
) -> (CoreId, Vec<Effect>) {
    let (inspect, _) = inspect_in(effects);
    let effects = feed(s, 10, inspected(inspect, ids));
    let (batch, _) = start_in(&effects);
    let inbound = addr(9_000 + tested as u16);
    feed(s, 11, started(batch, None, vec![(tested, inbound)]));
    let effects = feed(s, 12, Input::CoreReady { core: batch });
    let (probe, _) = probes_in(&effects)[0];
    let result = Ok(7);
    (batch, feed(s, 13, Input::ProbeDone { probe, result }))
}

fn run_pool(s: &mut Supervisor, ms: u64, effects: &[Effect]) -> CoreId {
    let (core, spec) = start_in(effects);
    let CoreSpec::Pool { config_ids } = spec else {
        panic!("expected a pool core, got {spec:?}");
    };
    let inbounds = config_ids
        .iter()
        .map(|id| (*id, member_addr(core, *id)))
        .collect();
    feed(s, ms, started(core, None, inbounds));
    core
}

pub(super) fn persisted(effects: &[Effect]) -> Vec<RotationEvent> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist(ev) => Some(ev.clone()),
            _ => None,
        })
        .collect()
}

// Found by the simulation: the session began on a member the pool core had no inbound for.
#[test]
fn a_connect_whose_pool_core_lacks_the_members_inbound_stops_it() {
    let mut s = Supervisor::new(front(), at(0), None);
    let effects = request(&mut s, 0, 1, 1, Request::RuntimeConnect { config_id: 1 });
    let (inspect, _) = inspect_in(&effects);
    let effects = feed(&mut s, 0, inspected(inspect, &[1, 2]));
    let (core, _) = start_in(&effects);
    feed(
        &mut s,
        1,
        started(core, None, vec![(2, member_addr(core, 2))]),
    );
    let effects = feed(&mut s, 2, Input::CoreReady { core });
    assert_eq!(stops_in(&effects), [(core, 0)]);
    assert!(!effects
        .iter()
        .any(|e| matches!(e, Effect::BeginSession { .. })));
    let effects = feed(&mut s, 3, exited(core));
    assert!(matches!(
        only_reply(&effects),
        Reply::Error {
            code: Code::Internal,
            ..
        }
    ));
    assert!(s.session().is_none());
}

// Found by the simulation: the failover held back by an operation never ran when it ended.
#[test]
fn a_dead_active_member_fails_over_as_soon_as_the_operation_in_flight_ends() {
    let mut s = Supervisor::new(front(), at(0), None);
    let core = front_connect(&mut s, 0, 1, &[2], 10);
    let effects = feed(&mut s, 1, Input::Timer);
    answer_probes(&mut s, 2, &effects, &[1, 2], core);
    let effects = request(&mut s, 10, 1, 2, Request::RuntimeConnect { config_id: 5 });
    let (inspect, _) = inspect_in(&effects);
    let fail = Input::RelayFailed {
        core,
        config_id: 1,
        failure: RelayFailure::ClosedEarly,
    };
    feed(&mut s, 100, fail.clone());
    let effects = feed(&mut s, 150, fail);
    assert_eq!(routes(&effects), [vec![2]]);
    let refused = Input::Inspected {
        inspect,
        configs: Ok(vec![ConfigCheck {
            history: Default::default(),
            config_id: 5,
            result: Err(Rejection::new(Code::NotFound, "config 5 not found")),
        }]),
    };
    let effects = feed(&mut s, 160, refused);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::BeginSession { config_id: 2, .. })),
        "{effects:?}"
    );
}

// Found by the simulation: due members waiting for a probe slot made poll_timeout spin.
#[test]
fn members_waiting_for_a_probe_slot_do_not_spin_the_timer() {
    let config = SupervisorConfig {
        test_concurrency: 1,
        ..front()
    };
    let mut s = Supervisor::new(config, at(0), None);
    let core = front_connect(&mut s, 0, 1, &[2, 3], 10);
    let effects = feed(&mut s, 1, Input::Timer);
    assert_eq!(probes_in(&effects).len(), 1);
    assert!(s.poll_timeout().unwrap() > 1, "{:?}", s.poll_timeout());
    answer_probes(&mut s, 5, &effects, &[1], core);
    assert!(s.poll_timeout().unwrap() <= 5);
    assert_eq!(probes_in(&feed(&mut s, 5, Input::Timer)).len(), 1);
}

// Found by the simulation: shutdown was announced while stopped draining cores still ran.
#[test]
fn shutdown_waits_for_the_draining_pool_cores_it_stopped() {
    let mut s = Supervisor::new(front(), at(0), None);
    let (old, effects) = connect_to_5(&mut s, &[5]);
    let new = run_pool(&mut s, 11, &effects);
    feed(&mut s, 20, Input::CoreReady { core: new });
    feed(&mut s, 20, begun(new, 5, 11));
    let effects = feed(&mut s, 30, Input::ShutdownSignal);
    let stopped: Vec<CoreId> = stops_in(&effects).iter().map(|(c, _)| *c).collect();
    assert_eq!(stopped, [old, new]);
    let effects = feed(&mut s, 40, exited(new));
    assert!(!effects.contains(&Effect::Shutdown), "{effects:?}");
    let effects = feed(&mut s, 50, exited(old));
    assert!(effects.contains(&Effect::Shutdown), "{effects:?}");
}

// Found by the simulation: a front rotation that kept the old session recorded no config.
#[test]
fn a_front_rotation_that_keeps_the_old_session_records_it_as_restored() {
    let mut s = Supervisor::new(front(), at(0), None);
    let old = front_connect(&mut s, 0, 1, &[], 10);
    let replace = Request::RuntimeReplace {
        trigger: Trigger::Manual,
        candidate_id: None,
    };
    let effects = request(&mut s, 10, 1, 2, replace);
    let (batch, effects) = batch_passes(&mut s, &effects, &[1, 2], 2);
    feed(&mut s, 14, exited(batch));
    let pool = run_pool(&mut s, 15, &effects);
    let effects = feed(&mut s, 16, Input::CoreReady { core: pool });
    let (probe, _) = probes_in(&effects)[0];
    let result = Err("refused".into());
    feed(&mut s, 17, Input::ProbeDone { probe, result });
    let effects = feed(&mut s, 18, exited(pool));
    let events = persisted(&effects);
    assert_eq!(events.len(), 1, "{effects:?}");
    assert_eq!(events[0].result, ReplaceResult::Restored);
    assert_eq!(events[0].to_config_id, Some(1));
    assert_eq!(s.route()[0].core, old);
}

// Found by the simulation: a failed front rotation kept the dead session (direct mode drops it).
#[test]
fn a_failed_front_rotation_leaves_no_session() {
    let mut s = Supervisor::new(front(), at(0), None);
    let old = front_connect(&mut s, 0, 1, &[], 10);
    let effects = respawn_refused(&mut s, 10, old);
    let (batch, effects) = batch_passes(&mut s, &effects, &[1, 2], 2);
    let (pool, _) = start_in(&effects);
    feed(&mut s, 14, exited(batch));
    let refused = |core| Input::CoreFailed {
        core,
        failure: StartFailure::Refused(Rejection::new(Code::Internal, "spawn failed")),
    };
    let effects = feed(&mut s, 15, refused(pool));
    let (restore, spec) = start_in(&effects);
    assert_eq!(
        spec,
        CoreSpec::Pool {
            config_ids: vec![1]
        }
    );
    let effects = feed(&mut s, 16, refused(restore));
    assert_eq!(persisted(&effects)[0].result, ReplaceResult::Failed);
    assert!(s.session().is_none());
    assert_eq!(status(&mut s).runtime_status, "idle");
}

// Found by the simulation: the restore began a session on a member without an inbound.
#[test]
fn a_restore_whose_pool_core_lacks_the_members_inbound_is_abandoned() {
    let mut s = Supervisor::new(front(), at(0), None);
    let old = front_connect(&mut s, 0, 1, &[], 10);
    let effects = respawn_refused(&mut s, 10, old);
    let (batch, effects) = batch_passes(&mut s, &effects, &[1, 2], 2);
    let (pool, _) = start_in(&effects);
    feed(&mut s, 14, exited(batch));
    let refused = Input::CoreFailed {
        core: pool,
        failure: StartFailure::Refused(Rejection::new(Code::Internal, "spawn failed")),
    };
    let effects = feed(&mut s, 15, refused);
    let (restore, _) = start_in(&effects);
    feed(&mut s, 16, started(restore, None, Vec::new()));
    let effects = feed(&mut s, 17, Input::CoreReady { core: restore });
    assert_eq!(stops_in(&effects), [(restore, 0)]);
    assert!(!effects
        .iter()
        .any(|e| matches!(e, Effect::BeginSession { .. })));
    let effects = feed(&mut s, 18, exited(restore));
    assert_eq!(persisted(&effects)[0].result, ReplaceResult::Failed);
}

#[test]
fn a_manual_switch_outside_the_pool_keeps_the_alive_members_and_the_old_config_warm() {
    let mut s = Supervisor::new(front(), at(0), None);
    let core = front_connect(&mut s, 0, 1, &[2, 4], 10);
    let effects = feed(&mut s, 1, Input::Timer);
    // Member 4 is dead: it does not follow into the new pool core.
    answer_probes(&mut s, 2, &effects, &[1, 2], core);
    let replace = Request::RuntimeReplace {
        trigger: Trigger::Manual,
        candidate_id: Some(3),
    };
    let effects = request(&mut s, 10, 1, 2, replace);
    let (_, effects) = batch_passes(&mut s, &effects, &[3], 3);
    let (_, spec) = start_in(&effects);
    let CoreSpec::Pool { config_ids } = spec else {
        panic!("expected a pool core, got {spec:?}");
    };
    // The candidate leads; the old session's config and the alive member stay warm (one
    // rotation ranked only the candidate, so without them the pool would shrink to one).
    assert_eq!(config_ids, [3, 1, 2]);
}
