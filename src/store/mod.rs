//! The SQLite database `<root>/xrat.db` (DESIGN §2, §5): stored proxy configs, runtime sessions,
//! pool core processes and rotation events.
//!
//! The CLI and the daemon open the same file concurrently, so every connection runs in WAL mode
//! (readers never block the writer) with a 5 s busy timeout, and every multi-statement write is
//! an `IMMEDIATE` transaction: a deferred transaction that reads first and then writes can fail
//! with "database is locked" at once, without waiting, when another writer committed between its
//! read and its write.

mod batch;
mod configs;
mod events;
mod pool;
mod results;
mod schema;
mod sessions;
mod subscriptions;
#[cfg(test)]
mod tests;

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};
use thiserror::Error;

pub use configs::{scheme_of, ConfigRow, ImportOutcome};
pub use events::{NewRotationEvent, RotationEventRow};
pub use pool::{NewPoolProcess, PoolMember, PoolProcessRow};
pub use results::{NewConfigTest, TestPoint, TestSummary, CONFIG_TESTS_KEPT};
pub use schema::SCHEMA_VERSION;
pub use sessions::{NewSession, SessionRow};
pub use subscriptions::{NewSubscription, RemovedSubscription, SubscriptionRow, UpdateCounts};

/// How long a statement waits for another connection's write lock before giving up. Writes are
/// single short transactions, so 5 s only runs out when something is wrong.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Database failures. Messages name the database file and say what to do.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database file or its directory could not be created.
    #[error("cannot create database {}; check that its directory is writable", path.display())]
    Create {
        /// The database file or its directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// SQLite could not open or set up the file.
    #[error("cannot open database {}{hint}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What to do, from the SQLite error code (may be empty).
        hint: &'static str,
        /// The failure.
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer xrat with a schema this build does not know.
    #[error("database {} has schema version {found} but this xrat knows up to {known}; upgrade xrat", path.display())]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// [`SCHEMA_VERSION`].
        known: usize,
    },
    /// A migration failed; the transaction rolled back, so the file is unchanged.
    #[error("cannot upgrade database {} to schema version {version}{hint}", path.display())]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// The version the failed migration leads to.
        version: usize,
        /// What to do, from the SQLite error code (may be empty).
        hint: &'static str,
        /// The failure.
        #[source]
        source: rusqlite::Error,
    },
    /// A query or update failed.
    #[error("database {}: cannot {action}{hint}", path.display())]
    Sql {
        /// The database file.
        path: PathBuf,
        /// What was being done, e.g. `list configs`.
        action: &'static str,
        /// What to do, from the SQLite error code (may be empty).
        hint: &'static str,
        /// The failure.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored config's outbound JSON does not decode (written by a different xrat version or
    /// edited by hand).
    #[error("database {}: config {id} has an unreadable outbound ({detail}); remove it with `xrat config remove {id}` and import its link again", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// The config's id.
        id: i64,
        /// serde_json's description.
        detail: String,
    },
    /// A session or rotation event names a config id that is not stored.
    #[error("database {}: config {id} does not exist; list them with `xrat config list`", path.display())]
    NoSuchConfig {
        /// The database file.
        path: PathBuf,
        /// The unknown id.
        id: i64,
    },
    /// A subscription name that is not stored.
    #[error("database {}: no subscription is named {name:?}; list them with `xrat sub list`", path.display())]
    NoSuchSubscription {
        /// The database file.
        path: PathBuf,
        /// The unknown name.
        name: String,
    },
    /// `sub add` with a name already taken.
    #[error("database {}: a subscription named {name:?} already exists; pick another --name, or refresh it with `xrat sub update {name}`", path.display())]
    SubscriptionExists {
        /// The database file.
        path: PathBuf,
        /// The name.
        name: String,
    },
    /// A session id that is not stored.
    #[error("database {}: session {id} does not exist", path.display())]
    NoSuchSession {
        /// The database file.
        path: PathBuf,
        /// The unknown id.
        id: i64,
    },
}

/// One open connection to the database. Cheap enough to open per CLI command; the daemon keeps
/// one for its lifetime.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating when absent, mode 0600, parent directories included) the database at
    /// `path`, switches it to WAL, enables foreign keys and brings the schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        create_file(path)?;
        let open_error = |source: rusqlite::Error| StoreError::Open {
            path: path.to_path_buf(),
            hint: hint(&source),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_error)?;
        // The timeout first: switching to WAL itself needs a lock another process may hold.
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        enable_wal(&conn).map_err(open_error)?;
        // NORMAL is durable against crashes of xrat in WAL mode; only a power loss may drop the
        // last transaction, and it saves an fsync per write.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_error)?;
        // Per connection and a no-op inside a transaction, so it is set here, once.
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_error)?;
        schema::migrate(&mut conn, path)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Changes how long a statement waits on another process's lock (the daemon uses zero: its
    /// loop thread never waits; failed writes are retried from its timer).
    pub fn set_busy_timeout(&self, timeout: std::time::Duration) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(timeout)
            .map_err(self.sql_error("set the busy timeout"))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Maps a rusqlite error of `action` to [`StoreError::Sql`].
    fn sql_error(&self, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| sql_error(&self.path, action, source)
    }
}

impl StoreError {
    /// True when another process holds the database's lock.
    pub fn is_busy(&self) -> bool {
        let source = match self {
            StoreError::Sql { source, .. } | StoreError::Open { source, .. } => source,
            _ => return false,
        };
        matches!(
            source.sqlite_error_code(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        )
    }
}

/// [`StoreError::Sql`] for `action` on the database at `path`.
fn sql_error(path: &Path, action: &'static str, source: rusqlite::Error) -> StoreError {
    StoreError::Sql {
        path: path.to_path_buf(),
        action,
        hint: hint(&source),
        source,
    }
}

/// Switches the file to WAL. The mode is stored in the file, so only the first open of a new
/// file changes it; but when two connections race that first change, SQLite answers BUSY at
/// once, without calling the busy handler, so the change is retried here until
/// [`BUSY_TIMEOUT`]. A file system without shared memory keeps the rollback journal (SQLite
/// answers with the old mode instead of failing); that still works, with less concurrency.
fn enable_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        let mode: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?;
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(());
        }
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(())) {
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// True for "database is locked" / "database table is locked".
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Creates the file with mode 0600 before SQLite does, because SQLite would use 0644 and the
/// file holds proxy credentials. SQLite gives the -wal and -shm files the same mode.
fn create_file(path: &Path) -> Result<(), StoreError> {
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Create { path, source }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(failed(parent))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(failed(path))?;
    Ok(())
}

/// A "what to do" suffix for the SQLite errors a person can act on.
fn hint(error: &rusqlite::Error) -> &'static str {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "; another xrat process kept it locked for more than 5 s, try again"
        }
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen) => {
            "; check that you own the file and its directory and that both are writable"
        }
        Some(ErrorCode::DiskFull) => "; the disk is full, free some space and try again",
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            "; the file is damaged or not an xrat database, move it aside to start with an empty one"
        }
        _ => "",
    }
}
