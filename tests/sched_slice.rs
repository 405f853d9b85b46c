//! `daemon.sched_slice_us`: the loop thread asks the scheduler for a short slice, so that it
//! preempts a busy core on its CPU when a request arrives; the cores it starts keep the
//! kernel's default. Read back from /proc/<pid>/task/<tid>/sched (`se.slice`, in ns), which
//! needs Linux 6.12 or later (EEVDF's custom slices).

mod common;

use std::time::Duration;

use common::cores::Core;
use common::front::{front, Opts};
use common::{core_processes, wait_until, Root};
use serde_json::json;

/// `se.slice` of one task, in ns.
fn slice_ns(pid: u32, tid: u32) -> u64 {
    let path = format!("/proc/{pid}/task/{tid}/sched");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let line = text
        .lines()
        .find(|l| l.starts_with("se.slice"))
        .unwrap_or_else(|| panic!("{path} has no se.slice line: this test needs Linux 6.12 or later (custom EEVDF slices)\n{text}"));
    line.rsplit(':').next().unwrap().trim().parse().unwrap()
}

/// The slice this test process runs with: what the kernel gives a task that asked for nothing.
fn default_slice_ns() -> u64 {
    slice_ns(std::process::id(), std::process::id())
}

#[test]
fn the_loop_thread_gets_the_configured_slice_and_a_reload_changes_it() {
    let root = Root::new();
    let pid = root.start();
    // The loop is the main thread; its tid is the pid.
    assert_eq!(
        slice_ns(pid, pid),
        100_000,
        "default daemon.sched_slice_us = 100"
    );
    root.write_settings("[daemon]\nsched_slice_us = 500\n");
    let reply = root
        .connect()
        .call(json!(1), json!({"type": "daemon_reload"}));
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(slice_ns(pid, pid), 500_000);
    root.write_settings("[daemon]\nsched_slice_us = 0\n");
    let reply = root
        .connect()
        .call(json!(2), json!({"type": "daemon_reload"}));
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(
        slice_ns(pid, pid),
        default_slice_ns(),
        "0 = the kernel's default"
    );
}

#[test]
fn zero_leaves_the_kernels_slice() {
    let root = Root::new();
    root.write_settings("[daemon]\nsched_slice_us = 0\n");
    let pid = root.start();
    assert_eq!(slice_ns(pid, pid), default_slice_ns());
}

#[test]
fn a_bad_slice_names_the_key() {
    let root = Root::new();
    root.write_settings("[daemon]\nsched_slice_us = 50\n");
    let out = root.run(&["daemon", "run-server"]);
    assert!(!out.status.success());
    let err = common::text(&out.stderr);
    assert!(err.contains("daemon.sched_slice_us"), "{err}");
    assert!(err.contains("between 100 and 100000"), "{err}");
}

#[test]
fn the_cores_keep_the_kernels_slice() {
    let f = front(Opts::new(Core::SingBox, 1));
    f.connect(f.ids[0]);
    let mut cores = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        cores = core_processes(&f.root);
        !cores.is_empty()
    }));
    assert_eq!(slice_ns(f.daemon_pid, f.daemon_pid), 100_000);
    for core in cores {
        let tasks = std::fs::read_dir(format!("/proc/{core}/task")).unwrap();
        for task in tasks {
            let tid: u32 = task.unwrap().file_name().to_str().unwrap().parse().unwrap();
            assert_eq!(
                slice_ns(core, tid),
                default_slice_ns(),
                "core {core} thread {tid} inherited the daemon's slice"
            );
        }
    }
}
