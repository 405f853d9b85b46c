//! `xrat config test` against real remotes on 127.0.0.1: three live servers (VMess and SOCKS on
//! V2Ray, Shadowsocks on sing-box) and two dead ones (started, then killed), probed through a
//! real V2Ray test core toward a local HTTP target. Run with the cores on PATH:
//! `PATH=$PWD/.cores/bin:$PATH cargo test --test config_test`.

mod common;

use std::collections::BTreeMap;

use common::cores::{Core, HttpTarget, Proto, RemoteServer};
use common::{text, Root};
use serde_json::Value;

/// The remotes, the target, and a root with their configs imported (ids in `live`, `dead`).
struct Bench {
    root: Root,
    _http: HttpTarget,
    _servers: Vec<RemoteServer>,
    live: Vec<i64>,
    dead: Vec<i64>,
}

fn import(root: &Root, link: &str) -> i64 {
    let out = root.run(&["config", "import", link, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    view["imported"][0]["id"].as_i64().unwrap()
}

fn bench(extra: &str) -> Bench {
    let root = Root::new();
    let http = HttpTarget::start();
    root.write_settings(&format!(
        "[runtime]\nmode = \"direct\"\n{}[health]\nprobe_url = \"{}\"\ntimeout_ms = 1500\n{extra}",
        Core::V2ray.runtime_settings(),
        http.url("/probe"),
    ));
    let mut servers = vec![
        RemoteServer::start_on(Proto::VmessTcp, Core::V2ray),
        RemoteServer::start_on(Proto::Socks, Core::V2ray),
        RemoteServer::start_on(Proto::SsAes128Gcm, Core::SingBox),
        RemoteServer::start_on(Proto::VmessTcp, Core::V2ray),
        RemoteServer::start_on(Proto::Socks, Core::V2ray),
    ];
    let ids: Vec<i64> = servers.iter().map(|s| import(&root, &s.link())).collect();
    servers[3].stop();
    servers[4].stop();
    Bench {
        root,
        _http: http,
        _servers: servers,
        live: ids[..3].to_vec(),
        dead: ids[3..].to_vec(),
    }
}

/// Runs `config test ARGS` with stdout piped, as a script would; returns the exit code, stdout
/// and stderr.
fn run(root: &Root, args: &[&str]) -> (i32, String, String) {
    let mut full = vec!["config", "test"];
    full.extend_from_slice(args);
    let out = root.run(&full);
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// Checks the `--json` view's schema and returns config id → result.
fn results(view: &Value) -> BTreeMap<i64, Value> {
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(view),
        [
            "concurrency",
            "failed",
            "passed",
            "ran_by",
            "results",
            "timeout_ms",
            "url"
        ],
        "{view}"
    );
    view["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(
                keys(r),
                [
                    "at",
                    "config_id",
                    "error",
                    "error_kind",
                    "latency_ms",
                    "name",
                    "ok"
                ],
                "{r}"
            );
            (r["config_id"].as_i64().unwrap(), r.clone())
        })
        .collect()
}

fn assert_exact(b: &Bench, view: &Value) {
    let by_id = results(view);
    assert_eq!(by_id.len(), 5, "{view}");
    assert_eq!(
        (view["passed"].as_u64(), view["failed"].as_u64()),
        (Some(3), Some(2))
    );
    for id in &b.live {
        let r = &by_id[id];
        assert_eq!(r["ok"], true, "{r}");
        assert!(r["latency_ms"].as_u64().is_some_and(|ms| ms < 1500), "{r}");
        assert!(r["error_kind"].is_null() && r["error"].is_null(), "{r}");
    }
    for id in &b.dead {
        let r = &by_id[id];
        assert_eq!(r["ok"], false, "{r}");
        assert!(r["latency_ms"].is_null(), "{r}");
        // V2Ray's inbound answers the SOCKS5 CONNECT before it dials the dead remote, then
        // closes: the probe sees the proxy close before the HTTP status line.
        assert_eq!(r["error_kind"], "closed", "{r}");
        assert!(r["error"].as_str().unwrap().contains("closed"), "{r}");
    }
}

/// Stored rows: config id → (ok, latency, error kind), the last per config.
fn stored(root: &Root) -> BTreeMap<i64, (bool, Option<i64>, Option<String>, String)> {
    let db = rusqlite::Connection::open(root.path().join("xrat.db")).unwrap();
    let mut stmt = db
        .prepare(
            "SELECT config_id, ok, latency_ms, error_kind, source FROM config_tests ORDER BY id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn standalone_test_of_three_live_and_two_dead_remotes() {
    let b = bench("");
    assert!(!b.root.socket().exists(), "no daemon runs");
    let (code, stdout, stderr) = run(&b.root, &["--all", "--json"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // Piped: nothing but the result, no progress bar on either stream.
    assert!(stderr.is_empty(), "stderr: {stderr:?}");
    let view: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(view["ran_by"], "standalone");
    assert_exact(&b, &view);
    let rows = stored(&b.root);
    for id in &b.live {
        let (ok, latency, kind, source) = &rows[id];
        assert!(*ok && latency.is_some() && kind.is_none(), "{:?}", rows[id]);
        assert_eq!(source, "cli");
    }
    for id in &b.dead {
        assert_eq!(rows[id].2.as_deref(), Some("closed"), "{:?}", rows[id]);
    }
    // No test core is left behind, and its config (credentials) is gone.
    assert!(common::core_processes(&b.root).is_empty());
    let left: Vec<_> = std::fs::read_dir(b.root.path().join("runtime"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("ctest-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // Text mode, piped: aligned lines and no bar; `config list` shows the latency and sorts
    // and filters by it.
    let (code, stdout, stderr) = run(&b.root, &["--all"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.is_empty(), "stderr: {stderr:?}");
    assert!(stdout.starts_with("ID  RESULT"), "{stdout}");
    assert!(
        stdout.contains("\n3 passed, 2 failed (probe http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.lines().all(|l| l == l.trim_end()), "{stdout}");
    let list = b
        .root
        .run(&["config", "list", "--alive", "--sort", "latency", "--json"]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    let shown: Vec<i64> = list["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    let mut live = b.live.clone();
    live.sort();
    let mut sorted = shown.clone();
    sorted.sort();
    assert_eq!(sorted, live, "{list}");
    let latencies: Vec<u64> = list["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["last_test"]["last_latency_ms"].as_u64().unwrap())
        .collect();
    assert!(latencies.windows(2).all(|w| w[0] <= w[1]), "{latencies:?}");
    let text_list = text(&b.root.run(&["config", "list"]).stdout);
    assert!(text_list.contains("LATENCY"), "{text_list}");
    assert!(text_list.contains(" ms "), "{text_list}");
    assert!(text_list.contains("closed"), "{text_list}");
}

/// On a terminal (a pty from util-linux `script`) the bar is drawn on stderr and cleared before
/// the result.
#[test]
fn a_progress_bar_on_a_terminal_only() {
    let b = bench("");
    let command = format!("{} config test --all", common::xrat_bin());
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("XRAT_ROOT", b.root.path())
        .output()
        .expect("util-linux `script` runs the command on a pty (apt-get install util-linux)");
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("testing ") && shown.contains("5/5"),
        "{shown:?}"
    );
    assert!(shown.contains("3 passed, 2 failed"), "{shown:?}");
}

#[test]
fn usage_errors_exit_2() {
    let root = Root::new();
    for args in [
        &[][..],
        &["1", "--all"][..],
        &["--all", "--timeout", "5"][..],
        &["--all", "--concurrency", "65"][..],
    ] {
        let (code, _, stderr) = run(&root, args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
    }
    let (code, _, stderr) = run(&root, &["7"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("config 7 not found"), "{stderr}");
}

#[test]
fn through_a_running_daemon_with_the_same_results() {
    let b = bench("");
    b.root.start();
    let (code, stdout, stderr) = run(&b.root, &["--all", "--json", "--concurrency", "2"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}\n{}", b.root.log());
    assert!(stderr.is_empty(), "stderr: {stderr:?}");
    let view: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(view["ran_by"], "daemon", "{view}");
    assert_eq!(view["concurrency"], 2);
    assert_exact(&b, &view);
    // The daemon recorded them, once per config.
    let rows = stored(&b.root);
    assert_eq!(rows.len(), 5);
    assert!(rows.values().all(|r| r.3 == "daemon"), "{rows:?}");
    let db = rusqlite::Connection::open(b.root.path().join("xrat.db")).unwrap();
    let count: i64 = db
        .query_row("SELECT count(*) FROM config_tests", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 5);
    // The batch core is gone; the daemon still answers; a disabled config can be named.
    assert!(common::wait_until(
        std::time::Duration::from_secs(3),
        || { common::core_processes(&b.root).is_empty() }
    ));
    let off = b.live[0].to_string();
    assert!(b.root.run(&["config", "disable", &off]).status.success());
    let (code, stdout, stderr) = run(&b.root, &[&off, "--json"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let view: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(view["results"][0]["ok"], true, "{view}");
}
