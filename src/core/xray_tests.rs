//! Exact JSON shapes of the Xray/V2Ray format.

use std::net::IpAddr;

use serde_json::{json, Value};

use super::*;
use crate::core::fixtures::*;
use crate::links::{Protocol, ShadowsocksMethod, SocksAuth, Transport, VmessSecurity};

fn xray() -> CoreBinary {
    binary(CoreKind::Xray, "25.10.15")
}

fn v2ray() -> CoreBinary {
    binary(CoreKind::V2ray4, "4.34.0")
}

fn inbounds(http_port: Option<u16>) -> Inbounds {
    Inbounds {
        listen: IpAddr::from([127, 0, 0, 1]),
        socks_port: 1080,
        http_port,
    }
}

#[test]
fn session_vless_ws_tls_on_xray() {
    let config = session(&xray(), &inbounds(Some(8118)), &vless_ws_tls());
    let want = json!({
        "log": { "loglevel": "warning", "access": "none" },
        "inbounds": [
            {
                "tag": "socks-in", "protocol": "socks", "listen": "127.0.0.1", "port": 1080,
                "settings": { "auth": "noauth", "udp": true, "ip": "127.0.0.1" }
            },
            { "tag": "http-in", "protocol": "http", "listen": "127.0.0.1", "port": 8118, "settings": {} }
        ],
        "outbounds": [{
            "tag": "proxy",
            "protocol": "vless",
            "settings": { "vnext": [{
                "address": "proxy.example.com", "port": 443,
                "users": [{ "id": ID, "encryption": "none" }]
            }] },
            "streamSettings": {
                "network": "ws",
                "wsSettings": { "path": "/ws?ed=2048", "host": "cdn.example.com" },
                "security": "tls",
                "tlsSettings": {
                    "serverName": "cdn.example.com",
                    "alpn": ["h2", "http/1.1"],
                    "allowInsecure": true,
                    "fingerprint": "chrome"
                }
            }
        }]
    });
    assert_eq!(config, want);
}

#[test]
fn v2ray_uses_headers_host_and_drops_fingerprint() {
    let out = render_outbound(&v2ray(), &vless_ws_tls(), "proxy");
    assert_eq!(
        out["streamSettings"]["wsSettings"],
        json!({ "path": "/ws?ed=2048", "headers": { "Host": "cdn.example.com" } })
    );
    assert_eq!(
        out["streamSettings"]["tlsSettings"],
        json!({ "serverName": "cdn.example.com", "alpn": ["h2", "http/1.1"], "allowInsecure": true })
    );
    let old_xray = binary(CoreKind::Xray, "1.8.4");
    let out = render_outbound(&old_xray, &vless_ws_tls(), "proxy");
    assert_eq!(
        out["streamSettings"]["wsSettings"]["headers"]["Host"],
        "cdn.example.com"
    );
}

#[test]
fn session_without_http_and_wildcard_listen() {
    let mut wild = inbounds(None);
    wild.listen = "::".parse().unwrap();
    let config = session(
        &v2ray(),
        &wild,
        &outbound(vless(), Transport::Tcp, Security::None),
    );
    assert_eq!(config["inbounds"].as_array().unwrap().len(), 1);
    assert_eq!(
        config["inbounds"][0]["settings"],
        json!({ "auth": "noauth", "udp": true })
    );
    assert_eq!(config["inbounds"][0]["listen"], "::");
    assert_eq!(
        config["outbounds"][0]["streamSettings"],
        json!({ "network": "tcp", "security": "none" })
    );
}

#[test]
fn vision_reality_on_xray() {
    let out = render_outbound(
        &xray(),
        &outbound(vision(), Transport::Tcp, reality()),
        "proxy",
    );
    assert_eq!(
        out["settings"]["vnext"][0]["users"][0],
        json!({ "id": ID, "encryption": "none", "flow": "xtls-rprx-vision" })
    );
    assert_eq!(
        out["streamSettings"],
        json!({
            "network": "tcp",
            "security": "reality",
            "realitySettings": {
                "publicKey": PUBLIC_KEY,
                "shortId": "6ba85179e30d4fc2",
                "fingerprint": "firefox",
                "serverName": "www.microsoft.com",
                "spiderX": "/"
            }
        })
    );
}

/// The protocol part of an outbound over bare tcp, rendered for V2Ray.
fn settings_of(protocol: Protocol) -> Value {
    let out = render_outbound(
        &v2ray(),
        &outbound(protocol, Transport::Tcp, Security::None),
        "t",
    );
    out["settings"].clone()
}

#[test]
fn vmess_and_trojan() {
    let vmess = Protocol::Vmess {
        id: ID.into(),
        alter_id: 0,
        security: VmessSecurity::Aes128Gcm,
    };
    assert_eq!(
        settings_of(vmess),
        json!({ "vnext": [{ "address": "proxy.example.com", "port": 443,
            "users": [{ "id": ID, "alterId": 0, "security": "aes-128-gcm" }] }] })
    );
    let trojan = Protocol::Trojan {
        password: "p@ss".into(),
    };
    let out = render_outbound(
        &v2ray(),
        &outbound(trojan, Transport::Tcp, tls_plain()),
        "t",
    );
    assert_eq!(out["protocol"], "trojan");
    assert_eq!(
        out["settings"],
        json!({ "servers": [{ "address": "proxy.example.com", "port": 443, "password": "p@ss" }] })
    );
    assert_eq!(out["streamSettings"]["tlsSettings"], json!({}));
}

#[test]
fn shadowsocks_and_socks() {
    let ss = Protocol::Shadowsocks {
        method: ShadowsocksMethod::Chacha20IetfPoly1305,
        password: "pw".into(),
    };
    assert_eq!(
        settings_of(ss),
        json!({ "servers": [{ "address": "proxy.example.com", "port": 443,
            "method": "chacha20-ietf-poly1305", "password": "pw" }] })
    );
    let socks = Protocol::Socks {
        auth: Some(SocksAuth {
            username: "u".into(),
            password: "p".into(),
        }),
    };
    assert_eq!(
        settings_of(socks),
        json!({ "servers": [{ "address": "proxy.example.com", "port": 443,
            "users": [{ "user": "u", "pass": "p" }] }] })
    );
    assert_eq!(
        settings_of(Protocol::Socks { auth: None }),
        json!({ "servers": [{ "address": "proxy.example.com", "port": 443 }] })
    );
}

#[test]
fn transports() {
    let stream = |core: &CoreBinary, transport: Transport| -> Value {
        render_outbound(core, &outbound(vless(), transport, tls_plain()), "t")["streamSettings"]
            .clone()
    };
    let grpc = Transport::Grpc {
        service_name: "svc".into(),
        multi_mode: true,
    };
    assert_eq!(
        stream(&xray(), grpc.clone())["grpcSettings"],
        json!({ "serviceName": "svc", "multiMode": true })
    );
    let v5 = binary(CoreKind::V2ray5, "5.16.1");
    assert_eq!(
        stream(&v5, grpc)["grpcSettings"],
        json!({ "serviceName": "svc" })
    );
    let h2 = Transport::H2 {
        path: "/h2".into(),
        host: vec!["a.example.com".into()],
    };
    let s = stream(&v2ray(), h2);
    assert_eq!(s["network"], "h2");
    assert_eq!(
        s["httpSettings"],
        json!({ "path": "/h2", "host": ["a.example.com"] })
    );
    let bare_h2 = stream(
        &v2ray(),
        Transport::H2 {
            path: "/".into(),
            host: vec![],
        },
    );
    assert_eq!(bare_h2["httpSettings"], json!({ "path": "/" }));
    let up = Transport::HttpUpgrade {
        path: "/up".into(),
        host: Some("h.example.com".into()),
    };
    let s = stream(&xray(), up);
    assert_eq!(s["network"], "httpupgrade");
    assert_eq!(
        s["httpupgradeSettings"],
        json!({ "path": "/up", "host": "h.example.com" })
    );
    let s = stream(
        &xray(),
        Transport::Ws {
            path: "/".into(),
            host: None,
        },
    );
    assert_eq!(s["wsSettings"], json!({ "path": "/" }));
}

#[test]
fn reality_fingerprint_defaults_to_chrome() {
    let Security::Reality(mut settings) = reality() else {
        unreachable!()
    };
    settings.fingerprint = None;
    settings.spider_x = None;
    settings.sni = None;
    let out = render_outbound(
        &xray(),
        &outbound(vless(), Transport::Tcp, Security::Reality(settings)),
        "t",
    );
    assert_eq!(
        out["streamSettings"]["realitySettings"],
        json!({ "publicKey": PUBLIC_KEY, "shortId": "6ba85179e30d4fc2", "fingerprint": "chrome" })
    );
}

#[test]
fn batch_routes_each_inbound_to_its_outbound() {
    let a = vless_ws_tls();
    let b = trojan_tls();
    let text = crate::core::render_batch(
        &v2ray(),
        IpAddr::from([127, 0, 0, 1]),
        &[(20001, &a), (20002, &b)],
    );
    let config: Value = serde_json::from_str(&text.unwrap()).unwrap();
    let tags = |key: &str| -> Vec<String> {
        config[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["tag"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(tags("inbounds"), ["in-20001", "in-20002"]);
    assert_eq!(tags("outbounds"), ["out-20001", "out-20002"]);
    assert_eq!(config["inbounds"][1]["port"], 20002);
    assert_eq!(config["outbounds"][1]["protocol"], "trojan");
    assert_eq!(
        config["routing"],
        json!({ "domainStrategy": "AsIs", "rules": [
            { "type": "field", "inboundTag": ["in-20001"], "outboundTag": "out-20001" },
            { "type": "field", "inboundTag": ["in-20002"], "outboundTag": "out-20002" }
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
            http_port: None,
            outbound: &b,
        },
    ];
    let text = crate::core::render_pool(&xray(), IpAddr::from([127, 0, 0, 1]), &members);
    let config: Value = serde_json::from_str(&text.unwrap()).unwrap();
    assert_eq!(config["inbounds"][0]["tag"], "in-20001");
    assert_eq!(
        config["inbounds"][1],
        json!({ "tag": "http-20003", "protocol": "http", "listen": "127.0.0.1",
                "port": 20003, "settings": {} })
    );
    assert_eq!(config["inbounds"][2]["tag"], "in-20002");
    assert_eq!(config["inbounds"].as_array().unwrap().len(), 3);
    assert_eq!(config["outbounds"][1]["tag"], "out-20002");
    assert_eq!(
        config["routing"]["rules"],
        json!([
            { "type": "field", "inboundTag": ["in-20001", "http-20003"], "outboundTag": "out-20001" },
            { "type": "field", "inboundTag": ["in-20002"], "outboundTag": "out-20002" }
        ])
    );
}

#[test]
fn http_proxies() {
    let out = &crate::core::fixtures::http_outbounds()[3];
    let config = session(&xray(), &inbounds(None), out);
    let outbound = &config["outbounds"][0];
    assert_eq!(outbound["protocol"], "http");
    assert_eq!(
        outbound["settings"],
        json!({ "servers": [{ "address": "proxy.example.com", "port": 443,
                              "users": [{ "user": "user", "pass": "pass" }] }] })
    );
    assert_eq!(outbound["streamSettings"]["security"], "tls");
}

#[test]
fn xhttp_with_extra() {
    let out = &crate::core::fixtures::xhttp_outbounds()[2];
    let config = session(&xray(), &inbounds(None), out);
    let stream = &config["outbounds"][0]["streamSettings"];
    assert_eq!(stream["network"], "xhttp");
    assert_eq!(
        stream["xhttpSettings"],
        json!({ "path": "/xh", "mode": "stream-one", "extra": { "xPaddingBytes": "100-1000" } })
    );
}
