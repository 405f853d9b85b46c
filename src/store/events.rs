//! Rotation events (DESIGN §5, §7): one row per rotation attempt, kept as history.

use rusqlite::{params, Row};
use serde::Serialize;

use super::sessions::is_foreign_key_error;
use super::{Store, StoreError};

/// A rotation event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRotationEvent {
    /// Unix seconds.
    pub at: u64,
    /// `timer`, `health_check_failed` or `manual`.
    pub trigger: String,
    /// The config active before, if any.
    pub from_config_id: Option<i64>,
    /// The config active after, if the rotation switched.
    pub to_config_id: Option<i64>,
    /// Outcome, e.g. `replaced`, `no_candidate`, `restored`.
    pub result: String,
    /// Free text for people: tested candidates, errors.
    pub detail: String,
}

/// A stored rotation event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RotationEventRow {
    /// Event id.
    pub id: i64,
    /// Unix seconds.
    pub at: u64,
    /// What started the rotation.
    pub trigger: String,
    /// The config active before; `None` if none was or it was removed since.
    pub from_config_id: Option<i64>,
    /// The config active after; `None` if none or removed since.
    pub to_config_id: Option<i64>,
    /// Outcome.
    pub result: String,
    /// Free text.
    pub detail: String,
}

impl RotationEventRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<RotationEventRow> {
        Ok(RotationEventRow {
            id: row.get(0)?,
            at: row.get(1)?,
            trigger: row.get(2)?,
            from_config_id: row.get(3)?,
            to_config_id: row.get(4)?,
            result: row.get(5)?,
            detail: row.get(6)?,
        })
    }
}

impl Store {
    /// Records a rotation event and returns its id. Fails with [`StoreError::NoSuchConfig`]
    /// when a config id is not stored.
    pub fn insert_rotation_event(&self, event: &NewRotationEvent) -> Result<i64, StoreError> {
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO rotation_events \
                 (at, \"trigger\", from_config_id, to_config_id, result, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut insert| {
                insert.execute(params![
                    event.at,
                    event.trigger,
                    event.from_config_id,
                    event.to_config_id,
                    event.result,
                    event.detail,
                ])
            });
        match inserted {
            Ok(_) => Ok(self.conn.last_insert_rowid()),
            Err(e) if is_foreign_key_error(&e) => Err(StoreError::NoSuchConfig {
                path: self.path.clone(),
                // The message needs one id; whichever is set and unknown, `from` is checked first.
                id: self.unknown_config(event).unwrap_or_default(),
            }),
            Err(e) => Err(self.sql_error("record a rotation event")(e)),
        }
    }

    /// Deletes rotation events and ended sessions older than the newest `kept` of each, at most
    /// `rows_max` of each per call, so that a daemon switching all day keeps a bounded history
    /// (each switch adds one row to each table) and a long backlog goes in short steps. Open
    /// sessions are never touched. Returns the rows deleted.
    pub fn prune_history(&self, kept: u32, rows_max: u32) -> Result<usize, StoreError> {
        // Ids only grow (AUTOINCREMENT), so "older than the kept-th newest id" is a range of the
        // primary key, deleted oldest first.
        let prune = |sql: &str| {
            self.conn
                .prepare_cached(sql)
                .and_then(|mut stmt| stmt.execute([kept, rows_max]))
        };
        let events = prune(
            "DELETE FROM rotation_events WHERE id IN (SELECT id FROM rotation_events WHERE id < \
             (SELECT id FROM rotation_events ORDER BY id DESC LIMIT 1 OFFSET ?1 - 1) \
             ORDER BY id LIMIT ?2)",
        )
        .map_err(self.sql_error("prune old rotation events"))?;
        let sessions = prune(
            "DELETE FROM runtime_sessions WHERE id IN (SELECT id FROM runtime_sessions \
             WHERE ended_at IS NOT NULL AND id < (SELECT id FROM runtime_sessions \
             WHERE ended_at IS NOT NULL ORDER BY id DESC LIMIT 1 OFFSET ?1 - 1) \
             ORDER BY id LIMIT ?2)",
        )
        .map_err(self.sql_error("prune old sessions"))?;
        Ok(events + sessions)
    }

    /// The newest `limit` events, newest first: in the order they were recorded, which a clock
    /// stepped back does not change.
    pub fn rotation_events(&self, limit: usize) -> Result<Vec<RotationEventRow>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT id, at, \"trigger\", from_config_id, to_config_id, result, detail \
                 FROM rotation_events ORDER BY id DESC LIMIT ?1",
            )
            .and_then(|mut stmt| {
                // SQLite's LIMIT is an i64; anything larger means "all".
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                stmt.query_map([limit], RotationEventRow::from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(self.sql_error("list rotation events"))
    }

    /// The first of the event's config ids that is not stored.
    fn unknown_config(&self, event: &NewRotationEvent) -> Option<i64> {
        [event.from_config_id, event.to_config_id]
            .into_iter()
            .flatten()
            .find(|&id| matches!(self.config(id), Ok(None)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{link, open_temp};
    use super::*;

    fn event(at: u64, from: Option<i64>, to: Option<i64>) -> NewRotationEvent {
        NewRotationEvent {
            at,
            trigger: "manual".into(),
            from_config_id: from,
            to_config_id: to,
            result: "replaced".into(),
            detail: String::new(),
        }
    }

    #[test]
    fn insert_and_list_newest_first() {
        let (_dir, mut store) = open_temp();
        let links = [
            link("socks://127.0.0.1:1081"),
            link("socks://127.0.0.1:1082"),
        ];
        store.import(&links, 1).unwrap();
        let first = store
            .insert_rotation_event(&event(10, Some(1), Some(2)))
            .unwrap();
        let second = store
            .insert_rotation_event(&NewRotationEvent {
                trigger: "timer".into(),
                result: "no_candidate".into(),
                detail: "2 candidates failed".into(),
                ..event(20, Some(2), None)
            })
            .unwrap();
        let rows = store.rotation_events(10).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            [second, first]
        );
        assert_eq!(rows[0].trigger, "timer");
        assert_eq!(rows[0].detail, "2 candidates failed");
        assert_eq!(store.rotation_events(1).unwrap().len(), 1);
        assert_eq!(store.rotation_events(usize::MAX).unwrap().len(), 2);

        store.remove_config(1).unwrap();
        let rows = store.rotation_events(10).unwrap();
        assert_eq!(
            (rows[1].from_config_id, rows[1].to_config_id),
            (None, Some(2))
        );
    }

    #[test]
    fn events_list_in_recorded_order_when_the_clock_steps_back() {
        let (_dir, store) = open_temp();
        let late = store
            .insert_rotation_event(&event(500, None, None))
            .unwrap();
        let stepped_back = store
            .insert_rotation_event(&event(100, None, None))
            .unwrap();
        let ids: Vec<i64> = store
            .rotation_events(10)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, [stepped_back, late]);
        // Migration 5: no index on `at` is written by every switch.
        let indexes: i64 = store
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'rotation_events'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 2, "only the foreign keys' indexes are left");
    }

    #[test]
    fn unknown_config_is_named() {
        let (_dir, mut store) = open_temp();
        store.import(&[link("socks://127.0.0.1:1081")], 1).unwrap();
        let err = store
            .insert_rotation_event(&event(1, Some(1), Some(9)))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::NoSuchConfig { id: 9, .. }),
            "{err}"
        );
    }

    #[test]
    fn pruning_keeps_the_newest_events_and_ended_sessions_and_every_open_session() {
        let (_dir, mut store) = open_temp();
        store.import(&[link("socks://127.0.0.1:1081")], 1).unwrap();
        let events: Vec<i64> = (0..5)
            .map(|at| {
                store
                    .insert_rotation_event(&event(at, Some(1), None))
                    .unwrap()
            })
            .collect();
        let session = |at: u64| crate::store::NewSession {
            config_id: 1,
            core: "sing-box".into(),
            core_path: "/usr/bin/sing-box".into(),
            config_path: String::new(),
            socks_addr: "127.0.0.1:1080".into(),
            http_addr: None,
            started_at: at,
            process: None,
        };
        let sessions: Vec<i64> = (0..6)
            .map(|at| store.begin_session(&session(at)).unwrap())
            .collect();
        // The oldest stays open (an adopted core, say); the newest is the running session.
        for &id in &sessions[1..5] {
            store.end_session(id, 9, "rotated").unwrap();
        }
        // Fewer rows than kept: nothing goes.
        assert_eq!(store.prune_history(100, 100).unwrap(), 0);
        // A backlog goes `rows_max` rows a table at a time.
        assert_eq!(store.prune_history(2, 1).unwrap(), 1 + 1);
        assert_eq!(store.prune_history(2, 100).unwrap(), 2 + 1);
        let left: Vec<i64> = store
            .rotation_events(10)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, [events[4], events[3]]);
        let exists = |id: i64| store.session(id).unwrap().is_some();
        let kept: Vec<bool> = sessions.iter().map(|&id| exists(id)).collect();
        assert_eq!(kept, [true, false, false, true, true, true]);
        assert_eq!(store.prune_history(2, 100).unwrap(), 0);
    }
}
