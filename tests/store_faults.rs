//! The store never stalls the loop and never loses a state change (issue 10): another process
//! holding SQLite's write lock for seconds leaves every ping fast, and a disconnect recorded while
//! the lock is held is retried until written, so a restarted daemon does not reconnect a session
//! the user ended. Real V2Ray core and remote on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::rig::rig;
use common::wait_until;
use serde_json::json;

/// Holds an exclusive lock on the database for `hold`, from another connection (as another
/// process would); returns once the lock is taken.
fn lock_database(path: std::path::PathBuf, hold: Duration) -> std::thread::JoinHandle<()> {
    let (taken, wait) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let db = rusqlite::Connection::open(path).unwrap();
        db.execute_batch("BEGIN EXCLUSIVE").unwrap();
        taken.send(()).unwrap();
        std::thread::sleep(hold);
        db.execute_batch("COMMIT").unwrap();
    });
    wait.recv().unwrap();
    handle
}

#[test]
fn a_locked_database_never_stalls_pings_and_a_disconnect_is_recorded_later() {
    let rig = rig(1, "");
    let session = rig.connect(rig.ids[0])["session_id"].as_i64().unwrap();
    let db = rig.root.path().join("xrat.db");
    let lock = lock_database(db.clone(), Duration::from_secs(4));

    let reply = rig.call(json!({"type": "runtime_disconnect"}));
    assert_eq!(reply["code"], 200, "{reply}");
    let message = reply["message"].as_str().unwrap();
    assert!(
        message.contains("recording it failed") && message.contains("will retry"),
        "{message}"
    );
    let status = rig.status();
    assert!(status["store_error"].is_string(), "{status}");

    let mut conn = rig.root.connect();
    let mut worst = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let sent = Instant::now();
        assert_eq!(
            conn.call(json!(1), json!({"type": "daemon_ping"}))["code"],
            200
        );
        worst = worst.max(sent.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        worst < Duration::from_millis(50),
        "a ping took {worst:?} while the database was locked"
    );
    lock.join().unwrap();

    assert!(
        wait_until(Duration::from_secs(5), || rig.status()["store_error"]
            .is_null()),
        "the write was retried: {}",
        rig.status()
    );
    let ended: Option<String> = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT end_reason FROM runtime_sessions WHERE id = ?1",
            [session],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ended.as_deref(), Some("disconnected"));
    // A restart does not bring back the session the user ended.
    assert!(rig.root.run(&["daemon", "stop"]).status.success());
    rig.root.start();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rig.status()["runtime_status"], "idle", "{}", rig.root.log());
    eprintln!("database locked 4 s: worst ping {worst:?}; disconnect recorded after the lock");
}

#[test]
fn a_connect_while_the_database_is_locked_is_refused_at_once() {
    let rig = rig(1, "");
    let lock = lock_database(rig.root.path().join("xrat.db"), Duration::from_secs(2));
    let started = Instant::now();
    let reply = rig.call(json!({"type": "runtime_connect", "config_id": rig.ids[0]}));
    let took = started.elapsed();
    lock.join().unwrap();
    assert_eq!(reply["code"], 503, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("locked by another process"),
        "{reply}"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Once the lock is gone the same connect works.
    rig.connect(rig.ids[0]);
}

/// A tmpfs mounted over the test root, unmounted when dropped (needs root, as CI runs).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount(8) runs");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (CI runs as root): {}",
            common::text(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_disconnect_on_a_full_disk_is_retried_and_never_reversed() {
    use common::cores::{Core, HttpTarget, Proto, RemoteServer};
    let target = HttpTarget::start();
    let remote = RemoteServer::start_on(Proto::Socks, Core::V2ray);
    let root = common::Root::new();
    let _fs = Tmpfs::mount(root.path(), "8m");
    let daemon = common::daemon::Daemon::start_in(root, &Core::V2ray.runtime_settings(), &target);
    let id = daemon.import(&remote.link());
    daemon.connect(id);
    // Fill the disk.
    let filler = daemon.root.path().join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .output();
    let reply = daemon
        .root
        .connect()
        .call(json!(1), json!({"type": "runtime_disconnect"}));
    assert_eq!(reply["code"], 200, "{reply}");
    let message = reply["message"].as_str().unwrap();
    assert!(message.contains("recording it failed"), "{message}");
    std::fs::remove_file(&filler).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || daemon.status()["store_error"]
            .is_null()),
        "{}",
        daemon.status()
    );
    assert!(daemon.root.run(&["daemon", "stop"]).status.success());
    daemon.root.start();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        daemon.status()["runtime_status"],
        "idle",
        "{}",
        daemon.root.log()
    );
    assert!(
        !daemon.root.log().contains("reconnecting config"),
        "{}",
        daemon.root.log()
    );
}

/// A pool switch writes its session row, the old row's end and its rotation event in one
/// transaction (the turn's batch). On a full disk that commit fails after the switch happened:
/// the switch is still answered, and every one of the three rows is written once there is room,
/// the new session under the id its reply gave.
#[test]
fn a_pool_switch_that_cannot_be_committed_is_recorded_once_there_is_room() {
    use common::front::{front_unstarted, Opts};
    let mut f = front_unstarted(Opts::new(common::cores::Core::SingBox, 2));
    // The rig wrote settings and configs already: they move onto the small tmpfs.
    let saved = tempfile::tempdir().unwrap();
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        let out = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", from.display()))
            .arg(to)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", common::text(&out.stderr));
    };
    copy(f.root.path(), saved.path());
    let _fs = Tmpfs::mount(f.root.path(), "8m");
    copy(saved.path(), f.root.path());
    f.daemon_pid = f.root.start();
    let first = f.connect(f.ids[0]);
    f.wait_alive(2);
    let filler = f.root.path().join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .output();
    let reply =
        f.call(json!({"type": "runtime_replace", "trigger": "manual", "candidate_id": f.ids[1]}));
    assert_eq!(reply["code"], 200, "{reply}\n{}", f.root.log());
    let session = reply["payload"]["new_session_id"].as_i64().unwrap();
    let error = f.status()["store_error"].clone();
    assert!(
        error
            .as_str()
            .is_some_and(|e| e.contains("not recorded yet")),
        "{error}\n{}",
        f.root.log()
    );
    std::fs::remove_file(&filler).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || f.status()["store_error"]
            .is_null()),
        "{}\n{}",
        f.status(),
        f.root.log()
    );
    let db = rusqlite::Connection::open(f.root.path().join("xrat.db")).unwrap();
    let row = |id: i64| -> (i64, Option<String>) {
        db.query_row(
            "SELECT config_id, end_reason FROM runtime_sessions WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    assert_eq!(row(session), (f.ids[1], None));
    let old = first["session_id"].as_i64().unwrap();
    assert_eq!(row(old), (f.ids[0], Some("rotated".to_string())));
    let events: i64 = db
        .query_row(
            "SELECT count(*) FROM rotation_events WHERE to_config_id = ?1 AND result = 'switched'",
            [f.ids[1]],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(events, 1, "{}", f.root.log());
    drop(db);
    assert!(f.root.run(&["daemon", "stop"]).status.success());
}

/// Every switch adds a rotation event and an ended session. The daemon keeps the newest 10,000
/// of each (`daemon.history_kept`), pruning at most 1,000 rows a table each 100 commits, after
/// the turn's replies; the running session is never pruned. After a reload to
/// `history_kept = 0` nothing more is pruned.
#[test]
fn a_long_history_is_pruned_in_steps_and_the_running_session_stays() {
    use common::front::{front_unstarted, Opts};
    let mut f = front_unstarted(Opts::new(common::cores::Core::SingBox, 2));
    let path = f.root.path().join("xrat.db");
    let seeded = 12_000;
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {seeded}) \
         INSERT INTO rotation_events (at, \"trigger\", result) SELECT i, 'timer', 'switched' FROM n; \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {seeded}) \
         INSERT INTO runtime_sessions (core, core_path, config_path, socks_addr, started_at, \
         ended_at, end_reason) SELECT 'sing-box', '/x', '/x', '127.0.0.1:1', i, i, 'rotated' FROM n;"
    ))
    .unwrap();
    drop(db);
    f.daemon_pid = f.root.start();
    f.connect(f.ids[0]);
    f.wait_alive(2);
    let mut session = 0;
    for _ in 0..150 {
        let reply = f.call(json!({"type": "runtime_replace", "trigger": "manual"}));
        assert_eq!(reply["code"], 200, "{reply}\n{}", f.root.log());
        session = reply["payload"]["new_session_id"].as_i64().unwrap();
    }
    let db = rusqlite::Connection::open(&path).unwrap();
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    let events = count("SELECT count(*) FROM rotation_events");
    let ended = count("SELECT count(*) FROM runtime_sessions WHERE ended_at IS NOT NULL");
    // 150 switches are at least one checkpoint (one step of 1,000 rows) and fewer than two.
    for (what, rows) in [("rotation events", events), ("ended sessions", ended)] {
        assert!(
            (seeded - 1_000 + 150..seeded - 1_000 + 200).contains(&rows),
            "{rows} {what} left of {seeded} seeded plus about 150 new\n{}",
            f.root.log()
        );
    }
    assert_eq!(count("SELECT min(id) FROM rotation_events"), 1_001);
    let open: i64 = db
        .query_row(
            "SELECT count(*) FROM runtime_sessions WHERE id = ?1 AND ended_at IS NULL",
            [session],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(open, 1, "the running session {session} was pruned");
    // Keep everything from now on: 150 more switches (another checkpoint) prune nothing.
    let settings = f.root.path().join("config.toml");
    let mut table: toml::Table = std::fs::read_to_string(&settings).unwrap().parse().unwrap();
    let daemon = table.entry("daemon").or_insert(toml::Table::new().into());
    daemon
        .as_table_mut()
        .unwrap()
        .insert("history_kept".into(), 0.into());
    std::fs::write(&settings, toml::to_string(&table).unwrap()).unwrap();
    let reload = f.root.run(&["daemon", "reload"]);
    assert!(reload.status.success(), "{}", common::text(&reload.stderr));
    for _ in 0..150 {
        let reply = f.call(json!({"type": "runtime_replace", "trigger": "manual"}));
        assert_eq!(reply["code"], 200, "{reply}\n{}", f.root.log());
    }
    let after = count("SELECT count(*) FROM rotation_events");
    assert_eq!(
        after,
        events + 150,
        "rows were pruned with history_kept = 0"
    );
    assert_eq!(count("SELECT min(id) FROM rotation_events"), 1_001);
    drop(db);
    assert!(f.root.run(&["daemon", "stop"]).status.success());
}
