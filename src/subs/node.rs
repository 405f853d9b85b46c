//! A proxy node from a structured format (Clash YAML, sing-box JSON, SIP008), written back as a
//! share link. Going through the link text means one parser validates every format, and the
//! stored `raw_link` stays a link people can share or re-import.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use url::form_urlencoded;

/// The protocol of a node with its credentials, as the formats give them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Shadowsocks.
    Shadowsocks {
        /// Cipher name.
        method: String,
        /// Password or 2022 key.
        password: String,
        /// SIP003 plugin with options (`obfs-local;obfs=http;obfs-host=..`).
        plugin: Option<String>,
    },
    /// VMess.
    Vmess {
        /// User id.
        uuid: String,
        /// Alter id.
        alter_id: u16,
        /// Body cipher.
        cipher: String,
    },
    /// VLESS.
    Vless {
        /// User id.
        uuid: String,
        /// XTLS flow.
        flow: Option<String>,
    },
    /// Trojan.
    Trojan {
        /// Password.
        password: String,
    },
    /// SOCKS5 or HTTP proxy.
    Plain {
        /// `socks5` or `http`/`https`.
        scheme: &'static str,
        /// User and password.
        auth: Option<(String, String)>,
    },
    /// Hysteria 2.
    Hysteria2 {
        /// Password.
        password: String,
        /// Salamander password.
        obfs_password: Option<String>,
    },
    /// TUIC v5.
    Tuic {
        /// User id.
        uuid: String,
        /// Password.
        password: String,
        /// Congestion control.
        congestion: Option<String>,
        /// UDP relay mode.
        udp_relay_mode: Option<String>,
    },
    /// AnyTLS.
    Anytls {
        /// Password.
        password: String,
    },
}

/// The stream under the protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stream {
    /// `tcp`, `ws`, `grpc`, `h2`, `httpupgrade`.
    pub network: Option<String>,
    /// Path (ws, h2, httpupgrade).
    pub path: Option<String>,
    /// Host header or names.
    pub host: Option<String>,
    /// gRPC service name.
    pub service_name: Option<String>,
}

/// TLS or REALITY on the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// Whether TLS is on at all.
    pub enabled: bool,
    /// Server name.
    pub sni: Option<String>,
    /// ALPN list.
    pub alpn: Vec<String>,
    /// uTLS fingerprint.
    pub fingerprint: Option<String>,
    /// Skip verification.
    pub insecure: bool,
    /// REALITY public key and short id.
    pub reality: Option<(String, String)>,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Display name.
    pub name: String,
    /// Server host.
    pub server: String,
    /// Server port.
    pub port: u16,
    /// Protocol.
    pub kind: Kind,
    /// Transport.
    pub stream: Stream,
    /// Security.
    pub tls: Tls,
}

/// Percent-encodes everything outside the URL "unreserved" set.
fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn host(server: &str) -> String {
    if server.contains(':') && !server.starts_with('[') {
        format!("[{server}]")
    } else {
        server.to_owned()
    }
}

impl Node {
    /// The share link for this node.
    pub fn to_link(&self) -> String {
        if let Kind::Vmess { .. } = self.kind {
            return self.vmess_link();
        }
        let mut query: Vec<(&str, String)> = Vec::new();
        let (scheme, userinfo) = self.protocol_part(&mut query);
        if !matches!(self.kind, Kind::Shadowsocks { .. } | Kind::Plain { .. }) {
            self.stream_query(&mut query);
        }
        self.tls_query(&mut query);
        let at = if userinfo.is_empty() { "" } else { "@" };
        let mut link = format!(
            "{scheme}://{userinfo}{at}{}:{}",
            host(&self.server),
            self.port
        );
        if !query.is_empty() {
            let pairs: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", enc(v)))
                .collect();
            link.push_str("/?");
            link.push_str(&pairs.join("&"));
        }
        link.push('#');
        link.push_str(&enc(&self.name));
        link
    }

    /// The scheme and userinfo of the link; protocol parameters go into `query`.
    fn protocol_part(&self, query: &mut Vec<(&'static str, String)>) -> (&'static str, String) {
        match &self.kind {
            Kind::Shadowsocks {
                method,
                password,
                plugin,
            } => {
                if let Some(plugin) = plugin {
                    query.push(("plugin", plugin.clone()));
                }
                // SIP002: 2022 keys are percent-encoded, older ciphers base64url.
                let userinfo = if method.starts_with("2022-") {
                    format!("{}:{}", enc(method), enc(password))
                } else {
                    URL_SAFE_NO_PAD.encode(format!("{method}:{password}"))
                };
                ("ss", userinfo)
            }
            Kind::Vless { uuid, flow } => {
                query.push(("encryption", "none".into()));
                if let Some(flow) = flow.as_ref().filter(|f| !f.is_empty()) {
                    query.push(("flow", flow.clone()));
                }
                ("vless", enc(uuid))
            }
            Kind::Trojan { password } => ("trojan", enc(password)),
            Kind::Plain { scheme, auth } => {
                let userinfo = auth
                    .as_ref()
                    .map(|(u, p)| format!("{}:{}", enc(u), enc(p)))
                    .unwrap_or_default();
                (*scheme, userinfo)
            }
            Kind::Hysteria2 {
                password,
                obfs_password,
            } => {
                if let Some(obfs) = obfs_password {
                    query.push(("obfs", "salamander".into()));
                    query.push(("obfs-password", obfs.clone()));
                }
                ("hysteria2", enc(password))
            }
            Kind::Tuic {
                uuid,
                password,
                congestion,
                udp_relay_mode,
            } => {
                query.extend(congestion.clone().map(|c| ("congestion_control", c)));
                query.extend(udp_relay_mode.clone().map(|m| ("udp_relay_mode", m)));
                ("tuic", format!("{}:{}", enc(uuid), enc(password)))
            }
            Kind::Anytls { password } => ("anytls", enc(password)),
            Kind::Vmess { .. } => unreachable!("handled above"),
        }
    }

    fn stream_query(&self, query: &mut Vec<(&'static str, String)>) {
        let s = &self.stream;
        let network = s.network.clone().unwrap_or_else(|| "tcp".into());
        query.push(("type", network));
        query.extend(s.path.clone().map(|p| ("path", p)));
        query.extend(s.host.clone().map(|h| ("host", h)));
        query.extend(s.service_name.clone().map(|n| ("serviceName", n)));
    }

    fn tls_query(&self, query: &mut Vec<(&'static str, String)>) {
        let t = &self.tls;
        let plain_default = matches!(self.kind, Kind::Plain { .. } | Kind::Shadowsocks { .. });
        let quic = matches!(
            self.kind,
            Kind::Hysteria2 { .. } | Kind::Tuic { .. } | Kind::Anytls { .. }
        );
        if let Some((public_key, short_id)) = &t.reality {
            query.push(("security", "reality".into()));
            query.push(("pbk", public_key.clone()));
            query.push(("sid", short_id.clone()));
        } else if t.enabled && !quic {
            query.push(("security", "tls".into()));
        } else if !t.enabled && !plain_default && !quic {
            query.push(("security", "none".into()));
        }
        if !t.enabled && t.reality.is_none() {
            return;
        }
        query.extend(t.sni.clone().map(|s| ("sni", s)));
        if !t.alpn.is_empty() {
            query.push(("alpn", t.alpn.join(",")));
        }
        query.extend(t.fingerprint.clone().map(|f| ("fp", f)));
        if t.insecure {
            let key = if matches!(self.kind, Kind::Tuic { .. }) {
                "allow_insecure"
            } else {
                "insecure"
            };
            query.push((key, "1".into()));
        }
    }

    /// `vmess://` + base64 of the v2rayN JSON.
    fn vmess_link(&self) -> String {
        let Kind::Vmess {
            uuid,
            alter_id,
            cipher,
        } = &self.kind
        else {
            unreachable!("only called for vmess");
        };
        let s = &self.stream;
        let t = &self.tls;
        let net = s.network.clone().unwrap_or_else(|| "tcp".into());
        let path = if net == "grpc" {
            s.service_name.clone()
        } else {
            s.path.clone()
        };
        let json = serde_json::json!({
            "v": "2",
            "ps": self.name,
            "add": self.server,
            "port": self.port,
            "id": uuid,
            "aid": alter_id,
            "scy": cipher,
            "net": net,
            "type": "none",
            "host": s.host.clone().unwrap_or_default(),
            "path": path.unwrap_or_default(),
            "tls": if t.enabled { "tls" } else { "" },
            "sni": t.sni.clone().unwrap_or_default(),
            "alpn": t.alpn.join(","),
            "fp": t.fingerprint.clone().unwrap_or_default(),
        });
        format!("vmess://{}", STANDARD.encode(json.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::{parse_link, Protocol, Security, Transport};

    fn node(kind: Kind) -> Node {
        Node {
            name: "A b/c".into(),
            server: "203.0.113.5".into(),
            port: 443,
            kind,
            stream: Stream::default(),
            tls: Tls::default(),
        }
    }

    #[test]
    fn links_parse_back() {
        let mut vless = node(Kind::Vless {
            uuid: "b831381d-6324-4d53-ad4f-8cda48b30811".into(),
            flow: None,
        });
        vless.stream.network = Some("ws".into());
        vless.stream.path = Some("/p?ed=2048".into());
        vless.tls.enabled = true;
        vless.tls.sni = Some("a.example".into());
        let parsed = parse_link(&vless.to_link()).unwrap();
        assert_eq!(parsed.name, "A b/c");
        assert!(
            matches!(parsed.outbound.transport, Transport::Ws { ref path, .. } if path == "/p?ed=2048")
        );
        assert!(
            matches!(parsed.outbound.security, Security::Tls(ref t) if t.sni.as_deref() == Some("a.example"))
        );

        let ss = node(Kind::Shadowsocks {
            method: "aes-256-gcm".into(),
            password: "p@ss:w".into(),
            plugin: None,
        });
        let parsed = parse_link(&ss.to_link()).unwrap();
        assert!(
            matches!(parsed.outbound.protocol, Protocol::Shadowsocks { ref password, .. } if password == "p@ss:w")
        );

        let mut vmess = node(Kind::Vmess {
            uuid: "b831381d-6324-4d53-ad4f-8cda48b30811".into(),
            alter_id: 0,
            cipher: "auto".into(),
        });
        vmess.stream.network = Some("grpc".into());
        vmess.stream.service_name = Some("svc".into());
        let parsed = parse_link(&vmess.to_link()).unwrap();
        assert!(
            matches!(parsed.outbound.transport, Transport::Grpc { ref service_name, .. } if service_name == "svc")
        );

        let trojan = node(Kind::Trojan {
            password: "pw".into(),
        });
        let parsed = parse_link(&trojan.to_link()).unwrap();
        assert_eq!(parsed.outbound.security, Security::None);
        let socks = node(Kind::Plain {
            scheme: "socks5",
            auth: Some(("u".into(), "p w".into())),
        });
        assert!(parse_link(&socks.to_link()).is_ok());
    }
}
