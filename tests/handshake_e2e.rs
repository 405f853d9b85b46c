//! Links whose handshake the core must carry, end to end (issue 11): VLESS with Encrypted
//! Client Hello (`ech=`) and Shadowsocks behind ShadowTLS v3 (`shadow-tls=`), each against a
//! real sing-box server, with the real `xrat` daemon running mihomo and then sing-box as its
//! core; and WireGuard (`wireguard://`) on mihomo against sing-box's WireGuard endpoint. A local page is fetched through the session and the server's log shows the relay. For
//! ECH, a link carrying another server's ECHConfigList must fail: a client that dropped `ech=`
//! would still get through. Nothing leaves 127.0.0.1.

mod common;

use std::sync::OnceLock;

use xrat::core::{detect_at, ready_grace};
use xrat::settings::CoreChoice;

use common::cores::{
    mihomo_bin, sing_box_bin, socks5_get, socks5_get_at, Handshake, HandshakeServer, HttpTarget,
    WIREGUARD_TARGET,
};
use common::daemon::Daemon;

/// ShadowTLS clients verify the handshake server's certificate, and the cores read extra roots
/// from `SSL_CERT_FILE` (Go's crypto/x509 on Linux). The daemon hands its environment to the
/// core, so the variable is set once, before any daemon starts, to a CA that signs every
/// handshake server of this process.
fn trust_test_ca(server: &HandshakeServer) {
    static CA: OnceLock<std::path::PathBuf> = OnceLock::new();
    let ca = CA.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("xrat-handshake-ca-{}.pem", std::process::id()));
        std::fs::copy(server.ca_file(), &path).unwrap();
        std::env::set_var("SSL_CERT_FILE", &path);
        path
    });
    // Later servers have their own CA: make the shared file trust theirs too.
    let mut pem = std::fs::read_to_string(ca).unwrap();
    let own = std::fs::read_to_string(server.ca_file()).unwrap();
    if !pem.contains(&own) {
        pem.push_str(&own);
        std::fs::write(ca, pem).unwrap();
    }
}

fn runtime(choice: CoreChoice) -> (String, std::time::Duration) {
    let (name, path) = match choice {
        CoreChoice::Mihomo => ("mihomo", mihomo_bin()),
        _ => ("sing-box", sing_box_bin()),
    };
    let grace = ready_grace(&detect_at(&path, choice).unwrap());
    let lines = format!(
        "mode = \"direct\"\ncore = \"{name}\"\ncore_path = \"{}\"\n",
        path.display()
    );
    (lines, grace)
}

fn case(kind: Handshake, choice: CoreChoice) {
    let target = HttpTarget::start();
    let server = HandshakeServer::start(kind);
    if kind == Handshake::SsShadowTls {
        trust_test_ca(&server);
    }
    let (lines, grace) = runtime(choice);
    let daemon = Daemon::start(&lines, &target);
    let config_id = daemon.import(&server.link_with("handshake-e2e", server.ech_config()));
    daemon.connect(config_id);
    std::thread::sleep(grace);
    let body = match kind {
        Handshake::Wireguard => {
            socks5_get_at(daemon.socks_port, WIREGUARD_TARGET, target.port(), "/e2e")
                .unwrap_or_else(|e| {
                    panic!(
                        "fetch through the tunnel: {e}\nserver log:\n{}",
                        server.log()
                    )
                })
        }
        _ => daemon.fetch(
            &target,
            &format!("{kind:?} (server log:\n{})", server.log()),
        ),
    };
    assert_eq!(body, target.body());
    assert!(
        server.relayed_to(target.port()),
        "the {kind:?} server did not relay to the target; log:\n{}",
        server.log()
    );
    if kind == Handshake::VlessEch {
        // Another server's ECHConfigList: the server cannot decrypt the inner hello and
        // answers for the outer name, whose certificate the client then rejects.
        let other = HandshakeServer::start(Handshake::VlessEch);
        let wrong = daemon.import(&server.link_with("handshake-e2e-wrong", other.ech_config()));
        daemon.connect(wrong);
        std::thread::sleep(grace);
        let fetched = socks5_get(daemon.socks_port, target.port(), "/wrong-ech");
        assert!(
            fetched.is_err(),
            "a link with another server's ECH config got through, so ECH was not sent: \
             {fetched:?}\nserver log:\n{}",
            server.log()
        );
    }
    daemon.json(&["disconnect"]);
}

#[test]
fn vless_ech_on_mihomo() {
    case(Handshake::VlessEch, CoreChoice::Mihomo);
}

#[test]
fn vless_ech_on_sing_box() {
    case(Handshake::VlessEch, CoreChoice::SingBox);
}

#[test]
fn shadowsocks_shadow_tls_on_mihomo() {
    case(Handshake::SsShadowTls, CoreChoice::Mihomo);
}

#[test]
fn shadowsocks_shadow_tls_on_sing_box() {
    case(Handshake::SsShadowTls, CoreChoice::SingBox);
}

/// WireGuard runs on mihomo only (sing-box 1.14 has it as an endpoint, which xrat does not
/// render); the server is sing-box's endpoint.
#[test]
fn wireguard_on_mihomo() {
    case(Handshake::Wireguard, CoreChoice::Mihomo);
}
