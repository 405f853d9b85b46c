//! sing-box `outbounds` entries → [`Node`] (field names of sing-box's outbound docs:
//! `server_port`, `tls.server_name`, `transport.type`, …).

use serde_json::Value;

use super::formats::{flag, list, need, port, text};
use super::node::{Kind, Node, Stream, Tls};

/// One outbound.
pub fn node(o: &Value) -> Result<Node, String> {
    let kind_name = need(o, "type")?.to_ascii_lowercase();
    let server = need(o, "server")?;
    let port = port(o, "server_port")?;
    let tls = tls(o);
    let kind = match kind_name.as_str() {
        "shadowsocks" => Kind::Shadowsocks {
            method: need(o, "method")?,
            password: need(o, "password")?,
            plugin: text(o, "plugin").map(|name| match text(o, "plugin_opts") {
                Some(opts) => format!("{name};{opts}"),
                None => name,
            }),
        },
        "vmess" => Kind::Vmess {
            uuid: need(o, "uuid")?,
            alter_id: o.get("alter_id").and_then(Value::as_u64).unwrap_or(0) as u16,
            cipher: text(o, "security").unwrap_or_else(|| "auto".into()),
        },
        "vless" => Kind::Vless {
            uuid: need(o, "uuid")?,
            flow: text(o, "flow"),
        },
        "trojan" => Kind::Trojan {
            password: need(o, "password")?,
        },
        "socks" | "http" => Kind::Plain {
            scheme: match (kind_name.as_str(), tls.enabled) {
                ("http", true) => "https",
                ("http", false) => "http",
                _ => "socks5",
            },
            auth: text(o, "username").map(|u| (u, text(o, "password").unwrap_or_default())),
        },
        "hysteria2" => Kind::Hysteria2 {
            password: need(o, "password")?,
            obfs_password: o.get("obfs").and_then(|obfs| text(obfs, "password")),
        },
        "tuic" => Kind::Tuic {
            uuid: need(o, "uuid")?,
            password: need(o, "password")?,
            congestion: text(o, "congestion_control"),
            udp_relay_mode: text(o, "udp_relay_mode"),
        },
        "anytls" => Kind::Anytls {
            password: need(o, "password")?,
        },
        other => return Err(format!("outbound type {other:?} is not supported")),
    };
    Ok(Node {
        name: text(o, "tag").unwrap_or_else(|| format!("{kind_name} {server}:{port}")),
        server,
        port,
        kind,
        stream: stream(o),
        tls,
    })
}

fn stream(o: &Value) -> Stream {
    let Some(t) = o.get("transport") else {
        return Stream::default();
    };
    let kind = text(t, "type");
    let header_host = t.get("headers").and_then(|h| text(h, "Host"));
    match kind.as_deref() {
        Some("grpc") => Stream {
            network: kind,
            service_name: text(t, "service_name"),
            ..Stream::default()
        },
        Some("http") => {
            let hosts = list(t, "host");
            Stream {
                network: Some("h2".into()),
                path: text(t, "path"),
                host: (!hosts.is_empty()).then(|| hosts.join(",")),
                ..Stream::default()
            }
        }
        _ => Stream {
            network: kind,
            path: text(t, "path"),
            host: header_host.or_else(|| text(t, "host")),
            ..Stream::default()
        },
    }
}

fn tls(o: &Value) -> Tls {
    let Some(t) = o.get("tls").filter(|t| flag(t, "enabled")) else {
        return Tls::default();
    };
    let reality = t
        .get("reality")
        .filter(|r| flag(r, "enabled"))
        .and_then(|r| {
            Some((
                text(r, "public_key")?,
                text(r, "short_id").unwrap_or_default(),
            ))
        });
    Tls {
        enabled: true,
        sni: text(t, "server_name"),
        alpn: list(t, "alpn"),
        fingerprint: t
            .get("utls")
            .filter(|u| flag(u, "enabled"))
            .and_then(|u| text(u, "fingerprint")),
        insecure: flag(t, "insecure"),
        reality,
    }
}

#[cfg(test)]
mod tests {
    use crate::links::{Protocol, Security, Transport};
    use crate::subs::formats::{parse_body, Format};

    #[test]
    fn singbox_outbounds() {
        let body = r#"{"outbounds":[
          {"type":"selector","tag":"proxy","outbounds":["a"]},
          {"type":"vless","tag":"a","server":"203.0.113.1","server_port":443,
           "uuid":"b831381d-6324-4d53-ad4f-8cda48b30811",
           "tls":{"enabled":true,"server_name":"a.example","utls":{"enabled":true,"fingerprint":"chrome"}},
           "transport":{"type":"ws","path":"/w","headers":{"Host":"cdn.example"}}},
          {"type":"shadowsocks","tag":"b","server":"203.0.113.2","server_port":8388,
           "method":"aes-128-gcm","password":"pw"},
          {"type":"direct","tag":"direct"},
          {"type":"wireguard","tag":"wg","server":"203.0.113.3","server_port":51820}]}"#;
        let parsed = parse_body(body, "u").unwrap();
        assert_eq!(parsed.format, Format::SingBox);
        assert_eq!(parsed.entries.len(), 3);
        let a = &parsed.entries[0].result.as_ref().unwrap().outbound;
        assert!(
            matches!(a.transport, Transport::Ws { ref host, .. } if host.as_deref() == Some("cdn.example"))
        );
        assert!(
            matches!(a.security, Security::Tls(ref t) if t.fingerprint.as_deref() == Some("chrome"))
        );
        let b = &parsed.entries[1].result.as_ref().unwrap().outbound;
        assert!(matches!(b.protocol, Protocol::Shadowsocks { .. }));
        assert!(parsed.entries[2]
            .result
            .as_ref()
            .unwrap_err()
            .contains("wireguard"));
    }
}
