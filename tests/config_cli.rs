//! `xrat config ...` against the real binary in a temporary XRAT root.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

/// A temporary XRAT root.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        let dir = tempfile::Builder::new()
            .prefix("xrat-config")
            .tempdir()
            .unwrap();
        Root { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` to a file in the root and returns its path.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_xrat"));
        command.args(args).env("XRAT_ROOT", self.path());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs with `input` on stdin.
    fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs `--json` and parses stdout, asserting the exit code.
    fn json(&self, args: &[&str], code: i32) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.run(&args);
        assert_eq!(out.status.code(), Some(code), "{}", describe(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    )
}

/// Asserts exit code, stdout and stderr at once, so a failure shows all three.
fn check(out: &Output, code: i32, expected_stdout: &str, expected_stderr: &str) {
    assert_eq!(
        (
            out.status.code(),
            stdout(out).as_str(),
            stderr(out).as_str()
        ),
        (Some(code), expected_stdout, expected_stderr),
        "{}",
        describe(out)
    );
}

fn vmess(json: &str) -> String {
    format!("vmess://{}", STANDARD.encode(json))
}

const VLESS: &str = "vless://b831381d-6324-4d53-ad4f-8cda48b30811@203.0.113.7:443\
    ?encryption=none&flow=xtls-rprx-vision&security=reality&sni=www.microsoft.com&fp=chrome\
    &pbk=SbVKOEMjK0sIlbwg4akyBg5mL5KZwwB-ed4eEE7YnRc&sid=6ba85179e30d4fc2&type=tcp#DE%20Reality";
const TROJAN: &str = "trojan://p%40ss@trojan.example.com:443?sni=trojan.example.com#US%20Trojan";
const SS: &str = "ss://YWVzLTI1Ni1nY206bjh3NFN0bmJWRDlkbVhZbg==@198.51.100.4:8388#SG%20SS";
const SOCKS: &str = "socks5://[2001:db8::10]:1080";

fn vmess_good() -> String {
    vmess(
        r#"{"v":"2","ps":"VM WS","add":"vm.example.com","port":"443","id":"b831381d-6324-4d53-ad4f-8cda48b30811","aid":"0","net":"ws","path":"/ws","host":"cdn.example.com","tls":"tls","sni":"vm.example.com"}"#,
    )
}

fn vmess_bad_port() -> String {
    vmess(r#"{"v":"2","ps":"bad","add":"vm.example.com","port":"abc","id":"u"}"#)
}

/// Five good links and, on line 6, a vmess link with a bad port.
fn mixed_input() -> String {
    format!(
        "# my nodes\n{}\n{VLESS}\n\n{TROJAN}\n{}\n{SS}\r\n{SOCKS}\n",
        vmess_good(),
        vmess_bad_port()
    )
}

const MIXED_STDOUT: &str = "Imported  #1  VM WS\n\
    Imported  #2  DE Reality\n\
    Imported  #3  US Trojan\n\
    Imported  #4  SG SS\n\
    Imported  #5  socks [2001:db8::10]:1080\n\
    Imported 5, duplicates 0, failed 1.\n";

const MIXED_STDERR: &str = "line 6: vmess: field \"port\" is \"abc\", expected a number 1-65535\n";

/// LATENCY is the last `config test` result (`-`: never tested). The CORE column is the core `auto` picks among the cores CI installs (sing-box, mihomo,
/// V2Ray; the test's settings leave xray out), first capable in that order: the support table
/// (src/core/support.rs) sends this REALITY link to mihomo.
const LIST_TABLE: &str = "\
ID  ENABLED  SCHEME  SERVER                  CORE      LATENCY  NAME
1   yes      vmess   vm.example.com:443      sing-box  -        VM WS
2   yes      vless   203.0.113.7:443         mihomo    -        DE Reality
3   yes      trojan  trojan.example.com:443  sing-box  -        US Trojan
4   yes      ss      198.51.100.4:8388       sing-box  -        SG SS
5   yes      socks   [2001:db8::10]:1080     sing-box  -        socks [2001:db8::10]:1080
";

/// A root holding the five good links of [`mixed_input`].
fn imported_root() -> Root {
    let root = Root::new();
    root.file(
        "config.toml",
        "[runtime]\ncore_preference = [\"sing-box\", \"mihomo\", \"v2ray\"]\n",
    );
    let file = root.file("links.txt", &mixed_input());
    let out = root.run(&["config", "import", file.to_str().unwrap()]);
    check(&out, 1, MIXED_STDOUT, MIXED_STDERR);
    root
}

#[test]
fn import_from_a_file_stores_the_good_lines_and_reports_the_bad_one() {
    let root = imported_root();
    check(&root.run(&["config", "list"]), 0, LIST_TABLE, "");
}

#[test]
fn import_from_stdin_reports_the_same() {
    let root = Root::new();
    let out = root.run_stdin(&["config", "import", "-"], &mixed_input());
    check(&out, 1, MIXED_STDOUT, MIXED_STDERR);
    check(&root.run(&["config", "list"]), 0, LIST_TABLE, "");
    // The database holds credentials: owner-only.
    let mode = std::fs::metadata(root.path().join("xrat.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // `-` works before and after options, and after `--`.
    for args in [["-", "--json"], ["--json", "-"]] {
        let out = root.run_stdin(&[&["config", "import"][..], &args].concat(), TROJAN);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", describe(&out));
        let view: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(view["duplicates"][0]["id"], 3, "{args:?}: {view}");
    }
    let out = root.run_stdin(&["config", "import", "--", "-"], TROJAN);
    let expected =
        "Duplicate #3  US Trojan (already stored)\nImported 0, duplicates 1, failed 0.\n";
    check(&out, 0, expected, "");
}

#[test]
fn reimport_reports_duplicates_and_succeeds() {
    let root = imported_root();
    let good = format!("{TROJAN}\n{SOCKS}\n");
    let out = root.run_stdin(&["config", "import", "-"], &good);
    let expected = "Duplicate #3  US Trojan (already stored)\n\
        Duplicate #5  socks [2001:db8::10]:1080 (already stored)\n\
        Imported 0, duplicates 2, failed 0.\n";
    check(&out, 0, expected, "");
    // One link as the argument, new and then again.
    let link = "socks://127.0.0.1:1081#Local";
    let out = root.run(&["config", "import", link]);
    check(
        &out,
        0,
        "Imported  #6  Local\nImported 1, duplicates 0, failed 0.\n",
        "",
    );
    let view = root.json(&["config", "import", link], 0);
    assert_eq!(
        view,
        serde_json::json!({"imported": [], "duplicates": [{"id": 6, "name": "Local"}], "failed": []})
    );
}

#[test]
fn import_json_lists_every_outcome() {
    let root = Root::new();
    let file = root.file("links.txt", &format!("{TROJAN}\nnot a link\n{TROJAN}\n"));
    let view = root.json(&["config", "import", file.to_str().unwrap()], 1);
    assert_eq!(
        view,
        serde_json::json!({
            "imported": [{"id": 1, "name": "US Trojan"}],
            "duplicates": [{"id": 1, "name": "US Trojan"}],
            "failed": [{"line": 2, "error": "not a share link: \"not a link\"; expected <scheme>://..."}],
        })
    );
}

#[test]
fn import_a_subscription_blob() {
    let root = Root::new();
    let links = format!("{VLESS}\r\n{TROJAN}\r\nvless://id@203.0.113.8?type=ws#broken\r\n{SS}\r\n");
    let wrapped: Vec<String> = STANDARD
        .encode(&links)
        .as_bytes()
        .chunks(76)
        .map(|chunk| String::from_utf8(chunk.to_vec()).unwrap())
        .collect();
    let file = root.file("sub.txt", &(wrapped.join("\n") + "\n"));
    let out = root.run(&["config", "import", file.to_str().unwrap()]);
    let expected = "Imported  #1  DE Reality\n\
        Imported  #2  US Trojan\n\
        Imported  #3  SG SS\n\
        Imported 3, duplicates 0, failed 1.\n";
    check(&out, 1, expected, "line 3: vless: missing port\n");
    // The raw links are stored, not the blob.
    let show = root.json(&["config", "show", "2"], 0);
    assert_eq!(show["raw_link"], TROJAN);
}

#[test]
fn import_input_errors() {
    let root = Root::new();
    let out = root.run_stdin(&["config", "import", "-"], "\n# nothing here\n\n");
    check(
        &out,
        1,
        "",
        "error: no share links found in standard input; expected links such as vless://..., \
         one per line, or a base64 subscription\n",
    );
    let missing = root.path().join("missing.txt");
    let out = root.run(&["config", "import", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let message = stderr(&out);
    assert!(
        message.starts_with(&format!("error: cannot read file {}: ", missing.display())),
        "{message}"
    );
    assert!(message.contains("or - for standard input"), "{message}");
    let out = root.run(&["config", "import", "naive+https://u:p@example.com:443"]);
    check(
        &out,
        1,
        "Imported 0, duplicates 0, failed 1.\n",
        "line 1: unknown scheme \"naive+https\"; supported: vmess, vless, trojan, ss, socks, \
         hysteria2 (hy2), tuic, anytls, http, https, wireguard (wg)\n",
    );
    // Link fields no core here can carry are refused, not dropped.
    let out = root.run(&["config", "import", "hy2://pw@example.com:443-448"]);
    check(
        &out,
        1,
        "Imported 0, duplicates 0, failed 1.\n",
        "line 1: hysteria2: port hopping (ports \"443-448\") is not supported; use a link with \
         one port\n",
    );
}

#[test]
fn list_empty_and_json() {
    let root = Root::new();
    let empty = "No configs stored. Import one with `xrat config import <LINK>`.\n";
    check(&root.run(&["config", "list"]), 0, empty, "");
    assert_eq!(
        root.json(&["config", "list"], 0),
        serde_json::json!({"configs": []})
    );
    let root = imported_root();
    let view = root.json(&["config", "list"], 0);
    let configs = view["configs"].as_array().unwrap();
    assert_eq!(configs.len(), 5);
    assert_eq!(configs[4]["server"], "2001:db8::10");
    assert_eq!(configs[4]["port"], 1080);
    assert_eq!(configs[4]["scheme"], "socks");
    assert_eq!(configs[1]["name"], "DE Reality");
    assert_eq!(configs[1]["enabled"], true);
    assert!(configs[1]["created_at"].as_u64().unwrap() > 1_600_000_000);
    assert!(
        configs[1].get("raw_link").is_none(),
        "list --json leaves links out"
    );
}

#[test]
fn show_text_and_json() {
    let root = imported_root();
    let out = root.run(&["config", "show", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "id:        1");
    assert_eq!(lines[1], "name:      VM WS");
    assert_eq!(lines[2], "enabled:   yes");
    assert_eq!(lines[3], "scheme:    vmess");
    assert_eq!(lines[4], "server:    vm.example.com");
    assert_eq!(lines[5], "port:      443");
    assert_eq!(lines[6], "transport: ws (path /ws, host cdn.example.com)");
    assert_eq!(lines[7], "security:  tls (sni vm.example.com)");
    assert!(
        lines[8].starts_with("created:   20") && lines[8].ends_with(" UTC"),
        "{text}"
    );
    assert_eq!(lines[9], format!("link:      {}", vmess_good()));
    assert_eq!(lines.len(), 10);

    let out = root.run(&["config", "show", "2"]);
    let text = stdout(&out);
    assert!(text.contains("\ntransport: tcp\n"), "{text}");
    assert!(
        text.contains("\nsecurity:  reality (sni www.microsoft.com, fingerprint chrome, short id 6ba85179e30d4fc2)\n"),
        "{text}"
    );

    let view = root.json(&["config", "show", "5"], 0);
    assert_eq!(view["id"], 5);
    assert_eq!(view["raw_link"], SOCKS);
    assert_eq!(view["outbound"]["server"], "2001:db8::10");
    assert_eq!(view["outbound"]["protocol"]["type"], "socks");
    assert_eq!(view["enabled"], true);
}

#[test]
fn disable_enable_remove() {
    let root = imported_root();
    let out = root.run(&["config", "disable", "3"]);
    check(&out, 0, "Disabled config #3 (US Trojan).\n", "");
    let out = root.run(&["config", "disable", "3"]);
    check(&out, 0, "Config #3 (US Trojan) is already disabled.\n", "");
    let list = stdout(&root.run(&["config", "list"]));
    assert!(
        list.contains(
            "\n3   no       trojan  trojan.example.com:443  sing-box  -        US Trojan\n"
        ),
        "{list}"
    );
    assert!(stdout(&root.run(&["config", "show", "3"])).contains("\nenabled:   no\n"));
    let view = root.json(&["config", "enable", "3"], 0);
    assert_eq!(
        view,
        serde_json::json!({"id": 3, "name": "US Trojan", "enabled": true, "changed": true})
    );
    let out = root.run(&["config", "enable", "3"]);
    check(&out, 0, "Config #3 (US Trojan) is already enabled.\n", "");

    let out = root.run(&["config", "remove", "2"]);
    check(&out, 0, "Removed config #2 (DE Reality).\n", "");
    let view = root.json(&["config", "remove", "4"], 0);
    assert_eq!(
        view,
        serde_json::json!({"id": 4, "name": "SG SS", "removed": true})
    );
    let ids: Vec<u64> = root.json(&["config", "list"], 0)["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 3, 5]);
    // A removed link can be imported again and gets a new id.
    let out = root.run(&["config", "import", SS]);
    check(
        &out,
        0,
        "Imported  #6  SG SS\nImported 1, duplicates 0, failed 0.\n",
        "",
    );
}

#[test]
fn unknown_ids_are_errors() {
    let root = imported_root();
    let expected = "error: config 42 not found; list them with `xrat config list`\n";
    for action in ["show", "remove", "enable", "disable"] {
        check(&root.run(&["config", action, "42"]), 1, "", expected);
        check(
            &root.run(&["config", action, "42", "--json"]),
            1,
            "",
            expected,
        );
    }
    let out = root.run(&["config", "show", "two"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_eq!(
        root.json(&["config", "list"], 0)["configs"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

#[test]
fn newer_database_is_refused() {
    let root = imported_root();
    let db = root.path().join("xrat.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);
    let out = root.run(&["config", "list"]);
    let expected = format!(
        "error: database {} has schema version 999 but this xrat knows up to {}; upgrade xrat\n",
        db.display(),
        xrat::store::SCHEMA_VERSION
    );
    check(&out, 1, "", &expected);
}
