//! Rendered configs against the real cores' own checks (`v2ray -test -config`, `sing-box
//! check -c`): every protocol/transport/security combination a core accepts must pass its
//! check, and what `support` refuses is shown to really fail where the check can see it.
//! A missing core fails these tests with an install hint (see `fixtures`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use super::fixtures::*;
use super::*;
use crate::links::{parse_link, Transport};

/// Generous: the checks take tens of milliseconds, but CI machines get busy.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
const THREADS: usize = 8;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Inbound variants rotated over the combinations, so IPv4, IPv6 and the HTTP inbound are
/// all checked too. Checks do not bind, so fixed ports are fine.
fn inbounds(index: usize) -> Inbounds {
    let (listen, http_port): (IpAddr, _) = match index % 3 {
        0 => (IpAddr::from([127, 0, 0, 1]), None),
        1 => (IpAddr::from([127, 0, 0, 1]), Some(10809)),
        _ => ("::1".parse().unwrap(), Some(10809)),
    };
    Inbounds {
        listen,
        socks_port: 10808,
        http_port,
    }
}

/// Renders every supported combination as a session, checks them all with the real core (in
/// parallel), and returns how many passed; panics listing every failure.
fn check_every_supported_session(core: &CoreBinary) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let supported: Vec<Outbound> = all_outbounds()
        .into_iter()
        .filter(|out| check_support(core, out).is_ok())
        .collect();
    let jobs: Vec<(Outbound, PathBuf)> = supported
        .into_iter()
        .enumerate()
        .map(|(i, out)| {
            let text = render_session(core, &inbounds(i), &out).unwrap();
            let path = write(dir.path(), &format!("{i}.json"), &text);
            (out, path)
        })
        .collect();
    let chunk = jobs.len().div_ceil(THREADS).max(1);
    let failures: Vec<String> = thread::scope(|scope| {
        let workers: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| scope.spawn(move || failures_in(core, part)))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} configs failed {} {}'s check:\n{}",
        failures.len(),
        jobs.len(),
        core.kind,
        core.version,
        failures.join("\n")
    );
    jobs.len()
}

fn failures_in(core: &CoreBinary, jobs: &[(Outbound, PathBuf)]) -> Vec<String> {
    jobs.iter()
        .filter_map(|(out, path)| {
            let err = check_config(core, path, CHECK_TIMEOUT).err()?;
            Some(format!("{out:?}\n  -> {err}"))
        })
        .collect()
}

#[test]
fn v2ray_checks_every_supported_combination() {
    let core = real_v2ray();
    let passed = check_every_supported_session(&core);
    assert_eq!(passed, 99, "the support matrix changed");
}

#[test]
fn sing_box_checks_every_supported_combination() {
    let core = real_sing_box();
    let passed = check_every_supported_session(&core);
    // 83 combinations without uTLS (REALITY refused), 108 with it.
    assert_eq!(
        passed,
        if core.utls { 108 } else { 83 },
        "the support matrix changed"
    );
}

#[test]
fn xray_checks_every_supported_combination_when_installed() {
    // Xray is not among the cores `.ci/install-cores` provides; its JSON shape is covered by
    // the unit tests in `xray`. Point XRAT_XRAY at a binary (or put one on PATH) to run this.
    match real_xray() {
        Some(core) => {
            check_every_supported_session(&core);
        }
        None => eprintln!("xray not installed: only the Xray JSON shape tests ran"),
    }
}

/// Three candidates from realistic links, as a rotation batch test would have them.
fn three_candidates() -> Vec<Outbound> {
    [
        "vless://b831381d-6324-4d53-ad4f-8cda48b30811@cdn.example.com:443?encryption=none\
         &security=tls&sni=cdn.example.com&fp=chrome&type=ws&host=cdn.example.com\
         &path=%2Fws%3Fed%3D2048#ws",
        "trojan://secret@203.0.113.9:443?sni=t.example.com#trojan",
        "ss://YWVzLTI1Ni1nY206cGFzcw@[2001:db8::7]:8388#ss",
    ]
    .iter()
    .map(|link| parse_link(link).unwrap().outbound)
    .collect()
}

fn check_batch(core: &CoreBinary, outbounds: &[Outbound]) {
    let dir = tempfile::tempdir().unwrap();
    let candidates: Vec<(u16, &Outbound)> = outbounds
        .iter()
        .enumerate()
        .map(|(i, out)| (20000 + i as u16, out))
        .collect();
    let text = render_batch(core, IpAddr::from([127, 0, 0, 1]), &candidates).unwrap();
    let path = write(dir.path(), "batch.json", &text);
    check_config(core, &path, CHECK_TIMEOUT).unwrap();
}

/// The same members as a pool core runs them: SOCKS and HTTP inbounds per member, on IPv4 and
/// on IPv6 loopback.
fn check_pool(core: &CoreBinary, outbounds: &[Outbound]) {
    let dir = tempfile::tempdir().unwrap();
    let members: Vec<PoolInbound<'_>> = outbounds
        .iter()
        .enumerate()
        .map(|(i, out)| PoolInbound {
            socks_port: 20000 + 2 * i as u16,
            http_port: Some(20001 + 2 * i as u16),
            outbound: out,
        })
        .collect();
    for (name, listen) in [("pool4.json", "127.0.0.1"), ("pool6.json", "::1")] {
        let text = render_pool(core, listen.parse().unwrap(), &members).unwrap();
        let path = write(dir.path(), name, &text);
        check_config(core, &path, CHECK_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
}

#[test]
fn pools_pass_every_check() {
    for core in [real_v2ray(), real_sing_box(), real_mihomo()] {
        check_pool(&core, &three_candidates());
        let all: Vec<Outbound> = all_outbounds()
            .into_iter()
            .filter(|out| check_support(&core, out).is_ok())
            .collect();
        check_pool(&core, &all);
    }
    if let Some(xray) = real_xray() {
        check_pool(&xray, &three_candidates());
    }
}

#[test]
fn batches_pass_both_checks() {
    for core in [real_v2ray(), real_sing_box()] {
        check_batch(&core, &three_candidates());
        // One config holding every combination the core supports, as a large rotation
        // batch would.
        let all: Vec<Outbound> = all_outbounds()
            .into_iter()
            .filter(|out| check_support(&core, out).is_ok())
            .collect();
        check_batch(&core, &all);
    }
}

/// What the refusals protect against, seen through the real checks: rendering past
/// `check_support` (calling the format modules directly).
#[test]
fn refused_features_really_fail_or_are_silently_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let bypass = |core: &CoreBinary, out: &Outbound, name: &str| {
        let value = match core.kind {
            CoreKind::SingBox => singbox::session(core, &inbounds(0), out),
            _ => xray::session(core, &inbounds(0), out),
        };
        let path = write(dir.path(), name, &value.to_string());
        check_config(core, &path, CHECK_TIMEOUT)
    };
    let v2ray = real_v2ray();
    let grpc = outbound(
        vless(),
        Transport::Grpc {
            service_name: "s".into(),
            multi_mode: false,
        },
        tls_plain(),
    );
    let err = bypass(&v2ray, &grpc, "grpc.json").unwrap_err().to_string();
    assert!(err.contains("unknown transport protocol: grpc"), "{err}");
    // V2Ray 4 accepts REALITY and Vision in its check and ignores them: only the refusal
    // stops such a session from failing at its first connection.
    assert!(bypass(
        &v2ray,
        &outbound(vision(), Transport::Tcp, reality()),
        "r.json"
    )
    .is_ok());

    let sing_box = real_sing_box();
    let mut pretend = sing_box.clone();
    pretend.utls = true;
    let reality_result = bypass(
        &pretend,
        &outbound(vless(), Transport::Tcp, reality()),
        "sr.json",
    );
    let fingerprint_result = bypass(&pretend, &vless_ws_tls(), "fp.json");
    if sing_box.utls {
        reality_result.unwrap();
        fingerprint_result.unwrap();
    } else {
        let err = reality_result.unwrap_err().to_string();
        assert!(
            err.contains("uTLS, which is required by reality is not included"),
            "{err}"
        );
        let err = fingerprint_result.unwrap_err().to_string();
        assert!(err.contains("uTLS is not included in this build"), "{err}");
        // The same outbound with the fingerprint dropped passes (covered by the matrix too).
        assert!(bypass(&sing_box, &vless_ws_tls(), "nofp.json").is_ok());
    }
}

#[test]
fn check_failures_carry_the_core_output() {
    let dir = tempfile::tempdir().unwrap();
    let core = real_sing_box();
    let path = write(
        dir.path(),
        "bad.json",
        r#"{"inbounds":[{"type":"socks","sniff":true}]}"#,
    );
    let err = check_config(&core, &path, CHECK_TIMEOUT)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "sing-box rejected the config {}: ",
            path.display()
        )),
        "{err}"
    );
    assert!(err.contains("inbounds[0]: legacy inbound fields"), "{err}");
    assert!(!err.contains('\u{1b}'), "colour codes leaked: {err:?}");
    let v2ray = real_v2ray();
    let path = write(dir.path(), "bad-v2.json", "{ not json");
    let err = check_config(&v2ray, &path, CHECK_TIMEOUT)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("v2ray rejected the config"), "{err}");
}

#[test]
fn mihomo_checks_every_supported_combination() {
    let core = real_mihomo();
    let passed = check_every_supported_session(&core);
    assert_eq!(passed, 112, "the support matrix changed");
    check_batch(&core, &three_candidates());
    let all: Vec<Outbound> = all_outbounds()
        .into_iter()
        .filter(|out| check_support(&core, out).is_ok())
        .collect();
    check_batch(&core, &all);
}

/// `mihomo -t` builds every proxy, so what mihomo validates while building shows there (bad
/// REALITY keys, unknown ciphers and types); most of what it cannot carry it ignores silently
/// (unknown keys pass), which is why `support` refuses up front.
#[test]
fn mihomo_check_sees_what_it_validates() {
    let dir = tempfile::tempdir().unwrap();
    let core = real_mihomo();
    let mut out = outbound(vision(), Transport::Tcp, reality());
    if let crate::links::Security::Reality(reality) = &mut out.security {
        reality.public_key = "not-a-key".into();
    }
    let value = mihomo::session(&inbounds(0), &out);
    let path = write(dir.path(), "key.json", &value.to_string());
    let err = check_config(&core, &path, CHECK_TIMEOUT)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("mihomo rejected the config"), "{err}");
    assert!(err.contains("invalid REALITY public key"), "{err}");
    let path = write(
        dir.path(),
        "bad.json",
        r#"{"proxies":[{"name":"p","type":"ss","server":"a","port":1,"cipher":"nope","password":"x"}]}"#,
    );
    let err = check_config(&core, &path, CHECK_TIMEOUT)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown method: nope"), "{err}");
}

/// A rendered session runs offline: mihomo starts, accepts on its SOCKS listener and writes
/// nothing into its home directory (no Country.mmdb or geodata download, no cache.db).
#[test]
fn mihomo_session_starts_offline_and_writes_nothing() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let core = real_mihomo();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let inbounds = Inbounds {
        listen: IpAddr::from([127, 0, 0, 1]),
        socks_port: port,
        http_port: None,
    };
    let text = render_session(&core, &inbounds, &vless_ws_tls()).unwrap();
    let path = write(dir.path(), "7.json", &text);
    let mut child = Command::new(&core.path)
        .args(run_args(&core, &path))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut ready = false;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            ready = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    // Give a start-up download, were there one, the time to begin writing.
    thread::sleep(Duration::from_millis(300));
    let exited = child.try_wait().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        ready && exited.is_none(),
        "mihomo did not stay up on {port}"
    );
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["7.json"]);
}

/// Hysteria 2, TUIC, AnyTLS, Shadowsocks with simple-obfs or ShadowTLS, ECH (and VLESS over XHTTP on
/// mihomo): each renders for sing-box and mihomo, as a session and all
/// together as a batch, and passes the real check; V2Ray refuses them up front.
#[test]
fn newer_protocols_pass_sing_box_and_mihomo_checks() {
    let dir = tempfile::tempdir().unwrap();
    let newer: Vec<Outbound> = newer_outbounds()
        .into_iter()
        .chain(obfs_outbounds())
        .chain(handshake_outbounds())
        .collect();
    let v2ray = binary(CoreKind::V2ray4, "4.34.0");
    // XHTTP (without `extra`) and WireGuard: mihomo only, of the installed cores.
    let mihomo_only: Vec<Outbound> = xhttp_outbounds()
        .into_iter()
        .take(2)
        .chain(wireguard_outbounds())
        .collect();
    for core in [real_sing_box(), real_mihomo()] {
        let newer: Vec<Outbound> = match core.kind {
            CoreKind::Mihomo => newer.iter().chain(&mihomo_only).cloned().collect(),
            _ => newer.clone(),
        };
        for (i, out) in newer.iter().enumerate() {
            assert!(check_support(&v2ray, out).is_err(), "{out:?}");
            let text = render_session(&core, &inbounds(i), out).unwrap();
            let path = write(dir.path(), &format!("{}-{i}.json", core.kind), &text);
            check_config(&core, &path, CHECK_TIMEOUT)
                .unwrap_or_else(|e| panic!("{out:?}\n{e}\n{text}"));
        }
        check_batch(&core, &newer);
    }
}

/// HTTP proxies (plain and over TLS) render for every installed core and pass its check.
#[test]
fn http_proxies_pass_every_check() {
    let dir = tempfile::tempdir().unwrap();
    for core in [real_v2ray(), real_sing_box(), real_mihomo()] {
        for (i, out) in http_outbounds().iter().enumerate() {
            check_support(&core, out).unwrap_or_else(|e| panic!("{e}"));
            let text = render_session(&core, &inbounds(i), out).unwrap();
            let path = write(dir.path(), &format!("http-{}-{i}.json", core.kind), &text);
            check_config(&core, &path, CHECK_TIMEOUT)
                .unwrap_or_else(|e| panic!("{out:?}\n{e}\n{text}"));
        }
        check_batch(&core, &http_outbounds());
    }
}
