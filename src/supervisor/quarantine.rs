//! Rotation learns from stored test results (issue 12): the quarantine policy, pure.
//!
//! - A config whose last `strikes` tests all failed is quarantined until `quarantine_secs` after
//!   the last of them: no rotation tests it, no pool takes it as a warm member, and a manual
//!   rotation that names it is refused (409) with the time it ends. One passing test (`xrat
//!   config test ID`, which may run any time) ends it.
//! - A manual rotation without a named candidate also skips every config whose last stored
//!   test failed, quarantined or not. Every rotation picks only a candidate that passed its own
//!   batch test (`rank`), so an untested config is never picked either.
//! - The batch results of every rotation and of `config_test` requests are recorded
//!   ([`super::Effect::RecordTests`]) and folded into the supervisor's copy of the histories at
//!   once, so the next decision sees them before the store is read again.

use crate::ipc::protocol::Trigger;

use super::TestHistory;

/// Until when (unix seconds) `history` keeps its config in quarantine, if it does.
pub fn quarantined_until(history: &TestHistory, strikes: u32, quarantine_secs: u64) -> Option<u64> {
    if strikes == 0 || quarantine_secs == 0 || history.failure_streak < strikes {
        return None;
    }
    history.last_at.map(|at| at.saturating_add(quarantine_secs))
}

/// True while `history` keeps its config in quarantine at `now_unix`.
pub fn is_quarantined(
    history: &TestHistory,
    strikes: u32,
    quarantine_secs: u64,
    now_unix: u64,
) -> bool {
    quarantined_until(history, strikes, quarantine_secs).is_some_and(|until| now_unix < until)
}

/// Why a rotation of `trigger` passes over a candidate, if it does.
pub fn skip_reason(
    trigger: Trigger,
    history: &TestHistory,
    strikes: u32,
    quarantine_secs: u64,
    now_unix: u64,
) -> Option<String> {
    if let Some(until) =
        quarantined_until(history, strikes, quarantine_secs).filter(|u| now_unix < *u)
    {
        return Some(format!(
            "quarantined for another {} s after {} failed tests in a row (runtime.rotation.strikes = {strikes})",
            until - now_unix,
            history.failure_streak
        ));
    }
    if trigger == Trigger::Manual && history.last_at.is_some() && !history.last_ok {
        return Some(
            "its last test failed (a manual rotation takes only configs whose last test passed)"
                .into(),
        );
    }
    None
}

/// `history` after one more test.
pub fn record(history: &mut TestHistory, at: u64, ok: bool) {
    history.last_at = Some(at);
    history.last_ok = ok;
    history.failure_streak = if ok {
        0
    } else {
        history.failure_streak.saturating_add(1)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(times: u32, at: u64) -> TestHistory {
        let mut h = TestHistory::default();
        for _ in 0..times {
            record(&mut h, at, false);
        }
        h
    }

    #[test]
    fn quarantine_starts_at_the_strike_and_ends_after_its_time() {
        assert!(!is_quarantined(&failed(2, 100), 3, 60, 100));
        assert!(is_quarantined(&failed(3, 100), 3, 60, 100));
        assert!(is_quarantined(&failed(3, 100), 3, 60, 159));
        assert!(!is_quarantined(&failed(3, 100), 3, 60, 160));
        assert!(
            !is_quarantined(&failed(9, 100), 3, 0, 100),
            "0 s turns it off"
        );
        let mut h = failed(5, 100);
        record(&mut h, 101, true);
        assert!(!is_quarantined(&h, 3, 60, 101), "a pass ends it");
        assert_eq!(h.failure_streak, 0);
        assert!(!is_quarantined(&TestHistory::default(), 3, 60, 0));
    }

    #[test]
    fn manual_rotation_skips_a_config_whose_last_test_failed() {
        let once = failed(1, 100);
        assert_eq!(skip_reason(Trigger::Timer, &once, 3, 60, 100), None);
        assert!(skip_reason(Trigger::Manual, &once, 3, 60, 100)
            .unwrap()
            .starts_with("its last test failed"));
        let three = failed(3, 100);
        for trigger in [Trigger::Timer, Trigger::HealthCheckFailed, Trigger::Manual] {
            assert_eq!(
                skip_reason(trigger, &three, 3, 60, 110).unwrap(),
                "quarantined for another 50 s after 3 failed tests in a row (runtime.rotation.strikes = 3)"
            );
        }
        assert_eq!(
            skip_reason(Trigger::Manual, &TestHistory::default(), 3, 60, 0),
            None
        );
    }

    /// The supervisor applies the policy to what an inspect says: config 2 is quarantined,
    /// config 3 failed its last test once, config 4 passed.
    #[test]
    fn the_supervisor_skips_what_the_stored_results_rule_out() {
        use super::super::tests::{
            at, config, feed, inspect_in, only_reply, request, session, start_in,
        };
        use super::super::*;
        let now = at(10).unix_secs;
        let histories = [
            (2, failed(3, now - 5)),
            (3, failed(1, now - 5)),
            (4, {
                let mut h = TestHistory::default();
                record(&mut h, now - 5, true);
                h
            }),
        ];
        let checks = |inspect| Input::Inspected {
            inspect,
            configs: Ok(std::iter::once((1, TestHistory::default()))
                .chain(histories)
                .map(|(config_id, history)| ConfigCheck {
                    config_id,
                    result: Ok(()),
                    history,
                })
                .collect()),
        };
        for (trigger, want) in [(Trigger::Manual, vec![4]), (Trigger::Timer, vec![3, 4])] {
            let mut s = Supervisor::new(config(), at(0), Some(session(1, 1)));
            let replace = Request::RuntimeReplace {
                trigger,
                candidate_id: None,
            };
            let (inspect, _) = inspect_in(&request(&mut s, 10, 1, 1, replace));
            let (_, spec) = start_in(&feed(&mut s, 20, checks(inspect)));
            assert_eq!(spec, CoreSpec::Batch { config_ids: want }, "{trigger:?}");
        }
        // Named, the quarantined config is refused with the way out.
        let mut s = Supervisor::new(config(), at(0), Some(session(1, 1)));
        let replace = Request::RuntimeReplace {
            trigger: Trigger::Manual,
            candidate_id: Some(2),
        };
        let (inspect, _) = inspect_in(&request(&mut s, 10, 1, 1, replace));
        let effects = feed(&mut s, 20, checks(inspect));
        match only_reply(&effects) {
            Reply::Error { code, message } => {
                assert_eq!(*code, crate::ipc::protocol::Code::Conflict);
                assert!(
                    message.starts_with("config 2 is quarantined for another 1795 s"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
