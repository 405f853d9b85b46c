//! Reattaching to pool cores, against a real store and stand-in core processes (`sleep`, whose
//! executable is what the records name, so the identity checks pass).

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use super::*;
use crate::links::parse_link;
use crate::paths::Paths;
use crate::settings::Settings;
use crate::store::{NewPoolProcess, NewSession, PoolMember, Store};

const SLEEP: &str = "/bin/sleep";

fn env(mode: RuntimeMode) -> (tempfile::TempDir, Env) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.runtime.mode = mode;
    let mut store = Store::open(&dir.path().join("xrat.db")).unwrap();
    let links =
        ["socks://127.0.0.1:1081", "socks://127.0.0.1:1082"].map(|l| parse_link(l).unwrap());
    store.import(&links, 1).unwrap();
    let paths = Paths::at(dir.path());
    (
        dir,
        Env {
            paths,
            settings,
            store,
        },
    )
}

/// A stand-in pool core process, in its own group like a real one, with its config file.
fn pool_core(env: &mut Env, dir: &Path, n: u16) -> (Spawned, PathBuf) {
    let spawned = process::spawn(Path::new(SLEEP), &["30".into()], &dir.join("sleep.log")).unwrap();
    let config = dir.join(format!("pool-0-{n}.json"));
    std::fs::write(&config, "{}").unwrap();
    let member = |config_id: i64, port: u16| PoolMember {
        config_id,
        socks_addr: format!("127.0.0.1:{port}"),
        http_addr: Some(format!("127.0.0.1:{}", port + 1)),
    };
    let base = 20000 + 10 * n;
    let record = NewPoolProcess {
        pid: spawned.pid,
        pid_start_time: spawned.start_time,
        core: "sing-box".into(),
        core_path: SLEEP.into(),
        config_path: config.display().to_string(),
        log_path: dir.join("pool-0.log").display().to_string(),
        started_at: 1,
        members: vec![member(1, base), member(2, base + 2)],
    };
    env.store.record_pool_process(&record).unwrap();
    (spawned, config)
}

/// An open session on config 1 of `core`, as BeginSession writes it.
fn session_on(env: &Env, core: &Spawned, config: &Path) -> i64 {
    let new = NewSession {
        config_id: 1,
        core: "sing-box".into(),
        core_path: SLEEP.into(),
        config_path: config.display().to_string(),
        socks_addr: "127.0.0.1:20001".into(),
        http_addr: None,
        started_at: 1,
        process: None,
    };
    let id = env.store.begin_session(&new).unwrap();
    env.store
        .set_session_process(id, core.pid, core.start_time)
        .unwrap();
    id
}

/// How the process ended, waiting up to 5 s.
fn ended(spawned: &Spawned) -> String {
    let mut pfd = libc::pollfd {
        fd: spawned.pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polling one valid pollfd for at most 5 s.
    assert_eq!(
        unsafe { libc::poll(&mut pfd, 1, 5_000) },
        1,
        "still running"
    );
    process::reap(pfd.fd)
}

const NOW: Now = Now {
    monotonic_ms: 0,
    unix_secs: 50,
    unix_ms: 50_000,
};

#[test]
fn front_mode_adopts_the_pool_core_with_its_members_and_stops_the_others() {
    let (dir, mut env) = env(RuntimeMode::Front);
    let (active, active_config) = pool_core(&mut env, dir.path(), 0);
    let (orphan, orphan_config) = pool_core(&mut env, dir.path(), 1);
    let session = session_on(&env, &active, &active_config);
    let adopted = reattach(&env, NOW).adopted.expect("adopted");
    assert_eq!((adopted.info.id, adopted.info.pid), (session, active.pid));
    let pool = adopted.pool.expect("the session's pool core");
    assert_eq!(pool.pid, active.pid);
    let members: Vec<(i64, &str, Option<&str>)> = pool
        .members
        .iter()
        .map(|m| (m.config_id, m.socks_addr.as_str(), m.http_addr.as_deref()))
        .collect();
    assert_eq!(
        members,
        [
            (1, "127.0.0.1:20000", Some("127.0.0.1:20001")),
            (2, "127.0.0.1:20002", Some("127.0.0.1:20003"))
        ]
    );
    assert!(pool.log_path.ends_with("pool-0.log"));
    // The pool core no session was on: stopped, its config removed, its record gone.
    assert_eq!(ended(&orphan), "killed by signal 15");
    assert!(!orphan_config.exists());
    assert!(active_config.exists());
    let left: Vec<u32> = env
        .store
        .pool_processes()
        .unwrap()
        .iter()
        .map(|p| p.pid)
        .collect();
    assert_eq!(left, [active.pid]);
    process::signal_group(active.pid, libc::SIGKILL);
    assert_eq!(ended(&active), "killed by signal 9");
}

#[test]
fn direct_mode_ends_a_pool_session_and_connects_its_config_again() {
    let (dir, mut env) = env(RuntimeMode::Direct);
    let (core, config) = pool_core(&mut env, dir.path(), 0);
    let session = session_on(&env, &core, &config);
    let reattached = reattach(&env, NOW);
    assert!(reattached.adopted.is_none());
    assert_eq!(reattached.reconnect, Some(1));
    let row = env.store.session(session).unwrap().unwrap();
    assert_eq!(row.end_reason.as_deref(), Some("stale"));
    assert_eq!(ended(&core), "killed by signal 15");
    assert!(env.store.pool_processes().unwrap().is_empty());
}
