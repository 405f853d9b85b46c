//! Front mode: a pool core that exits under the session is started again with the same members
//! (no inspect, no batch test), the front holds new connections meanwhile, and a failed or
//! repeated respawn falls back to the rotation.

use super::pool_respawn::{RESPAWN_HOLD_MS, RESPAWN_WINDOW_MS};
use super::pool_tests::{begun, front, front_connect, member_addr, routes};
use super::tests::*;
use super::*;

fn holds(effects: &[Effect]) -> Vec<u64> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::HoldFront { until_ms } => Some(*until_ms),
            _ => None,
        })
        .collect()
}

/// Kills the session's pool core at `ms`; returns the respawned core, after checking it has the
/// same members (the session's first), the front is held and nothing is inspected.
fn kill_and_respawn(s: &mut Supervisor, ms: u64, old: CoreId, members: &[i64]) -> CoreId {
    let effects = feed(s, ms, exited(old));
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Inspect { .. })),
        "{effects:?}"
    );
    let (core, spec) = start_in(&effects);
    assert_eq!(
        spec,
        CoreSpec::Pool {
            config_ids: members.to_vec()
        }
    );
    assert_eq!(holds(&effects), [ms + RESPAWN_HOLD_MS]);
    assert_eq!(routes(&effects), [Vec::<i64>::new()]);
    assert!(s.is_busy());
    core
}

/// The respawned core accepts: the row is written, then the route flips to it.
fn respawn_ready(s: &mut Supervisor, ms: u64, core: CoreId, members: &[i64], sid: i64) {
    let inbounds = members
        .iter()
        .map(|id| (*id, member_addr(core, *id)))
        .collect();
    feed(s, ms, started(core, None, inbounds));
    let effects = feed(s, ms, Input::CoreReady { core });
    assert!(
        effects.iter().any(|e| matches!(
            e,
            Effect::BeginSession { core: c, config_id } if *c == core && *config_id == members[0]
        )),
        "{effects:?}"
    );
    assert!(
        routes(&effects).is_empty(),
        "routed before the row: {effects:?}"
    );
    let effects = feed(s, ms, begun(core, members[0], sid));
    assert_eq!(routes(&effects), [vec![members[0]]]);
    assert!(!s.is_busy());
    assert_eq!(
        s.session().map(|i| (i.id, i.config_id)),
        Some((sid, members[0]))
    );
}

#[test]
fn a_killed_pool_core_is_started_again_with_the_same_members() {
    let mut s = Supervisor::new(front(), at(0), None);
    let old = front_connect(&mut s, 0, 1, &[2, 3], 10);
    let core = kill_and_respawn(&mut s, 100, old, &[1, 2, 3]);
    respawn_ready(&mut s, 150, core, &[1, 2, 3], 11);
    // The members are confirmed by probes right after the flip; the others join the route then.
    let effects = feed(&mut s, 150, Input::Timer);
    let probes = probes_in(&effects);
    assert_eq!(probes.len(), 3, "{effects:?}");
    let mut last = Vec::new();
    for (probe, _) in probes {
        let effects = feed(
            &mut s,
            160,
            Input::ProbeDone {
                probe,
                result: Ok(5),
            },
        );
        last.extend(routes(&effects));
    }
    assert_eq!(last.last().map(Vec::len), Some(3), "{last:?}");
}

#[test]
fn a_respawn_that_fails_releases_the_front_and_rotates() {
    let mut s = Supervisor::new(front(), at(0), None);
    let old = front_connect(&mut s, 0, 1, &[2], 10);
    let core = kill_and_respawn(&mut s, 100, old, &[1, 2]);
    feed(&mut s, 101, started(core, None, Vec::new()));
    let not_ready = Input::CoreFailed {
        core,
        failure: StartFailure::NotReady {
            addr: member_addr(core, 1),
            log_tail: String::new(),
        },
    };
    let effects = feed(&mut s, 5_101, not_ready);
    assert_eq!(stops_in(&effects), [(core, 0)]);
    // The rotation waits for the failed core's exit; then the hold ends and the rotation runs.
    let effects = feed(&mut s, 5_102, exited(core));
    assert_eq!(holds(&effects), [5_102]);
    inspect_in(&effects);
}

#[test]
fn a_pool_core_that_dies_again_within_the_window_gets_a_rotation() {
    let mut s = Supervisor::new(front(), at(0), None);
    let old = front_connect(&mut s, 0, 1, &[2], 10);
    let core = kill_and_respawn(&mut s, 100, old, &[1, 2]);
    respawn_ready(&mut s, 150, core, &[1, 2], 11);
    let effects = feed(&mut s, 150 + RESPAWN_WINDOW_MS - 200, exited(core));
    assert!(holds(&effects).is_empty(), "{effects:?}");
    inspect_in(&effects);
}

#[test]
fn a_pool_core_that_dies_after_the_window_is_started_again() {
    let mut s = Supervisor::new(front(), at(0), None);
    let old = front_connect(&mut s, 0, 1, &[2], 10);
    let core = kill_and_respawn(&mut s, 100, old, &[1, 2]);
    respawn_ready(&mut s, 150, core, &[1, 2], 11);
    kill_and_respawn(&mut s, 100 + RESPAWN_WINDOW_MS, core, &[1, 2]);
}

#[test]
fn a_switch_cut_by_its_pool_cores_exit_ends_and_the_core_is_started_again() {
    let mut s = Supervisor::new(front(), at(0), None);
    let old = front_connect(&mut s, 0, 1, &[2], 10);
    let effects = feed(&mut s, 10, Input::Timer);
    for (probe, _) in probes_in(&effects) {
        feed(
            &mut s,
            11,
            Input::ProbeDone {
                probe,
                result: Ok(5),
            },
        );
    }
    let connect = Request::RuntimeConnect { config_id: 2 };
    let effects = request(&mut s, 20, 2, 2, connect);
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::BeginSession { config_id: 2, .. })));
    // The core dies before the switch's row is answered: the switch ends, the pool respawns.
    let effects = feed(&mut s, 21, exited(old));
    assert!(
        replies(&effects)
            .iter()
            .any(|(_, _, code)| *code == Some(crate::ipc::protocol::Code::Unavailable)),
        "{effects:?}"
    );
    let (core, spec) = start_in(&effects);
    assert_eq!(
        spec,
        CoreSpec::Pool {
            config_ids: vec![1, 2]
        }
    );
    // The switch's late row is ended: nothing runs on it.
    let effects = feed(&mut s, 22, begun(old, 2, 12));
    assert_eq!(ends_in(&effects), [(12, "failed".to_string())]);
    respawn_ready(&mut s, 60, core, &[1, 2], 13);
}

/// Kills the session's pool core at `ms` and refuses its respawn; returns the effects of the
/// refusal (the rotation's start).
pub(super) fn respawn_refused(s: &mut Supervisor, ms: u64, old: CoreId) -> Vec<Effect> {
    let effects = feed(s, ms, exited(old));
    let (core, _) = start_in(&effects);
    let refused = Input::CoreFailed {
        core,
        failure: StartFailure::Refused(Rejection::new(
            crate::ipc::protocol::Code::Internal,
            "spawn failed",
        )),
    };
    let effects = feed(s, ms, refused);
    assert_eq!(holds(&effects), [ms]);
    effects
}
