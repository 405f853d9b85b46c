//! `xrat daemon start|status|stop` and run-server against the real binary.

mod common;

use std::os::unix::net::UnixListener;
use std::process::Stdio;
use std::time::Duration;

use common::seccomp::{run_server_refusing_io_uring, run_server_under_seccomp};
use common::{alive, text, wait_until, Root};

#[test]
fn start_status_stop_with_exact_output() {
    let root = Root::new();
    let socket = root.socket().display().to_string();

    let out = root.run(&["daemon", "status"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        text(&out.stderr).lines().next().unwrap(),
        format!("error: daemon not running at {socket}; start it with `xrat daemon start`")
    );

    let out = root.run(&["daemon", "start"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let started = text(&out.stdout);
    let pid: u32 = started
        .strip_prefix("Daemon started (pid ")
        .and_then(|rest| rest.strip_suffix(").\n"))
        .unwrap_or_else(|| panic!("unexpected start output {started:?}"))
        .parse()
        .unwrap();
    assert!(alive(pid));

    // io_uring here, or epoll where it is refused (or XRAT_BACKEND chose it).
    let backend = json(&root, &["daemon", "status", "--json"])["backend"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        ["io_uring", "epoll"].contains(&backend.as_str()),
        "{backend}"
    );
    let out = root.run(&["daemon", "status"]);
    assert_eq!(out.status.code(), Some(0));
    let shown = text(&out.stdout);
    let rule = "\u{2500}".repeat(33);
    let seed = format!("Daemon Status\n{rule}\nSocket: {socket}\nReachable: yes\nProtocol: v1\n");
    let added = format!(
        "Pid: {pid}\nVersion: {}\nUptime: ",
        env!("CARGO_PKG_VERSION")
    );
    assert!(shown.starts_with(&format!("{seed}{added}")), "{shown}");
    assert!(
        shown.ends_with(&format!("\nBackend: {backend}\n")),
        "{shown}"
    );

    let out = root.run(&["daemon", "start"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("Daemon already running (pid {pid}).\n")
    );

    let out = root.run(&["daemon", "stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("Daemon stopped (pid {pid}).\n"));
    assert!(!alive(pid), "daemon still running after stop returned");
    assert!(!root.socket().exists(), "socket left behind");

    let out = root.run(&["daemon", "stop"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        text(&out.stderr),
        format!("error: no daemon is running at {socket}; nothing to stop\n")
    );
}

#[test]
fn json_views_carry_the_details() {
    let root = Root::new();
    let out = root.run(&["daemon", "status", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["reachable"], false);
    assert!(view["error"]
        .as_str()
        .unwrap()
        .contains("xrat daemon start"));

    let pid = root.start();
    let out = root.run(&["daemon", "status", "--json"]);
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["reachable"], true);
    assert_eq!(view["protocol"], 1);
    assert_eq!(view["pid"], pid);
    assert_eq!(view["version"], env!("CARGO_PKG_VERSION"));

    let out = root.run(&["daemon", "stop", "--json"]);
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["stopped"], true);
    assert_eq!(view["pid"], pid);
}

#[test]
fn a_second_server_refuses_to_start() {
    let root = Root::new();
    root.start();
    let out = root.run(&["daemon", "run-server"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "another xrat daemon is already running for {}",
            root.path().display()
        )) && err.contains("stop it with `xrat daemon stop`"),
        "{err}"
    );
    // The refused server must not have touched the running daemon's socket.
    let mut conn = root.connect();
    let reply = conn.call(1.into(), serde_json::json!({"type": "daemon_ping"}));
    assert_eq!(reply["code"], 200);
}

#[test]
fn a_stale_socket_is_replaced() {
    let root = Root::new();
    std::fs::create_dir_all(root.socket().parent().unwrap()).unwrap();
    drop(UnixListener::bind(root.socket()).unwrap());
    assert!(root.socket().exists());
    root.start();
    assert!(
        root.log().contains("removed stale socket"),
        "{}",
        root.log()
    );
    let reply = root
        .connect()
        .call(1.into(), serde_json::json!({"type": "daemon_ping"}));
    assert_eq!(reply["ok"], true);
}

#[test]
fn kill_9_then_start_recovers() {
    let root = Root::new();
    let pid = root.start();
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
    assert!(root.socket().exists(), "a killed daemon leaves its socket");
    let out = root.run(&["daemon", "status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let second = root.start();
    assert_ne!(second, pid);
    assert_eq!(root.run(&["daemon", "status"]).status.code(), Some(0));
}

#[test]
fn sigterm_exits_cleanly_and_removes_the_socket() {
    let root = Root::new();
    std::fs::create_dir_all(root.path()).unwrap();
    let mut child = root
        .command(&["daemon", "run-server"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || root
        .socket()
        .exists()));
    let mut conn = root.connect();
    assert_eq!(
        conn.call(1.into(), serde_json::json!({"type": "daemon_ping"}))["ok"],
        true
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(conn.at_eof(), "connections are closed on shutdown");
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(!root.socket().exists());
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("received signal 15; shutting down"),
        "{stderr}"
    );
}

#[test]
fn bad_settings_name_the_key_the_value_and_the_file() {
    let root = Root::new();
    root.write_settings("[daemon]\nmax_connections = -1\n");
    let out = root.run(&["daemon", "start"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let file = root.path().join("config.toml").display().to_string();
    assert!(
        err.contains(&file) && err.contains("max_connections") && err.contains("-1"),
        "{err}"
    );
    assert!(!root.socket().exists());
}

#[test]
fn an_overlong_socket_path_is_a_clear_error() {
    let root = Root::new();
    let deep = root.path().join("d".repeat(100));
    let out = std::process::Command::new(common::xrat_bin())
        .args(["daemon", "start"])
        .env("XRAT_ROOT", &deep)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&deep.join("runtime/daemon.sock").display().to_string()),
        "{err}"
    );
    assert!(
        err.contains("set XRAT_ROOT to a shorter directory"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let root = Root::new();
    let out = root.run(&["daemon", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("Unrecognized argument: bogus"),
        "{}",
        text(&out.stderr)
    );
    let out = root.run(&["daemon", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        !text(&out.stdout).contains("run-server"),
        "run-server is hidden"
    );
}

#[test]
fn the_health_tick_fires_through_the_ring() {
    let root = Root::new();
    root.write_settings("[daemon]\nhealth_interval_secs = 1\n");
    std::fs::create_dir_all(root.path()).unwrap();
    let out = root
        .command(&["daemon", "start"])
        .env("XRAT_LOG", "debug")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        wait_until(Duration::from_secs(5), || root
            .log()
            .contains("health tick 2")),
        "{}",
        root.log()
    );
}

#[test]
fn readiness_is_sent_to_notify_socket() {
    let root = Root::new();
    std::fs::create_dir_all(root.path()).unwrap();
    let notify_path = root.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = root
        .command(&["daemon", "run-server"])
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means serving: the socket answers right away.
    let reply = root
        .connect()
        .call(1.into(), serde_json::json!({"type": "daemon_ping"}));
    assert_eq!(reply["ok"], true);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_stuck_daemon_is_a_timeout_not_a_hang() {
    use std::os::fd::AsRawFd;
    let root = Root::new();
    std::fs::create_dir_all(root.socket().parent().unwrap()).unwrap();
    // A "daemon" that never accepts, with the smallest queue: fill it, then ask for status.
    let listener = UnixListener::bind(root.socket()).unwrap();
    // SAFETY: lowering the backlog of a socket this test owns.
    unsafe { libc::listen(listener.as_raw_fd(), 0) };
    let mut queued = Vec::new();
    while let Some(stream) = nonblocking_connect(&root.socket()) {
        queued.push(stream);
        assert!(queued.len() < 100, "the queue never filled");
    }
    let started = std::time::Instant::now();
    let out = root.run(&["daemon", "status"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("accepted no connection within 5000 ms (its queue is full)"));
    assert!(started.elapsed() < Duration::from_secs(9));
}

/// A connect that fails instead of waiting when the queue is full.
fn nonblocking_connect(path: &std::path::Path) -> Option<std::os::unix::net::UnixStream> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: building a sockaddr_un for a short path and connecting a fresh socket.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
            *d = *s as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        let rc = libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len);
        let stream = std::os::unix::net::UnixStream::from_raw_fd(fd);
        (rc == 0).then_some(stream)
    }
}

/// `xrat ARGS`, its stdout parsed as JSON.
fn json(root: &Root, args: &[&str]) -> serde_json::Value {
    let out = root.run(args);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}{}", text(&out.stdout), text(&out.stderr)))
}

#[test]
fn io_uring_refused_by_seccomp_falls_back_to_epoll_under_auto() {
    let root = Root::new();
    std::fs::create_dir_all(root.path()).unwrap();
    let log = root.path().join("seccomp.log");
    let mut child = run_server_under_seccomp(&root, None)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || root.socket().exists()),
        "no socket; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let view = json(&root, &["daemon", "status", "--json"]);
    assert_eq!(view["reachable"], true);
    assert_eq!(view["backend"], "epoll");
    let mut conn = root.connect();
    let reply = conn.call(1.into(), serde_json::json!({"type": "daemon_ping"}));
    assert_eq!(reply["payload"]["backend"], "epoll", "{reply}");
    let out = root.run(&["daemon", "stop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(child.wait().unwrap().success());
    let err = std::fs::read_to_string(&log).unwrap();
    // One line: the cause, and how to allow io_uring.
    let line = err
        .lines()
        .find(|l| l.contains("serving on epoll instead"))
        .unwrap_or_else(|| panic!("no fallback line in:\n{err}"));
    assert!(line.contains("Operation not permitted"), "{line}");
    assert!(
        line.contains("kernel.io_uring_disabled=0") && line.contains("seccomp"),
        "{line}"
    );
    assert!(
        err.contains("backend epoll"),
        "the start line names it: {err}"
    );
}

#[test]
fn enosys_falls_back_too_but_enomem_stays_an_error() {
    // ENOSYS: gVisor, or a kernel without CONFIG_IO_URING.
    let root = Root::new();
    std::fs::create_dir_all(root.path()).unwrap();
    let log = root.path().join("enosys.log");
    let mut child = run_server_refusing_io_uring(&root, None, libc::ENOSYS)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || root
        .socket()
        .exists()));
    assert_eq!(
        json(&root, &["daemon", "status", "--json"])["backend"],
        "epoll"
    );
    assert!(root.run(&["daemon", "stop"]).status.success());
    assert!(child.wait().unwrap().success());
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(
        err.contains("Function not implemented") && err.contains("serving on epoll instead"),
        "{err}"
    );
    // ENOMEM is a resource problem, not a refusal: no fallback.
    let root = Root::new();
    let out = run_server_refusing_io_uring(&root, None, libc::ENOMEM)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("cannot set up the io_uring ring"), "{err}");
    assert!(!err.contains("epoll"), "{err}");
    assert!(!root.socket().exists());
}

#[test]
fn explicit_io_uring_refused_by_seccomp_is_explained() {
    for how in ["env", "settings"] {
        let root = Root::new();
        let mut command = if how == "env" {
            run_server_under_seccomp(&root, Some("io_uring"))
        } else {
            root.write_settings("[daemon]\nbackend = \"io_uring\"\n");
            run_server_under_seccomp(&root, None)
        };
        let out = command.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{how}");
        let err = text(&out.stderr);
        assert!(err.contains("io_uring is unavailable"), "{how}: {err}");
        assert!(
            err.contains("kernel.io_uring_disabled") && err.contains("seccomp"),
            "{how}: {err}"
        );
        assert!(
            err.contains("daemon.backend = \"auto\" or \"epoll\""),
            "{how}: the fix names the setting: {err}"
        );
        assert!(
            err.contains("Operation not permitted"),
            "{how}: the cause is printed: {err}"
        );
        assert!(!root.socket().exists(), "nothing is served without a ring");
    }
}

#[test]
fn xrat_backend_epoll_serves_end_to_end() {
    let root = Root::new();
    let out = root
        .command(&["daemon", "start", "--json"])
        .env("XRAT_BACKEND", "epoll")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        root.log()
    );
    let out = root.run(&["daemon", "status"]);
    assert!(
        text(&out.stdout).ends_with("Backend: epoll\n"),
        "{}",
        text(&out.stdout)
    );
    let view = json(&root, &["daemon", "status", "--json"]);
    assert_eq!(view["backend"], "epoll");
    let mut conn = root.connect();
    for id in 0..3 {
        let reply = conn.call(id.into(), serde_json::json!({"type": "daemon_ping"}));
        assert_eq!(reply["ok"], true);
        assert_eq!(reply["payload"]["backend"], "epoll");
    }
    let status = conn.call(9.into(), serde_json::json!({"type": "runtime_status"}));
    assert_eq!(status["payload"]["runtime_status"], "idle", "{status}");
    // A reload that changes the backend needs a restart, and keeps the running one.
    root.write_settings("[daemon]\nbackend = \"io_uring\"\n");
    let reload = json(&root, &["daemon", "reload", "--json"]);
    assert!(
        reload["restart_needed"]
            .as_array()
            .unwrap()
            .contains(&"daemon.backend".into()),
        "{reload}"
    );
    assert_eq!(
        json(&root, &["daemon", "status", "--json"])["backend"],
        "epoll"
    );
    let out = root.run(&["daemon", "stop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(root.log().contains("backend epoll"), "{}", root.log());
}

#[test]
fn a_bad_backend_names_the_variable_or_key_and_the_allowed_values() {
    let root = Root::new();
    let out = root
        .command(&["daemon", "run-server"])
        .env("XRAT_BACKEND", "kqueue")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("XRAT_BACKEND=\"kqueue\"") && err.contains("auto, io_uring or epoll"),
        "{err}"
    );
    root.write_settings("[daemon]\nbackend = \"uring\"\n");
    let out = root
        .command(&["daemon", "run-server"])
        .env_remove("XRAT_BACKEND")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("backend") && err.contains("uring") && err.contains("epoll"),
        "{err}"
    );
}
