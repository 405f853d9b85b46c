//! A bench stopped by Ctrl-C or SIGTERM still stops what it started: the daemons (by
//! `xrat daemon stop` on their roots), mihomo and the remotes (SIGKILL, after checking that the
//! pid still runs the same command). The daemons are detached on purpose and the remotes are
//! spawned by tests/common, so neither dies with the bench by itself.
//!
//! The handler only sets a flag (async-signal-safe); a watcher thread does the work. No signal
//! mask changes, so children inherit nothing from this.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

static ROOTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// (pid, a string its command line contains).
static PIDS: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// An XRAT root whose daemon is stopped on a signal.
pub fn root(path: PathBuf) {
    ROOTS.lock().unwrap().push(path);
}

/// A process killed on a signal if its command line still contains `marker`.
pub fn pid(pid: u32, marker: &str) {
    PIDS.lock().unwrap().push((pid, marker.to_owned()));
}

extern "C" fn on_signal(signal: libc::c_int) {
    SIGNAL.store(signal, Ordering::SeqCst);
}

/// Installs the handlers for SIGINT and SIGTERM and starts the watcher.
pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    std::thread::spawn(|| loop {
        let signal = SIGNAL.load(Ordering::SeqCst);
        if signal != 0 {
            eprintln!("signal {signal}: stopping the systems under test");
            stop_all();
            std::process::exit(128 + signal);
        }
        std::thread::sleep(Duration::from_millis(50));
    });
}

fn stop_all() {
    for root in ROOTS.lock().unwrap().iter() {
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_xrat"))
            .args(["daemon", "stop"])
            .env("XRAT_ROOT", root)
            .output();
        let _ = std::fs::remove_dir_all(root);
    }
    for (pid, marker) in PIDS.lock().unwrap().iter() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker.as_str()) {
            // SAFETY: plain kill(2) of a process this bench started (its command line checked).
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
    }
}
