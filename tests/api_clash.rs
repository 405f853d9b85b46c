//! The Clash-compatible API of `xrat api serve` against the real binary, a live daemon and real
//! V2Ray cores: proxies and the GLOBAL selector, switching the daemon, delay tests through the
//! batch test, CORS, WebSocket streams, the dashboard's static files. Everything listens on and
//! dials 127.0.0.1; every child is killed on drop; every wait is bounded.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::api::{live, Api, Reply, START_LIMIT};
use common::cores::socks5_get;
use common::{wait_until, Root};
use serde_json::{json, Value};

/// How long a WebSocket test waits for the frame it needs (frames come once a second).
const FRAME_WAIT: Duration = Duration::from_secs(15);

fn put(api: &Api, path: &str, body: &str) -> Reply {
    api.send("PUT", path, &[("Authorization", &api.auth())], body)
}

/// Percent-encodes a proxy name for a path segment.
fn segment(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The proxy names of the stored configs, in id order: their names, made unique with the id
/// where two share one (the test remotes all have the same name).
fn config_names(api: &Api) -> Vec<String> {
    let configs = api.get("/v1/configs");
    let list = configs.payload()["configs"].as_array().unwrap().clone();
    let stored: Vec<(i64, String)> = list
        .iter()
        .map(|c| {
            (
                c["id"].as_i64().unwrap(),
                c["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let shared = |name: &str| stored.iter().filter(|(_, n)| n == name).count() > 1;
    stored
        .iter()
        .map(|(id, name)| match shared(name) {
            true => format!("{name} [{id}]"),
            false => name.clone(),
        })
        .collect()
}

#[test]
fn the_global_selector_lists_and_switches_the_daemon() {
    let live = live();
    let (a, b) = (live.ids[0], live.ids[1]);
    let api = Api::start(&live.root);
    let version = api.get("/version");
    assert_eq!(version.status, 200);
    assert_eq!(
        version.body["version"],
        format!("xrat {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(version.body["meta"], true);

    let names = config_names(&api);
    assert_eq!(names.len(), 2);
    assert_ne!(names[0], names[1], "proxy names are unique: {names:?}");
    let proxies = api.get("/proxies");
    assert_eq!(proxies.status, 200, "{proxies:?}");
    let global = &proxies.body["proxies"]["GLOBAL"];
    assert_eq!(global["type"], "Selector");
    assert_eq!(global["all"], json!(names));
    assert_eq!(global["now"], "", "no session yet");
    for name in &names {
        let proxy = &proxies.body["proxies"][name];
        assert_eq!(proxy["type"], "Socks5", "{proxy}");
        assert_eq!(proxy["name"], *name);
        assert!(proxy["history"].is_array());
    }

    for (name, id) in [(&names[0], a), (&names[1], b)] {
        let body = json!({ "name": name }).to_string();
        let selected = put(&api, "/proxies/GLOBAL", &body);
        assert_eq!(selected.status, 204, "{selected:?}");
        let runtime = api.get("/v1/runtime");
        assert_eq!(runtime.payload()["active_config_id"], id);
        let global = api.get("/proxies/GLOBAL");
        assert_eq!(global.body["now"], *name);
    }
    let fetched = socks5_get(live.socks_port, live.http.port(), "/through-global");
    assert_eq!(fetched.as_deref(), Ok(live.http.body()));

    let unknown = put(&api, "/proxies/GLOBAL", r#"{"name": "no such node"}"#);
    assert_eq!(unknown.status, 400);
    assert_eq!(
        unknown.body["message"],
        "Selector update error: proxy not exist"
    );
    let not_group = put(
        &api,
        &format!("/proxies/{}", segment(&names[0])),
        r#"{"name": "x"}"#,
    );
    assert_eq!(not_group.status, 400);
    assert_eq!(not_group.body["message"], "Must be a Selector");
    assert_eq!(api.get("/proxies/nobody").status, 404);
    assert_eq!(
        api.get("/v1/runtime").payload()["active_config_id"],
        b,
        "refused selections leave the session alone"
    );
}

#[test]
fn delay_tests_run_through_the_batch_test_and_show_in_history() {
    let live = live();
    let api = Api::start(&live.root);
    let names = config_names(&api);
    let probe = segment(&live.http.url("/probe"));
    let path = format!(
        "/proxies/{}/delay?url={probe}&timeout=5000",
        segment(&names[0])
    );
    let tested = api.get(&path);
    assert_eq!(tested.status, 200, "{tested:?}");
    let delay = tested.body["delay"].as_u64().unwrap();
    let proxy = api.get(&format!("/proxies/{}", segment(&names[0])));
    let history = proxy.body["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{proxy:?}");
    assert_eq!(history[0]["delay"], delay);
    assert!(history[0]["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(proxy.body["alive"], true);

    let group = api.get(&format!("/group/GLOBAL/delay?url={probe}&timeout=5000"));
    assert_eq!(group.status, 200, "{group:?}");
    for name in &names {
        assert!(group.body[name].as_u64().is_some(), "{group:?}");
    }
    let no_timeout = api.get(&format!(
        "/proxies/{}/delay?url={probe}",
        segment(&names[0])
    ));
    assert_eq!(no_timeout.status, 400);
    assert_eq!(no_timeout.body["message"], "Body invalid");
    assert_eq!(api.get("/group/PROXY/delay?timeout=100").status, 404);

    let configs = api.get("/configs");
    assert_eq!(configs.body["mode"], "global");
    assert_eq!(configs.body["socks-port"], live.socks_port);
    let patched = api.send(
        "PATCH",
        "/configs",
        &[("Authorization", &api.auth())],
        r#"{"mode": "rule"}"#,
    );
    assert_eq!(patched.status, 400);
    assert!(patched.body["message"].as_str().unwrap().contains("global"));
    assert_eq!(api.get("/providers/proxies").body, json!({"providers": {}}));
    assert_eq!(api.get("/rules").body, json!({"rules": []}));
    let missing = api.get("/dns/query?name=example.com");
    assert_eq!(missing.status, 404);
    assert!(missing.body["message"]
        .as_str()
        .unwrap()
        .contains("/dns/query"));
}

#[test]
fn cors_follows_the_allow_list_and_the_own_origin() {
    let root = Root::new();
    root.write_settings("[api]\ncors_origins = [\"http://127.0.0.1:9\"]\n");
    let api = Api::start(&root);
    let allowed = "http://127.0.0.1:9";
    let preflight = [
        ("Origin", allowed),
        ("Access-Control-Request-Method", "PUT"),
        (
            "Access-Control-Request-Headers",
            "authorization,content-type",
        ),
    ];
    // No token: a browser's preflight never carries one.
    let answered = send_head(&api, "OPTIONS", "/proxies/GLOBAL", &preflight);
    assert!(answered.starts_with("HTTP/1.1 204"), "{answered}");
    let lower = answered.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("access-control-allow-origin: {allowed}\r\n")),
        "{answered}"
    );
    assert!(lower.contains("access-control-allow-methods: get, put, patch, post, delete"));
    assert!(lower.contains("access-control-allow-headers: authorization, content-type"));

    let auth = api.auth();
    let with = |origin: &str| {
        let headers = [("Authorization", auth.as_str()), ("Origin", origin)];
        api.send("GET", "/version", &headers, "")
    };
    let ok = with(allowed);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("access-control-allow-origin"), Some(allowed));
    let own = format!("http://127.0.0.1:{}", api.port);
    assert_eq!(with(&own).status, 200, "the dashboard's own origin");
    let other = with("http://127.0.0.1:10");
    assert_eq!(other.status, 403, "{other:?}");
    assert_eq!(other.header("access-control-allow-origin"), None);
    let refused = send_head(
        &api,
        "OPTIONS",
        "/proxies",
        &[("Origin", "http://evil.test")],
    );
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    // A page of the allowed origin still needs the token.
    let no_token = api.send("GET", "/proxies", &[("Origin", allowed)], "");
    assert_eq!(no_token.status, 401);
    assert_eq!(
        no_token.header("access-control-allow-origin"),
        Some(allowed)
    );
    // Same-origin GETs carry only a Referer.
    let referer = format!("{own}/ui/#/proxies");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Referer", referer.as_str()),
    ];
    assert_eq!(api.send("GET", "/version", &headers, "").status, 200);
    // ?token= counts on WebSocket upgrades only.
    let query = api.send("GET", &format!("/version?token={}", api.token), &[], "");
    assert_eq!(query.status, 401);

    root.write_settings("[api]\ncors_origins = [\"http://127.0.0.1:9/\"]\n");
    let (code, stderr) = run_to_exit(&root, &["api", "serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("`api.cors_origins`"), "{stderr}");
}

/// Sends a request and returns the raw head of the answer (no body is read).
fn send_head(api: &Api, method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let stream = api.open();
    let request = common::api::raw_request(method, path, headers, "");
    (&stream).write_all(&request).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match std::io::Read::read(&mut &stream, &mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

type Socket = tungstenite::WebSocket<TcpStream>;

/// Opens `ws://…/path` with `?token=` (as a browser does), reads bounded by [`FRAME_WAIT`].
fn websocket(api: &Api, path: &str, token: &str) -> Result<Socket, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], api.port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream.set_read_timeout(Some(FRAME_WAIT)).unwrap();
    let sep = if path.contains('?') { '&' } else { '?' };
    let url = format!("ws://127.0.0.1:{}{path}{sep}token={token}", api.port);
    match tungstenite::client(url.as_str(), stream) {
        Ok((socket, _)) => Ok(socket),
        Err(e) => Err(e.to_string()),
    }
}

/// The next JSON frame.
fn frame(socket: &mut Socket) -> Value {
    loop {
        match socket.read().expect("a frame within FRAME_WAIT") {
            tungstenite::Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            tungstenite::Message::Close(c) => panic!("stream closed: {c:?}"),
            _ => continue,
        }
    }
}

#[test]
fn websocket_streams_report_traffic_memory_and_connections() {
    let live = live();
    let api = Api::start(&live.root);
    let names = config_names(&api);
    let selected = put(
        &api,
        "/proxies/GLOBAL",
        &json!({"name": names[0]}).to_string(),
    );
    assert_eq!(selected.status, 204, "{selected:?}");

    let refused = websocket(&api, "/traffic", "wrong").unwrap_err();
    assert!(refused.contains("401"), "{refused}");
    let mut traffic = websocket(&api, "/traffic", &api.token).unwrap();
    let first = frame(&mut traffic);
    assert!(first["up"].is_u64() && first["down"].is_u64(), "{first}");
    let body = live.http.body().len() as u64;
    let fetched = socks5_get(live.socks_port, live.http.port(), "/traffic");
    assert_eq!(fetched.as_deref(), Ok(live.http.body()));
    let started = Instant::now();
    let mut seen = Vec::new();
    let down = loop {
        let f = frame(&mut traffic);
        seen.push(f.clone());
        if f["down"].as_u64().unwrap() > 0 {
            break f;
        }
        assert!(started.elapsed() < FRAME_WAIT, "no traffic in {seen:?}");
    };
    println!("/traffic frames until the relayed fetch showed: {seen:?}");
    assert!(down["down"].as_u64().unwrap() >= body, "{down}");
    assert!(down["downTotal"].as_u64().unwrap() >= body, "{down}");

    let mut memory = websocket(&api, "/memory", &api.token).unwrap();
    let inuse = frame(&mut memory)["inuse"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", live.daemon_pid)).unwrap();
    assert!(status.contains("VmRSS:") && inuse > 1024 * 1024, "{inuse}");

    let mut connections = websocket(&api, "/connections", &api.token).unwrap();
    let snapshot = frame(&mut connections);
    assert_eq!(snapshot["connections"], json!([]));
    assert!(
        snapshot["downloadTotal"].as_u64().unwrap() >= body,
        "{snapshot}"
    );

    let bad_level = websocket(&api, "/logs?level=loud", &api.token).unwrap_err();
    assert!(bad_level.contains("400"), "{bad_level}");
    let mut logs = websocket(&api, "/logs?level=debug", &api.token).unwrap();
    // Give the stream a tick to take its starting point, then make the daemon log a rotation.
    std::thread::sleep(Duration::from_millis(1500));
    let rotated = api.post("/v1/proxy/rotate", "");
    assert_eq!(rotated.payload()["replaced"], true, "{rotated:?}");
    let line = frame(&mut logs);
    println!("/logs after a rotation: {line}");
    assert!(frames_level(&line["type"]) && line["payload"].as_str().is_some_and(|p| !p.is_empty()));
}

fn frames_level(level: &Value) -> bool {
    ["debug", "info", "warning", "error"].contains(&level.as_str().unwrap_or(""))
}

#[test]
fn the_dashboard_is_served_on_the_api_origin_without_the_token() {
    let root = Root::new();
    let dir = root.path().join("dash");
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), "<html>dash</html>").unwrap();
    std::fs::write(dir.join("assets/app.js"), "console.log(1)").unwrap();
    let dash = dir.display().to_string();
    let api = Api::start_with(&root, &["--listen", "127.0.0.1:0", "--dashboard", &dash]);
    let index = send_head(&api, "GET", "/ui/", &[]);
    assert!(index.starts_with("HTTP/1.1 200"), "{index}");
    assert!(index
        .to_ascii_lowercase()
        .contains("content-type: text/html"));
    let script = send_head(&api, "GET", "/ui/assets/app.js", &[]);
    assert!(
        script
            .to_ascii_lowercase()
            .contains("content-type: text/javascript"),
        "{script}"
    );
    let route = send_head(&api, "GET", "/ui/proxies/deep", &[]);
    assert!(
        route.starts_with("HTTP/1.1 200") && route.contains("text/html"),
        "{route}"
    );
    let escape = send_head(&api, "GET", "/ui/%2e%2e/api.token", &[]);
    assert!(escape.starts_with("HTTP/1.1 404"), "{escape}");
    let bare = send_head(&api, "GET", "/ui", &[]);
    assert!(bare.starts_with("HTTP/1.1 308"), "{bare}");
    // The API itself still needs the token.
    assert_eq!(api.send("GET", "/proxies", &[], "").status, 401);

    let missing = root.path().join("nothing").display().to_string();
    let args = [
        "api",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--dashboard",
        &missing,
    ];
    let (code, stderr) = run_to_exit(&root, &args);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not a directory"), "{stderr}");
}

/// Runs `xrat ARGS`, which must exit on its own within [`START_LIMIT`] (killed otherwise).
fn run_to_exit(root: &Root, args: &[&str]) -> (Option<i32>, String) {
    let child = root
        .command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.unwrap();
    let exited = wait_until(START_LIMIT, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(exited, "`xrat {}` did not exit", args.join(" "));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
