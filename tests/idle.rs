//! An idle daemon stays idle with busy polling on (its default): polling follows traffic only,
//! so between health ticks the loop sleeps.

mod common;

use std::time::Duration;

use common::Root;

/// How long the idle spell is watched.
const IDLE: Duration = Duration::from_secs(3);

/// Context switches the daemon's threads made into sleep (voluntary), summed over threads.
fn voluntary_switches(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .map(|task| {
            let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
            let line = status
                .lines()
                .find(|l| l.starts_with("voluntary_ctxt_switches:"))
                .unwrap();
            line.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

/// utime + stime of the daemon, in clock ticks (fields 14 and 15 of /proc/<pid>/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn an_idle_daemon_wakes_once_per_tick_with_busy_polling_on() {
    let root = Root::new();
    // A tick every second, and busy polling at its default (not named).
    root.write_settings("[daemon]\nhealth_interval_secs = 1\n");
    let pid = root.start();
    // Traffic first, so a polling window has opened and must have closed again.
    let mut conn = root.connect();
    for id in 0..200u64 {
        let reply = conn.call(id.into(), serde_json::json!({"type": "daemon_ping"}));
        assert_eq!(reply["ok"], true, "{reply}");
    }
    drop(conn);
    std::thread::sleep(Duration::from_millis(300));
    let (switches, ticks) = (voluntary_switches(pid), cpu_ticks(pid));
    std::thread::sleep(IDLE);
    let woke = voluntary_switches(pid) - switches;
    let cpu = cpu_ticks(pid) - ticks;
    eprintln!("idle {IDLE:?}: {woke} wake-ups, {cpu} clock ticks of CPU");
    // One wake-up per health tick, plus one for a tick that lands on the window's edge.
    let ticks_in_window = IDLE.as_secs() + 1;
    assert!(
        woke <= ticks_in_window,
        "{woke} wake-ups in {IDLE:?} (at most {ticks_in_window}: one per tick)"
    );
    // A daemon that polled while idle would burn a whole CPU: 300 ticks in 3 s.
    assert!(cpu <= 5, "{cpu} clock ticks of CPU while idle");
}
