//! Clash / mihomo `proxies:` entries → [`Node`]. Field names follow the mihomo wiki
//! (`type`, `server`, `port`, `uuid`, `network`, `ws-opts`, `reality-opts`, …).

use serde_json::Value;

use super::formats::{flag, list, need, port, text};
use super::node::{Kind, Node, Stream, Tls};

/// One proxy entry.
pub fn node(p: &Value) -> Result<Node, String> {
    let kind_name = need(p, "type")?.to_ascii_lowercase();
    let server = need(p, "server")?;
    let port = port(p, "port")?;
    let kind = kind(p, &kind_name)?;
    let mut tls = tls(p);
    // Trojan, hysteria2, tuic and anytls are TLS by definition; Clash leaves `tls` out for them.
    if matches!(
        kind,
        Kind::Trojan { .. } | Kind::Hysteria2 { .. } | Kind::Tuic { .. } | Kind::Anytls { .. }
    ) {
        tls.enabled = true;
    }
    Ok(Node {
        name: text(p, "name").unwrap_or_else(|| format!("{kind_name} {server}:{port}")),
        server,
        port,
        kind,
        stream: stream(p),
        tls,
    })
}

fn kind(p: &Value, name: &str) -> Result<Kind, String> {
    let kind = match name {
        "ss" => Kind::Shadowsocks {
            method: need(p, "cipher")?,
            password: need(p, "password")?,
            plugin: plugin(p)?,
        },
        "vmess" => Kind::Vmess {
            uuid: need(p, "uuid")?,
            alter_id: text(p, "alterId")
                .map(|a| {
                    a.parse()
                        .map_err(|_| format!("\"alterId\" is {a:?}, not a number"))
                })
                .transpose()?
                .unwrap_or(0),
            cipher: text(p, "cipher").unwrap_or_else(|| "auto".into()),
        },
        "vless" => Kind::Vless {
            uuid: need(p, "uuid")?,
            flow: text(p, "flow"),
        },
        "trojan" => Kind::Trojan {
            password: need(p, "password")?,
        },
        "socks5" | "http" => Kind::Plain {
            scheme: match (name, flag(p, "tls")) {
                ("http", true) => "https",
                ("http", false) => "http",
                _ => "socks5",
            },
            auth: text(p, "username").map(|u| (u, text(p, "password").unwrap_or_default())),
        },
        "hysteria2" => Kind::Hysteria2 {
            password: need(p, "password")?,
            obfs_password: text(p, "obfs-password"),
        },
        "tuic" => Kind::Tuic {
            uuid: need(p, "uuid")?,
            password: need(p, "password")?,
            congestion: text(p, "congestion-controller"),
            udp_relay_mode: text(p, "udp-relay-mode"),
        },
        "anytls" => Kind::Anytls {
            password: need(p, "password")?,
        },
        other => return Err(format!("proxy type {other:?} is not supported")),
    };
    Ok(kind)
}

/// `plugin: obfs` with `plugin-opts: {mode, host}` as a SIP003 plugin string.
fn plugin(p: &Value) -> Result<Option<String>, String> {
    let Some(name) = text(p, "plugin") else {
        return Ok(None);
    };
    let opts = p.get("plugin-opts").cloned().unwrap_or(Value::Null);
    match name.as_str() {
        "obfs" => {
            let mode = text(&opts, "mode").unwrap_or_else(|| "http".into());
            let mut plugin = format!("obfs-local;obfs={mode}");
            if let Some(host) = text(&opts, "host") {
                plugin.push_str(&format!(";obfs-host={host}"));
            }
            Ok(Some(plugin))
        }
        "v2ray-plugin" => {
            let mut plugin = "v2ray-plugin".to_owned();
            if flag(&opts, "tls") {
                plugin.push_str(";tls");
            }
            for key in ["host", "path"] {
                if let Some(value) = text(&opts, key) {
                    plugin.push_str(&format!(";{key}={value}"));
                }
            }
            Ok(Some(plugin))
        }
        other => Err(format!("shadowsocks plugin {other:?} is not supported")),
    }
}

fn stream(p: &Value) -> Stream {
    let network = text(p, "network");
    let opts = |key: &str| p.get(key).cloned().unwrap_or(Value::Null);
    let mut stream = Stream {
        network: network.clone(),
        ..Stream::default()
    };
    match network.as_deref() {
        Some("ws") => {
            let ws = opts("ws-opts");
            stream.path = text(&ws, "path");
            stream.host = ws.get("headers").and_then(|h| text(h, "Host"));
        }
        Some("grpc") => {
            stream.service_name = text(&opts("grpc-opts"), "grpc-service-name");
        }
        Some("h2") => {
            let h2 = opts("h2-opts");
            stream.path = text(&h2, "path");
            let hosts = list(&h2, "host");
            stream.host = (!hosts.is_empty()).then(|| hosts.join(","));
        }
        Some("http") => {
            // Clash's `network: http` is HTTP/1.1 header obfuscation; cores call it tcp+http.
            stream.network = Some("tcp".into());
        }
        _ => {}
    }
    stream
}

fn tls(p: &Value) -> Tls {
    let reality = p.get("reality-opts").and_then(|r| {
        Some((
            text(r, "public-key")?,
            text(r, "short-id").unwrap_or_default(),
        ))
    });
    Tls {
        enabled: flag(p, "tls") || reality.is_some(),
        sni: text(p, "servername").or_else(|| text(p, "sni")),
        alpn: list(p, "alpn"),
        fingerprint: text(p, "client-fingerprint"),
        insecure: flag(p, "skip-cert-verify"),
        reality,
    }
}

#[cfg(test)]
mod tests {
    use crate::links::{Protocol, Security, Transport};
    use crate::subs::formats::{parse_body, Format};

    const YAML: &str = r#"
mixed-port: 7890
proxies:
  - name: "HK vmess"
    type: vmess
    server: hk.example.com
    port: 443
    uuid: b831381d-6324-4d53-ad4f-8cda48b30811
    alterId: 0
    cipher: auto
    tls: true
    servername: hk.example.com
    network: ws
    ws-opts:
      path: /ray
      headers:
        Host: cdn.example.com
  - {name: "SG ss", type: ss, server: 198.51.100.4, port: 8388, cipher: aes-256-gcm, password: 123456}
  - name: JP reality
    type: vless
    server: 203.0.113.7
    port: 443
    uuid: b831381d-6324-4d53-ad4f-8cda48b30811
    flow: xtls-rprx-vision
    network: tcp
    tls: true
    servername: www.microsoft.com
    client-fingerprint: chrome
    reality-opts:
      public-key: SbVKOEMjK0sIlbwg4akyBg5mL5KZwwB-ed4eEE7YnRc
      short-id: 6ba85179e30d4fc2
  - {name: "US trojan", type: trojan, server: t.example.com, port: 443, password: pw, sni: t.example.com}
  - {name: "snell", type: snell, server: s.example.com, port: 443, psk: x}
proxy-groups: []
"#;

    #[test]
    fn clash_entries() {
        let parsed = parse_body(YAML, "u").unwrap();
        assert_eq!(parsed.format, Format::Clash);
        let names: Vec<_> = parsed
            .entries
            .iter()
            .map(|e| {
                e.result
                    .as_ref()
                    .map(|l| l.name.clone())
                    .map_err(Clone::clone)
            })
            .collect();
        assert_eq!(names[0], Ok("HK vmess".into()));
        assert_eq!(names[1], Ok("SG ss".into()));
        assert_eq!(names[2], Ok("JP reality".into()));
        assert_eq!(names[3], Ok("US trojan".into()));
        assert_eq!(
            names[4],
            Err("proxy type \"snell\" is not supported".into())
        );
        let vmess = &parsed.entries[0].result.as_ref().unwrap().outbound;
        assert_eq!(
            vmess.transport,
            Transport::Ws {
                path: "/ray".into(),
                host: Some("cdn.example.com".into())
            }
        );
        let ss = &parsed.entries[1].result.as_ref().unwrap().outbound;
        assert!(
            matches!(ss.protocol, Protocol::Shadowsocks { ref password, .. } if password == "123456")
        );
        let reality = &parsed.entries[2].result.as_ref().unwrap().outbound;
        assert!(matches!(reality.security, Security::Reality(_)));
        let trojan = &parsed.entries[3].result.as_ref().unwrap().outbound;
        assert!(matches!(trojan.security, Security::Tls(_)));
    }
}
