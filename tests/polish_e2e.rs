//! Newcomer polish with a real core (V2Ray, direct mode): a failed health check names the probe
//! URL and the setting to change, and old core logs are rotated (`logs.core_sessions_kept`).

mod common;

use std::time::{Duration, SystemTime};

use common::cores::free_port;
use common::rig::rig;
use common::{text, wait_until};

#[test]
fn a_failed_health_check_names_the_probe_url_and_old_core_logs_are_rotated() {
    // Old core logs from earlier sessions, older than anything the daemon writes.
    let rig = rig(1, "[logs]\ncore_sessions_kept = 3\n");
    let logs = rig.root.path().join("logs");
    let old = SystemTime::now() - Duration::from_secs(3600);
    for (i, name) in [
        "core-101.log",
        "core-102.log",
        "pool-103.log",
        "core-104.log",
    ]
    .iter()
    .enumerate()
    {
        let file = std::fs::File::create(logs.join(name)).unwrap();
        file.set_modified(old + Duration::from_secs(i as u64))
            .unwrap();
    }
    let session = rig.connect(rig.ids[0])["session_id"].as_u64().unwrap();
    let mut left: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("core-") || n.starts_with("pool-"))
        .collect();
    left.sort();
    let current = format!("core-{session}.log");
    let mut expected = vec![
        current.clone(),
        "core-104.log".into(),
        "pool-103.log".into(),
    ];
    expected.sort();
    assert_eq!(
        left, expected,
        "the newest 3 are kept, the new session's among them"
    );
    assert!(
        rig.root.log().contains("removed 2 old core log(s)"),
        "{}",
        rig.root.log()
    );
    let out = rig.root.run(&["logs", "--core", "-n", "1", "--json"]);
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(view["file"].as_str().unwrap().ends_with(&current), "{view}");

    // Point the probe at a port nothing listens on: the remote proxy cannot fetch it.
    let dead = format!("http://127.0.0.1:{}/generate_204", free_port());
    let settings = rig.root.path().join("config.toml");
    let text_now = std::fs::read_to_string(&settings).unwrap();
    let probe_line = text_now
        .lines()
        .find(|l| l.starts_with("probe_url"))
        .unwrap()
        .to_string();
    std::fs::write(
        &settings,
        text_now.replace(&probe_line, &format!("probe_url = \"{dead}\"")),
    )
    .unwrap();
    let out = rig.root.run(&["daemon", "reload"]);
    assert!(
        text(&out.stdout).contains("health.probe_url"),
        "{}",
        text(&out.stdout)
    );
    let expected = format!("probe {dead} through the tunnel failed: ");
    let named = wait_until(Duration::from_secs(10), || {
        rig.status()["health"]["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with(&expected))
    });
    let status = rig.status();
    assert!(named, "{status}");
    let error = status["health"]["last_error"].as_str().unwrap();
    assert!(
        error.ends_with(
            "; if this machine cannot reach it, set health.probe_url (see docs/SETTINGS.md)"
        ),
        "{error}"
    );
    eprintln!("health error: {error}");
    let shown = text(&rig.root.run(&["status"]).stdout);
    assert!(shown.contains(&expected), "{shown}");
}

#[test]
fn front_mode_pool_core_logs_are_rotated_too() {
    use common::cores::Core;
    use common::front::{front, Opts};
    let f = front(Opts::new(Core::SingBox, 1));
    let logs = f.root.path().join("logs");
    let old = SystemTime::now() - Duration::from_secs(3600);
    for i in 0..12u64 {
        let file = std::fs::File::create(logs.join(format!("core-{}.log", 100 + i))).unwrap();
        file.set_modified(old + Duration::from_secs(i)).unwrap();
    }
    f.connect(f.ids[0]);
    let left: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("core-") || n.starts_with("pool-"))
        .collect();
    assert_eq!(left.len(), 10, "the default keeps 10: {left:?}");
    assert!(left.iter().any(|n| n.starts_with("pool-")), "{left:?}");
    // The oldest three went.
    for gone in ["core-100.log", "core-101.log", "core-102.log"] {
        assert!(!left.contains(&gone.to_string()), "{gone} in {left:?}");
    }
}
