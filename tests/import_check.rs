//! Issue 12 part 3: what the cores refuse is caught at import, naming the field and the core,
//! and each refusal is shown to be real: the same value in a core config the core checks itself
//! (`v2ray -test -config`, `sing-box check -c`, `mihomo -t`) fails. Where xrat maps a value
//! instead (a short non-UUID id for V2Ray, an unpadded 2022 key), a real server accepts the
//! result. Run with the cores on PATH: `PATH=$PWD/.cores/bin:$PATH cargo test --test
//! import_check`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::cores::{
    free_port, mihomo_bin, sing_box_bin, v2ray_bin, wait_port, ChildGuard, Core, HttpTarget,
};
use common::{text, Root};
use serde_json::{json, Value};

/// Runs a core's own config check; `Err` carries its output.
fn check(bin: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", text(&out.stdout), text(&out.stderr)))
    }
}

fn v2ray_check(dir: &Path, users: Value) -> Result<(), String> {
    let config = json!({
        "inbounds": [{"port": free_port(), "listen": "127.0.0.1", "protocol": "socks", "settings": {}}],
        "outbounds": [{"protocol": "vmess", "settings": {"vnext": [{"address": "127.0.0.1", "port": 9, "users": [users]}]}}],
    });
    let path = dir.join("v2ray.json");
    std::fs::write(&path, config.to_string()).unwrap();
    check(&v2ray_bin(), &["-test", "-config", path.to_str().unwrap()])
}

fn sing_box_ss_check(dir: &Path, method: &str, password: &str) -> Result<(), String> {
    let config = json!({"outbounds": [{"type": "shadowsocks", "tag": "ss", "server": "127.0.0.1",
        "server_port": 9, "method": method, "password": password}]});
    let path = dir.join("sing-box.json");
    std::fs::write(&path, config.to_string()).unwrap();
    check(&sing_box_bin(), &["check", "-c", path.to_str().unwrap()])
}

fn mihomo_ss_check(dir: &Path, method: &str, password: &str) -> Result<(), String> {
    let config = format!(
        "mixed-port: {}\nproxies:\n  - {{name: a, type: ss, server: 127.0.0.1, port: 9, cipher: {method}, password: \"{password}\"}}\n",
        free_port()
    );
    let path = dir.join("mihomo.yaml");
    std::fs::write(&path, config).unwrap();
    let home = dir.to_str().unwrap();
    check(
        &mihomo_bin(),
        &["-t", "-d", home, "-f", path.to_str().unwrap()],
    )
}

/// A sing-box server with one inbound, killed on drop.
fn sing_box_server(dir: &Path, inbound: Value) -> (ChildGuard, u16) {
    let port = free_port();
    let mut inbound = inbound;
    inbound["listen"] = json!("127.0.0.1");
    inbound["listen_port"] = json!(port);
    let config =
        json!({"log": {"level": "warn"}, "inbounds": [inbound], "outbounds": [{"type": "direct"}]});
    let path = dir.join(format!("server-{port}.json"));
    std::fs::write(&path, config.to_string()).unwrap();
    let child = Command::new(sing_box_bin())
        .args(["run", "-c", path.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = ChildGuard::new(child);
    assert!(
        wait_port(port, Duration::from_secs(5)),
        "sing-box server on {port}"
    );
    (guard, port)
}

fn root_with(core_lines: &str, http: &HttpTarget) -> Root {
    let root = Root::new();
    root.write_settings(&format!(
        "[runtime]\nmode = \"direct\"\n{core_lines}[health]\nprobe_url = \"{}\"\n",
        http.url("/probe")
    ));
    root
}

fn import_json(root: &Root, link: &str) -> (bool, Value, String) {
    let out = root.run(&["config", "import", link, "--json"]);
    let view = serde_json::from_slice(&out.stdout).unwrap();
    (out.status.success(), view, text(&out.stderr))
}

fn test_one(root: &Root, id: i64) -> Value {
    let out = root.run(&[
        "config",
        "test",
        &id.to_string(),
        "--json",
        "--timeout",
        "3000",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    view["results"][0].clone()
}

#[test]
fn a_short_non_uuid_id_is_mapped_for_v2ray_as_xray_and_sing_box_map_it() {
    let dir = tempfile::tempdir().unwrap();
    // V2Ray itself refuses the string.
    let refused = v2ray_check(dir.path(), json!({"id": "hello-world", "alterId": 0})).unwrap_err();
    assert!(refused.contains("failed to parse ID"), "{refused}");
    // A sing-box server with the same string as its user id (sing-box maps it like Xray).
    let (_server, port) = sing_box_server(
        dir.path(),
        json!({"type": "vmess", "users": [{"uuid": "hello-world", "alterId": 0}]}),
    );
    let http = HttpTarget::start();
    let root = root_with(&Core::V2ray.runtime_settings(), &http);
    let (ok, view, stderr) = import_json(
        &root,
        &format!("vmess://hello-world@127.0.0.1:{port}?type=tcp#short-id"),
    );
    assert!(ok, "{stderr}");
    assert!(view.get("marked").is_none(), "not marked: {view}");
    let id = view["imported"][0]["id"].as_i64().unwrap();
    // Through a real V2Ray test core: xrat rendered the mapped UUID and the server took it.
    let result = test_one(&root, id);
    assert_eq!(result["ok"], true, "{result}");
}

#[test]
fn a_long_non_uuid_id_is_marked_for_v2ray_and_runs_on_sing_box() {
    let dir = tempfile::tempdir().unwrap();
    let long = "this-is-a-user-id-of-forty-bytes-exactly";
    assert_eq!(long.len(), 40);
    let refused = v2ray_check(dir.path(), json!({"id": long, "alterId": 0})).unwrap_err();
    assert!(refused.contains("failed to parse ID"), "{refused}");
    let http = HttpTarget::start();
    let link = format!("vmess://{long}@127.0.0.1:9?type=tcp#long-id");
    let v2ray_only = root_with(&Core::V2ray.runtime_settings(), &http);
    let (ok, view, stderr) = import_json(&v2ray_only, &link);
    assert!(ok, "imported anyway: {stderr}");
    let reason = view["marked"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("v2ray 4.") && reason.contains("(field id) of 40 bytes"),
        "{view}"
    );
    assert!(!reason.contains(long), "the id is a credential: {reason}");
    let list = text(&v2ray_only.run(&["config", "list"]).stdout);
    assert!(list.contains("#1: marked at import: v2ray"), "{list}");
    let listed = v2ray_only.run(&["config", "list", "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["configs"][0]["import_issue"], reason, "{listed}");
    // sing-box takes it (and maps it); with sing-box preferred nothing is marked.
    let config = json!({"outbounds": [{"type": "vmess", "tag": "v", "server": "127.0.0.1", "server_port": 9, "uuid": long}]});
    let path = dir.path().join("sb.json");
    std::fs::write(&path, config.to_string()).unwrap();
    check(&sing_box_bin(), &["check", "-c", path.to_str().unwrap()]).unwrap();
    let either = root_with("core_preference = [\"v2ray\", \"sing-box\"]\n", &http);
    let (ok, view, stderr) = import_json(&either, &link);
    assert!(ok && view.get("marked").is_none(), "{view} {stderr}");
}

#[test]
fn bad_shadowsocks_2022_keys_fail_the_import_as_the_cores_fail_them() {
    let dir = tempfile::tempdir().unwrap();
    let http = HttpTarget::start();
    let root = root_with("", &http);
    let cases = [
        // (method, key, what the import says)
        (
            "2022-blake3-aes-128-gcm",
            "bm90LWEta2V5",
            "decodes to 9 bytes, expected 16",
        ),
        (
            "2022-blake3-aes-256-gcm",
            "AAECAwQFBgcICQoLDA0ODw==",
            "decodes to 16 bytes, expected 32",
        ),
        ("2022-blake3-aes-128-gcm", "not base64!!", "is not base64"),
    ];
    for (method, key, why) in cases {
        let sb = sing_box_ss_check(dir.path(), method, key).unwrap_err();
        assert!(sb.contains("key"), "sing-box refuses {key}: {sb}");
        let mh = mihomo_ss_check(dir.path(), method, key).unwrap_err();
        assert!(mh.contains("key"), "mihomo refuses {key}: {mh}");
        let encoded: String = url_encode(key);
        let (ok, view, stderr) =
            import_json(&root, &format!("ss://{method}:{encoded}@127.0.0.1:9#k"));
        assert!(!ok, "{view}");
        let error = view["failed"][0]["error"].as_str().unwrap();
        assert_eq!(
            error,
            format!(
                "ss: password (the {method} key) {why}; xray, sing-box and mihomo refuse it at start; use the server's key: {} random bytes in base64, e.g. from `openssl rand -base64 {}`",
                if method.contains("128") { 16 } else { 32 },
                if method.contains("128") { 16 } else { 32 },
            ),
            "{stderr}"
        );
        assert!(view["imported"].as_array().unwrap().is_empty());
    }
}

#[test]
fn an_unpadded_2022_key_is_re_encoded_and_works_against_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let key = "AAECAwQFBgcICQoLDA0ODw==";
    let unpadded = key.trim_end_matches('=');
    let refused = sing_box_ss_check(dir.path(), "2022-blake3-aes-128-gcm", unpadded).unwrap_err();
    assert!(refused.contains("illegal base64"), "{refused}");
    let (_server, port) = sing_box_server(
        dir.path(),
        json!({"type": "shadowsocks", "method": "2022-blake3-aes-128-gcm", "password": key}),
    );
    let http = HttpTarget::start();
    let root = root_with(
        &format!(
            "core = \"sing-box\"\ncore_path = \"{}\"\n",
            sing_box_bin().display()
        ),
        &http,
    );
    let (ok, view, stderr) = import_json(
        &root,
        &format!("ss://2022-blake3-aes-128-gcm:{unpadded}@127.0.0.1:{port}#unpadded"),
    );
    assert!(ok, "{stderr}");
    let id = view["imported"][0]["id"].as_i64().unwrap();
    let result = test_one(&root, id);
    assert_eq!(result["ok"], true, "{result}");
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
