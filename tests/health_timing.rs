//! A hung core (SIGSTOP: alive, answering nothing) is reported `degraded` with the reason, and
//! failures are counted once per health interval even when the probe timeout is longer than the
//! interval (probes start on the tick, start to start). Real V2Ray core and remote on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::rig::rig_with;
use common::wait_until;

#[test]
fn a_stopped_core_is_degraded_and_counted_every_interval() {
    // Interval 1 s, probe timeout 5 s (the default): each probe is cut at 900 ms.
    let rig = rig_with(1, "", 5_000);
    let core = rig.connect(rig.ids[0])["pid"].as_u64().unwrap() as i32;
    assert!(
        wait_until(Duration::from_secs(5), || rig.status()["health"]
            ["last_latency_ms"]
            .is_u64()),
        "a probe succeeded first: {}",
        rig.status()
    );
    // SAFETY: stopping (then resuming) the core this test's daemon started.
    unsafe { libc::kill(core, libc::SIGSTOP) };
    let stopped = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || rig.status()["runtime_status"]
            == "degraded"),
        "{}",
        rig.status()
    );
    let st = rig.status();
    assert!(st["health"]["last_error"].is_string(), "{st}");
    let first = stopped.elapsed();
    std::thread::sleep(Duration::from_millis(4_000));
    let failures = rig.status()["health"]["consecutive_failures"]
        .as_u64()
        .unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(core, libc::SIGCONT) };
    // About one failure per second over the ~4 s since the first one; one every 2 s would be 2-3.
    assert!(
        failures >= 4,
        "only {failures} failures in ~5 s at a 1 s interval"
    );
    assert!(
        wait_until(Duration::from_secs(5), || rig.status()["runtime_status"]
            == "running"),
        "a successful probe clears degraded: {}",
        rig.status()
    );
    eprintln!(
        "SIGSTOP core: degraded after {first:?}; {failures} failures counted in the next 4 s"
    );
}
