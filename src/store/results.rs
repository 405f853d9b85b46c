//! Config test results (`config_tests`) and import-time refusals (`config_issues`), migration 4.

use std::collections::HashMap;

use rusqlite::params;
use serde::Serialize;

use super::{sql_error, Store, StoreError};

/// Rows kept per config in `config_tests`; older ones are pruned on every write.
pub const CONFIG_TESTS_KEPT: i64 = 100;

/// One config's test result to record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewConfigTest {
    /// The tested config.
    pub config_id: i64,
    /// Unix seconds when the probe ended.
    pub at: u64,
    /// Latency in ms when it passed; `None` when it failed.
    pub latency_ms: Option<u64>,
    /// Why it failed, as a short kind (`timeout`, `refused`, …); `None` when it passed.
    pub error_kind: Option<String>,
    /// Why it failed, for people.
    pub error: Option<String>,
    /// Who ran it: `cli`, `daemon` or `rotation`.
    pub source: &'static str,
}

/// What the stored results say about one config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestSummary {
    /// The config.
    pub config_id: i64,
    /// When the last test ended (unix seconds).
    pub last_at: u64,
    /// Whether the last test passed.
    pub last_ok: bool,
    /// The last test's latency, when it passed.
    pub last_latency_ms: Option<u64>,
    /// The last test's error kind, when it failed.
    pub last_error_kind: Option<String>,
    /// Failed tests since the last passing one (all of them when none passed).
    pub failure_streak: u32,
}

/// One stored test result, as a point of a config's delay history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TestPoint {
    /// When the probe ended, unix seconds.
    pub at: u64,
    /// Its latency in ms when it passed; `None` when it failed.
    pub latency_ms: Option<u64>,
}

impl Store {
    /// Records test results in one transaction and prunes each config's history to
    /// [`CONFIG_TESTS_KEPT`] rows. A config removed while it was tested is skipped (its results
    /// would go with it anyway); returns how many rows were written.
    pub fn record_tests(&mut self, tests: &[NewConfigTest]) -> Result<usize, StoreError> {
        let path = &self.path;
        let failed = |e| sql_error(path, "record config test results", e);
        let tx = super::batch::write_tx(&mut self.conn).map_err(failed)?;
        let mut written = 0;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO config_tests \
                     (config_id, at, ok, latency_ms, error_kind, error, source) \
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS \
                     (SELECT 1 FROM configs WHERE id = ?1)",
                )
                .map_err(failed)?;
            let mut prune = tx
                .prepare_cached(
                    "DELETE FROM config_tests WHERE config_id = ?1 AND id NOT IN \
                     (SELECT id FROM config_tests WHERE config_id = ?1 ORDER BY id DESC LIMIT ?2)",
                )
                .map_err(failed)?;
            for t in tests {
                let ok = t.latency_ms.is_some();
                let kind = if ok {
                    None
                } else {
                    Some(t.error_kind.as_deref().unwrap_or("other"))
                };
                written += insert
                    .execute(params![
                        t.config_id,
                        t.at,
                        ok,
                        t.latency_ms,
                        kind,
                        t.error,
                        t.source
                    ])
                    .map_err(failed)?;
                prune
                    .execute(params![t.config_id, CONFIG_TESTS_KEPT])
                    .map_err(failed)?;
            }
        }
        tx.commit().map_err(failed)?;
        Ok(written)
    }

    /// Every tested config's summary, by config id.
    pub fn test_summaries(&self) -> Result<HashMap<i64, TestSummary>, StoreError> {
        let failed = self.sql_error("read config test results");
        let sql = "SELECT t.config_id, t.at, t.ok, t.latency_ms, t.error_kind, \
             (SELECT count(*) FROM config_tests f WHERE f.config_id = t.config_id AND f.ok = 0 \
              AND f.id > coalesce((SELECT max(id) FROM config_tests o \
                                   WHERE o.config_id = t.config_id AND o.ok = 1), 0)) \
             FROM config_tests t \
             WHERE t.id IN (SELECT max(id) FROM config_tests GROUP BY config_id)";
        let rows = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut stmt| {
                stmt.query_map([], |row| {
                    Ok(TestSummary {
                        config_id: row.get(0)?,
                        last_at: row.get(1)?,
                        last_ok: row.get(2)?,
                        last_latency_ms: row.get(3)?,
                        last_error_kind: row.get(4)?,
                        failure_streak: row.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(failed)?;
        Ok(rows.into_iter().map(|s| (s.config_id, s)).collect())
    }

    /// The last `per_config` test results of every tested config, oldest first, as
    /// (unix seconds, latency in ms when it passed): the delay history the Clash API shows.
    pub fn test_history(
        &self,
        per_config: usize,
    ) -> Result<HashMap<i64, Vec<TestPoint>>, StoreError> {
        let failed = self.sql_error("read config test history");
        let sql = "SELECT config_id, at, latency_ms FROM \
             (SELECT config_id, at, latency_ms, id, \
                     row_number() OVER (PARTITION BY config_id ORDER BY id DESC) AS newest \
              FROM config_tests) \
             WHERE newest <= ?1 ORDER BY config_id, id";
        let limit = i64::try_from(per_config).unwrap_or(i64::MAX);
        let rows = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut stmt| {
                stmt.query_map([limit], |row| {
                    let point = TestPoint {
                        at: row.get(1)?,
                        latency_ms: row.get(2)?,
                    };
                    Ok((row.get::<_, i64>(0)?, point))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(failed)?;
        let mut history: HashMap<i64, Vec<TestPoint>> = HashMap::new();
        for (id, point) in rows {
            history.entry(id).or_default().push(point);
        }
        Ok(history)
    }

    /// Stores (or with `None` clears) why no installed core can run a config.
    pub fn set_config_issue(
        &self,
        config_id: i64,
        reason: Option<&str>,
        now: u64,
    ) -> Result<(), StoreError> {
        let failed = self.sql_error("record a config's import check");
        match reason {
            Some(reason) => self.conn.execute(
                "INSERT INTO config_issues (config_id, reason, checked_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (config_id) DO UPDATE SET reason = ?2, checked_at = ?3",
                params![config_id, reason, now],
            ),
            None => self.conn.execute(
                "DELETE FROM config_issues WHERE config_id = ?1",
                [config_id],
            ),
        }
        .map_err(failed)?;
        Ok(())
    }

    /// The stored import-check reasons, by config id.
    pub fn config_issues(&self) -> Result<HashMap<i64, String>, StoreError> {
        let failed = self.sql_error("read the configs' import checks");
        let rows = self
            .conn
            .prepare_cached("SELECT config_id, reason FROM config_issues")
            .and_then(|mut stmt| {
                stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<(i64, String)>>>()
            })
            .map_err(failed)?;
        Ok(rows.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{link, open_temp};
    use super::*;

    fn result(config_id: i64, at: u64, latency: Option<u64>) -> NewConfigTest {
        NewConfigTest {
            config_id,
            at,
            latency_ms: latency,
            error_kind: latency.is_none().then(|| "timeout".to_string()),
            error: latency.is_none().then(|| "no answer".to_string()),
            source: "cli",
        }
    }

    #[test]
    fn summaries_count_the_failures_since_the_last_pass() {
        let (_dir, mut store) = open_temp();
        let links = [link("socks://127.0.0.1:1"), link("socks://127.0.0.1:2")];
        store.import(&links, 1).unwrap();
        store
            .record_tests(&[result(1, 10, None), result(1, 11, Some(40))])
            .unwrap();
        store
            .record_tests(&[
                result(1, 12, None),
                result(1, 13, None),
                result(2, 13, None),
            ])
            .unwrap();
        let s = store.test_summaries().unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[&1].failure_streak, 2);
        assert!(!s[&1].last_ok);
        assert_eq!(s[&1].last_at, 13);
        assert_eq!(s[&1].last_error_kind.as_deref(), Some("timeout"));
        assert_eq!(s[&2].failure_streak, 1);
        store.record_tests(&[result(2, 14, Some(7))]).unwrap();
        let s = store.test_summaries().unwrap();
        assert_eq!((s[&2].failure_streak, s[&2].last_latency_ms), (0, Some(7)));
        // A config removed meanwhile is skipped; the others are written.
        let written = store.record_tests(&[result(2, 15, Some(1)), result(9, 15, None)]);
        assert_eq!(written.unwrap(), 1);
        assert_eq!(store.test_summaries().unwrap()[&2].last_at, 15);
        assert!(!store.test_summaries().unwrap().contains_key(&9));
        // Results go with their config.
        assert!(store.remove_config(1).unwrap());
        assert_eq!(store.test_summaries().unwrap().len(), 1);
    }

    #[test]
    fn history_is_pruned_per_config() {
        let (_dir, mut store) = open_temp();
        store.import(&[link("socks://127.0.0.1:1")], 1).unwrap();
        let many: Vec<NewConfigTest> = (0..CONFIG_TESTS_KEPT as u64 + 20)
            .map(|i| result(1, i, None))
            .collect();
        store.record_tests(&many).unwrap();
        let count: i64 = store
            .conn
            .query_row("SELECT count(*) FROM config_tests", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, CONFIG_TESTS_KEPT);
    }

    #[test]
    fn history_keeps_the_newest_per_config_oldest_first() {
        let (_dir, mut store) = open_temp();
        let links = [link("socks://127.0.0.1:1"), link("socks://127.0.0.1:2")];
        store.import(&links, 1).unwrap();
        let tests: Vec<NewConfigTest> = (0..5)
            .map(|i| result(1, 10 + i, (i % 2 == 0).then_some(i * 10)))
            .chain([result(2, 30, Some(7))])
            .collect();
        store.record_tests(&tests).unwrap();
        let history = store.test_history(3).unwrap();
        let points = |id| -> Vec<(u64, Option<u64>)> {
            history[&id].iter().map(|p| (p.at, p.latency_ms)).collect()
        };
        assert_eq!(points(1), [(12, Some(20)), (13, None), (14, Some(40))]);
        assert_eq!(points(2), [(30, Some(7))]);
    }

    #[test]
    fn issues_are_stored_replaced_and_cleared() {
        let (_dir, store) = open_temp();
        let mut store = store;
        store.import(&[link("socks://127.0.0.1:1")], 1).unwrap();
        store.set_config_issue(1, Some("a"), 2).unwrap();
        store.set_config_issue(1, Some("b"), 3).unwrap();
        assert_eq!(store.config_issues().unwrap()[&1], "b");
        store.set_config_issue(1, None, 4).unwrap();
        assert!(store.config_issues().unwrap().is_empty());
    }
}
