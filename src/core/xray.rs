//! The Xray/V2Ray JSON format, shared by Xray, V2Ray 4 and V2Ray 5 (which reads this "v4"
//! format from `.json` files). The differences between them are small and handled inline;
//! what a core cannot run at all was refused by `support` before we get here.
//!
//! No routing rules that need `geoip.dat`/`geosite.dat`: Debian's v2ray ships neither, and a
//! rule naming them makes the core fail to start.

use std::net::IpAddr;

use serde_json::{json, Map, Value};

use super::{CoreBinary, CoreKind, Inbounds, PoolInbound};
use crate::links::{Outbound, Protocol, RealitySettings, Security, TlsSettings, Transport};

/// Xray 1.8.10 added `wsSettings.host` and later deprecated `headers.Host` in its favour.
const XRAY_WS_HOST_FIELD: (u32, u32, u32) = (1, 8, 10);

/// The session config: SOCKS (+ HTTP) inbound, `outbound` as the only, hence default, outbound.
pub(crate) fn session(core: &CoreBinary, inbounds: &Inbounds, outbound: &Outbound) -> Value {
    let mut inbound_list = vec![socks_inbound(
        "socks-in",
        inbounds.listen,
        inbounds.socks_port,
    )];
    if let Some(port) = inbounds.http_port {
        inbound_list.push(http_inbound("http-in", inbounds.listen, port));
    }
    json!({
        "log": log(),
        "inbounds": inbound_list,
        "outbounds": [render_outbound(core, outbound, "proxy")],
    })
}

/// A batch or pool config: per member, its inbounds (`in-<port>`, `http-<port>`) routed to its
/// outbound (`out-<port>`) by one rule.
pub(crate) fn members(core: &CoreBinary, listen: IpAddr, members: &[PoolInbound<'_>]) -> Value {
    let mut inbounds = Vec::with_capacity(members.len());
    let mut outbounds = Vec::with_capacity(members.len());
    let mut rules = Vec::with_capacity(members.len());
    for member in members {
        let tags = member.tags();
        inbounds.push(socks_inbound(&tags.socks, listen, member.socks_port));
        if let (Some(tag), Some(port)) = (&tags.http, member.http_port) {
            inbounds.push(http_inbound(tag, listen, port));
        }
        outbounds.push(render_outbound(core, member.outbound, &tags.outbound));
        rules.push(json!({
            "type": "field",
            "inboundTag": tags.inbounds(),
            "outboundTag": tags.outbound,
        }));
    }
    json!({
        "log": log(),
        "inbounds": inbounds,
        "outbounds": outbounds,
        "routing": { "domainStrategy": "AsIs", "rules": rules },
    })
}

/// Warnings only, and no access log: V2Ray and Xray otherwise write a line per connection to
/// stdout, so the core log would grow with every probe and record every site the user visits.
fn log() -> Value {
    json!({ "loglevel": "warning", "access": "none" })
}

fn http_inbound(tag: &str, listen: IpAddr, port: u16) -> Value {
    json!({
        "tag": tag,
        "protocol": "http",
        "listen": listen.to_string(),
        "port": port,
        "settings": {},
    })
}

fn socks_inbound(tag: &str, listen: IpAddr, port: u16) -> Value {
    let mut settings = json!({ "auth": "noauth", "udp": true });
    // `ip` is the address a UDP ASSOCIATE reply points clients to; the default (127.0.0.1)
    // is wrong for any other listen address. A wildcard listen has no single right answer,
    // so the core's default stays.
    if !listen.is_unspecified() {
        settings["ip"] = json!(listen.to_string());
    }
    json!({
        "tag": tag,
        "protocol": "socks",
        "listen": listen.to_string(),
        "port": port,
        "settings": settings,
    })
}

/// One outbound: protocol settings plus `streamSettings`.
pub(crate) fn render_outbound(core: &CoreBinary, outbound: &Outbound, tag: &str) -> Value {
    let (protocol, mut settings) = protocol_settings(outbound);
    if matches!(core.kind, CoreKind::V2ray4 | CoreKind::V2ray5) {
        // V2Ray parses only UUIDs; Xray maps short strings itself (see `user_id`).
        if let Some(user) = settings.pointer_mut("/vnext/0/users/0") {
            if let Some(id) = user.get("id").and_then(Value::as_str) {
                user["id"] = json!(super::user_id::for_v2ray(id));
            }
        }
    }
    let mut stream = Map::new();
    let (network, key, transport) = transport_settings(core, &outbound.transport);
    stream.insert("network".into(), json!(network));
    if let Some(key) = key {
        stream.insert(key.into(), transport);
    }
    match &outbound.security {
        Security::None => {
            stream.insert("security".into(), json!("none"));
        }
        Security::Tls(tls) => {
            stream.insert("security".into(), json!("tls"));
            stream.insert("tlsSettings".into(), tls_settings(core, tls));
        }
        Security::Reality(reality) => {
            stream.insert("security".into(), json!("reality"));
            stream.insert("realitySettings".into(), reality_settings(reality));
        }
    }
    json!({
        "tag": tag,
        "protocol": protocol,
        "settings": settings,
        "streamSettings": stream,
    })
}

/// The `protocol` name and its `settings` object.
fn protocol_settings(outbound: &Outbound) -> (&'static str, Value) {
    let (address, port) = (&outbound.server, outbound.port);
    match &outbound.protocol {
        Protocol::Vmess {
            id,
            alter_id,
            security,
        } => {
            let user = json!({ "id": id, "alterId": alter_id, "security": security.as_str() });
            (
                "vmess",
                json!({ "vnext": [{ "address": address, "port": port, "users": [user] }] }),
            )
        }
        Protocol::Vless {
            id,
            flow,
            encryption,
        } => {
            let mut user = json!({ "id": id, "encryption": encryption });
            if let Some(flow) = flow {
                user["flow"] = json!(flow);
            }
            (
                "vless",
                json!({ "vnext": [{ "address": address, "port": port, "users": [user] }] }),
            )
        }
        Protocol::Trojan { password } => (
            "trojan",
            json!({ "servers": [{ "address": address, "port": port, "password": password }] }),
        ),
        Protocol::Shadowsocks { method, password } => {
            let server = json!({
                "address": address,
                "port": port,
                "method": method.as_str(),
                "password": password,
            });
            ("shadowsocks", json!({ "servers": [server] }))
        }
        Protocol::Socks { auth } => {
            let mut server = json!({ "address": address, "port": port });
            if let Some(auth) = auth {
                server["users"] = json!([{ "user": auth.username, "pass": auth.password }]);
            }
            ("socks", json!({ "servers": [server] }))
        }
        Protocol::Http { auth } => {
            let mut server = json!({ "address": address, "port": port });
            if let Some(auth) = auth {
                server["users"] = json!([{ "user": auth.username, "pass": auth.password }]);
            }
            ("http", json!({ "servers": [server] }))
        }
        // Refused by `support` before any render; never written to a file.
        Protocol::Hysteria2 { .. }
        | Protocol::Tuic { .. }
        | Protocol::Anytls { .. }
        | Protocol::Wireguard { .. } => ("blackhole", json!({})),
    }
}

/// `network`, the name of its settings object (none for tcp), and the object.
fn transport_settings(
    core: &CoreBinary,
    transport: &Transport,
) -> (&'static str, Option<&'static str>, Value) {
    match transport {
        Transport::Tcp => ("tcp", None, Value::Null),
        Transport::Ws { path, host } => {
            let mut ws = json!({ "path": path });
            // The `?ed=2048` early-data suffix stays in the path: Xray reads it there, and
            // V2Ray sends it as a plain query, which servers ignore when matching the path.
            if let Some(host) = host {
                if core.kind == CoreKind::Xray && core.version_at_least(XRAY_WS_HOST_FIELD) {
                    ws["host"] = json!(host);
                } else {
                    ws["headers"] = json!({ "Host": host });
                }
            }
            ("ws", Some("wsSettings"), ws)
        }
        Transport::Grpc {
            service_name,
            multi_mode,
        } => {
            let mut grpc = json!({ "serviceName": service_name });
            // V2Ray has no multi mode; a gRPC server accepts the single-stream method too
            // (Xray serves both `Tun` and `TunMulti`), so it is left out rather than refused.
            if core.kind == CoreKind::Xray {
                grpc["multiMode"] = json!(multi_mode);
            }
            ("grpc", Some("grpcSettings"), grpc)
        }
        Transport::H2 { path, host } => {
            let mut http = json!({ "path": path });
            if !host.is_empty() {
                http["host"] = json!(host);
            }
            ("h2", Some("httpSettings"), http)
        }
        Transport::HttpUpgrade { path, host } => {
            let mut upgrade = json!({ "path": path });
            if let Some(host) = host {
                upgrade["host"] = json!(host);
            }
            ("httpupgrade", Some("httpupgradeSettings"), upgrade)
        }
        Transport::Xhttp {
            path,
            host,
            mode,
            extra,
        } => {
            let mut xhttp = json!({ "path": path, "mode": mode.as_deref().unwrap_or("auto") });
            if let Some(host) = host {
                xhttp["host"] = json!(host);
            }
            // The parser checked it is a JSON object.
            if let Some(extra) = extra
                .as_deref()
                .and_then(|e| serde_json::from_str::<Value>(e).ok())
            {
                xhttp["extra"] = extra;
            }
            ("xhttp", Some("xhttpSettings"), xhttp)
        }
        // Refused by `support` before any render; never written to a file.
        Transport::Obfs { .. } | Transport::ShadowTls { .. } => ("tcp", None, json!({})),
    }
}

fn tls_settings(core: &CoreBinary, tls: &TlsSettings) -> Value {
    let mut settings = Map::new();
    if let Some(sni) = &tls.sni {
        settings.insert("serverName".into(), json!(sni));
    }
    if !tls.alpn.is_empty() {
        settings.insert("alpn".into(), json!(tls.alpn));
    }
    // Only written when set: recent Xray refuses the key when true and warns about it at all.
    if tls.allow_insecure {
        settings.insert("allowInsecure".into(), json!(true));
    }
    // V2Ray has no uTLS; it would ignore the key, so it is not written (see `support`).
    if let (Some(fingerprint), true) = (&tls.fingerprint, core.utls) {
        settings.insert("fingerprint".into(), json!(fingerprint));
    }
    Value::Object(settings)
}

fn reality_settings(reality: &RealitySettings) -> Value {
    // Xray refuses a REALITY client without a fingerprint; `chrome` is what links and
    // panels default to.
    let fingerprint = reality.fingerprint.as_deref().unwrap_or("chrome");
    let mut settings = json!({
        "publicKey": reality.public_key,
        "shortId": reality.short_id,
        "fingerprint": fingerprint,
    });
    if let Some(sni) = &reality.sni {
        settings["serverName"] = json!(sni);
    }
    if let Some(spider) = &reality.spider_x {
        settings["spiderX"] = json!(spider);
    }
    settings
}

#[cfg(test)]
#[path = "xray_tests.rs"]
mod tests;
