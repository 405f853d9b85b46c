//! The daemon's turn batch: the writes of one loop turn share one `IMMEDIATE` transaction, so a
//! pool switch (its new session row, the old row's end, its rotation event) costs one commit
//! instead of three: a commit is most of a write's price (the WAL frames of every page it touched,
//! the lock calls, the index), and pages two writes share are written once.
//!
//! Store methods that need a transaction of their own take [`write_tx`]: a transaction when none
//! is open, a savepoint inside the batch, so that a failed method undoes only its own part.

use std::ops::Deref;

use rusqlite::{Connection, Savepoint, Transaction, TransactionBehavior};

use super::{sql_error, Store, StoreError};

/// A multi-statement write: its own `IMMEDIATE` transaction, or a savepoint of an open batch.
pub(super) enum WriteTx<'c> {
    Own(Transaction<'c>),
    Nested(Savepoint<'c>),
}

impl WriteTx<'_> {
    pub(super) fn commit(self) -> rusqlite::Result<()> {
        match self {
            WriteTx::Own(tx) => tx.commit(),
            WriteTx::Nested(sp) => sp.commit(),
        }
    }
}

impl Deref for WriteTx<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match self {
            WriteTx::Own(tx) => tx,
            WriteTx::Nested(sp) => sp,
        }
    }
}

/// Starts a multi-statement write on `conn`; dropped without [`WriteTx::commit`], it rolls back
/// (only its own statements, inside a batch).
pub(super) fn write_tx(conn: &mut Connection) -> rusqlite::Result<WriteTx<'_>> {
    if conn.is_autocommit() {
        conn.transaction_with_behavior(TransactionBehavior::Immediate)
            .map(WriteTx::Own)
    } else {
        conn.savepoint().map(WriteTx::Nested)
    }
}

impl Store {
    /// Opens a batch: every write until [`Store::commit_batch`] joins one transaction. Fails at
    /// once (the daemon's busy timeout is zero) when another process holds the write lock; the
    /// writes then go one by one, as without a batch.
    pub fn begin_batch(&self) -> Result<(), StoreError> {
        // Cached: parsing the statement again cost as much as taking the locks it asks for.
        self.conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut begin| begin.execute([]))
            .map(drop)
            .map_err(self.sql_error("lock the database for this turn's writes"))
    }

    /// True while a batch (or any transaction) is open. SQLite rolls a transaction back by itself
    /// on some failures (disk full, I/O, out of memory): a batch that was open and is not any more
    /// lost every write made in it.
    pub fn in_batch(&self) -> bool {
        !self.conn.is_autocommit()
    }

    /// Commits the open batch. On failure the batch is rolled back, so the database holds none
    /// of its writes: the caller keeps them to write again.
    pub fn commit_batch(&self) -> Result<(), StoreError> {
        let commit = self
            .conn
            .prepare_cached("COMMIT")
            .and_then(|mut commit| commit.execute([]));
        match commit {
            Ok(_) => Ok(()),
            Err(e) => {
                if self.in_batch() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                Err(sql_error(&self.path, "commit this turn's writes", e))
            }
        }
    }
}

impl Store {
    /// Leaves checkpoints to [`Store::checkpoint`] until the WAL holds `pages_max` pages:
    /// SQLite would otherwise copy the WAL into the database (and fsync it) inside whichever
    /// commit crossed its threshold of 1,000 pages, in the daemon's case the commit a reply
    /// waits for. Past `pages_max` it still does, so the WAL stays bounded whoever forgets.
    pub fn defer_checkpoints(&self, pages_max: u32) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "wal_autocheckpoint", pages_max)
            .map_err(self.sql_error("defer the WAL checkpoints"))
    }

    /// Copies what it can of the WAL into the database without waiting for a reader or a
    /// writer (`PASSIVE`); a reader that holds an old snapshot only leaves the rest for next time.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(self.sql_error("checkpoint the WAL"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{link, open_temp};
    use super::super::{NewRotationEvent, NewSession};

    fn session(config_id: i64) -> NewSession {
        NewSession {
            config_id,
            core: "sing-box".into(),
            core_path: "/usr/bin/sing-box".into(),
            config_path: String::new(),
            socks_addr: "127.0.0.1:1080".into(),
            http_addr: None,
            started_at: 100,
            process: Some((4242, 7)),
        }
    }

    fn event() -> NewRotationEvent {
        NewRotationEvent {
            at: 101,
            trigger: "manual".into(),
            from_config_id: None,
            to_config_id: None,
            result: "switched".into(),
            detail: "batched".into(),
        }
    }

    #[test]
    fn a_batch_commits_its_writes_together_and_a_nested_write_keeps_its_own_savepoint() {
        let (_dir, mut store) = open_temp();
        store.import(&[link("socks://127.0.0.1:1081")], 1).unwrap();
        store.begin_batch().unwrap();
        assert!(store.in_batch());
        let id = store.begin_session(&session(1)).unwrap();
        store.insert_rotation_event(&event()).unwrap();
        // A method with a transaction of its own runs as a savepoint inside the batch.
        store.record_tests(&[]).unwrap();
        store.commit_batch().unwrap();
        assert!(!store.in_batch());
        assert_eq!(store.session(id).unwrap().unwrap().config_id, Some(1));
        assert_eq!(store.rotation_events(10).unwrap()[0].detail, "batched");
    }

    #[test]
    fn a_batch_that_cannot_commit_leaves_nothing_and_is_closed() {
        let (_dir, store) = open_temp();
        store.begin_batch().unwrap();
        store.insert_rotation_event(&event()).unwrap();
        // A foreign key that is broken at commit time (deferred) makes COMMIT fail.
        store
            .conn
            .execute_batch("PRAGMA defer_foreign_keys = ON")
            .unwrap();
        store
            .conn
            .execute(
                "INSERT INTO runtime_sessions (config_id, core, core_path, config_path, \
                 socks_addr, started_at) VALUES (999, 'x', 'x', 'x', 'x', 1)",
                [],
            )
            .unwrap();
        let error = store.commit_batch().unwrap_err().to_string();
        assert!(error.contains("commit this turn's writes"), "{error}");
        assert!(!store.in_batch());
        assert!(store.rotation_events(10).unwrap().is_empty());
    }

    #[test]
    fn deferred_checkpoints_leave_the_database_file_alone_until_asked() {
        let (dir, store) = open_temp();
        store.defer_checkpoints(10_000).unwrap();
        let file = dir.path().join("xrat.db");
        let size = || std::fs::metadata(&file).unwrap().len();
        let before = size();
        // About 1,500 pages in one commit, past SQLite's own threshold of 1,000.
        store.begin_batch().unwrap();
        for _ in 0..1_500 {
            let detail = "x".repeat(4_000);
            store
                .insert_rotation_event(&super::super::NewRotationEvent { detail, ..event() })
                .unwrap();
        }
        store.commit_batch().unwrap();
        assert_eq!(size(), before, "SQLite checkpointed by itself");
        store.checkpoint().unwrap();
        assert!(size() > before + 4_000_000, "{} -> {}", before, size());
    }
}
