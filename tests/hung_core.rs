//! A core binary whose `version` never returns: the daemon keeps serving every other client while
//! it waits (detection runs as a pidfd-watched child with a deadline, not on the loop thread), and
//! the connect is answered with the binary and the timeout named. Its own test binary, so that it
//! measures ping latency alone.

mod common;

use std::time::{Duration, Instant};

use common::{text, Root};
use serde_json::{json, Value};

/// A stand-in binary that never answers its version probe (a real core that hangs at
/// `version` is not reproducible on demand).
fn hanging_core(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("v2ray");
    std::fs::write(&path, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_hanging_version_probe_is_500_and_never_stalls_other_clients() {
    let root = Root::new();
    std::fs::create_dir_all(root.path()).unwrap();
    let fake = hanging_core(root.path());
    root.write_settings(&format!(
        "[runtime]\ncore_path = \"{}\"\nsocks_port = 1\n",
        fake.display()
    ));
    root.start();
    let out = root.run(&["config", "import", "socks://127.0.0.1:9#x", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["imported"][0]["id"].clone();

    let root_path = root.path().to_path_buf();
    let connect = std::thread::spawn(move || {
        let started = Instant::now();
        let stream =
            std::os::unix::net::UnixStream::connect(root_path.join("runtime/daemon.sock")).unwrap();
        let mut conn = common::Conn::new(stream);
        let reply = conn.call(
            json!(1),
            json!({"type": "runtime_connect", "config_id": id}),
        );
        (reply, started.elapsed())
    });
    // Let the connect reach the daemon and start the version run first.
    std::thread::sleep(Duration::from_millis(200));
    let mut conn = root.connect();
    let mut rtts = Vec::new();
    for _ in 0..200 {
        let sent = Instant::now();
        let reply = conn.call(json!(2), json!({"type": "daemon_ping"}));
        assert_eq!(reply["code"], 200, "{reply}");
        rtts.push(sent.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !connect.is_finished(),
        "the connect did not wait for the version probe"
    );
    let worst = *rtts.iter().max().unwrap();
    assert!(
        worst < Duration::from_millis(50),
        "a ping took {worst:?} while the core hung"
    );

    let (reply, took) = connect.join().unwrap();
    assert_eq!(reply["code"], 500, "{reply}");
    let message = reply["message"].as_str().unwrap();
    assert!(message.contains(&fake.display().to_string()), "{message}");
    assert!(
        message.contains("did not finish within 5000 ms"),
        "{message}"
    );
    assert!(took < Duration::from_secs(10), "the connect took {took:?}");
    eprintln!(
        "hung version probe: 200 pings, worst {worst:?}; connect answered 500 after {took:?}"
    );
}
