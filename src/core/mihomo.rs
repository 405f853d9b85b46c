//! The mihomo (Clash.Meta) config, as mihomo 1.19 reads it. Its format is YAML; it is
//! written here as JSON, which YAML 1.2 parsers (mihomo's included) read as YAML, so no YAML
//! dependency is needed and the file looks like the other cores' to a person reading it.
//!
//! mihomo ignores keys it does not know, and `mihomo -t` does not even check that a
//! listener's `proxy:` names an existing proxy, so the shapes here are pinned by the unit tests
//! and by sessions run end to end; `-t` catches only what mihomo validates while building the
//! proxies (unknown types and ciphers, bad REALITY keys).
//!
//! What the config leaves out on purpose:
//! - No external controller (`external-controller` and friends unset), no `port`,
//!   `socks-port` or `mixed-port`: the only ports are the `listeners` rendered here.
//! - No geodata: no GEOIP/GEOSITE rule, no DNS section (so no fallback filter), and
//!   `geo-auto-update: false`, so mihomo neither loads nor downloads Country.mmdb or
//!   geosite/geoip files (checked offline with strace: no connect at start).
//! - `profile.store-selected` and `store-fake-ip` off: otherwise mihomo creates `cache.db` in
//!   its home directory (the config's directory, see `run_args`), which sessions and batch
//!   cores would share.
//! - `find-process-mode: off`: no per-connection scan of `/proc` for the owning process.

use std::net::IpAddr;

use serde_json::{json, Map, Value};

use super::singbox::split_early_data;
use super::{Inbounds, PoolInbound};
use crate::links::{Outbound, Protocol, RealitySettings, Security, TlsSettings, Transport};

/// Xray clients read early data from a `?ed=N` path suffix and send it in this header; mihomo
/// needs both spelled out to do the same.
const EARLY_DATA_HEADER: &str = "Sec-WebSocket-Protocol";

/// The session config: SOCKS (+ HTTP) listeners, everything sent to `outbound`.
pub(crate) fn session(inbounds: &Inbounds, outbound: &Outbound) -> Value {
    let mut listeners = vec![listener(
        "socks",
        "socks-in",
        inbounds.listen,
        inbounds.socks_port,
        "proxy",
    )];
    if let Some(port) = inbounds.http_port {
        listeners.push(listener("http", "http-in", inbounds.listen, port, "proxy"));
    }
    config(listeners, vec![render_proxy(outbound, "proxy")], "proxy")
}

/// A batch or pool config: per member, its listeners (`in-<port>`, `http-<port>`) send to its
/// proxy (`out-<port>`). Traffic that somehow reached the rules instead would be rejected,
/// never sent through another member, so a broken listener binding shows as a failed probe.
pub(crate) fn members(listen: IpAddr, members: &[PoolInbound<'_>]) -> Value {
    let mut listeners = Vec::with_capacity(members.len());
    let mut proxies = Vec::with_capacity(members.len());
    for member in members {
        let tags = member.tags();
        listeners.push(listener(
            "socks",
            &tags.socks,
            listen,
            member.socks_port,
            &tags.outbound,
        ));
        if let (Some(tag), Some(port)) = (&tags.http, member.http_port) {
            listeners.push(listener("http", tag, listen, port, &tags.outbound));
        }
        proxies.push(render_proxy(member.outbound, &tags.outbound));
    }
    config(listeners, proxies, "REJECT")
}

/// The top level: rule mode with one `MATCH` rule (each listener names its proxy anyway).
fn config(listeners: Vec<Value>, proxies: Vec<Value>, fallback: &str) -> Value {
    json!({
        "log-level": "warning",
        "mode": "rule",
        "ipv6": true,
        "find-process-mode": "off",
        "geo-auto-update": false,
        "profile": { "store-selected": false, "store-fake-ip": false },
        "listeners": listeners,
        "proxies": proxies,
        "rules": [format!("MATCH,{fallback}")],
    })
}

/// A SOCKS or HTTP listener without users (so no authentication), with UDP for SOCKS.
fn listener(kind: &str, name: &str, listen: IpAddr, port: u16, proxy: &str) -> Value {
    let mut value = json!({
        "name": name,
        "type": kind,
        "listen": listen.to_string(),
        "port": port,
        "proxy": proxy,
    });
    if kind == "socks" {
        value["udp"] = json!(true);
    }
    value
}

/// One entry of `proxies`: protocol fields, then TLS/REALITY and transport where they apply.
/// `support` has refused what mihomo cannot carry, so every arm here is one mihomo runs.
pub(crate) fn render_proxy(outbound: &Outbound, name: &str) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), json!(name));
    out.insert("server".into(), json!(outbound.server));
    out.insert("port".into(), json!(outbound.port));
    out.insert("udp".into(), json!(true));
    protocol_fields(&outbound.protocol, &mut out);
    if let Protocol::Shadowsocks { .. } = &outbound.protocol {
        match &outbound.transport {
            Transport::Ws { path, host } => {
                out.insert("plugin".into(), json!("v2ray-plugin"));
                out.insert(
                    "plugin-opts".into(),
                    v2ray_plugin(path, host.as_deref(), &outbound.security),
                );
            }
            Transport::Obfs { mode, host } => {
                let mut options = json!({ "mode": mode.as_str() });
                if let Some(host) = host {
                    options["host"] = json!(host);
                }
                out.insert("plugin".into(), json!("obfs"));
                out.insert("plugin-opts".into(), options);
            }
            Transport::ShadowTls {
                version,
                host,
                password,
            } => {
                out.insert("plugin".into(), json!("shadow-tls"));
                out.insert(
                    "plugin-opts".into(),
                    json!({ "host": host, "password": password, "version": version }),
                );
            }
            _ => {}
        }
        return Value::Object(out);
    }
    // Trojan, hysteria2, tuic and anytls name the server name `sni` and always speak TLS;
    // http calls it `sni` too but needs `tls: true`, as vmess and vless (`servername`) do.
    let always_tls = matches!(
        outbound.protocol,
        Protocol::Trojan { .. }
            | Protocol::Hysteria2 { .. }
            | Protocol::Tuic { .. }
            | Protocol::Anytls { .. }
    );
    let http = matches!(outbound.protocol, Protocol::Http { .. });
    let sni_key = if always_tls || http {
        "sni"
    } else {
        "servername"
    };
    match &outbound.security {
        Security::None => {}
        Security::Tls(tls) => {
            if !always_tls {
                out.insert("tls".into(), json!(true));
            }
            tls_fields(tls, sni_key, &mut out);
        }
        Security::Reality(reality) => {
            out.insert("tls".into(), json!(true));
            reality_fields(reality, sni_key, &mut out);
        }
    }
    if !matches!(
        outbound.protocol,
        Protocol::Socks { .. } | Protocol::Http { .. }
    ) {
        transport_fields(&outbound.transport, &mut out);
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
            set("alterId", json!(alter_id));
            set("cipher", json!(security.as_str()));
        }
        Protocol::Vless {
            id,
            flow,
            encryption,
        } => {
            set("type", json!("vless"));
            set("uuid", json!(id));
            // mihomo knows `xtls-rprx-vision` (it cuts longer names to their first 16
            // characters); `-udp443` differs only on the client, as for sing-box.
            if flow.is_some() {
                set("flow", json!("xtls-rprx-vision"));
            }
            if !encryption.eq_ignore_ascii_case("none") {
                set("encryption", json!(encryption));
            }
        }
        Protocol::Trojan { password } => {
            set("type", json!("trojan"));
            set("password", json!(password));
        }
        Protocol::Http { auth } => {
            set("type", json!("http"));
            if let Some(auth) = auth {
                set("username", json!(auth.username));
                set("password", json!(auth.password));
            }
        }
        Protocol::Socks { auth } => {
            set("type", json!("socks5"));
            if let Some(auth) = auth {
                set("username", json!(auth.username));
                set("password", json!(auth.password));
            }
        }
        Protocol::Shadowsocks { method, password } => {
            set("type", json!("ss"));
            set("cipher", json!(method.as_str()));
            set("password", json!(password));
        }
        Protocol::Hysteria2 {
            password,
            obfs_password,
        } => {
            set("type", json!("hysteria2"));
            set("password", json!(password));
            if let Some(obfs) = obfs_password {
                set("obfs", json!("salamander"));
                set("obfs-password", json!(obfs));
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
                set("congestion-controller", json!(congestion));
            }
            if let Some(mode) = udp_relay_mode {
                set("udp-relay-mode", json!(mode));
            }
            if *zero_rtt {
                set("reduce-rtt", json!(true));
            }
        }
        Protocol::Anytls { password } => {
            set("type", json!("anytls"));
            set("password", json!(password));
        }
        Protocol::Wireguard {
            private_key,
            public_key,
            pre_shared_key,
            ipv4,
            ipv6,
            reserved,
            mtu,
        } => {
            set("type", json!("wireguard"));
            set("private-key", json!(private_key));
            set("public-key", json!(public_key));
            if let Some(psk) = pre_shared_key {
                set("pre-shared-key", json!(psk));
            }
            if let Some(ip) = ipv4 {
                set("ip", json!(ip));
            }
            if let Some(ip) = ipv6 {
                set("ipv6", json!(ip));
            }
            if let Some(reserved) = reserved {
                set("reserved", json!(reserved));
            }
            if let Some(mtu) = mtu {
                set("mtu", json!(mtu));
            }
        }
    }
}

fn tls_fields(tls: &TlsSettings, sni_key: &str, out: &mut Map<String, Value>) {
    if let Some(sni) = &tls.sni {
        out.insert(sni_key.into(), json!(sni));
    }
    if !tls.alpn.is_empty() {
        out.insert("alpn".into(), json!(tls.alpn));
    }
    if let Some(fingerprint) = &tls.fingerprint {
        out.insert("client-fingerprint".into(), json!(fingerprint));
    }
    if tls.allow_insecure {
        out.insert("skip-cert-verify".into(), json!(true));
    }
    if let Some(ech) = &tls.ech {
        out.insert("ech-opts".into(), json!({ "enable": true, "config": ech }));
    }
}

/// REALITY needs a uTLS fingerprint; links without one get Chrome's, as on the other cores.
/// `spider_x` has no mihomo field: it only shapes the client's probing, not the handshake.
fn reality_fields(reality: &RealitySettings, sni_key: &str, out: &mut Map<String, Value>) {
    if let Some(sni) = &reality.sni {
        out.insert(sni_key.into(), json!(sni));
    }
    let fingerprint = reality.fingerprint.as_deref().unwrap_or("chrome");
    out.insert("client-fingerprint".into(), json!(fingerprint));
    out.insert(
        "reality-opts".into(),
        json!({ "public-key": reality.public_key, "short-id": reality.short_id }),
    );
}

fn transport_fields(transport: &Transport, out: &mut Map<String, Value>) {
    let (network, options) = match transport {
        // Obfs and ShadowTLS are Shadowsocks-only and rendered with it.
        Transport::Tcp | Transport::Obfs { .. } | Transport::ShadowTls { .. } => return,
        Transport::Ws { path, host } => ("ws", ws_options(path, host.as_deref())),
        Transport::HttpUpgrade { path, host } => {
            let mut options = json!({ "path": path, "v2ray-http-upgrade": true });
            if let Some(host) = host {
                options["headers"] = json!({ "Host": host });
            }
            ("ws", options)
        }
        // No multi mode in mihomo; servers accept the single-stream method too.
        Transport::Grpc { service_name, .. } => {
            ("grpc", json!({ "grpc-service-name": service_name }))
        }
        Transport::H2 { path, host } => {
            let mut options = json!({ "path": path });
            if !host.is_empty() {
                options["host"] = json!(host);
            }
            ("h2", options)
        }
        // `support` refused links with `extra`.
        Transport::Xhttp {
            path, host, mode, ..
        } => {
            let mut options = json!({ "path": path, "mode": mode.as_deref().unwrap_or("auto") });
            if let Some(host) = host {
                options["host"] = json!(host);
            }
            ("xhttp", options)
        }
    };
    let key = match network {
        "grpc" => "grpc-opts",
        "h2" => "h2-opts",
        "xhttp" => "xhttp-opts",
        _ => "ws-opts",
    };
    out.insert("network".into(), json!(network));
    out.insert(key.into(), options);
}

fn ws_options(path: &str, host: Option<&str>) -> Value {
    let (path, early_data) = split_early_data(path);
    let mut options = json!({ "path": path });
    if let Some(host) = host {
        options["headers"] = json!({ "Host": host });
    }
    if let Some(bytes) = early_data {
        options["max-early-data"] = json!(bytes);
        options["early-data-header-name"] = json!(EARLY_DATA_HEADER);
    }
    options
}

/// Shadowsocks over WebSocket through mihomo's built-in v2ray-plugin: plain WebSocket (mux
/// off), which is what an Xray or V2Ray `shadowsocks` + `ws` server speaks. Its `host` is
/// both the Host header and the TLS server name (`support` refused links where they differ).
/// It has no early data, ALPN or uTLS setting, so those are left out.
fn v2ray_plugin(path: &str, host: Option<&str>, security: &Security) -> Value {
    let (path, _early_data) = split_early_data(path);
    let mut options = json!({ "mode": "websocket", "path": path, "mux": false });
    let tls = match security {
        Security::Tls(tls) => Some(tls),
        _ => None,
    };
    let host = host.or(tls.and_then(|tls| tls.sni.as_deref()));
    if let Some(host) = host {
        options["host"] = json!(host);
    }
    if let Some(tls) = tls {
        options["tls"] = json!(true);
        if tls.allow_insecure {
            options["skip-cert-verify"] = json!(true);
        }
    }
    options
}

#[cfg(test)]
#[path = "mihomo_tests.rs"]
mod tests;
