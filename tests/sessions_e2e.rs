//! Sessions end to end (DESIGN §5, §8): the real `xrat` binary runs a real core (V2Ray or
//! sing-box) for a config imported from a share link that points at a real remote proxy server
//! (V2Ray or sing-box) on loopback, and a local HTTP target is fetched through the session's
//! SOCKS port. Nothing leaves 127.0.0.1; the health probe URL points at the local target too.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::Value;

use common::cores::{
    free_port, interop_broken, socks5_fetch, socks5_get, Core, HttpTarget, Proto, RemoteServer,
};
use common::{alive, text, Root};

/// Path of the health probe URL on the HTTP target.
const HEALTH: &str = "/health";

/// A daemon in a fresh root whose runtime uses `core` on a free SOCKS port.
struct Daemon {
    root: Root,
    core: Core,
    socks_port: u16,
}

impl Daemon {
    fn start(core: Core, target: &HttpTarget) -> Daemon {
        let root = Root::new();
        let socks_port = free_port();
        root.write_settings(&format!(
            // Direct mode: the core itself serves the user's port, so each protocol is checked
            // against the core's own inbound (the front relay has tests/front_*.rs).
            "[runtime]\nmode = \"direct\"\n{}socks_port = {socks_port}\nhttp_port = 0\nready_timeout_ms = 5000\n\n\
             [health]\nprobe_url = \"{}\"\n",
            core.runtime_settings(),
            target.url(HEALTH),
        ));
        root.start();
        Daemon {
            root,
            core,
            socks_port,
        }
    }

    /// `xrat ARGS --json`, asserting success; the parsed output.
    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.root.run(&args);
        assert!(
            out.status.success(),
            "xrat {args:?} failed ({}): {}{}\ndaemon log:\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr),
            self.root.log()
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("xrat {args:?}: bad JSON ({e}): {}", text(&out.stdout)))
    }

    /// `xrat config import LINK`; the new config's id.
    fn import(&self, link: &str) -> i64 {
        let view = self.json(&["config", "import", link]);
        let imported = view["imported"].as_array().unwrap();
        assert_eq!(imported.len(), 1, "import of {link}: {view}");
        imported[0]["id"].as_i64().unwrap()
    }

    fn connect(&self, config_id: i64) -> Value {
        self.json(&["connect", &config_id.to_string()])
    }

    fn status(&self) -> Value {
        self.json(&["status"])
    }

    fn session_file(&self, session_id: u64) -> PathBuf {
        self.root
            .path()
            .join(format!("runtime/sessions/{session_id}.json"))
    }

    fn socks_addr(&self) -> String {
        format!("127.0.0.1:{}", self.socks_port)
    }

    /// The daemon log and any other log under `<root>/logs`, for failure messages.
    fn logs(&self) -> String {
        let mut all = format!("daemon log:\n{}", self.root.log());
        if let Ok(dir) = std::fs::read_dir(self.root.path().join("logs")) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name != "daemon.log" {
                    let body = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    all.push_str(&format!("\n{name}:\n{body}"));
                }
            }
        }
        all
    }
}

/// What a fresh connect returned.
struct Session {
    id: u64,
    pid: u32,
}

/// Asserts the parts of a `connect --json` reply every connect shares, and returns the session.
fn check_connect(reply: &Value, config_id: i64, replaced: Option<u64>) -> Session {
    assert_eq!(reply["config_id"], config_id, "{reply}");
    assert_eq!(reply["already_active"], false, "{reply}");
    assert_eq!(
        reply["replaced_session_id"],
        serde_json::json!(replaced),
        "{reply}"
    );
    let id = reply["session_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no session_id: {reply}"));
    let pid = reply["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid: {reply}")) as u32;
    assert!(alive(pid), "core pid {pid} not running right after connect");
    Session { id, pid }
}

/// Checks the running session against `status --json`, its rendered config, and a fetch.
fn check_running(
    daemon: &Daemon,
    server: &RemoteServer,
    target: &HttpTarget,
    config_id: i64,
    session: &Session,
) {
    let target_addr = format!("127.0.0.1:{}", target.port());
    assert!(!server.log().contains(&target_addr), "{}", server.log());
    let body = socks5_get(daemon.socks_port, target.port(), "/e2e").unwrap_or_else(|e| {
        panic!(
            "fetch through {} core for {} failed: {e}\n{}\nremote server log:\n{}",
            daemon.core.name(),
            server.proto().name(),
            daemon.logs(),
            server.log()
        )
    });
    assert_eq!(body, target.body());
    assert!(
        server.relayed_to(target.port()),
        "the {} server did not relay to the target; log:\n{}",
        server.proto().name(),
        server.log()
    );

    let status = daemon.status();
    assert_eq!(status["runtime_status"], "running", "{status}");
    assert_eq!(status["session_id"], session.id, "{status}");
    assert_eq!(status["active_config_id"], config_id, "{status}");
    assert_eq!(status["pid"], session.pid, "{status}");
    assert_eq!(status["pid_running"], true, "{status}");
    assert_eq!(status["core"], daemon.core.name(), "{status}");
    assert_eq!(status["socks_addr"], daemon.socks_addr(), "{status}");
    assert_eq!(status["http_addr"], Value::Null, "{status}");
    assert_eq!(status["config_name"], server.name(), "{status}");
    // The daemon names the config itself, so `xrat status` opens no database of its own.
    assert_eq!(status["active_config_name"], server.name(), "{status}");

    // The rendered config exists only while the session runs.
    let file = daemon.session_file(session.id);
    let mode = std::fs::metadata(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "{} has mode {:o}",
        file.display(),
        mode & 0o777
    );
    daemon.core.check(&file).unwrap_or_else(|e| {
        panic!(
            "{e}\nconfig:\n{}",
            std::fs::read_to_string(&file).unwrap_or_default()
        )
    });
}

/// Disconnects and checks the daemon is idle, the core gone, its config file removed.
fn check_disconnect(daemon: &Daemon, session: &Session) {
    let reply = daemon.json(&["disconnect"]);
    assert_eq!(reply["stopped_session"], session.id, "{reply}");
    assert!(
        !alive(session.pid),
        "core pid {} still running after disconnect returned",
        session.pid
    );
    let status = daemon.status();
    assert_eq!(status["runtime_status"], "idle", "{status}");
    for key in [
        "session_id",
        "active_config_id",
        "active_config_name",
        "pid",
        "core",
        "socks_addr",
    ] {
        assert_eq!(status[key], Value::Null, "{key} in {status}");
    }
    assert_eq!(status["pid_running"], false, "{status}");
    let file = daemon.session_file(session.id);
    assert!(
        !file.exists(),
        "{} left behind after disconnect",
        file.display()
    );
}

/// One protocol on one daemon core: import, connect, fetch (relayed by the remote server),
/// status, config check, disconnect.
fn session_case(core: Core, proto: Proto) {
    let began = Instant::now();
    let target = HttpTarget::start();
    let server = RemoteServer::start_on(proto, proto.server_against(core));
    let daemon = Daemon::start(core, &target);
    let config_id = daemon.import(&server.link());

    let reply = daemon.connect(config_id);
    assert_eq!(reply["config_name"], server.name(), "{reply}");
    let session = check_connect(&reply, config_id, None);
    check_running(&daemon, &server, &target, config_id, &session);

    assert_eq!(target.hits_except(HEALTH), 1, "{:?}", target.requests());

    check_disconnect(&daemon, &session);
    eprintln!(
        "{} core, {} on a {} server: {} ms",
        core.name(),
        proto.name(),
        server.core().name(),
        began.elapsed().as_millis()
    );
}

/// A config renamed while it runs (as `xrat sub update` renames a node in place) shows under
/// its new name in `xrat status` within the daemon's name lifetime (src/reactor/names.rs:
/// 1 s).
#[test]
fn a_config_renamed_while_it_runs_shows_its_new_name() {
    let target = HttpTarget::start();
    let server = RemoteServer::start_on(Proto::Socks, Proto::Socks.server_against(Core::SingBox));
    let daemon = Daemon::start(Core::SingBox, &target);
    let config_id = daemon.import(&server.link());
    let reply = daemon.connect(config_id);
    let session = check_connect(&reply, config_id, None);
    assert_eq!(daemon.status()["active_config_name"], server.name());

    let db = rusqlite::Connection::open(daemon.root.path().join("xrat.db")).unwrap();
    db.execute(
        "UPDATE configs SET name = 'renamed' WHERE id = ?1",
        [config_id],
    )
    .unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let mut status = daemon.status();
    while status["active_config_name"] != "renamed" && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        status = daemon.status();
    }
    assert_eq!(status["active_config_name"], "renamed", "{status}");
    assert_eq!(status["config_name"], "renamed", "{status}");

    check_disconnect(&daemon, &session);
}

macro_rules! session_cases {
    ($($name:ident: $core:ident, $proto:ident;)*) => {
        $(
            #[test]
            fn $name() {
                session_case(Core::$core, Proto::$proto);
            }
        )*
    };
}

session_cases! {
    v2ray_vmess_tcp: V2ray, VmessTcp;
    v2ray_vmess_ws: V2ray, VmessWs;
    v2ray_vless_tcp: V2ray, VlessTcp;
    v2ray_vless_ws_tls: V2ray, VlessWsTls;
    v2ray_trojan_tls: V2ray, TrojanTls;
    v2ray_ss_aes_128_gcm: V2ray, SsAes128Gcm;
    v2ray_ss_chacha20_poly1305: V2ray, SsChacha20Poly1305;
    v2ray_socks: V2ray, Socks;
    v2ray_socks_auth: V2ray, SocksAuth;
    sing_box_vmess_tcp: SingBox, VmessTcp;
    sing_box_vmess_ws: SingBox, VmessWs;
    sing_box_vless_tcp: SingBox, VlessTcp;
    sing_box_vless_ws_tls: SingBox, VlessWsTls;
    sing_box_trojan_tls: SingBox, TrojanTls;
    sing_box_ss_aes_128_gcm: SingBox, SsAes128Gcm;
    sing_box_ss_chacha20_poly1305: SingBox, SsChacha20Poly1305;
    sing_box_socks: SingBox, Socks;
    sing_box_socks_auth: SingBox, SocksAuth;
}

/// The server kind the single case for `client` and `proto` does not use, unless that pairing
/// is known to be broken outside xrat ([`interop_broken`]).
fn other_server(client: Core, proto: Proto) -> Core {
    let other = match proto.server_against(client) {
        Core::V2ray => Core::SingBox,
        Core::SingBox => Core::V2ray,
    };
    if interop_broken(client, other, proto) {
        proto.server_against(client)
    } else {
        other
    }
}

/// One daemon runs every protocol in turn, each connect replacing the session before, with the
/// remote servers mostly on the other server core than in the single cases.
fn replace_chain(core: Core) {
    let began = Instant::now();
    let target = HttpTarget::start();
    let daemon = Daemon::start(core, &target);
    let mut previous: Option<Session> = None;
    for proto in Proto::ALL {
        let server = RemoteServer::start_on(proto, other_server(core, proto));
        let config_id = daemon.import(&server.link());
        let reply = daemon.connect(config_id);
        let session = check_connect(&reply, config_id, previous.as_ref().map(|s| s.id));
        if let Some(old) = &previous {
            assert_ne!(old.id, session.id);
            assert!(
                !alive(old.pid),
                "replaced core pid {} still running",
                old.pid
            );
            assert!(!daemon.session_file(old.id).exists());
        }
        check_running(&daemon, &server, &target, config_id, &session);
        previous = Some(session);
    }
    check_disconnect(&daemon, &previous.unwrap());
    assert_eq!(target.hits_except(HEALTH), Proto::ALL.len());
    eprintln!(
        "{} core, replace chain over {} protocols: {} ms",
        core.name(),
        Proto::ALL.len(),
        began.elapsed().as_millis()
    );
}

#[test]
fn v2ray_connect_replaces_session_across_protocols() {
    replace_chain(Core::V2ray);
}

#[test]
fn sing_box_connect_replaces_session_across_protocols() {
    replace_chain(Core::SingBox);
}

/// Runs that make up one median.
const CYCLES: usize = 20;

/// Time from running `xrat connect` to the first response byte through the new session, per
/// daemon core, over 20 connect → fetch → disconnect cycles. Only success is asserted; the
/// median is printed.
#[test]
fn connect_to_first_byte_median() {
    let target = HttpTarget::start();
    let server = RemoteServer::start(Proto::VmessTcp);
    for core in Core::ALL {
        let daemon = Daemon::start(core, &target);
        let config_id = daemon.import(&server.link());
        let mut samples = Vec::with_capacity(CYCLES);
        for cycle in 0..CYCLES {
            let t0 = Instant::now();
            let session = check_connect(&daemon.connect(config_id), config_id, None);
            let fetched = socks5_fetch(daemon.socks_port, target.port(), "/first-byte")
                .unwrap_or_else(|e| {
                    panic!(
                        "{} cycle {cycle}: fetch failed: {e}\n{}",
                        core.name(),
                        daemon.logs()
                    )
                });
            samples.push(fetched.first_byte - t0);
            assert_eq!(fetched.body, target.body());
            check_disconnect(&daemon, &session);
        }
        samples.sort();
        let median = (samples[CYCLES / 2 - 1] + samples[CYCLES / 2]) / 2;
        eprintln!(
            "connect-to-first-byte median: {} {:.1} ms ({CYCLES} runs)",
            core.name(),
            median.as_secs_f64() * 1000.0,
        );
        eprintln!(
            "connect-to-first-byte range: {} min {:.1} ms, max {:.1} ms",
            core.name(),
            samples[0].as_secs_f64() * 1000.0,
            samples[CYCLES - 1].as_secs_f64() * 1000.0,
        );
    }
    assert_eq!(target.hits_except(HEALTH), CYCLES * Core::ALL.len());
}
