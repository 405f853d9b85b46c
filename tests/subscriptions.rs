//! Subscriptions end to end (issue 12): the real `xrat` binary fetches from a local HTTPS
//! server (rcgen CA passed with `--ca`) in every format, applies updates with exact counts, fails
//! with clear errors and an unchanged store, fetches through a real session (V2Ray core and
//! remote) with `--via-proxy`, and the daemon refreshes on its timer while pings stay fast.
//! Nothing leaves 127.0.0.1: the subscription entries point at documentation addresses that
//! are stored, never dialled.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use common::subserver::{Route, SubServer};
use common::{text, wait_until, Root};

const UUID: &str = "b831381d-6324-4d53-ad4f-8cda48b30811";

/// `xrat ARGS --json` in `root`: exit code and parsed stdout (Null when not JSON).
fn run(root: &Root, args: &[&str]) -> (i32, Value, String) {
    let mut args = args.to_vec();
    args.push("--json");
    let out = root.run(&args);
    let value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), value, text(&out.stderr))
}

/// `run`, asserting success.
fn ok(root: &Root, args: &[&str]) -> Value {
    let (code, value, stderr) = run(root, args);
    assert_eq!(code, 0, "xrat {args:?}: {stderr}\n{value}");
    value
}

fn counts(view: &Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| view[k].as_u64().unwrap_or_else(|| panic!("{k} in {view}"));
    (n("added"), n("updated"), n("unchanged"), n("removed"))
}

fn config_names(root: &Root, sub: &str) -> Vec<(String, bool)> {
    let list = ok(root, &["config", "list", "--sub", sub]);
    list["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["enabled"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn clash(proxies: &[&str]) -> String {
    format!("port: 7890\nproxies:\n{}\nrules: []\n", proxies.join("\n"))
}

fn trojan_yaml(name: &str, host: &str, password: &str) -> String {
    format!("  - {{name: \"{name}\", type: trojan, server: {host}, port: 443, password: {password}, sni: {host}}}")
}

#[test]
fn each_format_is_added_and_listed() {
    let server = SubServer::start();
    let root = Root::new();
    let links = format!(
        "vless://{UUID}@198.51.100.1:443?security=tls&type=ws&path=%2Fws#VL\n\
         trojan://pw@198.51.100.2:443#TR\nnot-a-link\n"
    );
    server.body("/plain", &links);
    let blob = base64::engine::general_purpose::STANDARD.encode(&links);
    server.body("/b64", &blob);
    let urlsafe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&links);
    server.body("/b64url", &urlsafe);
    server.body(
        "/sip008",
        r#"{"version":1,"servers":[{"remarks":"S1","server":"198.51.100.3","server_port":8388,"method":"aes-256-gcm","password":"pw"}]}"#,
    );
    server.body(
        "/clash",
        &clash(&[
            &trojan_yaml("C1", "198.51.100.4", "a"),
            "  - {name: C2, type: ss, server: 198.51.100.5, port: 8388, cipher: aes-128-gcm, password: pw}",
            "  - {name: C3, type: snell, server: 198.51.100.6, port: 1, psk: x}",
        ]),
    );
    server.body(
        "/singbox",
        &json!({"outbounds": [
            {"type": "vmess", "tag": "B1", "server": "198.51.100.7", "server_port": 443, "uuid": UUID,
             "transport": {"type": "grpc", "service_name": "g"}},
            {"type": "direct", "tag": "direct"}
        ]})
        .to_string(),
    );
    let expect = [
        ("plain", "share links", 2, 1),
        ("b64", "share links", 2, 1),
        ("b64url", "share links", 2, 1),
        ("sip008", "SIP008 JSON", 1, 0),
        ("clash", "Clash YAML", 2, 1),
        ("singbox", "sing-box JSON", 1, 0),
    ];
    for (i, (name, format, added, failed)) in expect.iter().enumerate() {
        let url = server.url(&format!("/{name}"));
        // The plain and base64 lists hold the same links: only the first stores them.
        let view = ok(
            &root,
            &["sub", "add", &url, "--name", name, "--ca", server.ca()],
        );
        assert_eq!(view["format"], *format, "{view}");
        let expected_added = if i == 1 || i == 2 { 0 } else { *added };
        assert_eq!(view["added"], expected_added, "{name}: {view}");
        assert_eq!(
            view["failed"].as_array().unwrap().len(),
            *failed,
            "{name}: {view}"
        );
        if i == 1 || i == 2 {
            assert_eq!(view["skipped"].as_array().unwrap().len(), 2, "{view}");
        }
    }
    let failed = ok(
        &root,
        &[
            "sub",
            "add",
            &server.url("/clash"),
            "--name",
            "again",
            "--ca",
            server.ca(),
        ],
    );
    assert_eq!(
        failed["failed"][0],
        "proxies[2] \"C3\": proxy type \"snell\" is not supported"
    );
    assert_eq!(
        config_names(&root, "clash"),
        [("C1".into(), true), ("C2".into(), true)]
    );
    let list = ok(&root, &["sub", "list"]);
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 7, "{list}");
    let out = root.run(&["sub", "list"]);
    let table = text(&out.stdout);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("sip008"), "{table}");
    // The default user-agent names xrat.
    assert!(
        server.hits("/sip008")[0].starts_with("xrat/"),
        "{:?}",
        server.hits("/sip008")
    );
}

#[test]
fn an_update_reports_exact_counts_and_keeps_dropped_configs_disabled() {
    let server = SubServer::start();
    let root = Root::new();
    let first = clash(&[
        &trojan_yaml("A", "198.51.100.10", "a"),
        &trojan_yaml("B", "198.51.100.11", "b"),
        &trojan_yaml("C", "198.51.100.12", "c"),
        &trojan_yaml("D", "198.51.100.13", "d"),
    ]);
    let info = "upload=1048576; download=2097152; total=10737418240; expire=1924992000";
    server.set("/s", Route::Body(first, Some(info.into())));
    let url = server.url("/s");
    let view = ok(
        &root,
        &[
            "sub",
            "add",
            &url,
            "--name",
            "p",
            "--ca",
            server.ca(),
            "--user-agent",
            "clash.meta",
        ],
    );
    assert_eq!(counts(&view), (4, 0, 0, 0));
    assert_eq!(server.hits("/s"), ["clash.meta"]);
    let sub = &ok(&root, &["sub", "list"])["subscriptions"][0];
    assert_eq!(
        sub["userinfo"],
        json!({"upload": 1048576, "download": 2097152, "total": 10737418240u64, "expire": 1924992000})
    );
    let table = text(&root.run(&["sub", "list"]).stdout);
    assert!(
        table.contains("3.0 MiB / 10.0 GiB") && table.contains("2031-01-01"),
        "{table}"
    );

    // B renamed (same server and password: an update), C's password changed (a new identity:
    // C' added, C removed), D dropped, E new; A as it was.
    let second = clash(&[
        &trojan_yaml("A", "198.51.100.10", "a"),
        &trojan_yaml("B renamed", "198.51.100.11", "b"),
        &trojan_yaml("C", "198.51.100.12", "c2"),
        &trojan_yaml("E", "198.51.100.14", "e"),
    ]);
    server.body("/s", &second);
    let result = ok(&root, &["sub", "update", "p"]);
    let view = &result["results"][0];
    assert_eq!(view["ok"], true, "{view}");
    assert_eq!(counts(view), (2, 1, 1, 2), "{view}");
    let names = config_names(&root, "p");
    assert_eq!(
        names,
        [
            ("A".into(), true),
            ("B renamed".into(), true),
            ("C".into(), false),
            ("D".into(), false),
            ("C".into(), true),
            ("E".into(), true),
        ]
    );
    // The same body again changes nothing.
    let again = ok(&root, &["sub", "update", "--all"]);
    assert_eq!(counts(&again["results"][0]), (0, 0, 4, 0));
    // --due skips a subscription whose interval has not passed.
    let due = ok(&root, &["sub", "update", "--due"]);
    assert_eq!(due["results"].as_array().unwrap().len(), 0, "{due}");

    // Removal: its configs go; --keep-configs keeps them as plain configs.
    let removed = ok(&root, &["sub", "remove", "p"]);
    assert_eq!(removed["deleted_configs"], 6, "{removed}");
    assert!(ok(&root, &["config", "list"])["configs"]
        .as_array()
        .unwrap()
        .is_empty());
    ok(
        &root,
        &["sub", "add", &url, "--name", "q", "--ca", server.ca()],
    );
    let kept = ok(&root, &["sub", "remove", "q", "--keep-configs"]);
    assert_eq!(kept["kept_configs"], 4, "{kept}");
    assert_eq!(
        ok(&root, &["config", "list"])["configs"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let (code, _, stderr) = run(&root, &["config", "list", "--sub", "q"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no subscription is named \"q\""),
        "{stderr}"
    );
}

/// Everything in the store that a failed fetch must leave alone.
fn snapshot(root: &Root) -> (Value, Vec<Value>) {
    let configs = ok(root, &["config", "list"]);
    let subs: Vec<Value> = ok(root, &["sub", "list"])["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| json!([s["name"], s["configs"], s["enabled"], s["last_success_at"]]))
        .collect();
    (configs, subs)
}

#[test]
fn failures_name_the_url_and_the_fix_and_change_nothing() {
    let server = SubServer::start();
    let root = Root::new();
    root.write_settings(
        "[subscriptions]\ntimeout_secs = 2\nbody_bytes_max = 4096\nredirects_max = 3\n",
    );
    server.body("/good", &clash(&[&trojan_yaml("A", "198.51.100.20", "a")]));
    ok(
        &root,
        &[
            "sub",
            "add",
            &server.url("/good"),
            "--name",
            "good",
            "--ca",
            server.ca(),
        ],
    );
    let before = snapshot(&root);
    let cases: [(&str, Route, &[&str]); 5] = [
        (
            "/huge",
            Route::Huge(100_000),
            &["larger than 4096 bytes", "subscriptions.body_bytes_max"],
        ),
        (
            "/slow",
            Route::Slow,
            &[
                "no complete answer within 2 s",
                "subscriptions.timeout_secs",
            ],
        ),
        (
            "/loop",
            Route::RedirectLoop,
            &["more than 3 redirects", "redirect loop"],
        ),
        ("/gone", Route::Status(404), &["HTTP 404", "check the URL"]),
        (
            "/html",
            Route::Body("<html><body>Welcome</body></html>".into(), None),
            &["not a subscription", "--user-agent"],
        ),
    ];
    for (path, route, words) in cases {
        server.set(path, route.clone());
        let url = server.url(path);
        let started = Instant::now();
        let (code, _, stderr) = run(
            &root,
            &["sub", "add", &url, "--name", "bad", "--ca", server.ca()],
        );
        assert_eq!(code, 1, "{path}: {stderr}");
        assert!(stderr.contains(&url), "{path}: {stderr}");
        for word in words {
            assert!(stderr.contains(word), "{path}: {word:?} not in {stderr}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path} took {:?}",
            started.elapsed()
        );
        assert_eq!(snapshot(&root), before, "{path} changed the store");
        // The same failure on an update: recorded on the subscription, its configs kept.
        server.set("/good", route);
        let (code, view, _) = run(&root, &["sub", "update", "good"]);
        assert_eq!(code, 1, "{path}: {view}");
        let error = view["results"][0]["error"].as_str().unwrap();
        assert!(error.contains(words[0]), "{path}: {error}");
        assert_eq!(
            snapshot(&root),
            before,
            "{path} changed the store on update"
        );
        let sub = &ok(&root, &["sub", "list"])["subscriptions"][0];
        assert_eq!(sub["last_status"], "error", "{sub}");
        server.body("/good", &clash(&[&trojan_yaml("A", "198.51.100.20", "a")]));
    }
    // Without the private CA the error says to pass it.
    let (code, _, stderr) = run(
        &root,
        &["sub", "add", &server.url("/good"), "--name", "noca"],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("--ca FILE"), "{stderr}");
    // XRAT_CA_FILE stands in for --ca.
    let out = root
        .command(&[
            "sub",
            "add",
            &server.url("/good"),
            "--name",
            "envca",
            "--json",
        ])
        .env("XRAT_CA_FILE", server.ca())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // It is stored with the subscription: the daemon's refreshes run without the variable.
    let update = ok(&root, &["sub", "update", "envca"]);
    assert_eq!(update["results"][0]["ok"], true, "{update}");
}

#[test]
fn config_import_fetches_an_https_url() {
    let server = SubServer::start();
    let root = Root::new();
    server.body(
        "/list",
        &format!("trojan://pw@198.51.100.30:443#one\nvless://{UUID}@198.51.100.31:443#two\n"),
    );
    let out = root
        .command(&["config", "import", &server.url("/list"), "--json"])
        .env("XRAT_CA_FILE", server.ca())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["imported"].as_array().unwrap().len(), 2, "{view}");
    // A bare proxy link stays a link.
    let proxy = ok(
        &root,
        &["config", "import", "https://u:p@198.51.100.32:8443"],
    );
    assert_eq!(proxy["imported"].as_array().unwrap().len(), 1, "{proxy}");
}

#[test]
fn via_proxy_fetches_through_the_running_session() {
    let server = SubServer::start();
    let rig = common::rig::rig(1, "");
    rig.connect(rig.ids[0]);
    server.body("/p", &clash(&[&trojan_yaml("P", "198.51.100.40", "p")]));
    let url = server.url("/p");
    let view = ok(
        &rig.root,
        &[
            "sub",
            "add",
            &url,
            "--name",
            "p",
            "--via-proxy",
            "--ca",
            server.ca(),
        ],
    );
    assert_eq!(counts(&view), (1, 0, 0, 0));
    assert!(
        rig.servers[0].relayed_to(server.port),
        "the remote did not relay to the subscription server:\n{}",
        rig.servers[0].log()
    );
    // The refresh goes the same way.
    let update = ok(&rig.root, &["sub", "update", "p"]);
    assert_eq!(counts(&update["results"][0]), (0, 0, 1, 0));
    // Without a session --via-proxy says what to do.
    rig.call(json!({"type": "runtime_disconnect"}));
    let (code, _, stderr) = run(
        &rig.root,
        &[
            "sub",
            "add",
            &url,
            "--name",
            "q",
            "--via-proxy",
            "--ca",
            server.ca(),
        ],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("--via-proxy needs a running session"),
        "{stderr}"
    );
}

#[test]
fn the_daemon_refreshes_due_subscriptions_while_pings_stay_fast() {
    let server = SubServer::start();
    let root = Root::new();
    root.write_settings("[subscriptions]\ncheck_interval_secs = 1\n");
    server.body("/t", &clash(&[&trojan_yaml("T1", "198.51.100.50", "t")]));
    ok(
        &root,
        &[
            "sub",
            "add",
            &server.url("/t"),
            "--name",
            "t",
            "--interval",
            "1",
            "--ca",
            server.ca(),
        ],
    );
    root.start();
    server.body(
        "/t",
        &clash(&[
            &trojan_yaml("T1", "198.51.100.50", "t"),
            &trojan_yaml("T2", "198.51.100.51", "u"),
        ]),
    );
    let mut conn = root.connect();
    let mut worst = Duration::ZERO;
    let started = Instant::now();
    let mut refreshed = false;
    while started.elapsed() < Duration::from_secs(20) && !refreshed {
        let sent = Instant::now();
        assert_eq!(
            conn.call(json!(1), json!({"type": "daemon_ping"}))["code"],
            200
        );
        worst = worst.max(sent.elapsed());
        refreshed = config_names(&root, "t").len() == 2;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        refreshed,
        "no refresh within 20 s; daemon log:\n{}",
        root.log()
    );
    eprintln!(
        "refreshed after {:?}; worst ping {worst:?}",
        started.elapsed()
    );
    assert!(server.hits("/t").len() >= 2);
    // Generous for a debug build on a shared machine: the fetch runs in a child, never the loop.
    assert!(
        worst < Duration::from_millis(200),
        "a ping took {worst:?} during refreshes"
    );
    // A failing refresh is logged and the next one still runs.
    server.set("/t", Route::Status(500));
    let failed = wait_until(Duration::from_secs(10), || {
        ok(&root, &["sub", "list"])["subscriptions"][0]["last_status"] == "error"
    });
    assert!(failed, "{}", root.log());
    assert!(
        wait_until(Duration::from_secs(5), || root
            .log()
            .contains("subscription refresh")),
        "{}",
        root.log()
    );
}

/// An upgrade or a rebuild replaces the executable under a running daemon. Its refresh runs
/// must still start: the daemon runs its own image (`/proc/self/exe`), where the path it was
/// started from now names nothing.
#[test]
fn a_daemon_whose_executable_was_removed_still_refreshes_subscriptions() {
    let server = SubServer::start();
    let root = Root::new();
    root.write_settings("[subscriptions]\ncheck_interval_secs = 1\n");
    server.body("/t", &clash(&[&trojan_yaml("T1", "198.51.100.50", "t")]));
    let url = server.url("/t");
    let add = ["sub", "add", &url, "--name", "t", "--interval", "1"];
    ok(&root, &[&add[..], &["--ca", server.ca()]].concat());
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let copy = dir.path().join("xrat");
    std::fs::copy(common::xrat_bin(), &copy).unwrap();
    let out = std::process::Command::new(&copy)
        .args(["daemon", "start", "--json"])
        .env("XRAT_ROOT", root.path())
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::remove_file(&copy).unwrap();
    server.body(
        "/t",
        &clash(&[
            &trojan_yaml("T1", "198.51.100.50", "t"),
            &trojan_yaml("T2", "198.51.100.51", "u"),
        ]),
    );
    let refreshed = wait_until(Duration::from_secs(20), || {
        config_names(&root, "t").len() == 2
    });
    assert!(
        refreshed,
        "no refresh by a daemon whose executable is gone:\n{}",
        root.log()
    );
    assert!(!root.log().contains("cannot start"), "{}", root.log());
}
