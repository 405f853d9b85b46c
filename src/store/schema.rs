//! The schema as forward-only migrations. Migration N (1-based) brings `PRAGMA user_version` to
//! N; a released migration is never edited, a change is a new entry at the end.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::{hint, sql_error, StoreError};

/// The migrations in order.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: configs, runtime sessions, rotation events.
    //
    // AUTOINCREMENT keeps ids from being reused after a delete: scripts refer to configs by id,
    // and session ids name the core's log and config files.
    // Sessions and events keep their history when a config is removed (SET NULL, not CASCADE).
    // "trigger" is quoted because it is an SQL keyword.
    r#"
    CREATE TABLE configs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        scheme TEXT NOT NULL,
        server TEXT NOT NULL,
        port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
        raw_link TEXT NOT NULL UNIQUE,
        outbound_json TEXT NOT NULL,
        enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
        created_at INTEGER NOT NULL
    );
    CREATE TABLE runtime_sessions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        config_id INTEGER REFERENCES configs(id) ON DELETE SET NULL,
        core TEXT NOT NULL,
        core_path TEXT NOT NULL,
        pid INTEGER,
        pid_start_time INTEGER,
        config_path TEXT NOT NULL,
        socks_addr TEXT NOT NULL,
        http_addr TEXT,
        started_at INTEGER NOT NULL,
        ended_at INTEGER,
        end_reason TEXT
    );
    -- Foreign-key actions look up the child rows by config id; without these indexes every
    -- config removal would scan the history tables.
    CREATE INDEX runtime_sessions_config ON runtime_sessions(config_id);
    CREATE INDEX runtime_sessions_open ON runtime_sessions(started_at) WHERE ended_at IS NULL;
    CREATE TABLE rotation_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        "trigger" TEXT NOT NULL,
        from_config_id INTEGER REFERENCES configs(id) ON DELETE SET NULL,
        to_config_id INTEGER REFERENCES configs(id) ON DELETE SET NULL,
        result TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX rotation_events_at ON rotation_events(at);
    CREATE INDEX rotation_events_from ON rotation_events(from_config_id);
    CREATE INDEX rotation_events_to ON rotation_events(to_config_id);
    "#,
    // 2: pool cores (front mode, DESIGN §5). One pool core process serves several configs,
    // each on its own internal inbounds; a restarted daemon that adopts the process needs them
    // back. A process is named by pid and start time, as in runtime_sessions; a member goes
    // with its process (CASCADE) and with its config (CASCADE: nothing can route to it then).
    r#"
    CREATE TABLE pool_processes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        pid INTEGER NOT NULL,
        pid_start_time INTEGER NOT NULL,
        core TEXT NOT NULL,
        core_path TEXT NOT NULL,
        config_path TEXT NOT NULL,
        log_path TEXT NOT NULL,
        started_at INTEGER NOT NULL
    );
    CREATE INDEX pool_processes_pid ON pool_processes(pid);
    CREATE TABLE pool_members (
        process_id INTEGER NOT NULL REFERENCES pool_processes(id) ON DELETE CASCADE,
        config_id INTEGER NOT NULL REFERENCES configs(id) ON DELETE CASCADE,
        socks_addr TEXT NOT NULL,
        http_addr TEXT,
        PRIMARY KEY (process_id, config_id)
    );
    CREATE INDEX pool_members_config ON pool_members(config_id);
    "#,
    // 3: subscriptions (a provider's URL refreshed on an interval) and their member configs.
    // A member is known by its identity key (scheme, server, port, credentials, transport;
    // `subs::identity_key`), unique within its subscription, so a renamed node is an update.
    // A node the provider dropped is disabled and stamped `dropped_at`, never deleted: it may
    // be the active session. Removing a subscription detaches what is kept (SET NULL).
    r#"
    CREATE TABLE subscriptions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        url TEXT NOT NULL,
        interval_secs INTEGER NOT NULL CHECK (interval_secs > 0),
        via_proxy INTEGER NOT NULL DEFAULT 0 CHECK (via_proxy IN (0, 1)),
        ca_file TEXT,
        user_agent TEXT,
        created_at INTEGER NOT NULL,
        last_fetch_at INTEGER,
        last_status TEXT CHECK (last_status IN ('ok', 'error')),
        last_error TEXT,
        last_success_at INTEGER,
        upload_bytes INTEGER,
        download_bytes INTEGER,
        total_bytes INTEGER,
        expire_at INTEGER
    );
    ALTER TABLE configs ADD COLUMN subscription_id INTEGER
        REFERENCES subscriptions(id) ON DELETE SET NULL;
    ALTER TABLE configs ADD COLUMN identity_key TEXT;
    ALTER TABLE configs ADD COLUMN dropped_at INTEGER;
    CREATE INDEX configs_subscription ON configs(subscription_id);
    CREATE UNIQUE INDEX configs_subscription_identity ON configs(subscription_id, identity_key)
        WHERE subscription_id IS NOT NULL;
    "#,
    // 4: config test results and import-time refusals (issue 12 parts 2 and 3).
    //
    // `config_tests` is history: one row per tested config per test run, whoever ran it (the
    // CLI standalone, the daemon's `config_test`, a rotation's batch test). Rotation reads the
    // last rows per config (failure streak, quarantine); the CLI prunes to CONFIG_TESTS_KEPT
    // rows per config on every write. A config's results go with it (CASCADE).
    // `config_issues` holds why no installed core can run a config, found at import; a config
    // without a row had no issue. Separate from `configs` so the import path and the
    // subscriptions' columns never touch the same rows.
    r#"
    CREATE TABLE config_tests (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        config_id INTEGER NOT NULL REFERENCES configs(id) ON DELETE CASCADE,
        at INTEGER NOT NULL,
        ok INTEGER NOT NULL CHECK (ok IN (0, 1)),
        latency_ms INTEGER CHECK (latency_ms IS NULL OR latency_ms >= 0),
        error_kind TEXT,
        error TEXT,
        source TEXT NOT NULL CHECK (source IN ('cli', 'daemon', 'rotation')),
        CHECK ((ok = 1) = (latency_ms IS NOT NULL)),
        CHECK ((ok = 0) = (error_kind IS NOT NULL))
    );
    CREATE INDEX config_tests_config ON config_tests(config_id, id);
    CREATE TABLE config_issues (
        config_id INTEGER PRIMARY KEY REFERENCES configs(id) ON DELETE CASCADE,
        reason TEXT NOT NULL,
        checked_at INTEGER NOT NULL
    );
    "#,
    // 5: `rotation_events` loses its index on `at`. Nothing filters or sorts by time: events are
    // listed and pruned by id, which only grows (AUTOINCREMENT), so the index was one more
    // B-tree page in every switch's commit (9 WAL pages, now 8) and nothing read it.
    r#"
    DROP INDEX rotation_events_at;
    "#,
];

/// The schema version this build writes: the number of migrations.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Applies the migrations the file lacks, all in one transaction, or fails with
/// [`StoreError::TooNew`] when the file is ahead of this build.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    migrate_with(conn, path, MIGRATIONS)
}

/// [`migrate`] over an explicit list, so tests can prove that a failing migration leaves the
/// file untouched.
pub(super) fn migrate_with(
    conn: &mut Connection,
    path: &Path,
    migrations: &[&str],
) -> Result<(), StoreError> {
    // The common case (already current) is answered without taking the write lock.
    if check_version(conn, path, migrations.len())? == migrations.len() {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sql_error(path, "lock the database to upgrade its schema", e))?;
    // Read again under the lock: another process may have migrated in the meantime.
    let found = check_version(&tx, path, migrations.len())?;
    for (index, sql) in migrations.iter().enumerate().skip(found) {
        let version = index + 1;
        let failed = |source: rusqlite::Error| StoreError::Migrate {
            path: path.to_path_buf(),
            version,
            hint: hint(&source),
            source,
        };
        tx.execute_batch(sql).map_err(failed)?;
        tx.pragma_update(None, "user_version", version as i64)
            .map_err(failed)?;
    }
    tx.commit()
        .map_err(|e| sql_error(path, "commit the schema upgrade", e))
}

/// The file's schema version, checked against `known`.
fn check_version(conn: &Connection, path: &Path, known: usize) -> Result<usize, StoreError> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| sql_error(path, "read the schema version", e))?;
    match usize::try_from(found) {
        Ok(version) if version <= known => Ok(version),
        // A negative version is nothing xrat wrote either; "upgrade" is the least wrong advice.
        _ => Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known,
        }),
    }
}
