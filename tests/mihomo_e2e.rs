//! mihomo end to end (issue 11): the real `xrat` daemon runs mihomo as its core
//! (`runtime.core = "mihomo"` with `core_path`) for configs imported from share links, and a
//! local HTTP target is fetched through the session's SOCKS port.
//!
//! - VLESS + REALITY with Vision over tcp, and over gRPC and XHTTP: the remote server is
//!   mihomo itself (a `listeners` entry with a `reality-config`), borrowing the TLS 1.3
//!   handshake of a local sing-box TLS server.
//! - Every protocol of the V2Ray/sing-box rig (vmess, vless, trojan, shadowsocks, socks, over
//!   tcp, ws and tls) through mihomo as the client, which pins the field names mihomo reads
//!   (it ignores unknown keys, so a wrong name only shows as a failed fetch).
//! - The batch-test config with a REALITY candidate and a vmess one, run by mihomo directly
//!   (not through a daemon rotation: see `batch_config_routes_each_listener_to_its_candidate`).
//!
//! Nothing leaves 127.0.0.1.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::net::IpAddr;

use serde_json::Value;
use xrat::core::{detect_at, ready_grace, render_batch, run_args, CoreBinary};
use xrat::links::{parse_link, Outbound};
use xrat::settings::CoreChoice;

use common::cores::{
    free_port, mihomo_bin, socks5_get, wait_port, ChildGuard, HttpTarget, Proto, RealityServer,
    RealityStream, RemoteServer,
};
use common::daemon::Daemon;
use common::{alive, text};

/// `[runtime]` lines selecting mihomo by path (direct mode: the session file checked here is
/// the core's own; pool renders on mihomo are checked in src/core/real_pool.rs).
fn mihomo_runtime() -> String {
    format!(
        "mode = \"direct\"\ncore = \"mihomo\"\ncore_path = \"{}\"\n",
        mihomo_bin().display()
    )
}

/// The installed mihomo as xrat detects it.
fn mihomo_core() -> CoreBinary {
    detect_at(&mihomo_bin(), CoreChoice::Mihomo).unwrap()
}

/// The daemon says a session is up once its SOCKS port accepts; mihomo accepts there a little
/// before its tunnel runs and drops what comes in meanwhile (`xrat::core::ready_grace`). The
/// reactor does not wait for that yet, so the tests do, once per connect.
fn settle() {
    std::thread::sleep(ready_grace(&mihomo_core()));
}

/// `mihomo -t` on a rendered config the daemon wrote.
fn mihomo_check(file: &std::path::Path) {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(mihomo_bin())
        .arg("-t")
        .arg("-d")
        .arg(home.path())
        .arg("-f")
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mihomo -t {}: {}{}\nconfig:\n{}",
        file.display(),
        text(&out.stdout),
        text(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

/// The first fetch through a fresh REALITY server. mihomo's REALITY server (like Xray's)
/// learns the handshake target's post-handshake record sizes on the first connection for a
/// server name, in the background, and until it knows them it treats clients as probes and
/// hands them to the target: the first connections fail (seen here: one fallback, then every
/// request works; with a 2 s pause before the first request none fails). So the first fetch
/// is retried for up to 10 s; every later one must succeed at once.
fn first_reality_fetch(daemon: &Daemon, target: &HttpTarget, server: &RealityServer) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match socks5_get(daemon.socks_port, target.port(), "/e2e") {
            Ok(body) => {
                eprintln!("{}: first fetch after {attempts} attempt(s)", server.name());
                return body;
            }
            Err(e) if Instant::now() >= deadline => panic!(
                "fetch through mihomo for {} failed {attempts} times, last: {e}\n{}\nREALITY \
                 server log:\n{}",
                server.name(),
                daemon.logs(),
                server.log()
            ),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn reality_case(stream: RealityStream) {
    let target = HttpTarget::start();
    let server = RealityServer::start(stream);
    let daemon = Daemon::start(&mihomo_runtime(), &target);
    let config_id = daemon.import(&server.link());
    let (session, pid) = daemon.connect(config_id);

    let body = first_reality_fetch(&daemon, &target, &server);
    assert_eq!(body, target.body());
    assert!(
        server.relayed_to(target.port()),
        "the REALITY server did not relay to the target; log:\n{}",
        server.log()
    );
    let status = daemon.status();
    assert_eq!(status["runtime_status"], "running", "{status}");
    assert_eq!(status["core"], "mihomo", "{status}");
    assert_eq!(status["pid"], pid, "{status}");
    assert_eq!(status["config_name"], server.name(), "{status}");

    // The session config the daemon rendered passes mihomo's own check, and mihomo wrote
    // nothing beside it (no cache.db, no geodata).
    let sessions = daemon.root.path().join("runtime/sessions");
    let file = sessions.join(format!("{session}.json"));
    mihomo_check(&file);
    let rendered: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(rendered["proxies"][0]["reality-opts"]["public-key"].is_string());
    let names: Vec<String> = std::fs::read_dir(&sessions)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [format!("{session}.json")], "{names:?}");

    let reply = daemon.json(&["disconnect"]);
    assert_eq!(reply["stopped_session"], session, "{reply}");
    assert!(
        !alive(pid),
        "mihomo pid {pid} still running after disconnect"
    );
}

#[test]
fn vless_reality_vision_on_mihomo_against_a_mihomo_server() {
    reality_case(RealityStream::Vision);
}

#[test]
fn vless_reality_grpc_on_mihomo_against_a_mihomo_server() {
    reality_case(RealityStream::Grpc);
}

#[test]
fn vless_reality_xhttp_on_mihomo_against_a_mihomo_server() {
    reality_case(RealityStream::Xhttp);
}

#[test]
fn mihomo_core_runs_every_rig_protocol() {
    let target = HttpTarget::start();
    let daemon = Daemon::start(&mihomo_runtime(), &target);
    let mut previous = None;
    for proto in Proto::ALL {
        let server = RemoteServer::start(proto);
        let config_id = daemon.import(&server.link());
        let (session, _) = daemon.connect(config_id);
        settle();
        assert_ne!(Some(session), previous);
        previous = Some(session);
        let body = daemon.fetch(&target, proto.name());
        assert_eq!(body, target.body(), "{}", proto.name());
        assert!(
            server.relayed_to(target.port()),
            "the {} server ({}) did not relay to the target; log:\n{}",
            proto.name(),
            server.core().name(),
            server.log()
        );
        eprintln!(
            "mihomo core, {} on a {} server: ok",
            proto.name(),
            server.core().name()
        );
    }
}

/// The batch-test config (one SOCKS listener per candidate, each with its `proxy:`), run by
/// mihomo directly: a REALITY candidate and a vmess one, each fetched through its own port and
/// relayed by its own server. This is rendered by the same `render_batch` the daemon's
/// rotation uses; the rotation itself is not run through the daemon here, because its batch
/// probes start as soon as the batch core's ports accept, which for mihomo is before its
/// tunnel runs (see `xrat::core::ready_grace`; the reactor does not wait for it yet).
#[test]
fn batch_config_routes_each_listener_to_its_candidate() {
    let target = HttpTarget::start();
    let reality = RealityServer::start(RealityStream::Vision);
    let vmess = RemoteServer::start(Proto::VmessWs);
    let core = mihomo_core();
    let outbounds: Vec<Outbound> = [reality.link(), vmess.link()]
        .iter()
        .map(|link| parse_link(link).unwrap().outbound)
        .collect();
    let ports = [free_port(), free_port()];
    assert_ne!(ports[0], ports[1]);
    let candidates = [(ports[0], &outbounds[0]), (ports[1], &outbounds[1])];
    let text = render_batch(&core, IpAddr::from([127, 0, 0, 1]), &candidates).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("batch.json");
    std::fs::write(&path, &text).unwrap();
    mihomo_check(&path);
    let log = std::fs::File::create(dir.path().join("batch.log")).unwrap();
    let child = Command::new(&core.path)
        .args(run_args(&core, &path))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _child = ChildGuard::new(child);
    for port in ports {
        assert!(
            wait_port(port, Duration::from_secs(5)),
            "batch listener {port}"
        );
    }
    std::thread::sleep(ready_grace(&core));
    let batch_log = || std::fs::read_to_string(dir.path().join("batch.log")).unwrap_or_default();
    // The REALITY candidate's first request may fall back (see `first_reality_fetch`).
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        match socks5_get(ports[0], target.port(), "/e2e") {
            Ok(body) => break body,
            Err(e) if Instant::now() >= deadline => {
                panic!("REALITY candidate: {e}\n{}\n{}", batch_log(), reality.log())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert_eq!(body, target.body());
    assert_eq!(
        socks5_get(ports[1], target.port(), "/e2e")
            .unwrap_or_else(|e| panic!("vmess candidate: {e}\n{}", batch_log())),
        target.body()
    );
    assert!(reality.relayed_to(target.port()), "{}", reality.log());
    assert!(vmess.relayed_to(target.port()), "{}", vmess.log());
    // Each listener went to its own candidate: the vmess server (sing-box) relayed exactly one
    // request.
    let relayed = vmess
        .log()
        .matches(&format!(
            "outbound connection to 127.0.0.1:{}",
            target.port()
        ))
        .count();
    assert_eq!(relayed, 1, "{}", vmess.log());
}
