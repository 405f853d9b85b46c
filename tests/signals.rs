//! Signals, the daemon convention: SIGHUP re-reads config.toml and reopens the log (logrotate),
//! SIGUSR1 logs the state, other signals that would kill a process are logged and survived, and
//! `xrat daemon reload` does what SIGHUP does, over the socket.

mod common;

use std::time::Duration;

use common::{text, wait_until, Root};
use serde_json::{json, Value};

fn proxy_status(root: &Root) -> Value {
    root.connect()
        .call(json!(1), json!({"type": "proxy_status"}))["payload"]
        .clone()
}

#[test]
fn stray_signals_are_logged_and_survived() {
    let root = Root::new();
    let pid = root.start() as i32;
    for signo in [
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGQUIT,
        libc::SIGPIPE,
    ] {
        // SAFETY: signalling the daemon this test started.
        assert_eq!(unsafe { libc::kill(pid, signo) }, 0);
        std::thread::sleep(Duration::from_millis(100));
        let reply = root
            .connect()
            .call(json!(1), json!({"type": "daemon_ping"}));
        assert_eq!(reply["code"], 200, "after signal {signo}: {}", root.log());
    }
    let log = root.log();
    assert!(
        log.contains("xrat: state: none; operation in flight: false"),
        "{log}"
    );
    assert!(
        log.contains(&format!("ignoring signal {}", libc::SIGUSR2)),
        "{log}"
    );
    assert!(root.socket().exists());
}

#[test]
fn sighup_reloads_settings_and_reopens_the_log() {
    let root = Root::new();
    root.write_settings("[runtime.rotation]\ninterval_secs = 1800\n");
    let pid = root.start() as i32;
    assert_eq!(proxy_status(&root)["interval_secs"], 1800);
    root.write_settings(
        "[daemon]\nmax_connections = 99\n[runtime.rotation]\ninterval_secs = 600\n",
    );
    // logrotate moves the file away, then signals.
    let log = root.path().join("logs/daemon.log");
    let rotated = root.path().join("logs/daemon.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    // SAFETY: signalling the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    assert!(
        wait_until(Duration::from_secs(5), || proxy_status(&root)
            ["interval_secs"]
            == 600),
        "{}",
        proxy_status(&root)
    );
    assert!(
        wait_until(Duration::from_secs(5), || root
            .log()
            .contains("settings reloaded")),
        "the new log gets the lines: {:?}",
        root.log()
    );
    assert!(
        root.log()
            .contains("need a restart: [daemon.max_connections]"),
        "{}",
        root.log()
    );
    assert!(std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("serving"));
}

#[test]
fn reload_over_the_socket_and_a_bad_file_keeps_the_running_settings() {
    let root = Root::new();
    root.write_settings("[health]\nfailure_threshold = 3\n");
    root.start();
    root.write_settings("[health]\nfailure_threshold = 5\n");
    let out = root.run(&["daemon", "reload", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        view["applied"],
        json!(["health.failure_threshold"]),
        "{view}"
    );
    assert_eq!(proxy_status(&root)["health_failure_threshold"], 5);

    root.write_settings("[health]\nfailure_threshold = 0\n");
    let out = root.run(&["daemon", "reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("failure_threshold") && err.contains("config.toml"),
        "names the key and the file: {err}"
    );
    assert!(err.contains("the running settings are kept"), "{err}");
    assert_eq!(proxy_status(&root)["health_failure_threshold"], 5);
    // A reload pipelined between pings is answered in its place.
    let mut conn = root.connect();
    conn.send(b"{\"protocol_version\":1,\"id\":1,\"request\":{\"type\":\"daemon_ping\"}}\n{\"protocol_version\":1,\"id\":2,\"request\":{\"type\":\"daemon_reload\"}}\n{\"protocol_version\":1,\"id\":3,\"request\":{\"type\":\"daemon_ping\"}}\n");
    let ids: Vec<Value> = (0..3).map(|_| conn.recv()["id"].clone()).collect();
    assert_eq!(ids, [json!(1), json!(2), json!(3)]);
}
