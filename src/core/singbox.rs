//! The sing-box JSON format, as sing-box 1.14 reads it. Unknown fields are fatal there, and
//! 1.14 removed the legacy `dns` outbound, inbound `sniff` fields, the legacy DNS server format,
//! geoip rules and outbound `domain_strategy`, so none of those are written.

use std::net::IpAddr;

use serde_json::{json, Map, Value};

use super::{CoreBinary, Inbounds, PoolInbound};
use crate::links::{Outbound, Protocol, RealitySettings, Security, TlsSettings, Transport};

/// Xray clients read early data from a `?ed=N` path suffix and send it in this header; sing-box
/// needs both spelled out to do the same.
const EARLY_DATA_HEADER: &str = "Sec-WebSocket-Protocol";

/// The session config: SOCKS (+ HTTP) inbound, everything routed to `outbound`.
pub(crate) fn session(core: &CoreBinary, inbounds: &Inbounds, outbound: &Outbound) -> Value {
    let mut inbound_list = vec![inbound(
        "socks",
        "socks-in",
        inbounds.listen,
        inbounds.socks_port,
    )];
    if let Some(port) = inbounds.http_port {
        inbound_list.push(inbound("http", "http-in", inbounds.listen, port));
    }
    json!({
        "log": log(),
        "inbounds": inbound_list,
        "outbounds": with_detours(vec![(render_outbound(core, outbound, "proxy"), outbound)]),
        "route": { "final": "proxy" },
    })
}

/// A batch or pool config: per member, its inbounds (`in-<port>`, `http-<port>`) routed to its
/// outbound (`out-<port>`) by one rule.
pub(crate) fn members(core: &CoreBinary, listen: IpAddr, members: &[PoolInbound<'_>]) -> Value {
    let mut inbounds = Vec::with_capacity(members.len());
    let mut outbounds = Vec::with_capacity(members.len());
    let mut rules = Vec::with_capacity(members.len());
    let mut detours = Vec::new();
    for member in members {
        let tags = member.tags();
        inbounds.push(inbound("socks", &tags.socks, listen, member.socks_port));
        if let (Some(tag), Some(port)) = (&tags.http, member.http_port) {
            inbounds.push(inbound("http", tag, listen, port));
        }
        outbounds.push(render_outbound(core, member.outbound, &tags.outbound));
        detours.extend(shadow_tls_detour(member.outbound, &tags.outbound));
        rules.push(json!({ "inbound": tags.inbounds(), "outbound": tags.outbound }));
    }
    // No `final`: every inbound has its rule, and the first outbound is the default anyway.
    outbounds.extend(detours);
    json!({
        "log": log(),
        "inbounds": inbounds,
        "outbounds": outbounds,
        "route": { "rules": rules },
    })
}

/// The rendered outbounds followed by the ShadowTLS outbounds they dial through.
fn with_detours(rendered: Vec<(Value, &Outbound)>) -> Vec<Value> {
    let detours: Vec<Value> = rendered
        .iter()
        .filter_map(|(value, outbound)| shadow_tls_detour(outbound, value["tag"].as_str()?))
        .collect();
    rendered
        .into_iter()
        .map(|(value, _)| value)
        .chain(detours)
        .collect()
}

/// The tag of the ShadowTLS outbound that the outbound tagged `tag` dials through.
fn detour_tag(tag: &str) -> String {
    format!("{tag}-shadowtls")
}

/// sing-box runs ShadowTLS as an outbound of its own that the Shadowsocks outbound dials
/// through (`detour`); it connects to the server, whatever address the Shadowsocks outbound
/// asks for.
fn shadow_tls_detour(outbound: &Outbound, tag: &str) -> Option<Value> {
    let Transport::ShadowTls {
        version,
        host,
        password,
    } = &outbound.transport
    else {
        return None;
    };
    let mut object = json!({
        "type": "shadowtls",
        "tag": detour_tag(tag),
        "server": outbound.server,
        "server_port": outbound.port,
        "version": version,
        "tls": { "enabled": true, "server_name": host },
    });
    if *version > 1 {
        object["password"] = json!(password);
    }
    Some(object)
}

/// Warnings and errors with wall-clock times: the core log sits next to the daemon's, and
/// sing-box otherwise stamps lines with seconds since its start.
fn log() -> Value {
    json!({ "level": "warn", "timestamp": true })
}

/// A SOCKS or HTTP inbound without users (so no authentication); sing-box's SOCKS inbound
/// relays UDP without a switch.
fn inbound(kind: &str, tag: &str, listen: IpAddr, port: u16) -> Value {
    json!({ "type": kind, "tag": tag, "listen": listen.to_string(), "listen_port": port })
}

/// One outbound: protocol fields, then `tls` and `transport` when they apply.
pub(crate) fn render_outbound(core: &CoreBinary, outbound: &Outbound, tag: &str) -> Value {
    let mut out = Map::new();
    out.insert("tag".into(), json!(tag));
    out.insert("server".into(), json!(outbound.server));
    out.insert("server_port".into(), json!(outbound.port));
    protocol_fields(&outbound.protocol, &mut out);
    match &outbound.security {
        Security::None => {}
        Security::Tls(tls) => {
            out.insert("tls".into(), tls_object(core, tls));
        }
        Security::Reality(reality) => {
            out.insert("tls".into(), reality_object(reality));
        }
    }
    if let Transport::Obfs { mode, host } = &outbound.transport {
        // sing-box runs simple-obfs itself, as the SIP003 plugin `obfs-local` with its
        // option string.
        let mut options = format!("obfs={}", mode.as_str());
        if let Some(host) = host {
            options.push_str(&format!(";obfs-host={host}"));
        }
        out.insert("plugin".into(), json!("obfs-local"));
        out.insert("plugin_opts".into(), json!(options));
    } else if let Transport::ShadowTls { .. } = &outbound.transport {
        out.insert("detour".into(), json!(detour_tag(tag)));
    } else if let Some(transport) = transport_object(&outbound.transport) {
        out.insert("transport".into(), transport);
    }
    Value::Object(out)
}

fn protocol_fields(protocol: &Protocol, out: &mut Map<String, Value>) {
    let mut set = |key: &str, value: Value| {
        out.insert(key.into(), value);
    };
    match protocol {
        Protocol::Vmess {
            id,
            alter_id,
            security,
        } => {
            set("type", json!("vmess"));
            set("uuid", json!(id));
            set("security", json!(security.as_str()));
            set("alter_id", json!(alter_id));
        }
        Protocol::Vless { id, flow, .. } => {
            set("type", json!("vless"));
            set("uuid", json!(id));
            // sing-box knows only `xtls-rprx-vision`. The `-udp443` variant differs only on
            // the client (it lets QUIC to port 443 through), so the server accepts plain
            // vision and the session works, with QUIC to 443 falling back to TCP.
            if flow.is_some() {
                set("flow", json!("xtls-rprx-vision"));
            }
        }
        Protocol::Trojan { password } => {
            set("type", json!("trojan"));
            set("password", json!(password));
        }
        Protocol::Shadowsocks { method, password } => {
            set("type", json!("shadowsocks"));
            set("method", json!(method.as_str()));
            set("password", json!(password));
        }
        Protocol::Socks { auth } => {
            set("type", json!("socks"));
            set("version", json!("5"));
            if let Some(auth) = auth {
                set("username", json!(auth.username));
                set("password", json!(auth.password));
            }
        }
        Protocol::Hysteria2 {
            password,
            obfs_password,
        } => {
            set("type", json!("hysteria2"));
            set("password", json!(password));
            if let Some(obfs) = obfs_password {
                set("obfs", json!({ "type": "salamander", "password": obfs }));
            }
        }
        Protocol::Tuic {
            uuid,
            password,
            congestion_control,
            udp_relay_mode,
            zero_rtt,
        } => {
            set("type", json!("tuic"));
            set("uuid", json!(uuid));
            set("password", json!(password));
            if let Some(congestion) = congestion_control {
                set("congestion_control", json!(congestion));
            }
            if let Some(mode) = udp_relay_mode {
                set("udp_relay_mode", json!(mode));
            }
            if *zero_rtt {
                set("zero_rtt_handshake", json!(true));
            }
        }
        Protocol::Http { auth } => {
            set("type", json!("http"));
            if let Some(auth) = auth {
                set("username", json!(auth.username));
                set("password", json!(auth.password));
            }
        }
        Protocol::Anytls { password } => {
            set("type", json!("anytls"));
            set("password", json!(password));
        }
        // Refused by `support` (sing-box 1.14 has WireGuard only as an endpoint).
        Protocol::Wireguard { .. } => set("type", json!("block")),
    }
}

fn tls_object(core: &CoreBinary, tls: &TlsSettings) -> Value {
    let mut object = json!({ "enabled": true });
    if let Some(sni) = &tls.sni {
        object["server_name"] = json!(sni);
    }
    if tls.allow_insecure {
        object["insecure"] = json!(true);
    }
    if !tls.alpn.is_empty() {
        object["alpn"] = json!(tls.alpn);
    }
    // A build without uTLS rejects any `utls` object, so the fingerprint is dropped there
    // (see `support` for why that is a drop and not a refusal).
    if let (Some(fingerprint), true) = (&tls.fingerprint, core.utls) {
        object["utls"] = json!({ "enabled": true, "fingerprint": fingerprint });
    }
    if let Some(ech) = &tls.ech {
        object["ech"] = json!({ "enabled": true, "config": ech_pem(ech) });
    }
    object
}

/// sing-box takes the ECHConfigList as the lines of a PEM block, as `sing-box generate
/// ech-keypair` prints it.
fn ech_pem(ech: &str) -> Vec<String> {
    let mut lines = vec!["-----BEGIN ECH CONFIGS-----".to_owned()];
    // 64 characters a line, as PEM writes them; the text is base64, so ASCII.
    lines.extend(
        ech.as_bytes()
            .chunks(64)
            .map(|chunk| String::from_utf8(chunk.to_vec()).expect("base64 is ASCII")),
    );
    lines.push("-----END ECH CONFIGS-----".to_owned());
    lines
}

/// REALITY rides on the `tls` object; `support` has refused it already when uTLS is missing.
fn reality_object(reality: &RealitySettings) -> Value {
    let fingerprint = reality.fingerprint.as_deref().unwrap_or("chrome");
    let mut object = json!({
        "enabled": true,
        "utls": { "enabled": true, "fingerprint": fingerprint },
        "reality": {
            "enabled": true,
            "public_key": reality.public_key,
            "short_id": reality.short_id,
        },
    });
    if let Some(sni) = &reality.sni {
        object["server_name"] = json!(sni);
    }
    object
}

fn transport_object(transport: &Transport) -> Option<Value> {
    let object = match transport {
        // Obfs and ShadowTLS are rendered with Shadowsocks; xhttp is refused by `support`.
        Transport::Tcp
        | Transport::Obfs { .. }
        | Transport::ShadowTls { .. }
        | Transport::Xhttp { .. } => return None,
        Transport::Ws { path, host } => {
            let (path, early_data) = split_early_data(path);
            let mut ws = json!({ "type": "ws", "path": path });
            if let Some(host) = host {
                ws["headers"] = json!({ "Host": host });
            }
            if let Some(bytes) = early_data {
                ws["max_early_data"] = json!(bytes);
                ws["early_data_header_name"] = json!(EARLY_DATA_HEADER);
            }
            ws
        }
        // No multi mode in sing-box; servers accept the single-stream method too.
        Transport::Grpc { service_name, .. } => {
            json!({ "type": "grpc", "service_name": service_name })
        }
        Transport::H2 { path, host } => {
            let mut http = json!({ "type": "http", "path": path });
            if !host.is_empty() {
                http["host"] = json!(host);
            }
            http
        }
        Transport::HttpUpgrade { path, host } => {
            let mut upgrade = json!({ "type": "httpupgrade", "path": path });
            if let Some(host) = host {
                upgrade["host"] = json!(host);
            }
            upgrade
        }
    };
    Some(object)
}

/// Takes Xray's `ed=N` early-data parameter out of a WebSocket path: `/ws?ed=2048` becomes
/// `/ws` and `Some(2048)`. Other query parameters stay; a malformed `ed` stays too, as text.
pub(crate) fn split_early_data(path: &str) -> (String, Option<u32>) {
    let Some((base, query)) = path.split_once('?') else {
        return (path.to_owned(), None);
    };
    let mut early_data = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.strip_prefix("ed=").map(str::parse::<u32>) {
            Some(Ok(bytes)) if early_data.is_none() => early_data = Some(bytes),
            _ => kept.push(pair),
        }
    }
    if kept.is_empty() {
        return (base.to_owned(), early_data);
    }
    (format!("{base}?{}", kept.join("&")), early_data)
}

#[cfg(test)]
#[path = "singbox_tests.rs"]
mod tests;
