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

    /// The newest `limit` events, newest first.
    pub fn rotation_events(&self, limit: usize) -> Result<Vec<RotationEventRow>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT id, at, \"trigger\", from_config_id, to_config_id, result, detail \
                 FROM rotation_events ORDER BY at DESC, id DESC LIMIT ?1",
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
}
