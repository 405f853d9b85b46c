//! File modes (issue 10 item 8): `logs/` is 0700 and every log file 0600 after `xrat daemon
//! start`, also when they existed before with wider modes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::Root;

/// The mode in octal, so a failure reads `left: "644"`.
fn mode(path: &Path) -> String {
    format!(
        "{:o}",
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    )
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn daemon_start_fixes_wide_modes_of_logs_and_log_files() {
    let root = Root::new();
    let logs = root.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    chmod(&logs, 0o777);
    let files = ["daemon.log", "core-3.log", "batch.log"].map(|n| logs.join(n));
    for file in &files {
        std::fs::write(file, "an old line\n").unwrap();
        chmod(file, 0o644);
    }
    std::fs::create_dir(root.path().join("runtime")).unwrap();
    chmod(&root.path().join("runtime"), 0o755);

    root.start();
    assert_eq!(mode(&logs), "700", "logs/");
    assert_eq!(mode(&root.path().join("runtime")), "700", "runtime/");
    for file in &files {
        assert_eq!(mode(file), "600", "{}", file.display());
    }
    // The old content is kept: the log is appended to, not replaced.
    assert!(root.log().starts_with("an old line\n"), "{}", root.log());
    let out = root.run(&["daemon", "stop"]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
}

#[test]
fn a_fresh_root_gets_private_logs() {
    let root = Root::new();
    root.start();
    assert_eq!(mode(&root.path().join("logs")), "700");
    assert_eq!(mode(&root.path().join("logs/daemon.log")), "600");
    let out = root.run(&["daemon", "stop"]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
}
