//! Exact shapes of the mihomo config, and its support matrix.

use std::net::IpAddr;

use serde_json::{json, Value};

use super::*;
use crate::core::fixtures::*;
use crate::core::{
    check_support, render_batch, render_pool, render_session, CoreKind, PoolInbound,
};
use crate::links::{Protocol, ShadowsocksMethod, SocksAuth, TlsSettings, Transport, VmessSecurity};

fn mihomo() -> crate::core::CoreBinary {
    binary(CoreKind::Mihomo, "1.19.32")
}

fn proxy(out: &Outbound) -> Value {
    render_proxy(out, "p")
}

fn top_level(listeners: Value, proxies: Value, rule: &str) -> Value {
    json!({
        "log-level": "warning",
        "mode": "rule",
        "ipv6": true,
        "find-process-mode": "off",
        "geo-auto-update": false,
        "profile": { "store-selected": false, "store-fake-ip": false },
        "listeners": listeners,
        "proxies": proxies,
        "rules": [rule],
    })
}

#[test]
fn session_vless_ws_tls() {
    let inbounds = Inbounds {
        listen: IpAddr::from([127, 0, 0, 1]),
        socks_port: 1080,
        http_port: Some(8118),
    };
    let text = render_session(&mihomo(), &inbounds, &vless_ws_tls()).unwrap();
    let config: Value = serde_json::from_str(&text).unwrap();
    let want = top_level(
        json!([
            { "name": "socks-in", "type": "socks", "listen": "127.0.0.1", "port": 1080,
              "proxy": "proxy", "udp": true },
            { "name": "http-in", "type": "http", "listen": "127.0.0.1", "port": 8118,
              "proxy": "proxy" }
        ]),
        json!([{
            "name": "proxy",
            "type": "vless",
            "server": "proxy.example.com",
            "port": 443,
            "udp": true,
            "uuid": ID,
            "tls": true,
            "servername": "cdn.example.com",
            "alpn": ["h2", "http/1.1"],
            "client-fingerprint": "chrome",
            "skip-cert-verify": true,
            "network": "ws",
            "ws-opts": {
                "path": "/ws",
                "headers": { "Host": "cdn.example.com" },
                "max-early-data": 2048,
                "early-data-header-name": "Sec-WebSocket-Protocol"
            }
        }]),
        "MATCH,proxy",
    );
    assert_eq!(config, want);
    // Nothing that opens a port or fetches anything besides the listeners.
    for key in [
        "external-controller",
        "external-ui",
        "port",
        "socks-port",
        "mixed-port",
        "dns",
        "geox-url",
        "rule-providers",
        "proxy-providers",
    ] {
        assert!(config.get(key).is_none(), "{key}");
    }
}

#[test]
fn vision_reality() {
    let out = outbound(vision(), Transport::Tcp, reality());
    assert_eq!(
        proxy(&out),
        json!({
            "name": "p", "type": "vless", "server": "proxy.example.com", "port": 443,
            "udp": true, "uuid": ID, "flow": "xtls-rprx-vision", "tls": true,
            "servername": "www.microsoft.com", "client-fingerprint": "firefox",
            "reality-opts": { "public-key": PUBLIC_KEY, "short-id": "6ba85179e30d4fc2" }
        })
    );
    // The udp443 variant runs as plain vision; no fingerprint means Chrome's.
    let mut out = out;
    out.protocol = Protocol::Vless {
        id: ID.into(),
        flow: Some("xtls-rprx-vision-udp443".into()),
        encryption: "none".into(),
    };
    if let Security::Reality(reality) = &mut out.security {
        reality.fingerprint = None;
    }
    let rendered = proxy(&out);
    assert_eq!(rendered["flow"], "xtls-rprx-vision");
    assert_eq!(rendered["client-fingerprint"], "chrome");
    // REALITY over grpc.
    let grpc = outbound(
        vless(),
        Transport::Grpc {
            service_name: "svc".into(),
            multi_mode: true,
        },
        reality(),
    );
    let rendered = proxy(&grpc);
    assert_eq!(rendered["network"], "grpc");
    assert_eq!(rendered["grpc-opts"], json!({ "grpc-service-name": "svc" }));
    assert_eq!(rendered["reality-opts"]["public-key"], PUBLIC_KEY);
}

#[test]
fn protocols() {
    let vmess = outbound(
        Protocol::Vmess {
            id: ID.into(),
            alter_id: 0,
            security: VmessSecurity::Zero,
        },
        Transport::Tcp,
        Security::None,
    );
    assert_eq!(
        proxy(&vmess),
        json!({ "name": "p", "type": "vmess", "server": "proxy.example.com", "port": 443,
                "udp": true, "uuid": ID, "alterId": 0, "cipher": "zero" })
    );
    let trojan = outbound(
        Protocol::Trojan {
            password: "pw".into(),
        },
        Transport::Tcp,
        tls_full(),
    );
    assert_eq!(
        proxy(&trojan),
        json!({ "name": "p", "type": "trojan", "server": "proxy.example.com", "port": 443,
                "udp": true, "password": "pw", "sni": "cdn.example.com",
                "alpn": ["h2", "http/1.1"], "client-fingerprint": "chrome",
                "skip-cert-verify": true })
    );
    let ss = outbound(
        Protocol::Shadowsocks {
            method: ShadowsocksMethod::Blake3Aes128Gcm,
            password: "a2V5".into(),
        },
        Transport::Tcp,
        Security::None,
    );
    assert_eq!(
        proxy(&ss),
        json!({ "name": "p", "type": "ss", "server": "proxy.example.com", "port": 443,
                "udp": true, "cipher": "2022-blake3-aes-128-gcm", "password": "a2V5" })
    );
    let socks = outbound(
        Protocol::Socks {
            auth: Some(SocksAuth {
                username: "u".into(),
                password: "p".into(),
            }),
        },
        Transport::Tcp,
        Security::None,
    );
    assert_eq!(
        proxy(&socks),
        json!({ "name": "p", "type": "socks5", "server": "proxy.example.com", "port": 443,
                "udp": true, "username": "u", "password": "p" })
    );
    let encrypted = outbound(
        Protocol::Vless {
            id: ID.into(),
            flow: None,
            encryption: "mlkem768x25519plus.native.0rtt.abc".into(),
        },
        Transport::Tcp,
        Security::None,
    );
    assert_eq!(
        proxy(&encrypted)["encryption"],
        "mlkem768x25519plus.native.0rtt.abc"
    );
    assert!(proxy(&outbound(vless(), Transport::Tcp, Security::None))
        .get("encryption")
        .is_none());
}

#[test]
fn transports() {
    let with = |transport: Transport| proxy(&outbound(vless(), transport, tls_plain()));
    let upgrade = with(Transport::HttpUpgrade {
        path: "/up".into(),
        host: Some("cdn.example.com".into()),
    });
    assert_eq!(upgrade["network"], "ws");
    assert_eq!(
        upgrade["ws-opts"],
        json!({ "path": "/up", "v2ray-http-upgrade": true,
                "headers": { "Host": "cdn.example.com" } })
    );
    let h2 = with(Transport::H2 {
        path: "/h2".into(),
        host: vec!["a.example.com".into()],
    });
    assert_eq!(h2["network"], "h2");
    assert_eq!(
        h2["h2-opts"],
        json!({ "path": "/h2", "host": ["a.example.com"] })
    );
    let bare_ws = with(Transport::Ws {
        path: "/".into(),
        host: None,
    });
    assert_eq!(bare_ws["ws-opts"], json!({ "path": "/" }));
    // Plain TLS: just the flag.
    let tcp = with(Transport::Tcp);
    assert_eq!(tcp["tls"], true);
    for key in ["network", "servername", "alpn", "skip-cert-verify"] {
        assert!(tcp.get(key).is_none(), "{key}: {tcp}");
    }
}

#[test]
fn shadowsocks_over_ws_uses_the_v2ray_plugin() {
    let ss = Protocol::Shadowsocks {
        method: ShadowsocksMethod::Aes128Gcm,
        password: "pw".into(),
    };
    let over = |transport, security| proxy(&outbound(ss.clone(), transport, security));
    assert_eq!(
        over(ws(), tls_full()),
        json!({ "name": "p", "type": "ss", "server": "proxy.example.com", "port": 443,
                "udp": true, "cipher": "aes-128-gcm", "password": "pw",
                "plugin": "v2ray-plugin",
                "plugin-opts": { "mode": "websocket", "path": "/ws", "mux": false,
                                 "host": "cdn.example.com", "tls": true,
                                 "skip-cert-verify": true } })
    );
    // Without a ws host the TLS server name is the plugin's host.
    let sni_only = Security::Tls(TlsSettings {
        sni: Some("s.example.com".into()),
        alpn: Vec::new(),
        fingerprint: None,
        allow_insecure: false,
        ech: None,
    });
    let bare = Transport::Ws {
        path: "/".into(),
        host: None,
    };
    assert_eq!(
        over(bare.clone(), sni_only)["plugin-opts"],
        json!({ "mode": "websocket", "path": "/", "mux": false, "host": "s.example.com",
                "tls": true })
    );
    assert_eq!(
        over(bare, Security::None)["plugin-opts"],
        json!({ "mode": "websocket", "path": "/", "mux": false })
    );
}

#[test]
fn batch_sends_each_listener_to_its_proxy() {
    let a = vless_ws_tls();
    let b = outbound(vision(), Transport::Tcp, reality());
    let text = render_batch(
        &mihomo(),
        IpAddr::from([127, 0, 0, 1]),
        &[(20001, &a), (20002, &b)],
    )
    .unwrap();
    let config: Value = serde_json::from_str(&text).unwrap();
    let want = top_level(
        json!([
            { "name": "in-20001", "type": "socks", "listen": "127.0.0.1", "port": 20001,
              "proxy": "out-20001", "udp": true },
            { "name": "in-20002", "type": "socks", "listen": "127.0.0.1", "port": 20002,
              "proxy": "out-20002", "udp": true }
        ]),
        json!([render_proxy(&a, "out-20001"), render_proxy(&b, "out-20002")]),
        "MATCH,REJECT",
    );
    assert_eq!(config, want);
}

#[test]
fn pool_sends_both_listeners_of_a_member_to_its_proxy() {
    let a = vless_ws_tls();
    let b = outbound(vision(), Transport::Tcp, reality());
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
    let text = render_pool(&mihomo(), IpAddr::from([127, 0, 0, 1]), &members).unwrap();
    let config: Value = serde_json::from_str(&text).unwrap();
    let want = top_level(
        json!([
            { "name": "in-20001", "type": "socks", "listen": "127.0.0.1", "port": 20001,
              "proxy": "out-20001", "udp": true },
            { "name": "http-20003", "type": "http", "listen": "127.0.0.1", "port": 20003,
              "proxy": "out-20001" },
            { "name": "in-20002", "type": "socks", "listen": "127.0.0.1", "port": 20002,
              "proxy": "out-20002", "udp": true }
        ]),
        json!([render_proxy(&a, "out-20001"), render_proxy(&b, "out-20002")]),
        "MATCH,REJECT",
    );
    assert_eq!(config, want);
}

fn refusal(out: &Outbound) -> String {
    check_support(&mihomo(), out).unwrap_err().to_string()
}

#[test]
fn refusals() {
    let trojan = Protocol::Trojan {
        password: "p".into(),
    };
    assert_eq!(
        refusal(&outbound(trojan.clone(), Transport::Tcp, reality())),
        "mihomo 1.19.32 cannot run REALITY for trojan (trojan reality); mihomo runs REALITY \
         only for vless; use xray or sing-box (set runtime.core)"
    );
    assert_eq!(
        refusal(&outbound(vless(), ws(), reality())),
        "mihomo 1.19.32 cannot run REALITY over ws (vless reality ws); mihomo runs REALITY only \
         over tcp, grpc or xhttp; use xray (set runtime.core)"
    );
    let grpc = Transport::Grpc {
        service_name: "s".into(),
        multi_mode: false,
    };
    assert_eq!(
        refusal(&outbound(vless(), grpc, Security::None)),
        "mihomo 1.19.32 cannot run grpc without TLS (vless grpc, security none); mihomo runs \
         h2 and grpc only with tls; use xray or sing-box (set runtime.core)"
    );
    assert_eq!(
        refusal(&outbound(trojan.clone(), Transport::Tcp, Security::None)),
        "mihomo 1.19.32 cannot run trojan without TLS (trojan tcp, security none); mihomo's \
         trojan always speaks TLS; use xray, sing-box or v2ray (set runtime.core)"
    );
    let up = Transport::HttpUpgrade {
        path: "/".into(),
        host: None,
    };
    assert_eq!(
        refusal(&outbound(trojan, up, tls_plain())),
        "mihomo 1.19.32 cannot run trojan over httpupgrade; mihomo's trojan takes tcp, ws or \
         grpc; use xray or sing-box (set runtime.core)"
    );
    let ss = Protocol::Shadowsocks {
        method: ShadowsocksMethod::Aes256Gcm,
        password: "p".into(),
    };
    assert_eq!(
        refusal(&outbound(ss.clone(), Transport::Tcp, tls_plain())),
        "mihomo 1.19.32 cannot run shadowsocks over tcp with security tls; mihomo carries \
         shadowsocks bare or over ws (v2ray-plugin) only; use xray or v2ray (set runtime.core)"
    );
    let other_sni = Security::Tls(TlsSettings {
        sni: Some("other.example.com".into()),
        alpn: Vec::new(),
        fingerprint: None,
        allow_insecure: false,
        ech: None,
    });
    assert_eq!(
        refusal(&outbound(ss, ws(), other_sni)),
        "mihomo 1.19.32 cannot run shadowsocks over ws with a TLS server name other than the \
         ws host; mihomo's v2ray-plugin sends the ws host as the server name; use xray or v2ray \
         (set runtime.core)"
    );
    assert_eq!(
        refusal(&outbound(
            Protocol::Socks { auth: None },
            ws(),
            Security::None
        )),
        "mihomo 1.19.32 cannot run socks over ws with security none; mihomo's socks outbound \
         takes no transport or TLS here; use xray or v2ray (set runtime.core)"
    );
}

#[test]
fn support_matrix_counted() {
    // Of the 14 x 6 x 4 fixture combinations (two of them ws variants):
    // - vmess x2 and vless: tcp x4 securities less REALITY for vmess, ws x2 and httpupgrade
    //   with none/tls/tls, h2 and grpc with tls/tls (+ REALITY over grpc for vless);
    // - vision: tcp with tls, tls and reality;
    // - trojan: tcp, ws, ws, grpc with tls/tls;
    // - shadowsocks x7: tcp bare, ws x2 with none/tls/tls;
    // - socks x2: tcp bare.
    let accepted = all_outbounds()
        .iter()
        .filter(|out| check_support(&mihomo(), out).is_ok())
        .count();
    let vmess = 3 + 3 * 3 + 2 * 2; // 16
    let vless = 4 + 3 * 3 + 2 + 3; // 18
    let vision = 3;
    let trojan = 4 * 2;
    let ss = 7 * (1 + 2 * 3);
    let socks = 2;
    assert_eq!(
        accepted,
        2 * vmess + vless + vision + trojan + ss + socks,
        "the support matrix changed; update docs/CORES.md"
    );
}

#[test]
fn quic_and_anytls_proxies() {
    let newer = newer_outbounds();
    assert_eq!(
        proxy(&newer[1]),
        json!({ "name": "p", "type": "hysteria2", "server": "proxy.example.com", "port": 443,
                "udp": true, "password": "hy2 pass", "obfs": "salamander",
                "obfs-password": "salamander pass", "sni": "quic.example.com",
                "alpn": ["h3"], "skip-cert-verify": true })
    );
    assert_eq!(
        proxy(&newer[3]),
        json!({ "name": "p", "type": "tuic", "server": "proxy.example.com", "port": 443,
                "udp": true, "uuid": ID, "password": "tuic pass",
                "congestion-controller": "bbr", "udp-relay-mode": "quic", "reduce-rtt": true,
                "sni": "quic.example.com", "alpn": ["h3"], "skip-cert-verify": true })
    );
    assert_eq!(
        proxy(&newer[5]),
        json!({ "name": "p", "type": "anytls", "server": "proxy.example.com", "port": 443,
                "udp": true, "password": "anytls pass", "sni": "cdn.example.com",
                "alpn": ["h2", "http/1.1"], "client-fingerprint": "chrome",
                "skip-cert-verify": true })
    );
    for out in &newer {
        assert!(check_support(&mihomo(), out).is_ok(), "{out:?}");
    }
    let mut broken = newer[0].clone();
    broken.transport = ws();
    assert_eq!(
        refusal(&broken),
        "mihomo 1.19.32 cannot run hysteria2 over ws with security tls; it runs only on its own \
         stream with its own TLS; fix the link"
    );
}

#[test]
fn shadowsocks_with_simple_obfs() {
    let obfs = obfs_outbounds();
    assert_eq!(
        proxy(&obfs[0]),
        json!({ "name": "p", "type": "ss", "server": "proxy.example.com", "port": 443,
                "udp": true, "cipher": "aes-256-gcm", "password": "pw", "plugin": "obfs",
                "plugin-opts": { "mode": "http", "host": "www.bing.com" } })
    );
    assert_eq!(proxy(&obfs[1])["plugin-opts"], json!({ "mode": "tls" }));
    let mut over_tls = obfs[0].clone();
    over_tls.security = tls_plain();
    assert_eq!(
        refusal(&over_tls),
        "mihomo 1.19.32 cannot run shadowsocks over obfs with security tls; simple-obfs is a \
         Shadowsocks plugin without TLS of its own; fix the link"
    );
}

#[test]
fn http_proxies() {
    let http = http_outbounds();
    assert_eq!(
        proxy(&http[3]),
        json!({ "name": "p", "type": "http", "server": "proxy.example.com", "port": 443,
                "udp": true, "username": "user", "password": "pass", "tls": true,
                "sni": "proxy.example.com", "skip-cert-verify": true })
    );
    assert_eq!(
        proxy(&http[0]),
        json!({ "name": "p", "type": "http", "server": "proxy.example.com", "port": 443,
                "udp": true })
    );
    let mut with_alpn = http[2].clone();
    with_alpn.security = tls_full();
    assert_eq!(
        refusal(&with_alpn),
        "mihomo 1.19.32 cannot run http over TLS with ALPN or a uTLS fingerprint; mihomo's http \
         outbound takes only a server name and skip-cert-verify; use xray, sing-box or v2ray \
         (set runtime.core)"
    );
}

#[test]
fn xhttp() {
    let xhttp = xhttp_outbounds();
    let rendered = proxy(&xhttp[0]);
    assert_eq!(rendered["network"], "xhttp");
    assert_eq!(
        rendered["xhttp-opts"],
        json!({ "path": "/xh", "mode": "packet-up", "host": "cdn.example.com" })
    );
    let reality = proxy(&xhttp[1]);
    assert_eq!(
        reality["xhttp-opts"],
        json!({ "path": "/xh", "mode": "auto" })
    );
    assert_eq!(reality["reality-opts"]["public-key"], PUBLIC_KEY);
    assert_eq!(
        refusal(&xhttp[2]),
        "mihomo 1.19.32 cannot run XHTTP extra settings (the link's extra=); mihomo spells them \
         differently and xrat does not translate them; use xray (set runtime.core)"
    );
    let mut bare = xhttp[0].clone();
    bare.security = Security::None;
    assert!(
        refusal(&bare).contains("xhttp without TLS"),
        "{}",
        refusal(&bare)
    );
}

#[test]
fn wireguard() {
    let wg = wireguard_outbounds();
    assert_eq!(
        proxy(&wg[1]),
        json!({ "name": "p", "type": "wireguard", "server": "proxy.example.com", "port": 443,
                "udp": true, "private-key": "yAnz5TF+lXXJte14tji3zlMNq+hdTFVPzk+AH3MiqHc=",
                "public-key": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
                "pre-shared-key": "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=",
                "ip": "172.16.0.2", "ipv6": "fd01::2", "reserved": [1, 2, 3], "mtu": 1280 })
    );
    for out in &wg {
        assert!(check_support(&mihomo(), out).is_ok());
        let sing_box = binary(CoreKind::SingBox, "1.14.4");
        let err = check_support(&sing_box, out).unwrap_err().to_string();
        assert!(err.contains("use mihomo (set runtime.core)"), "{err}");
    }
}

#[test]
fn ech_and_shadow_tls() {
    let outs = handshake_outbounds();
    assert_eq!(
        proxy(&outs[0])["ech-opts"],
        json!({ "enable": true, "config": ECH })
    );
    assert_eq!(proxy(&outs[3])["ech-opts"]["config"], ECH);
    let ss = proxy(&outs[4]);
    assert_eq!(ss["plugin"], "shadow-tls");
    assert_eq!(
        ss["plugin-opts"],
        json!({ "host": "www.example.com", "password": "st pass", "version": 3 })
    );
    // V2Ray carries neither; the refusal names the fix.
    let v2ray = binary(CoreKind::V2ray4, "4.34.0");
    let refused = |out: &Outbound| check_support(&v2ray, out).unwrap_err().to_string();
    assert_eq!(
        refused(&outs[0]),
        "v2ray 4.34.0 cannot run Encrypted Client Hello (vless ech); use sing-box or mihomo \
         (set runtime.core)"
    );
    assert_eq!(
        refused(&outs[4]),
        "v2ray 4.34.0 cannot run ShadowTLS (shadowsocks shadow-tls); use sing-box or mihomo \
         (set runtime.core)"
    );
}
