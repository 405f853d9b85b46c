//! Unit tests of the rotation policy: triggers, cooldown, health accounting.

use super::tests::{at, config, drain, replies, request, session, status, take_op};
use super::*;
use crate::ipc::protocol::Trigger;

fn replace_of(s: &mut Supervisor) -> (OpId, Trigger) {
    match take_op(s) {
        (op, Plan::Replace { trigger, .. }) => (op, trigger),
        (_, plan) => panic!("expected a replace, got {plan:?}"),
    }
}

fn rotated(s: &mut Supervisor, ms: u64, op: OpId, old: i64, new: SessionInfo) {
    s.handle(at(ms), Input::SessionEnded { session_id: old });
    let outcome = ReplaceOutcome {
        replaced: true,
        old_session_id: old,
        session: Some(new),
        tested_candidates: 2,
        candidate: Some(9),
        result: "switched",
        detail: String::new(),
    };
    s.handle(
        at(ms),
        Input::OperationDone {
            op,
            outcome: Ok(OperationOutput::Replaced(Box::new(outcome))),
        },
    );
    drain(s);
}

fn rotating() -> SupervisorConfig {
    SupervisorConfig {
        rotation_enabled: true,
        rotation_interval_secs: 100,
        cooldown_secs: 50,
        ..config()
    }
}

#[test]
fn replace_needs_a_session() {
    let mut s = Supervisor::new(config(), at(0), None);
    request(
        &mut s,
        1,
        1,
        1,
        Request::RuntimeReplace {
            trigger: Trigger::Manual,
            candidate_id: None,
        },
    );
    assert_eq!(
        replies(&drain(&mut s)),
        [(1, "1".into(), Some(Code::Conflict))]
    );
}

#[test]
fn the_timer_rotates_and_the_cooldown_skips_one() {
    let mut s = Supervisor::new(rotating(), at(0), Some(session(1, 1)));
    assert_eq!(
        s.poll_timeout(),
        Some(15_000),
        "the health tick comes first"
    );
    s.handle(at(100_000), Input::Timer);
    let effects = drain(&mut s);
    let (op, trigger) = effects
        .iter()
        .find_map(|e| match e {
            Effect::Operation {
                op,
                plan: Plan::Replace { trigger, .. },
            } => Some((*op, *trigger)),
            _ => None,
        })
        .expect("a timer rotation");
    assert_eq!(trigger, Trigger::Timer);
    rotated(&mut s, 100_500, op, 1, session(2, 9));
    // A manual rotation inside the cooldown runs; its completion restarts the cooldown.
    request(
        &mut s,
        101_000,
        1,
        1,
        Request::RuntimeReplace {
            trigger: Trigger::Manual,
            candidate_id: Some(3),
        },
    );
    let (op, trigger) = replace_of(&mut s);
    assert_eq!(trigger, Trigger::Manual);
    rotated(&mut s, 190_000, op, 2, session(3, 3));
    // The next timer (due 290 s) is outside the cooldown (until 240 s) and fires.
    s.handle(at(290_000), Input::Timer);
    assert!(drain(&mut s).iter().any(|e| matches!(
        e,
        Effect::Operation {
            plan: Plan::Replace {
                trigger: Trigger::Timer,
                ..
            },
            ..
        }
    )));
    let st = s.proxy_status(at(290_000));
    assert_eq!(
        (st.last_trigger.as_deref(), st.last_result.as_deref()),
        (Some("manual"), Some("switched"))
    );
}

#[test]
fn health_failures_rotate_but_wait_for_the_cooldown() {
    let mut s = Supervisor::new(rotating(), at(0), Some(session(1, 1)));
    let fail = |s: &mut Supervisor, ms: u64| {
        s.handle(at(ms), Input::Timer);
        assert!(drain(s)
            .iter()
            .any(|e| matches!(e, Effect::Probe { session_id: 1, .. })));
        s.handle(
            at(ms + 10),
            Input::ProbeDone {
                session_id: 1,
                result: Err("timeout".into()),
            },
        );
    };
    fail(&mut s, 15_000);
    fail(&mut s, 30_000);
    assert_eq!(drain(&mut s), []);
    fail(&mut s, 45_000);
    let (op, trigger) = replace_of(&mut s);
    assert_eq!(trigger, Trigger::HealthCheckFailed);
    let outcome = ReplaceOutcome {
        replaced: false,
        old_session_id: 1,
        session: None,
        tested_candidates: 2,
        candidate: None,
        result: "no_working_candidate",
        detail: "all dead".into(),
    };
    s.handle(
        at(46_000),
        Input::OperationDone {
            op,
            outcome: Ok(OperationOutput::Replaced(Box::new(outcome))),
        },
    );
    drain(&mut s);
    assert_eq!(
        status(&mut s).session_id,
        Some(1),
        "the old session is kept"
    );
    // Still failing inside the cooldown: the trigger waits for its end (46 s + 50 s).
    fail(&mut s, 60_000);
    assert_eq!(drain(&mut s), []);
    assert_eq!(s.poll_timeout(), Some(75_000));
    s.handle(at(96_000), Input::Timer);
    assert!(drain(&mut s).iter().any(|e| matches!(
        e,
        Effect::Operation {
            plan: Plan::Replace {
                trigger: Trigger::HealthCheckFailed,
                ..
            },
            ..
        }
    )));
}

#[test]
fn a_dead_core_rotates_at_once_even_in_cooldown_but_only_when_enabled() {
    let mut s = Supervisor::new(rotating(), at(0), Some(session(1, 1)));
    request(
        &mut s,
        1,
        1,
        1,
        Request::RuntimeReplace {
            trigger: Trigger::Manual,
            candidate_id: None,
        },
    );
    let (op, _) = replace_of(&mut s);
    rotated(&mut s, 2, op, 1, session(2, 5));
    s.handle(
        at(3),
        Input::CoreExited {
            session_id: 2,
            description: "core killed by signal 9".into(),
        },
    );
    assert_eq!(replace_of(&mut s).1, Trigger::HealthCheckFailed);

    let mut s = Supervisor::new(config(), at(0), Some(session(1, 1)));
    s.handle(
        at(3),
        Input::CoreExited {
            session_id: 1,
            description: "core killed by signal 9".into(),
        },
    );
    assert_eq!(drain(&mut s), []);
    assert_eq!(status(&mut s).runtime_status, "degraded");
}
