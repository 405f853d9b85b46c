//! Tests of opening, migrating, atomicity and concurrency, against real files in a tempdir.

use std::os::unix::fs::PermissionsExt;
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::*;
use crate::links::{parse_link, ParsedLink};

/// A fresh store in a new tempdir (kept alive by the returned guard).
pub(super) fn open_temp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("xrat.db")).unwrap();
    (dir, store)
}

/// Parses a link that the test knows is valid.
pub(super) fn link(text: &str) -> ParsedLink {
    parse_link(text).unwrap()
}

fn count_configs(path: &Path) -> i64 {
    let conn = Connection::open(path).unwrap();
    conn.query_row("SELECT count(*) FROM configs", [], |row| row.get(0))
        .unwrap()
}

#[test]
fn open_creates_a_private_wal_database_in_a_new_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new/root/xrat.db");
    let store = Store::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let journal: String = store
        .conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    let foreign_keys: bool = store
        .conn
        .pragma_query_value(None, "foreign_keys", |row| row.get(0))
        .unwrap();
    assert!(foreign_keys);
    let version: i64 = store
        .conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION as i64);
    assert_eq!(store.path(), path);
}

#[test]
fn reopening_keeps_data_and_schema() {
    let (dir, mut store) = open_temp();
    store.import(&[link("socks://127.0.0.1:1081")], 1).unwrap();
    drop(store);
    for _ in 0..3 {
        let store = Store::open(&dir.path().join("xrat.db")).unwrap();
        assert_eq!(store.configs().unwrap().len(), 1);
        let version: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION as i64);
    }
}

#[test]
fn newer_schema_is_refused_with_advice() {
    let (dir, store) = open_temp();
    let path = dir.path().join("xrat.db");
    store
        .conn
        .pragma_update(None, "user_version", SCHEMA_VERSION as i64 + 1)
        .unwrap();
    drop(store);
    let err = Store::open(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "database {} has schema version {} but this xrat knows up to {}; upgrade xrat",
            path.display(),
            SCHEMA_VERSION + 1,
            SCHEMA_VERSION
        )
    );
}

#[test]
fn a_failing_migration_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xrat.db");
    let mut conn = Connection::open(&path).unwrap();
    let migrations = ["CREATE TABLE a (x INTEGER);", "CREATE TABLE b (; -- broken"];
    let err = schema::migrate_with(&mut conn, &path, &migrations).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "cannot upgrade database {} to schema version 2",
            path.display()
        )),
        "{err}"
    );
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, 0);
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
        .unwrap();
    assert_eq!(tables, 0, "migration 1 must have rolled back too");
}

#[test]
fn a_file_that_is_not_a_database_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xrat.db");
    std::fs::write(
        &path,
        "this is not sqlite, just some text long enough to have a header",
    )
    .unwrap();
    let err = Store::open(&path).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("cannot open database {}", path.display())),
        "{err}"
    );
    assert!(
        err.ends_with("move it aside to start with an empty one"),
        "{err}"
    );
}

#[test]
fn import_is_all_or_nothing() {
    let (dir, mut store) = open_temp();
    // A real SQLite failure on the third insert, after two rows went in.
    store
        .conn
        .execute_batch(
            "CREATE TRIGGER boom BEFORE INSERT ON configs WHEN NEW.name = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'forced failure'); END;",
        )
        .unwrap();
    let links = [
        link("socks://127.0.0.1:1081#one"),
        link("socks://127.0.0.1:1082#two"),
        link("socks://127.0.0.1:1083#boom"),
        link("socks://127.0.0.1:1084#four"),
    ];
    let err = store.import(&links, 1).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "database {}: cannot import configs",
            store.path().display()
        )),
        "{err}"
    );
    assert_eq!(count_configs(&dir.path().join("xrat.db")), 0);
    assert!(store.configs().unwrap().is_empty());
    // The store is still usable, and ids were not burnt by the rolled-back rows.
    let outcomes = store.import(&links[..2], 1).unwrap();
    assert!(matches!(outcomes[0], ImportOutcome::Imported { id: 1, .. }));
}

#[test]
fn a_writer_waits_for_another_connection_instead_of_failing() {
    let (dir, mut store) = open_temp();
    let path = dir.path().join("xrat.db");
    let (locked_tx, locked_rx) = mpsc::channel();
    let holder = thread::spawn({
        let path = path.clone();
        move || {
            let other = Store::open(&path).unwrap();
            other.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            other
                .conn
                .execute("UPDATE configs SET enabled = 0", [])
                .unwrap();
            locked_tx.send(()).unwrap();
            thread::sleep(Duration::from_millis(300));
            other.conn.execute_batch("COMMIT").unwrap();
        }
    });
    locked_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let started = Instant::now();
    let outcomes = store.import(&[link("socks://127.0.0.1:1081")], 1).unwrap();
    let waited = started.elapsed();
    holder.join().unwrap();
    assert_eq!(outcomes.len(), 1);
    assert!(
        waited >= Duration::from_millis(200),
        "did not wait: {waited:?}"
    );
    assert!(waited < BUSY_TIMEOUT, "waited too long: {waited:?}");
    // Reads are never blocked by a writer in WAL mode.
    assert_eq!(store.configs().unwrap().len(), 1);
}

#[test]
fn concurrent_first_opens_and_imports_agree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xrat.db");
    let links: Vec<ParsedLink> = (0..20)
        .map(|i| link(&format!("socks://127.0.0.1:{}", 2000 + i)))
        .collect();
    let threads = 6;
    let barrier = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads)
        .map(|n| {
            let (path, links, barrier) = (path.clone(), links.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                // Every thread opens (and so migrates) the brand-new file at the same moment.
                let mut store = Store::open(&path).unwrap();
                let mut mine = links;
                mine.rotate_left(n * 3);
                store.import(&mine, 1).unwrap()
            })
        })
        .collect();
    let imported: usize = workers
        .into_iter()
        .flat_map(|worker| worker.join().unwrap())
        .filter(|outcome| matches!(outcome, ImportOutcome::Imported { .. }))
        .count();
    assert_eq!(imported, links.len(), "each link imported exactly once");
    assert_eq!(count_configs(&path), links.len() as i64);
}

#[test]
fn a_version_1_file_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xrat.db");
    {
        let mut conn = Connection::open(&path).unwrap();
        schema::migrate_with(&mut conn, &path, &schema::MIGRATIONS[..1]).unwrap();
        conn.execute(
            "INSERT INTO configs (name, scheme, server, port, raw_link, outbound_json, \
             created_at) VALUES ('a', 'socks', 'h', 1, 'socks://h:1', '{}', 1)",
            [],
        )
        .unwrap();
    }
    let mut store = Store::open(&path).unwrap();
    let version: i64 = store
        .conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION as i64);
    let kept: i64 = store
        .conn
        .query_row("SELECT count(*) FROM configs", [], |row| row.get(0))
        .unwrap();
    assert_eq!(kept, 1);
    let pool = NewPoolProcess {
        pid: 1,
        pid_start_time: 2,
        core: "mihomo".into(),
        core_path: "/bin/mihomo".into(),
        config_path: "/r/pool-0-0.json".into(),
        log_path: "/r/logs/pool-0.log".into(),
        started_at: 3,
        members: vec![PoolMember {
            config_id: 1,
            socks_addr: "127.0.0.1:2".into(),
            http_addr: None,
        }],
    };
    store.record_pool_process(&pool).unwrap();
    assert_eq!(store.pool_processes().unwrap()[0].members.len(), 1);
}
