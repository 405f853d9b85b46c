//! Remote proxy servers (V2Ray or sing-box) serving one protocol each, with their links.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};

use super::*;

// ---------------------------------------------------------------------------------------------
// Remote proxy servers

/// A protocol (with transport and security) a [`RemoteServer`] can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// VMess over TCP (link: Xray URL form).
    VmessTcp,
    /// VMess over WebSocket (link: v2rayN base64 JSON form).
    VmessWs,
    /// VLESS over TCP, no TLS.
    VlessTcp,
    /// VLESS over WebSocket with TLS.
    VlessWsTls,
    /// Trojan over TCP with TLS.
    TrojanTls,
    /// Shadowsocks aes-128-gcm (link: SIP002 with base64url userinfo).
    SsAes128Gcm,
    /// Shadowsocks chacha20-poly1305 (link: SIP002 with plain `chacha20-poly1305:password`).
    SsChacha20Poly1305,
    /// SOCKS5 without authentication.
    Socks,
    /// SOCKS5 with username and password.
    SocksAuth,
}

impl Proto {
    /// Every protocol.
    pub const ALL: [Proto; 9] = [
        Proto::VmessTcp,
        Proto::VmessWs,
        Proto::VlessTcp,
        Proto::VlessWsTls,
        Proto::TrojanTls,
        Proto::SsAes128Gcm,
        Proto::SsChacha20Poly1305,
        Proto::Socks,
        Proto::SocksAuth,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Proto::VmessTcp => "vmess-tcp",
            Proto::VmessWs => "vmess-ws",
            Proto::VlessTcp => "vless-tcp",
            Proto::VlessWsTls => "vless-ws-tls",
            Proto::TrojanTls => "trojan-tls",
            Proto::SsAes128Gcm => "ss-aes-128-gcm",
            Proto::SsChacha20Poly1305 => "ss-chacha20-poly1305",
            Proto::Socks => "socks",
            Proto::SocksAuth => "socks-auth",
        }
    }

    /// The core [`RemoteServer::start`] serves this protocol with; both kinds get used.
    pub fn default_server(self) -> Core {
        match self {
            Proto::VmessTcp
            | Proto::VlessTcp
            | Proto::TrojanTls
            | Proto::SsAes128Gcm
            | Proto::Socks => Core::V2ray,
            Proto::VmessWs | Proto::VlessWsTls | Proto::SsChacha20Poly1305 | Proto::SocksAuth => {
                Core::SingBox
            }
        }
    }

    /// The server core to test a `client` core against: [`Proto::default_server`], except
    /// where that pairing is known to lose data for reasons outside xrat (see
    /// [`interop_broken`]), where the client's own kind serves instead.
    pub fn server_against(self, client: Core) -> Core {
        let server = self.default_server();
        if interop_broken(client, server, self) {
            client
        } else {
            server
        }
    }

    fn tls(self) -> bool {
        matches!(self, Proto::VlessWsTls | Proto::TrojanTls)
    }

    fn ws_path(self) -> Option<&'static str> {
        match self {
            Proto::VmessWs => Some("/vmess-ws"),
            Proto::VlessWsTls => Some("/vless-ws"),
            _ => None,
        }
    }
}

/// Whether a `client` core talking `proto` to a `server` core is known to be unreliable on its
/// own, with no xrat in between: a V2Ray 4.34 WebSocket client (vmess or vless, with or without
/// TLS) against a sing-box 1.14 WebSocket server loses the response when the target closes
/// right after answering — reproduced with plain `v2ray -config` + `sing-box run` and curl
/// (about 1 request in 4 fails with an empty reply). The other direction works.
pub fn interop_broken(client: Core, server: Core, proto: Proto) -> bool {
    client == Core::V2ray && server == Core::SingBox && proto.ws_path().is_some()
}

/// Credentials of one server, random per server.
struct Secrets {
    uuid: String,
    password: String,
    user: String,
}

/// A real proxy server process (V2Ray or sing-box) on 127.0.0.1, serving one [`Proto`]. Killed
/// and reaped when dropped.
pub struct RemoteServer {
    proto: Proto,
    core: Core,
    port: u16,
    secrets: Secrets,
    child: Option<ChildGuard>,
    dir: tempfile::TempDir,
}

impl RemoteServer {
    /// Serves `proto` with its [`Proto::default_server`] core.
    pub fn start(proto: Proto) -> RemoteServer {
        RemoteServer::start_on(proto, proto.default_server())
    }

    /// Serves `proto` with `core`; waits (at most 5 s) until its port accepts.
    pub fn start_on(proto: Proto, core: Core) -> RemoteServer {
        let dir = tempfile::Builder::new()
            .prefix("xrat-remote")
            .tempdir_in("/tmp")
            .unwrap();
        let secrets = Secrets {
            uuid: random_uuid(),
            password: format!("pw{:016x}", random_u64()),
            user: format!("u{:08x}", random_u64() as u32),
        };
        let tls = proto.tls().then(|| write_certificate(dir.path()));
        let port = free_port();
        let config = match core {
            Core::V2ray => v2ray_server(proto, port, &secrets, tls.as_ref()),
            Core::SingBox => sing_box_server(proto, port, &secrets, tls.as_ref()),
        };
        let config_path = dir.path().join("server.json");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let mut server = RemoteServer {
            proto,
            core,
            port,
            secrets,
            child: None,
            dir,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let config_path = self.dir.path().join("server.json");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = Command::new(self.core.bin())
            .args(self.core.run_args(&config_path))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} server: {e}", self.core.name()));
        self.child = Some(ChildGuard::new(child));
        self.wait_ready();
    }

    /// Starts the server again on the same port with the same secrets (after [`stop`]).
    pub fn restart(&mut self) {
        self.child.take();
        self.spawn();
    }

    /// SIGSTOP (`true`) or SIGCONT: the process stays, answering nothing — a hung remote.
    pub fn pause(&self, stopped: bool) {
        let signal = if stopped {
            libc::SIGSTOP
        } else {
            libc::SIGCONT
        };
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_LIMIT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            let child = &mut self.child.as_mut().unwrap().0;
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} server for {} exited ({status}) before accepting on {}\nconfig:\n{}\nlog:\n{}",
                    self.core.name(),
                    self.proto.name(),
                    self.port,
                    self.config_text(),
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} server for {} not accepting on {} after {READY_LIMIT:?}\nlog:\n{}",
                    self.core.name(),
                    self.proto.name(),
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// The core serving it.
    pub fn core(&self) -> Core {
        self.core
    }

    /// Pid of the server process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().pid()
    }

    /// The server's own output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Whether the server's log shows it relayed a connection to 127.0.0.1:`port` (both cores
    /// log each destination at info level: V2Ray "tcp:127.0.0.1:PORT", sing-box "outbound
    /// connection to 127.0.0.1:PORT"). Waits up to 2 s for the log line to be written.
    pub fn relayed_to(&self, port: u16) -> bool {
        let needle = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if self.log().contains(&needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn config_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.json")).unwrap_or_default()
    }

    /// Kills the server now (also done on drop).
    pub fn stop(&mut self) {
        self.child.take();
    }

    /// The name its [`RemoteServer::link`] carries.
    pub fn name(&self) -> String {
        format!("e2e-{}-{}", self.proto.name(), self.core.name())
    }

    /// A share link for this server, in a form `xrat config import` takes.
    pub fn link(&self) -> String {
        let port = self.port;
        let Secrets {
            uuid,
            password,
            user,
        } = &self.secrets;
        let name = self.name();
        match self.proto {
            Proto::VmessTcp => {
                format!("vmess://{uuid}@127.0.0.1:{port}?encryption=auto&type=tcp#{name}")
            }
            Proto::VmessWs => {
                let fields = json!({
                    "v": "2",
                    "ps": name,
                    "add": "127.0.0.1",
                    "port": port.to_string(),
                    "id": uuid,
                    "aid": "0",
                    "scy": "auto",
                    "net": "ws",
                    "type": "none",
                    "host": "",
                    "path": self.proto.ws_path().unwrap(),
                    "tls": "",
                });
                format!("vmess://{}", STANDARD.encode(fields.to_string()))
            }
            Proto::VlessTcp => format!(
                "vless://{uuid}@127.0.0.1:{port}?encryption=none&type=tcp&security=none#{name}"
            ),
            Proto::VlessWsTls => format!(
                "vless://{uuid}@127.0.0.1:{port}?encryption=none&type=ws&path=%2Fvless-ws\
                 &host=localhost&security=tls&sni=localhost&allowInsecure=1#{name}"
            ),
            Proto::TrojanTls => format!(
                "trojan://{password}@127.0.0.1:{port}?security=tls&sni=localhost\
                 &allowInsecure=1&type=tcp#{name}"
            ),
            Proto::SsAes128Gcm => format!(
                "ss://{}@127.0.0.1:{port}#{name}",
                URL_SAFE_NO_PAD.encode(format!("aes-128-gcm:{password}"))
            ),
            Proto::SsChacha20Poly1305 => {
                format!("ss://chacha20-poly1305:{password}@127.0.0.1:{port}#{name}")
            }
            Proto::Socks => format!("socks://127.0.0.1:{port}#{name}"),
            Proto::SocksAuth => format!("socks5://{user}:{password}@127.0.0.1:{port}#{name}"),
        }
    }
}

impl Drop for RemoteServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Certificate and key files (self-signed, for `localhost` and 127.0.0.1).
pub(super) struct TlsFiles {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

pub(super) fn write_certificate(dir: &Path) -> TlsFiles {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("generate certificate");
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, certified.cert.pem()).unwrap();
    std::fs::write(&files.key, certified.signing_key.serialize_pem()).unwrap();
    files
}

/// A V2Ray 4 server config: one inbound for `proto`, a freedom outbound.
fn v2ray_server(proto: Proto, port: u16, secrets: &Secrets, tls: Option<&TlsFiles>) -> Value {
    let (protocol, settings) = match proto {
        Proto::VmessTcp | Proto::VmessWs => (
            "vmess",
            json!({ "clients": [{ "id": secrets.uuid, "alterId": 0 }] }),
        ),
        Proto::VlessTcp | Proto::VlessWsTls => (
            "vless",
            json!({ "clients": [{ "id": secrets.uuid }], "decryption": "none" }),
        ),
        Proto::TrojanTls => (
            "trojan",
            json!({ "clients": [{ "password": secrets.password }] }),
        ),
        Proto::SsAes128Gcm | Proto::SsChacha20Poly1305 => (
            "shadowsocks",
            json!({
                "method": ss_method(proto, Core::V2ray),
                "password": secrets.password,
                "network": "tcp",
            }),
        ),
        Proto::Socks => ("socks", json!({ "auth": "noauth", "udp": false })),
        Proto::SocksAuth => (
            "socks",
            json!({
                "auth": "password",
                "accounts": [{ "user": secrets.user, "pass": secrets.password }],
                "udp": false,
            }),
        ),
    };
    let mut stream = json!({ "network": "tcp", "security": "none" });
    if let Some(path) = proto.ws_path() {
        stream["network"] = json!("ws");
        stream["wsSettings"] = json!({ "path": path });
    }
    if let Some(tls) = tls {
        stream["security"] = json!("tls");
        stream["tlsSettings"] = json!({
            "certificates": [{
                "certificateFile": tls.cert.display().to_string(),
                "keyFile": tls.key.display().to_string(),
            }],
        });
    }
    json!({
        // Info level logs every relayed destination; see `RemoteServer::relayed_to`.
        "log": { "loglevel": "info" },
        "inbounds": [{
            "tag": "in",
            "listen": "127.0.0.1",
            "port": port,
            "protocol": protocol,
            "settings": settings,
            "streamSettings": stream,
        }],
        "outbounds": [{ "tag": "direct", "protocol": "freedom", "settings": {} }],
    })
}

/// A sing-box server config: one inbound for `proto`, a direct outbound.
fn sing_box_server(proto: Proto, port: u16, secrets: &Secrets, tls: Option<&TlsFiles>) -> Value {
    let mut inbound = json!({ "tag": "in", "listen": "127.0.0.1", "listen_port": port });
    let mut set = |key: &str, value: Value| {
        inbound[key] = value;
    };
    match proto {
        Proto::VmessTcp | Proto::VmessWs => {
            set("type", json!("vmess"));
            set("users", json!([{ "uuid": secrets.uuid, "alterId": 0 }]));
        }
        Proto::VlessTcp | Proto::VlessWsTls => {
            set("type", json!("vless"));
            set("users", json!([{ "uuid": secrets.uuid }]));
        }
        Proto::TrojanTls => {
            set("type", json!("trojan"));
            set("users", json!([{ "password": secrets.password }]));
        }
        Proto::SsAes128Gcm | Proto::SsChacha20Poly1305 => {
            set("type", json!("shadowsocks"));
            set("method", json!(ss_method(proto, Core::SingBox)));
            set("password", json!(secrets.password));
        }
        Proto::Socks => set("type", json!("socks")),
        Proto::SocksAuth => {
            set("type", json!("socks"));
            set(
                "users",
                json!([{ "username": secrets.user, "password": secrets.password }]),
            );
        }
    }
    if let Some(path) = proto.ws_path() {
        set("transport", json!({ "type": "ws", "path": path }));
    }
    if let Some(tls) = tls {
        set(
            "tls",
            json!({
                "enabled": true,
                "certificate_path": tls.cert.display().to_string(),
                "key_path": tls.key.display().to_string(),
            }),
        );
    }
    json!({
        "log": { "level": "info" },
        "inbounds": [inbound],
        "outbounds": [{ "type": "direct", "tag": "direct" }],
    })
}

/// The Shadowsocks method as each server spells it (sing-box wants the `-ietf-` name).
fn ss_method(proto: Proto, core: Core) -> &'static str {
    match (proto, core) {
        (Proto::SsChacha20Poly1305, Core::V2ray) => "chacha20-poly1305",
        (Proto::SsChacha20Poly1305, Core::SingBox) => "chacha20-ietf-poly1305",
        _ => "aes-128-gcm",
    }
}
