//! Unit tests of the API's pure parts: the Clash shapes, the stream frames, the gate's rules,
//! the connection table's choice of victim, the token.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::auth::{constant_time_eq, Token};
use super::clash::{configs_json, delay_answer, patch_verdict};
use super::frames::{self, Meter};
use super::gate::{is_v1, own_origins, query_token};
use super::slots::{pick_victim, request_queued, Phase};
use super::v1::http_status;
use super::views::{self, Catalog, ProviderInfo, GLOBAL};
use super::{check_listen, dashboard, ServeOptions, TOKEN_FILE};
use crate::store::{ConfigRow, TestPoint};

fn options(addr: &str, allow_remote: bool) -> ServeOptions {
    ServeOptions {
        listen: addr.parse().unwrap(),
        allow_remote,
        json: false,
        dashboard: None,
    }
}

#[test]
fn only_loopback_binds_without_allow_remote() {
    for addr in [
        "127.0.0.1:8787",
        "127.9.8.7:1",
        "[::1]:8787",
        "[::ffff:127.0.0.1]:80",
    ] {
        assert!(check_listen(&options(addr, false)).is_ok(), "{addr}");
    }
    for addr in ["0.0.0.0:8787", "192.168.1.5:8787", "[::]:8787"] {
        let err = check_listen(&options(addr, false)).unwrap_err().to_string();
        assert!(
            err.contains(addr) && err.contains("--allow-remote"),
            "{err}"
        );
        assert!(check_listen(&options(addr, true)).is_ok(), "{addr}");
    }
}

#[test]
fn constant_time_eq_compares_whole_inputs() {
    assert!(constant_time_eq(b"abcdef", b"abcdef"));
    assert!(!constant_time_eq(b"abcdef", b"abcdeg"));
    assert!(!constant_time_eq(b"xbcdef", b"abcdef"));
    assert!(!constant_time_eq(b"abc", b"abcdef"));
    assert!(constant_time_eq(b"", b""));
}

#[test]
fn token_is_made_private_once_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(TOKEN_FILE);
    let token = Token::load_or_create(&path).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    let value = text.trim();
    assert_eq!(value.len(), 64);
    assert!(value.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "kept across loads"
    );
    let _ = Token::load_or_create(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

    let header = format!("Bearer {value}");
    let authorizes = |values: &[&str]| token.authorizes(values.iter().map(|v| v.as_bytes()));
    assert!(authorizes(&[&header]));
    assert!(authorizes(&[&format!("bearer {value}")]));
    assert!(!authorizes(&[]));
    assert!(!authorizes(&[&format!("Basic {value}")]));
    assert!(!authorizes(&[&format!("Bearer {value}x")]));
    assert!(!authorizes(&[value]));
    assert!(!authorizes(&[&header, &header]), "two headers are refused");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Token::load_or_create(&path).unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, "\n").unwrap();
    let err = Token::load_or_create(&path).unwrap_err().to_string();
    assert!(err.contains("delete it"), "{err}");
}

#[test]
fn protocol_codes_map_to_http_statuses() {
    for code in [200, 400, 403, 404, 409, 413, 423, 500, 501, 503, 504] {
        assert_eq!(http_status(code), code);
    }
    assert_eq!(http_status(426), 400);
    assert_eq!(http_status(418), 502);
}

#[test]
fn eviction_picks_the_longest_waiting_never_busy() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_millis(5);
    let entries = [(1, Phase::Busy), (2, Phase::Idle(t1)), (3, Phase::Head(t0))];
    assert_eq!(pick_victim(entries.into_iter()), Some(3));
    let entries = [(1, Phase::Head(t1)), (2, Phase::Idle(t0))];
    assert_eq!(
        pick_victim(entries.into_iter()),
        Some(2),
        "idle keep-alive counts as waiting"
    );
    let tie = [(7, Phase::Head(t0)), (4, Phase::Head(t0))];
    assert_eq!(
        pick_victim(tie.into_iter()),
        Some(4),
        "ties go to the older id"
    );
    assert_eq!(pick_victim([(1, Phase::Busy)].into_iter()), None);
}

#[test]
fn the_gate_knows_its_dialects_origins_and_query_tokens() {
    assert!(is_v1("/v1/daemon") && is_v1("/v1"));
    assert!(!is_v1("/v1x") && !is_v1("/proxies"));
    let own = own_origins("127.0.0.1:8787".parse().unwrap());
    assert_eq!(own, ["http://127.0.0.1:8787", "http://localhost:8787"]);
    let remote = own_origins("0.0.0.0:9090".parse().unwrap());
    assert_eq!(
        remote,
        ["http://0.0.0.0:9090"],
        "localhost only on loopback"
    );
    assert_eq!(own_origins("[::1]:1".parse().unwrap())[0], "http://[::1]:1");
    assert_eq!(query_token(Some("a=1&token=s%20t")).as_deref(), Some("s t"));
    assert_eq!(query_token(Some("level=info")), None);
    assert_eq!(query_token(None), None);
}

fn row(id: i64, name: &str, scheme: &str, enabled: bool) -> ConfigRow {
    let link = format!("socks://127.0.0.1:{}#{name}", 1000 + id);
    let parsed = crate::links::parse_link(&link).unwrap();
    ConfigRow {
        id,
        name: name.into(),
        scheme: scheme.into(),
        server: "127.0.0.1".into(),
        port: 1000 + id as u16,
        raw_link: link,
        outbound: parsed.outbound,
        enabled,
        created_at: 1,
    }
}

#[test]
fn names_are_unique_and_stable() {
    let configs: Vec<(i64, String)> = [(1, "a"), (2, "b"), (3, "a"), (4, "GLOBAL"), (5, "a [3]")]
        .iter()
        .map(|(id, n)| (*id, n.to_string()))
        .collect();
    let names = views::unique_names(&configs);
    assert_eq!(names, ["a [1]", "b", "a [3] [3]", "GLOBAL [4]", "a [3]"]);
    let set: std::collections::HashSet<&String> = names.iter().collect();
    assert_eq!(set.len(), names.len());
}

#[test]
fn rfc3339_is_utc_civil_time() {
    assert_eq!(views::rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(views::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(views::rfc3339(1_795_721_966), "2026-11-26T19:39:26Z");
    assert_eq!(views::rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
}

#[test]
fn stored_configs_become_proxies_and_a_global_selector() {
    let rows = vec![
        row(1, "alpha", "socks", true),
        row(2, "beta", "vmess", true),
        row(3, "off", "ss", false),
    ];
    let point = |at, latency| TestPoint {
        at,
        latency_ms: latency,
    };
    let history = HashMap::from([(2, vec![point(60, Some(40)), point(120, None)])]);
    let provider_of = HashMap::from([(2, "sub".to_string())]);
    let catalog = Catalog::build(rows, history, &provider_of);
    let all = views::proxies_json(&catalog, Some(2));
    let proxies = all["proxies"].as_object().unwrap();
    let mut keys: Vec<&str> = proxies.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["GLOBAL", "alpha", "beta"],
        "disabled configs are left out"
    );
    let global = &proxies[GLOBAL];
    assert_eq!(global["type"], "Selector");
    assert_eq!(global["now"], "beta");
    assert_eq!(global["all"], json!(["alpha", "beta"]));
    let alpha = &proxies["alpha"];
    assert_eq!(
        (alpha["type"].clone(), alpha["alive"].clone()),
        (json!("Socks5"), json!(true))
    );
    assert_eq!(alpha["history"], json!([]));
    let beta = &proxies["beta"];
    assert_eq!(beta["type"], "Vmess");
    assert_eq!(beta["provider-name"], "sub");
    assert_eq!(beta["alive"], false, "its last test failed");
    assert_eq!(
        beta["history"],
        json!([{"time": "1970-01-01T00:01:00Z", "delay": 40}, {"time": "1970-01-01T00:02:00Z", "delay": 0}])
    );
    assert_eq!(views::global_json(&catalog, None)["now"], "");
    assert_eq!(
        views::global_json(&catalog, Some(3))["now"],
        "",
        "a disabled config"
    );

    let info = ProviderInfo {
        name: "sub".into(),
        updated_at: Some(60),
        upload: Some(1),
        download: Some(2),
        total: Some(3),
        expire: None,
    };
    let provider = views::provider_json(&info, &catalog, "http://probe/");
    assert_eq!(provider["vehicleType"], "HTTP");
    assert_eq!(provider["updatedAt"], "1970-01-01T00:01:00Z");
    assert_eq!(provider["proxies"].as_array().unwrap().len(), 1);
    assert_eq!(provider["proxies"][0]["name"], "beta");
    assert_eq!(provider["subscriptionInfo"]["Total"], 3);
}

#[test]
fn every_scheme_has_a_clash_type() {
    let schemes = [
        "vmess",
        "vless",
        "trojan",
        "ss",
        "socks",
        "http",
        "hysteria2",
        "tuic",
        "wireguard",
        "anytls",
    ];
    let types: Vec<&str> = schemes.iter().map(|s| views::clash_type(s)).collect();
    assert_eq!(
        types,
        [
            "Vmess",
            "Vless",
            "Trojan",
            "Shadowsocks",
            "Socks5",
            "Http",
            "Hysteria2",
            "Tuic",
            "WireGuard",
            "AnyTLS"
        ]
    );
    assert!(!views::carries_udp("http") && views::carries_udp("ss"));
}

#[test]
fn configs_map_only_what_maps_and_patch_names_the_rest() {
    let settings = crate::settings::Settings::default();
    let configs = configs_json(&settings);
    assert_eq!(configs["mode"], "global");
    assert_eq!(configs["socks-port"], settings.runtime.socks_port);
    assert_eq!(configs["allow-lan"], false);
    assert_eq!(patch_verdict(br#"{"mode": "Global"}"#), Ok(()));
    assert_eq!(patch_verdict(b"{}"), Ok(()));
    let err = patch_verdict(br#"{"mode": "rule"}"#).unwrap_err();
    assert!(err.contains("\"rule\"") && err.contains("global"), "{err}");
    let err = patch_verdict(br#"{"mixed-port": 7890}"#).unwrap_err();
    assert!(err.starts_with("mixed-port cannot be changed"), "{err}");
    assert!(patch_verdict(b"[1]")
        .unwrap_err()
        .starts_with("Body invalid"));
}

#[test]
fn delay_results_answer_as_clash_does() {
    let ok = json!({"config_id": 1, "ok": true, "latency_ms": 12});
    assert_eq!(delay_answer(Some(&ok)), (200, json!({"delay": 12})));
    let late = json!({"ok": false, "error_kind": "timeout", "error": "no answer"});
    assert_eq!(
        delay_answer(Some(&late)),
        (504, json!({"message": "Timeout"}))
    );
    let refused = json!({"ok": false, "error_kind": "refused", "error": "connection refused"});
    let (status, body) = delay_answer(Some(&refused));
    assert_eq!(status, 503);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .ends_with("connection refused"));
    assert_eq!(delay_answer(None).0, 503);
}

fn event(value: Value) -> Option<(&'static str, String)> {
    frames::event_log(&value)
}

#[test]
fn events_render_as_log_lines() {
    let started = json!({"event": "session_started", "seq": 1, "at": 5, "session_id": 3,
        "config_id": 2, "core": "v2ray", "pid": 77, "socks_addr": "127.0.0.1:1", "http_addr": null});
    let (level, line) = event(started).unwrap();
    assert_eq!(level, "info");
    assert_eq!(
        line,
        "[session] session 3 started: config 2 on v2ray (pid 77, socks 127.0.0.1:1)"
    );
    let crashed =
        json!({"event": "session_ended", "session_id": 3, "config_id": 2, "reason": "crashed"});
    assert_eq!(event(crashed).unwrap().0, "warning");
    let failed = json!({"event": "health_checked", "config_id": 2, "ok": false, "latency_ms": null,
        "error": "timeout", "consecutive_failures": 2});
    assert_eq!(
        event(failed).unwrap(),
        (
            "warning",
            "[health] config 2 failed: timeout (2 in a row)".into()
        )
    );
    let passed = json!({"event": "health_checked", "config_id": 2, "ok": true, "latency_ms": 9});
    assert_eq!(event(passed).unwrap().0, "debug");
    let rotated = json!({"event": "rotation_finished", "trigger": "manual", "from": 1, "to": 2,
        "result": "switched", "tested": 1, "elapsed_ms": 300, "detail": "ok"});
    let (level, line) = event(rotated).unwrap();
    assert_eq!(level, "info");
    assert!(
        line.contains("manual rotation switched: config 1 -> 2"),
        "{line}"
    );
    let nothing = json!({"event": "rotation_finished", "result": "no_working_candidate"});
    assert_eq!(event(nothing).unwrap().0, "warning");
    assert_eq!(
        event(json!({"event": "lagged", "dropped": 4})).unwrap().0,
        "warning"
    );
    assert!(event(json!({"event": "relay_counters", "bytes_up": 1})).is_none());
    assert!(event(json!({"no": "event"})).is_none());
    assert_eq!(frames::level_index("warning"), Some(2));
    assert_eq!(frames::level_index("warn"), None);
}

#[test]
fn counters_become_per_second_deltas() {
    let status = json!({"relay": {"bytes_up": 100, "bytes_down": 1000}});
    assert_eq!(frames::counters(&status), Some((100, 1000)));
    let event = json!({"event": "relay_counters", "bytes_up": 5, "bytes_down": 6});
    assert_eq!(frames::counters(&event), Some((5, 6)));
    assert_eq!(frames::counters(&json!({"runtime_status": "idle"})), None);
    let mut meter = Meter::default();
    assert_eq!(meter.tick(), (0, 0), "nothing known yet");
    meter.update((100, 1000));
    assert_eq!(meter.tick(), (0, 0), "the first counters are the baseline");
    meter.update((150, 1600));
    assert_eq!(meter.tick(), (50, 600));
    assert_eq!(meter.tick(), (0, 0), "no change, no traffic");
    meter.update((10, 10));
    assert_eq!(
        meter.tick(),
        (0, 0),
        "counters went back: the daemon restarted"
    );
    meter.update((15, 30));
    assert_eq!(meter.tick(), (5, 20));
    assert_eq!(meter.totals(), (15, 30));
    let frame = frames::traffic_frame((5, 20), (15, 30));
    assert_eq!(
        frame,
        json!({"up": 5, "down": 20, "upTotal": 15, "downTotal": 30})
    );
    let connections = frames::connections_frame((15, 30), 4096);
    assert_eq!(connections["connections"], json!([]));
    assert_eq!(
        (
            connections["uploadTotal"].clone(),
            connections["downloadTotal"].clone()
        ),
        (json!(15), json!(30))
    );
}

#[test]
fn rss_comes_from_proc_status() {
    let status = "Name:\txrat\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t1\n";
    assert_eq!(frames::vm_rss_bytes(status), Some(2048 * 1024));
    assert_eq!(frames::vm_rss_bytes("Name:\tx\n"), None);
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(frames::vm_rss_bytes(&own).unwrap() > 0);
}

#[test]
fn dashboard_paths_stay_inside_the_directory() {
    let dir = std::path::Path::new("/srv/ui");
    assert_eq!(dashboard::resolve(dir, "/ui/"), Some(dir.to_path_buf()));
    assert_eq!(
        dashboard::resolve(dir, "/ui/assets/a.js"),
        Some(dir.join("assets/a.js"))
    );
    assert_eq!(
        dashboard::resolve(dir, "/ui/a%20b.css"),
        Some(dir.join("a b.css"))
    );
    assert_eq!(dashboard::resolve(dir, "/ui/a+b"), Some(dir.join("a+b")));
    assert_eq!(dashboard::resolve(dir, "/ui/../etc/passwd"), None);
    assert_eq!(dashboard::resolve(dir, "/ui/%2e%2e/etc/passwd"), None);
    assert!(dashboard::is_ui_path("/ui") && dashboard::is_ui_path("/ui/x"));
    assert!(!dashboard::is_ui_path("/uix"));
    assert_eq!(
        dashboard::content_type(std::path::Path::new("i.js")),
        "text/javascript; charset=utf-8"
    );
    let tmp = tempfile::tempdir().unwrap();
    let err = dashboard::check_dir(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("no index.html"), "{err}");
    std::fs::write(tmp.path().join("index.html"), "<html>").unwrap();
    assert!(dashboard::check_dir(tmp.path()).is_ok());
}

#[test]
fn a_connection_with_its_request_queued_is_not_taken_for_a_trickling_one() {
    use std::io::Write;
    use std::os::fd::OwnedFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let server = OwnedFd::from(listener.accept().unwrap().0);
    assert!(!request_queued(&server), "nothing sent yet");
    client.write_all(b"G").unwrap();
    let settle = || std::thread::sleep(Duration::from_millis(50));
    settle();
    assert!(!request_queued(&server), "one trickled byte");
    client
        .write_all(b"ET /v1/configs HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    settle();
    assert!(request_queued(&server), "a whole head waits");
    assert!(request_queued(&server), "peeking leaves it for the reader");
}
