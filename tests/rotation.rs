//! Health checks and rotation against the real binary: three remote V2Ray servers A, B and C on
//! 127.0.0.1, a local HTTP target as the probe URL, and V2Ray as the daemon's core.

mod common;

use std::time::{Duration, Instant};

use common::{alive, text, wait_until};
use serde_json::{json, Value};

use common::rig::rig;

#[test]
fn a_dead_remote_fails_over_to_a_live_one() {
    let mut rig = rig(
        3,
        "failure_threshold = 2\n[runtime.rotation]\nenabled = true\ncooldown_secs = 0\n",
    );
    let a = rig.ids[0];
    rig.connect(a);
    assert!(rig.traffic_flows());
    assert!(
        wait_until(Duration::from_secs(5), || rig.status()["health"]
            ["last_latency_ms"]
            .is_u64()),
        "a probe succeeded"
    );
    rig.servers[0].stop();
    let killed = Instant::now();
    // threshold (2) × interval (1 s) + probe timeout + the batch test, with slack for a busy machine.
    assert!(
        wait_until(Duration::from_secs(15), || rig
            .active()
            .is_some_and(|id| id != a)),
        "no failover: {}\n{}",
        rig.status(),
        rig.root.log()
    );
    eprintln!(
        "dead remote -> switched in {} ms",
        killed.elapsed().as_millis()
    );
    assert!(rig.traffic_flows(), "traffic flows through the new config");
    let events = rig.events();
    let last = events.last().unwrap();
    assert_eq!(
        (last.0.as_str(), last.1, last.3.as_str()),
        ("health_check_failed", Some(a), "switched")
    );
    assert_eq!(rig.proxy()["last_trigger"], "health_check_failed");
}

#[test]
fn manual_rotation_with_and_without_a_config_id() {
    let rig = rig(3, "");
    let (a, _, c) = (rig.ids[0], rig.ids[1], rig.ids[2]);
    rig.connect(a);
    let out = rig.root.run(&["proxy", "rotate", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["replaced"], true);
    assert_eq!(view["trigger"], "manual");
    assert_eq!(view["old_config_id"], a);
    assert_eq!(
        view["tested_candidates"].as_u64().map(|n| n >= 1),
        Some(true)
    );
    assert_ne!(view["new_config_id"], a);
    assert!(rig.traffic_flows());
    rig.one_core();

    let out = rig
        .root
        .run(&["proxy", "rotate", "--config-id", &c.to_string()]);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        shown.contains("Result:     rotated") && shown.contains(&format!("New config: #{c}")),
        "{shown}"
    );
    assert!(
        shown.contains("Trigger:    manual") && shown.contains("Tested:     1 candidate(s)"),
        "{shown}"
    );
    assert_eq!(rig.active(), Some(c));
    assert!(rig.traffic_flows());
    rig.one_core();
    let reply =
        rig.call(json!({"type": "runtime_replace", "trigger": "manual", "candidate_id": 999}));
    assert_eq!(reply["code"], 404, "{reply}");
}

#[test]
fn the_cooldown_blocks_a_timer_rotation_but_not_a_manual_one() {
    let rig = rig(
        3,
        "[runtime.rotation]\nenabled = true\ninterval_secs = 1\ncooldown_secs = 3600\n",
    );
    let a = rig.ids[0];
    rig.connect(a);
    // The first timer rotation (1 s after start) runs: no rotation happened yet.
    assert!(
        wait_until(Duration::from_secs(10), || rig.proxy()["last_trigger"]
            == "timer"),
        "{}",
        rig.proxy()
    );
    let after_timer = rig.events().len();
    assert_eq!(rig.proxy()["cooldown_active"], true);
    // Several more timer periods pass inside the cooldown: nothing rotates.
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(
        rig.events().len(),
        after_timer,
        "a timer rotation ran inside the cooldown"
    );
    let reply = rig.call(json!({"type": "runtime_replace", "trigger": "manual"}));
    assert_eq!(reply["payload"]["replaced"], true, "{reply}");
    assert_eq!(rig.events().len(), after_timer + 1);
    assert_eq!(rig.proxy()["last_trigger"], "manual");
}

#[test]
fn when_all_candidates_are_dead_the_old_session_stays() {
    let mut rig = rig(3, "");
    let a = rig.ids[0];
    let session = rig.connect(a)["session_id"].clone();
    rig.servers[1].stop();
    rig.servers[2].stop();
    let reply = rig.call(json!({"type": "runtime_replace", "trigger": "manual"}));
    let p = &reply["payload"];
    assert_eq!(
        (p["replaced"].clone(), p["result"].clone()),
        (json!(false), json!("no_working_candidate")),
        "{reply}"
    );
    assert_eq!(p["tested_candidates"], 2);
    assert_eq!(p["new_session_id"], session, "the old session is kept");
    assert_eq!(rig.active(), Some(a));
    assert!(rig.traffic_flows());
    rig.one_core();
    let (trigger, from, to, result, detail) = rig.events().pop().unwrap();
    assert_eq!(
        (trigger.as_str(), from, to, result.as_str()),
        ("manual", Some(a), None, "no_working_candidate")
    );
    for dead in &rig.ids[1..] {
        assert!(
            detail.contains(&format!("config {dead} failed the batch test")),
            "{detail}"
        );
    }
    let out = rig.root.run(&["proxy", "rotate"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a rotation that rotated nothing exits 1"
    );
}

#[test]
fn a_killed_core_is_replaced_when_rotation_is_enabled() {
    let rig = rig(2, "[runtime.rotation]\nenabled = true\n");
    let core = rig.connect(rig.ids[0])["pid"].as_u64().unwrap() as u32;
    // SAFETY: signalling the core the daemon started for this test.
    unsafe { libc::kill(core as i32, libc::SIGKILL) };
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || rig.status()["runtime_status"]
            == "running"
            && rig.status()["pid"] != core),
        "{}\n{}",
        rig.status(),
        rig.root.log()
    );
    eprintln!(
        "killed core -> switched in {} ms",
        killed.elapsed().as_millis()
    );
    assert!(rig.traffic_flows());
    assert_eq!(rig.events().last().unwrap().0, "health_check_failed");
}

#[test]
fn a_killed_core_is_reported_when_rotation_is_disabled() {
    let rig = rig(2, "");
    let core = rig.connect(rig.ids[0])["pid"].as_u64().unwrap() as u32;
    // SAFETY: as above.
    unsafe { libc::kill(core as i32, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(2), || rig.status()
        ["runtime_status"]
        == "degraded"));
    std::thread::sleep(Duration::from_millis(1_500));
    let st = rig.status();
    assert_eq!(
        (st["runtime_status"].clone(), st["pid"].clone()),
        (json!("degraded"), json!(core))
    );
    assert!(rig.events().is_empty());
    let out = rig.root.run(&["status"]);
    assert!(
        text(&out.stdout).contains("(exited)"),
        "{}",
        text(&out.stdout)
    );
    assert!(!alive(core));
}
