//! sing-box servers whose handshake a client must get right (issue 11): VLESS over TLS with
//! Encrypted Client Hello (keys from `sing-box generate ech-keypair`), and Shadowsocks behind
//! ShadowTLS v3, whose handshake server is a TLS inbound of the same sing-box with a leaf of a
//! test CA (ShadowTLS clients verify it; [`HandshakeServer::ca_file`] is that CA for
//! `SSL_CERT_FILE`); and a WireGuard peer whose tunnel address leads to 127.0.0.1. Listens on
//! 127.0.0.1 only; killed and reaped on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

/// The name ECH's outer ClientHello carries; the inner one carries `localhost`.
const ECH_PUBLIC_NAME: &str = "public.example.com";

/// What a [`HandshakeServer`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// VLESS over TLS with ECH.
    VlessEch,
    /// Shadowsocks (aes-128-gcm) behind ShadowTLS v3.
    SsShadowTls,
    /// A WireGuard peer (sing-box's endpoint). The tunnel is 10.77.0.0/24: the client is .2 and
    /// a connection to [`WIREGUARD_TARGET`] is sent on to 127.0.0.1, the same port.
    Wireguard,
}

/// The server's address inside the WireGuard tunnel; connections to it reach 127.0.0.1.
pub const WIREGUARD_TARGET: [u8; 4] = [10, 77, 0, 1];

/// A sing-box server for one [`Handshake`].
pub struct HandshakeServer {
    kind: Handshake,
    port: u16,
    secret: String,
    ech_config: String,
    /// WireGuard: the client's private key and the server's public key.
    wireguard_keys: (String, String),
    _child: ChildGuard,
    dir: tempfile::TempDir,
}

impl HandshakeServer {
    pub fn start(kind: Handshake) -> HandshakeServer {
        let dir = tempfile::Builder::new()
            .prefix("xrat-handshake")
            .tempdir_in("/tmp")
            .unwrap();
        let port = match kind {
            Handshake::Wireguard => free_udp_port(),
            _ => free_port(),
        };
        let secret = random_uuid();
        let (ech_config, ech_key) = match kind {
            Handshake::VlessEch => ech_keypair(),
            Handshake::SsShadowTls | Handshake::Wireguard => Default::default(),
        };
        let wireguard_keys = (wg_keypair(), wg_keypair());
        let mut endpoints = Vec::new();
        let mut route = json!({ "final": "direct" });
        let inbounds = match kind {
            Handshake::VlessEch => {
                let tls = write_certificate(dir.path());
                vec![json!({
                    "type": "vless", "tag": "in", "listen": "127.0.0.1", "listen_port": port,
                    "users": [{ "uuid": secret }],
                    "tls": { "enabled": true, "server_name": "localhost",
                             "certificate_path": tls.cert.display().to_string(),
                             "key_path": tls.key.display().to_string(),
                             "ech": { "enabled": true, "key": pem_lines(&ech_key) } },
                })]
            }
            Handshake::SsShadowTls => shadow_tls_inbounds(dir.path(), port, &secret),
            Handshake::Wireguard => {
                let ((server_private, _), (_, client_public)) = &wireguard_keys;
                endpoints.push(json!({
                    "type": "wireguard", "tag": "wg", "system": false,
                    "address": ["10.77.0.1/24"], "private_key": server_private,
                    "listen_port": port,
                    "peers": [{ "public_key": client_public, "allowed_ips": ["10.77.0.2/32"] }],
                }));
                let [a, b, c, d] = WIREGUARD_TARGET;
                route["rules"] = json!([{ "ip_cidr": [format!("{a}.{b}.{c}.{d}/32")],
                    "action": "route-options", "override_address": "127.0.0.1" }]);
                Vec::new()
            }
        };
        let config = json!({
            "log": { "level": "info" },
            "endpoints": endpoints,
            "inbounds": inbounds,
            "outbounds": [{ "type": "direct", "tag": "direct" }],
            "route": route,
        });
        let config_path = dir.path().join("server.json");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(sing_box_bin())
            .args(["run", "--disable-color", "-c"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the sing-box {kind:?} server: {e}"));
        let server = HandshakeServer {
            kind,
            port,
            secret,
            ech_config: pem_body(&ech_config),
            wireguard_keys: ((wireguard_keys.1).0, (wireguard_keys.0).1),
            _child: ChildGuard::new(child),
            dir,
        };
        // WireGuard listens on UDP, which a connect cannot see; sing-box says when it runs.
        let ready = match kind {
            Handshake::Wireguard => server.wait_log("sing-box started"),
            _ => wait_port(port, READY_LIMIT),
        };
        assert!(
            ready,
            "sing-box {kind:?} server not accepting on {port} after {READY_LIMIT:?}\nlog:\n{}",
            server.log()
        );
        server
    }

    /// The server's own output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + READY_LIMIT;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Whether sing-box logged a connection to 127.0.0.1:`port` (waits up to 2 s).
    pub fn relayed_to(&self, port: u16) -> bool {
        let needle = format!("outbound connection to 127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if self.log().contains(&needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// The test CA that signed the ShadowTLS handshake server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A share link for it; with `ech_config` the ECHConfigList it carries (another server's
    /// list makes the handshake fail, which shows the client really sends ECH).
    pub fn link_with(&self, name: &str, ech_config: &str) -> String {
        let (port, secret) = (self.port, &self.secret);
        match self.kind {
            Handshake::VlessEch => {
                let ech = ech_config.replace('+', "%2B").replace('/', "%2F");
                format!(
                    "vless://{secret}@127.0.0.1:{port}?security=tls&sni=localhost\
                     &allowInsecure=1&ech={ech}#{name}"
                )
            }
            Handshake::SsShadowTls => {
                use base64::Engine;
                let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                let user = engine.encode(format!("aes-128-gcm:{secret}"));
                let shadow_tls = engine.encode(
                    json!({ "version": "3", "host": "localhost", "password": secret }).to_string(),
                );
                format!("ss://{user}@127.0.0.1:{port}/?shadow-tls={shadow_tls}#{name}")
            }
            Handshake::Wireguard => {
                let escape = |key: &str| key.replace('+', "%2B").replace('/', "%2F");
                let (client_private, server_public) = &self.wireguard_keys;
                format!(
                    "wireguard://{}@127.0.0.1:{port}?publickey={}&address=10.77.0.2/32#{name}",
                    escape(client_private),
                    escape(server_public)
                )
            }
        }
    }

    /// Its own ECHConfigList, base64.
    pub fn ech_config(&self) -> &str {
        &self.ech_config
    }
}

/// ShadowTLS v3 on `port`, handing the stream to a Shadowsocks inbound, with a TLS inbound of
/// the same server as its handshake server.
fn shadow_tls_inbounds(dir: &Path, port: u16, secret: &str) -> Vec<Value> {
    let (ca, leaf, key) = ca_and_leaf();
    std::fs::write(dir.join("ca.pem"), ca).unwrap();
    std::fs::write(dir.join("leaf.pem"), leaf).unwrap();
    std::fs::write(dir.join("leaf.key"), key).unwrap();
    let handshake_port = free_port();
    vec![
        json!({ "type": "shadowtls", "tag": "st", "listen": "127.0.0.1", "listen_port": port,
                "version": 3, "users": [{ "password": secret }],
                "handshake": { "server": "127.0.0.1", "server_port": handshake_port },
                "detour": "ss" }),
        json!({ "type": "shadowsocks", "tag": "ss", "listen": "127.0.0.1",
                "listen_port": free_port(), "method": "aes-128-gcm", "password": secret }),
        json!({ "type": "http", "tag": "handshake", "listen": "127.0.0.1",
                "listen_port": handshake_port,
                "tls": { "enabled": true,
                         "certificate_path": dir.join("leaf.pem").display().to_string(),
                         "key_path": dir.join("leaf.key").display().to_string() } }),
    ]
}

/// A CA's PEM, and a leaf for `localhost` signed by it (PEM, key PEM).
fn ca_and_leaf() -> (String, String, String) {
    let (ca, leaf, key) = crate::common::ca::ca_and_leaf("xrat handshake test CA", &["localhost"]);
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

/// `sing-box generate ech-keypair`: the configs block and the keys block, as PEM text.
fn ech_keypair() -> (String, String) {
    let out = Command::new(sing_box_bin())
        .args(["generate", "ech-keypair", ECH_PUBLIC_NAME])
        .output()
        .expect("run sing-box generate ech-keypair");
    assert!(
        out.status.success(),
        "sing-box generate ech-keypair: {out:?}"
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let split = text
        .find("-----BEGIN ECH KEYS-----")
        .unwrap_or_else(|| panic!("no ECH keys in:\n{text}"));
    (text[..split].to_owned(), text[split..].to_owned())
}

/// `sing-box generate wg-keypair`: (private key, public key).
fn wg_keypair() -> (String, String) {
    let out = Command::new(sing_box_bin())
        .args(["generate", "wg-keypair"])
        .output()
        .expect("run sing-box generate wg-keypair");
    assert!(
        out.status.success(),
        "sing-box generate wg-keypair: {out:?}"
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |label: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(label))
            .map(|key| key.trim().to_owned())
            .unwrap_or_else(|| panic!("no {label} in:\n{text}"))
    };
    (field("PrivateKey:"), field("PublicKey:"))
}

/// A UDP port nothing is bound to now.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .map(|addr| addr.port())
        .expect("bind udp 127.0.0.1:0")
}

fn pem_lines(pem: &str) -> Vec<&str> {
    pem.lines().filter(|line| !line.is_empty()).collect()
}

/// The base64 between a PEM block's armour lines.
fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|line| !line.starts_with("-----"))
        .collect()
}
