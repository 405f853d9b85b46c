//! Runtime sessions (DESIGN §5): one row per core process the daemon started. A row is written
//! before the core is spawned, so a daemon crash between spawn and bookkeeping still leaves a
//! trace to reconcile on the next start.

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::{Store, StoreError};

/// Columns in the order [`SessionRow::from_row`] reads them.
const COLUMNS: &str = "id, config_id, core, core_path, pid, pid_start_time, config_path, \
    socks_addr, http_addr, started_at, ended_at, end_reason";

/// A session about to be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// The config it runs; must be stored.
    pub config_id: i64,
    /// Core kind, e.g. `xray`.
    pub core: String,
    /// The core executable.
    pub core_path: String,
    /// The rendered core config file.
    pub config_path: String,
    /// SOCKS inbound, `host:port`.
    pub socks_addr: String,
    /// HTTP inbound, `host:port`, if any.
    pub http_addr: Option<String>,
    /// Unix seconds.
    pub started_at: u64,
    /// The core's pid and start time when already known (a pool member's core runs before its
    /// session begins), so the row needs no second write.
    pub process: Option<(u32, u64)>,
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionRow {
    /// Session id.
    pub id: i64,
    /// The config it ran; `None` once that config was removed.
    pub config_id: Option<i64>,
    /// Core kind.
    pub core: String,
    /// The core executable.
    pub core_path: String,
    /// Core pid; `None` until the core was spawned.
    pub pid: Option<u32>,
    /// The core's start time in clock ticks since boot (`/proc/<pid>/stat` field 22), which
    /// tells a reused pid from the original process.
    pub pid_start_time: Option<u64>,
    /// The rendered core config file.
    pub config_path: String,
    /// SOCKS inbound.
    pub socks_addr: String,
    /// HTTP inbound, if any.
    pub http_addr: Option<String>,
    /// Unix seconds.
    pub started_at: u64,
    /// Unix seconds; `None` while the session is open.
    pub ended_at: Option<u64>,
    /// Why it ended (`stopped`, `exited`, `stale`, ...).
    pub end_reason: Option<String>,
}

impl SessionRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<SessionRow> {
        Ok(SessionRow {
            id: row.get(0)?,
            config_id: row.get(1)?,
            core: row.get(2)?,
            core_path: row.get(3)?,
            pid: row.get(4)?,
            pid_start_time: row.get(5)?,
            config_path: row.get(6)?,
            socks_addr: row.get(7)?,
            http_addr: row.get(8)?,
            started_at: row.get(9)?,
            ended_at: row.get(10)?,
            end_reason: row.get(11)?,
        })
    }
}

const INSERT_SESSION: &str = "INSERT INTO runtime_sessions \
    (id, config_id, core, core_path, config_path, socks_addr, http_addr, started_at, pid, \
     pid_start_time) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
const RESTORE_SESSION: &str = "INSERT OR IGNORE INTO runtime_sessions \
    (id, config_id, core, core_path, config_path, socks_addr, http_addr, started_at, pid, \
     pid_start_time) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

impl Store {
    /// Records a session before its core is spawned (pid unknown yet) and returns its id.
    /// Fails with [`StoreError::NoSuchConfig`] when the config is not stored.
    pub fn begin_session(&self, new: &NewSession) -> Result<i64, StoreError> {
        self.insert_session(None, new)
    }

    /// Writes again a session row that a lost batch took with it (the daemon's retry of
    /// [`Store::begin_session`]), under the id it was given then. A row already there is kept:
    /// the retry may run twice.
    pub fn restore_session(&self, id: i64, new: &NewSession) -> Result<(), StoreError> {
        self.insert_session(Some(id), new).map(drop)
    }

    fn insert_session(&self, id: Option<i64>, new: &NewSession) -> Result<i64, StoreError> {
        // Cached: a pool switch writes a session, and parsing the SQL each time was a fifth of
        // the daemon's time in a run of switches. A NULL id is the next rowid. Only a restore
        // ignores a row already there; a new row must be written or fail.
        let sql = match id {
            None => INSERT_SESSION,
            Some(_) => RESTORE_SESSION,
        };
        let inserted = self.conn.prepare_cached(sql).and_then(|mut insert| {
            insert.execute(params![
                id,
                new.config_id,
                new.core,
                new.core_path,
                new.config_path,
                new.socks_addr,
                new.http_addr,
                new.started_at,
                new.process.map(|(pid, _)| pid),
                new.process.map(|(_, start_time)| start_time),
            ])
        });
        match inserted {
            Ok(_) => Ok(id.unwrap_or_else(|| self.conn.last_insert_rowid())),
            Err(e) if is_foreign_key_error(&e) => Err(StoreError::NoSuchConfig {
                path: self.path.clone(),
                id: new.config_id,
            }),
            Err(e) => Err(self.sql_error("record a new session")(e)),
        }
    }

    /// Records the spawned core's pid and start time.
    pub fn set_session_process(
        &self,
        id: i64,
        pid: u32,
        pid_start_time: u64,
    ) -> Result<(), StoreError> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE runtime_sessions SET pid = ?2, pid_start_time = ?3 WHERE id = ?1",
            )
            .and_then(|mut update| update.execute(params![id, pid, pid_start_time]))
            .map_err(self.sql_error("record a session's process"))?;
        self.found(id, changed)
    }

    /// Ends a session. A session that already ended keeps its first end time and reason, so a
    /// late duplicate report (exit seen after a stop) cannot rewrite history.
    pub fn end_session(&self, id: i64, ended_at: u64, reason: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE runtime_sessions SET ended_at = ?2, end_reason = ?3 \
                 WHERE id = ?1 AND ended_at IS NULL",
            )
            .and_then(|mut update| update.execute(params![id, ended_at, reason]))
            .map_err(self.sql_error("end a session"))?;
        Ok(())
    }

    /// Sessions without an end (normally at most one), newest first; what a starting daemon
    /// reconciles.
    pub fn open_sessions(&self) -> Result<Vec<SessionRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM runtime_sessions WHERE ended_at IS NULL \
             ORDER BY started_at DESC, id DESC"
        );
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_map([], SessionRow::from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(self.sql_error("list open sessions"))
    }

    /// One session, or `None` when the id is not stored.
    pub fn session(&self, id: i64) -> Result<Option<SessionRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM runtime_sessions WHERE id = ?1");
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| stmt.query_row([id], SessionRow::from_row).optional())
            .map_err(self.sql_error("read a session"))
    }

    /// `Ok` when an update touched the session, [`StoreError::NoSuchSession`] otherwise.
    fn found(&self, id: i64, changed: usize) -> Result<(), StoreError> {
        if changed == 0 {
            return Err(StoreError::NoSuchSession {
                path: self.path.clone(),
                id,
            });
        }
        Ok(())
    }
}

/// True for a FOREIGN KEY constraint failure (an unknown config id).
pub(super) fn is_foreign_key_error(error: &rusqlite::Error) -> bool {
    error
        .sqlite_error()
        .is_some_and(|e| e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{link, open_temp};
    use super::*;

    fn new_session(config_id: i64, started_at: u64) -> NewSession {
        NewSession {
            config_id,
            core: "xray".into(),
            core_path: "/usr/bin/xray".into(),
            config_path: "/tmp/x/runtime/sessions/1.json".into(),
            socks_addr: "127.0.0.1:1080".into(),
            http_addr: None,
            started_at,
            process: None,
        }
    }

    #[test]
    fn session_lifecycle() {
        let (_dir, mut store) = open_temp();
        store.import(&[link("socks://127.0.0.1:1081")], 1).unwrap();
        let first = store.begin_session(&new_session(1, 100)).unwrap();
        let second = store
            .begin_session(&NewSession {
                http_addr: Some("127.0.0.1:8080".into()),
                ..new_session(1, 200)
            })
            .unwrap();
        let row = store.session(first).unwrap().unwrap();
        assert_eq!(
            (row.pid, row.pid_start_time, row.ended_at),
            (None, None, None)
        );
        store.set_session_process(first, 4242, 987_654).unwrap();
        let row = store.session(first).unwrap().unwrap();
        assert_eq!((row.pid, row.pid_start_time), (Some(4242), Some(987_654)));
        // A pool member's session is written with its core's identity at once.
        let pooled = NewSession {
            process: Some((4343, 123)),
            ..new_session(1, 300)
        };
        let third = store.begin_session(&pooled).unwrap();
        let row = store.session(third).unwrap().unwrap();
        assert_eq!((row.pid, row.pid_start_time), (Some(4343), Some(123)));
        store.end_session(third, 310, "stopped").unwrap();
        let open: Vec<i64> = store
            .open_sessions()
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(open, [second, first]);

        store.end_session(first, 150, "stopped").unwrap();
        store.end_session(first, 999, "exited").unwrap();
        let row = store.session(first).unwrap().unwrap();
        assert_eq!(row.ended_at, Some(150));
        assert_eq!(row.end_reason.as_deref(), Some("stopped"));
        let open: Vec<i64> = store
            .open_sessions()
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(open, [second]);
        assert_eq!(store.session(99).unwrap(), None);
    }

    #[test]
    fn history_survives_config_removal() {
        let (_dir, mut store) = open_temp();
        store.import(&[link("socks://127.0.0.1:1081")], 1).unwrap();
        let id = store.begin_session(&new_session(1, 100)).unwrap();
        assert!(store.remove_config(1).unwrap());
        let row = store.session(id).unwrap().unwrap();
        assert_eq!(row.config_id, None);
        assert_eq!(row.core, "xray");
    }

    #[test]
    fn unknown_ids_are_errors() {
        let (_dir, store) = open_temp();
        let err = store.begin_session(&new_session(5, 1)).unwrap_err();
        assert!(
            matches!(err, StoreError::NoSuchConfig { id: 5, .. }),
            "{err}"
        );
        let err = store.set_session_process(8, 1, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "database {}: session 8 does not exist",
                store.path().display()
            )
        );
    }
}
