//! mihomo as a remote server: VLESS with REALITY (Vision over tcp, or over gRPC or XHTTP) through
//! its `listeners`, borrowing the TLS 1.3 handshake of a local sing-box TLS server.

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

/// The stream a [`RealityServer`] serves VLESS + REALITY on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RealityStream {
    /// Raw TCP with the `xtls-rprx-vision` flow.
    Vision,
    /// gRPC (service `xrat`), no flow.
    Grpc,
    /// XHTTP (path `/xrat-xhttp`, auto mode), no flow.
    Xhttp,
}

/// The REALITY server name the client sends and the server accepts.
const SERVER_NAME: &str = "localhost";
/// The gRPC service name.
const SERVICE: &str = "xrat";
/// The XHTTP path.
const XHTTP_PATH: &str = "/xrat-xhttp";

/// A mihomo process serving VLESS + REALITY on 127.0.0.1, with the sing-box TLS server it
/// borrows handshakes from. Both are killed and reaped when dropped.
pub struct RealityServer {
    stream: RealityStream,
    port: u16,
    uuid: String,
    public_key: String,
    short_id: String,
    child: Option<ChildGuard>,
    dir: tempfile::TempDir,
    /// The handshake target: any TLS 1.3 server does; a sing-box trojan inbound is one.
    _target: RemoteServer,
}

impl RealityServer {
    /// Starts the handshake target and mihomo; waits (at most 5 s) until mihomo accepts.
    pub fn start(stream: RealityStream) -> RealityServer {
        let target = RemoteServer::start_on(Proto::TrojanTls, Core::SingBox);
        let dir = tempfile::Builder::new()
            .prefix("xrat-reality")
            .tempdir_in("/tmp")
            .unwrap();
        let (private_key, public_key) = reality_keypair();
        let uuid = random_uuid();
        let short_id = format!("{:016x}", random_u64());
        let port = free_port();
        let mut user = json!({ "username": "e2e", "uuid": uuid });
        let mut listener = json!({
            "name": "reality-in",
            "type": "vless",
            "listen": "127.0.0.1",
            "port": port,
            "reality-config": {
                "dest": format!("127.0.0.1:{}", target.port()),
                "private-key": private_key,
                "short-id": [short_id],
                "server-names": [SERVER_NAME],
            },
        });
        match stream {
            RealityStream::Vision => user["flow"] = json!("xtls-rprx-vision"),
            RealityStream::Grpc => listener["grpc-service-name"] = json!(SERVICE),
            RealityStream::Xhttp => listener["xhttp-config"] = json!({ "path": XHTTP_PATH }),
        }
        listener["users"] = json!([user]);
        let config = json!({
            // Info level logs every relayed destination; see `relayed_to`.
            "log-level": "info",
            "mode": "rule",
            "geo-auto-update": false,
            "find-process-mode": "off",
            "profile": { "store-selected": false, "store-fake-ip": false },
            "listeners": [listener],
            "proxies": [],
            "rules": ["MATCH,DIRECT"],
        });
        let config_path = dir.path().join("server.json");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(mihomo_bin())
            .arg("-d")
            .arg(dir.path())
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the mihomo REALITY server: {e}"));
        let mut server = RealityServer {
            stream,
            port,
            uuid,
            public_key,
            short_id,
            child: Some(ChildGuard::new(child)),
            dir,
            _target: target,
        };
        server.wait_ready();
        server
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
                    "mihomo REALITY server exited ({status}) before accepting on {}\nlog:\n{}",
                    self.port,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mihomo REALITY server not accepting on {} after {READY_LIMIT:?}\nlog:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's own output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Whether the server's log shows it relayed a connection to 127.0.0.1:`port` (mihomo logs
    /// "[TCP] 127.0.0.1:N --> 127.0.0.1:PORT match Match using DIRECT" at info level). Waits
    /// up to 2 s for the line.
    pub fn relayed_to(&self, port: u16) -> bool {
        let needle = format!("--> 127.0.0.1:{port} ");
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

    /// The name its [`RealityServer::link`] carries.
    pub fn name(&self) -> String {
        match self.stream {
            RealityStream::Vision => "e2e-vless-reality-vision-mihomo".into(),
            RealityStream::Grpc => "e2e-vless-reality-grpc-mihomo".into(),
            RealityStream::Xhttp => "e2e-vless-reality-xhttp-mihomo".into(),
        }
    }

    /// The share link a panel would give for this server.
    pub fn link(&self) -> String {
        let (uuid, port, pbk, sid) = (&self.uuid, self.port, &self.public_key, &self.short_id);
        let stream = match self.stream {
            RealityStream::Vision => "type=tcp&flow=xtls-rprx-vision".to_owned(),
            RealityStream::Grpc => format!("type=grpc&serviceName={SERVICE}&mode=gun"),
            RealityStream::Xhttp => "type=xhttp&path=%2Fxrat-xhttp&mode=auto".to_owned(),
        };
        format!(
            "vless://{uuid}@127.0.0.1:{port}?encryption=none&security=reality&sni={SERVER_NAME}\
             &fp=chrome&pbk={pbk}&sid={sid}&spx=%2F&{stream}#{}",
            self.name()
        )
    }
}

/// A fresh x25519 key pair from `mihomo generate reality-keypair`: (private, public).
fn reality_keypair() -> (String, String) {
    let out = Command::new(mihomo_bin())
        .args(["generate", "reality-keypair"])
        .stdin(Stdio::null())
        .output()
        .expect("run mihomo generate reality-keypair");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(name))
            .map(|value| value.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} in `mihomo generate reality-keypair`: {text}"))
    };
    (field("PrivateKey:"), field("PublicKey:"))
}
