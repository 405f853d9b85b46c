//! `runtime.core = "auto"` picks the core per config (issue 11): with sing-box, mihomo and V2Ray
//! installed, a VLESS+REALITY config runs on mihomo (the sing-box wheel has no uTLS) and a vmess
//! config on sing-box (preferred over mihomo and V2Ray). A batch test whose candidates need
//! different cores runs one process per core, and rotations between the configs switch cores.
//! Real cores and servers on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::cores::{
    mihomo_bin, sing_box_bin, socks5_get, v2ray_bin, Core, HttpTarget, Proto, RealityServer,
    RealityStream, RemoteServer,
};
use common::daemon::Daemon;
use serde_json::json;

/// A PATH holding exactly the three cores, so `auto` sees what this test expects.
fn core_path_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, bin) in [
        ("v2ray", v2ray_bin()),
        ("sing-box", sing_box_bin()),
        ("mihomo", mihomo_bin()),
    ] {
        std::os::unix::fs::symlink(std::fs::canonicalize(bin).unwrap(), dir.path().join(name))
            .unwrap();
    }
    dir
}

/// Fetches through the session, retrying for a while: a fresh mihomo REALITY server hands its
/// first clients to the handshake target (see tests/mihomo_e2e.rs).
fn fetch_eventually(daemon: &Daemon, target: &HttpTarget) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if socks5_get(daemon.socks_port, target.port(), "/e2e").is_ok_and(|b| b == target.body()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn rotate_to(daemon: &Daemon, config_id: i64) -> serde_json::Value {
    let reply = daemon.root.connect().call(
        json!(1),
        json!({"type": "runtime_replace", "trigger": "manual", "candidate_id": config_id}),
    );
    assert_eq!(reply["code"], 200, "{reply}\n{}", daemon.logs());
    reply["payload"].clone()
}

#[test]
fn auto_runs_each_config_on_a_core_that_supports_it() {
    let dir = core_path_dir();
    // SAFETY (edition 2021: safe): this test binary has one test; set before any thread spawns.
    std::env::set_var("PATH", format!("{}:/usr/bin:/bin", dir.path().display()));
    let target = HttpTarget::start();
    let reality = RealityServer::start(RealityStream::Vision);
    let vmess_a = RemoteServer::start_on(Proto::VmessTcp, Core::V2ray);
    let vmess_b = RemoteServer::start_on(Proto::VmessTcp, Core::V2ray);
    // Direct mode: every rotation here goes through the batch test.
    let daemon = Daemon::start("mode = \"direct\"\n", &target);
    let r = daemon.import(&reality.link());
    let a = daemon.import(&vmess_a.link());
    let b = daemon.import(&vmess_b.link());

    let listed = daemon.json(&["config", "list"]);
    let core_of = |id: i64| {
        listed["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["core"].clone())
            .unwrap()
    };
    assert_eq!(core_of(r), "mihomo", "{listed}");
    assert_eq!(core_of(a), "sing-box", "{listed}");

    daemon.connect(a);
    assert_eq!(daemon.status()["core"], "sing-box", "{}", daemon.status());
    assert!(fetch_eventually(&daemon, &target));

    // The batch holds the REALITY config (mihomo) and the other vmess one (sing-box).
    let reply = daemon.root.connect().call(
        json!(1),
        json!({"type": "runtime_replace", "trigger": "manual"}),
    );
    let p = &reply["payload"];
    assert_eq!(p["replaced"], true, "{reply}\n{}", daemon.logs());
    // The early decision may leave the slower REALITY probe unfinished; it was started on mihomo.
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("config {r} ")) || p["new_config_id"] == r,
        "the REALITY candidate was in the batch: {detail}"
    );
    let batch_log = std::fs::read_to_string(daemon.root.path().join("logs/batch.log")).unwrap();
    assert!(
        batch_log.contains("initial configuration"),
        "a mihomo batch process ran: {batch_log}"
    );
    if p["new_config_id"] == b {
        assert_eq!(daemon.status()["core"], "sing-box");
    }

    // Rotations between configs that need different cores.
    let mut on_mihomo = false;
    for _ in 0..3 {
        let view = rotate_to(&daemon, r);
        if view["replaced"] == true {
            on_mihomo = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        on_mihomo,
        "rotation to the REALITY config: {}",
        daemon.logs()
    );
    assert_eq!(daemon.status()["core"], "mihomo", "{}", daemon.status());
    assert!(fetch_eventually(&daemon, &target), "{}", daemon.logs());

    let view = rotate_to(&daemon, a);
    assert_eq!(view["replaced"], true, "{view}");
    assert_eq!(daemon.status()["core"], "sing-box");
    assert!(fetch_eventually(&daemon, &target));
    drop(daemon);

    // Front mode: one pool core spans both families (a sing-box process and a mihomo
    // process); switching between its members starts nothing.
    let front = Daemon::start("", &target);
    for link in [reality.link(), vmess_a.link(), vmess_b.link()] {
        front.import(&link);
    }
    front.connect(a);
    assert!(fetch_eventually(&front, &target), "{}", front.logs());
    let pool = front.status()["pool"].as_array().unwrap().len();
    assert_eq!(pool, 3, "{}", front.status());
    let mut view = serde_json::Value::Null;
    for _ in 0..20 {
        // The REALITY member must pass its first probe before a switch goes to it at once.
        view = rotate_to(&front, r);
        if view["replaced"] == true {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(view["replaced"], true, "{view}\n{}", front.logs());
    assert_eq!(
        view["tested_candidates"], 0,
        "a warm member, no batch: {view}"
    );
    assert_eq!(front.status()["core"], "mihomo", "{}", front.status());
    assert!(fetch_eventually(&front, &target), "{}", front.logs());
    drop(vmess_b);
}
