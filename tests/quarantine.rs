//! Rotation learns from stored test results (issue 12): three remote V2Ray servers A, B and C on
//! 127.0.0.1, V2Ray as the daemon's core. B fails `rotation.strikes` tests in a row (its server
//! is down), then comes back: while quarantined no rotation picks it, a manual rotation that
//! names it is refused, and one passing `config test` ends the quarantine.

mod common;

use common::rig::rig;
use common::text;
use serde_json::{json, Value};

fn config_test(rig: &common::rig::Rig, id: i64) -> Value {
    let out = rig.root.run(&[
        "config",
        "test",
        &id.to_string(),
        "--json",
        "--timeout",
        "1000",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["ran_by"], "daemon", "{view}");
    view["results"][0].clone()
}

fn rotate(rig: &common::rig::Rig) -> Value {
    let out = rig.root.run(&["proxy", "rotate", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_quarantined_config_is_never_picked_until_a_test_passes() {
    let mut rig = rig(
        3,
        "[runtime.rotation]\nstrikes = 2\nquarantine_secs = 600\ncooldown_secs = 0\n",
    );
    let (a, b, c) = (rig.ids[0], rig.ids[1], rig.ids[2]);
    rig.connect(a);
    rig.servers[1].stop();
    for _ in 0..2 {
        let r = config_test(&rig, b);
        assert_eq!(r["ok"], false, "{r}");
    }
    // B's server is back, but B failed its last two tests: quarantined.
    rig.servers[1].restart();
    let view = rotate(&rig);
    assert_eq!(view["new_config_id"], c, "{view}");
    let detail = view["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("config {b} skipped: quarantined for another"))
            && detail.contains("after 2 failed tests in a row (runtime.rotation.strikes = 2)"),
        "{detail}"
    );
    // From C the only other candidates are A and B: A it is.
    let view = rotate(&rig);
    assert_eq!(view["new_config_id"], a, "{view}");
    // Named, B is refused with the way out.
    let reply =
        rig.call(json!({"type": "runtime_replace", "trigger": "manual", "candidate_id": b}));
    assert_eq!(reply["code"], 409, "{reply}");
    let message = reply["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("config {b} is quarantined for another"))
            && message.contains(&format!("`xrat config test {b}`")),
        "{message}"
    );
    assert_eq!(rig.active(), Some(a));
    // One passing test ends it.
    let r = config_test(&rig, b);
    assert_eq!(r["ok"], true, "{r}");
    let reply =
        rig.call(json!({"type": "runtime_replace", "trigger": "manual", "candidate_id": b}));
    assert_eq!(reply["code"], 200, "{reply}");
    assert_eq!(reply["payload"]["new_config_id"], b, "{reply}");
    assert!(rig.traffic_flows());
    // The rotations' own batch tests are stored too.
    let db = rusqlite::Connection::open(rig.root.path().join("xrat.db")).unwrap();
    let sources: Vec<String> = db
        .prepare("SELECT DISTINCT source FROM config_tests ORDER BY source")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(sources, ["daemon", "rotation"]);
}

#[test]
fn a_manual_rotation_skips_a_config_whose_last_test_failed() {
    let mut rig = rig(3, "[runtime.rotation]\nstrikes = 3\ncooldown_secs = 0\n");
    let (a, b, c) = (rig.ids[0], rig.ids[1], rig.ids[2]);
    rig.connect(a);
    rig.servers[1].stop();
    assert_eq!(config_test(&rig, b)["ok"], false);
    rig.servers[1].restart();
    // One failure is no quarantine, but a manual rotation takes only configs whose last test
    // passed (or that were never tested): C.
    let view = rotate(&rig);
    assert_eq!(view["new_config_id"], c, "{view}");
    assert!(
        view["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("config {b} skipped: its last test failed")),
        "{view}"
    );
}
