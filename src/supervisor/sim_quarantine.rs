//! The simulation's checks of the quarantine policy (issue 12, `quarantine.rs`) and of
//! `config_test`, against the executor's store model of `config_tests`.

use crate::ipc::protocol::{ConfigTestPayload, Trigger};

use super::sim_world::{Kind, OpModel, World};
use super::{TestHistory, TestRecord};

impl World {
    /// The store model's test results of a config.
    fn stored(&self, config_id: i64) -> Option<TestHistory> {
        let index = usize::try_from(config_id - 1).ok()?;
        self.exec.configs.get(index).map(|c| c.history)
    }

    /// No config in `ids` is quarantined now, by the store model and the settings.
    pub(super) fn check_not_quarantined(&self, what: &str, ids: &[i64]) {
        let unix = self.now.unix_secs;
        let (strikes, secs) = (self.cfg.strikes, self.cfg.quarantine_secs);
        for id in ids {
            let history = self.stored(*id).unwrap_or_default();
            self.check(
                !super::quarantine::is_quarantined(&history, strikes, secs, unix),
                || format!("{what} {id} is quarantined: {history:?}, strikes {strikes}, {secs} s, now {unix}"),
            );
        }
    }

    /// A rotation's batch holds no quarantined config, and a manual one without a named
    /// candidate no config whose last test failed.
    pub(super) fn check_batch_policy(&self, trigger: Trigger, named: bool, config_ids: &[i64]) {
        self.check_not_quarantined("batch candidate", config_ids);
        if trigger != Trigger::Manual || named {
            return;
        }
        let failed: Vec<i64> = config_ids
            .iter()
            .copied()
            .filter(|id| {
                self.stored(*id)
                    .is_some_and(|h| h.last_at.is_some() && !h.last_ok)
            })
            .collect();
        self.check(failed.is_empty(), || {
            format!("a manual rotation tests configs {failed:?}, whose last test failed")
        });
    }

    /// Results are recorded only by a batch test (a rotation's or `config_test`'s).
    pub(super) fn on_record_tests(&mut self, results: &[TestRecord]) {
        let batch = |op: &OpModel| matches!(op.kind, Kind::Replace | Kind::Test);
        let in_batch =
            self.op.as_ref().is_some_and(batch) || self.ended.as_ref().is_some_and(batch);
        self.check(in_batch && !results.is_empty(), || {
            format!("test results outside a batch test: {results:?}")
        });
        self.exec.on_record(results);
    }

    /// A `config_test` answer ends a test operation, and each result is consistent.
    pub(super) fn test_reply_ok(&self, payload: &ConfigTestPayload) -> bool {
        self.ended.as_ref().is_some_and(|op| op.kind == Kind::Test)
            && payload
                .results
                .iter()
                .all(|r| r.ok == r.latency_ms.is_some() && r.ok == r.error_kind.is_none())
    }
}
