//! Refusals with their exact messages.

use super::*;
use crate::core::fixtures::*;
use crate::links::{Protocol, ShadowsocksMethod, TlsSettings, Transport};

fn refusal(core: &CoreBinary, outbound: &Outbound) -> String {
    check_support(core, outbound).unwrap_err().to_string()
}

fn v2ray4() -> CoreBinary {
    binary(CoreKind::V2ray4, "4.34.0")
}

fn wheel_sing_box() -> CoreBinary {
    let mut core = binary(CoreKind::SingBox, "1.14.4");
    core.utls = false;
    core
}

fn ss(method: ShadowsocksMethod) -> Outbound {
    let protocol = Protocol::Shadowsocks {
        method,
        password: "pw".into(),
    };
    outbound(protocol, Transport::Tcp, Security::None)
}

#[test]
fn v2ray_refusals() {
    let core = v2ray4();
    assert_eq!(
        refusal(&core, &outbound(vless(), Transport::Tcp, reality())),
        "v2ray 4.34.0 cannot run REALITY (vless reality); use xray, sing-box or mihomo (set runtime.core)"
    );
    assert_eq!(
        refusal(&core, &outbound(vision(), Transport::Tcp, tls_plain())),
        "v2ray 4.34.0 cannot run the XTLS flow xtls-rprx-vision (vless flow); \
         use xray, sing-box or mihomo (set runtime.core)"
    );
    let grpc = Transport::Grpc {
        service_name: "s".into(),
        multi_mode: false,
    };
    assert_eq!(
        refusal(&core, &outbound(vless(), grpc.clone(), tls_plain())),
        "v2ray 4.34.0 cannot run the gRPC transport (grpc); \
         use xray, sing-box, mihomo or V2Ray 5 (set runtime.core)"
    );
    let upgrade = Transport::HttpUpgrade {
        path: "/".into(),
        host: None,
    };
    assert_eq!(
        refusal(&core, &outbound(vless(), upgrade.clone(), Security::None)),
        "v2ray 4.34.0 cannot run the HTTPUpgrade transport (httpupgrade); \
         use xray, sing-box or mihomo (set runtime.core)"
    );
    assert_eq!(
        refusal(&core, &ss(ShadowsocksMethod::Blake3Aes128Gcm)),
        "v2ray 4.34.0 cannot run Shadowsocks 2022-blake3-aes-128-gcm; \
         use xray, sing-box or mihomo (set runtime.core)"
    );
    assert_eq!(
        refusal(&core, &ss(ShadowsocksMethod::Xchacha20IetfPoly1305)),
        "v2ray 4.34.0 cannot run Shadowsocks xchacha20-ietf-poly1305; \
         use xray, sing-box or mihomo (set runtime.core)"
    );
    let h2 = Transport::H2 {
        path: "/".into(),
        host: vec![],
    };
    assert_eq!(
        refusal(&core, &outbound(vless(), h2.clone(), Security::None)),
        "v2ray 4.34.0 cannot run the HTTP/2 transport without TLS (h2, security none); \
         V2Ray's h2 needs TLS; use a link with tls, or sing-box (set runtime.core)"
    );
    let encrypted = Protocol::Vless {
        id: ID.into(),
        flow: None,
        encryption: "mlkem768x25519plus.native.0rtt.secret".into(),
    };
    assert_eq!(
        refusal(&core, &outbound(encrypted, Transport::Tcp, Security::None)),
        "v2ray 4.34.0 cannot run VLESS encryption (vless encryption other than none); \
         use xray (set runtime.core)"
    );
    assert!(check_support(&core, &outbound(vless(), h2, tls_full())).is_ok());
    assert!(check_support(&core, &ss(ShadowsocksMethod::Chacha20IetfPoly1305)).is_ok());
    let v5 = binary(CoreKind::V2ray5, "5.16.1");
    assert!(check_support(&v5, &outbound(vless(), grpc, tls_plain())).is_ok());
    assert_eq!(
        refusal(&v5, &outbound(vless(), upgrade, Security::None)),
        "v2ray 5.16.1 cannot run the HTTPUpgrade transport (httpupgrade); \
         use xray, sing-box or mihomo (set runtime.core)"
    );
}

#[test]
fn sing_box_refusals() {
    let core = wheel_sing_box();
    assert_eq!(
        refusal(&core, &outbound(vless(), Transport::Tcp, reality())),
        "sing-box 1.14.4 cannot run REALITY (vless reality); this sing-box build lacks uTLS \
         (built without the with_utls tag), which REALITY needs; use xray, mihomo or a sing-box release \
         build (set runtime.core or runtime.core_path)"
    );
    let release = binary(CoreKind::SingBox, "1.14.4");
    assert!(check_support(&release, &outbound(vision(), Transport::Tcp, reality())).is_ok());
    // A fingerprint is dropped, not refused.
    assert!(check_support(&core, &vless_ws_tls()).is_ok());
    for method in [
        ShadowsocksMethod::Blake3Chacha20Poly1305,
        ShadowsocksMethod::Xchacha20IetfPoly1305,
    ] {
        assert!(check_support(&core, &ss(method)).is_ok());
    }
    let encrypted = Protocol::Vless {
        id: ID.into(),
        flow: None,
        encryption: "x".into(),
    };
    assert_eq!(
        refusal(&core, &outbound(encrypted, Transport::Tcp, Security::None)),
        "sing-box 1.14.4 cannot run VLESS encryption (vless encryption other than none); \
         use xray (set runtime.core)"
    );
}

#[test]
fn vision_needs_tcp_with_tls() {
    let core = binary(CoreKind::SingBox, "1.14.4");
    assert_eq!(
        refusal(&core, &outbound(vision(), ws(), tls_plain())),
        "sing-box 1.14.4 cannot run the XTLS flow xtls-rprx-vision over ws with security tls; \
         Vision needs the tcp transport with tls or reality; fix the link"
    );
    assert_eq!(
        refusal(
            &binary(CoreKind::Xray, "25.10.15"),
            &outbound(vision(), Transport::Tcp, Security::None)
        ),
        "xray 25.10.15 cannot run the XTLS flow xtls-rprx-vision over tcp with security none; \
         Vision needs the tcp transport with tls or reality; fix the link"
    );
}

#[test]
fn xray_refusals_depend_on_version() {
    let new = binary(CoreKind::Xray, "26.3.27");
    let old = binary(CoreKind::Xray, "1.8.24");
    let h2 = outbound(
        vless(),
        Transport::H2 {
            path: "/".into(),
            host: vec![],
        },
        tls_plain(),
    );
    assert_eq!(
        refusal(&new, &h2),
        "xray 26.3.27 cannot run the HTTP/2 transport (h2), which Xray 24.11.30 and later \
         replaced with XHTTP; use v2ray, sing-box or mihomo (set runtime.core)"
    );
    assert!(check_support(&old, &h2).is_ok());
    let insecure = Security::Tls(TlsSettings {
        sni: None,
        alpn: vec![],
        fingerprint: None,
        allow_insecure: true,
        ech: None,
    });
    let out = outbound(vless(), Transport::Tcp, insecure);
    assert_eq!(
        refusal(&new, &out),
        "xray 26.3.27 cannot run TLS without certificate verification (allowInsecure), which \
         Xray 26.1.31 and later removed; use v2ray, sing-box or mihomo (set runtime.core), or a \
         server with a valid certificate"
    );
    assert!(check_support(&binary(CoreKind::Xray, "25.10.15"), &out).is_ok());
    assert_eq!(
        refusal(&new, &outbound(vless(), ws(), reality())),
        "xray 26.3.27 cannot run REALITY over ws (vless reality ws); Xray runs REALITY only \
         over tcp, grpc or h2; use a link with one of those"
    );
    let grpc = Transport::Grpc {
        service_name: "s".into(),
        multi_mode: true,
    };
    assert!(check_support(&new, &outbound(vision(), Transport::Tcp, reality())).is_ok());
    assert!(check_support(&new, &outbound(vless(), grpc, reality())).is_ok());
    assert!(check_support(&new, &ss(ShadowsocksMethod::Blake3Aes256Gcm)).is_ok());
}

#[test]
fn every_combination_has_an_answer_per_core() {
    // The matrix in the module docs, counted: how many of the fixture combinations each
    // core accepts. A change here means the support matrix changed; update the docs too.
    let count = |core: &CoreBinary| {
        all_outbounds()
            .iter()
            .filter(|out| check_support(core, out).is_ok())
            .count()
    };
    let total = all_outbounds().len();
    assert_eq!(total, 14 * 6 * 4);
    // V2Ray 4: 9 protocols (no vision, xchacha20, 2022) x (tcp, ws, ws) x (none, tls, tls)
    // plus h2 with the two TLS variants: 9 x 11.
    assert_eq!(count(&v2ray4()), 99);
    // V2Ray 5 adds grpc with all three securities: 9 x 14.
    assert_eq!(count(&binary(CoreKind::V2ray5, "5.16.1")), 126);
    // sing-box without uTLS: vmess x2, vless, trojan on 6 transports x 3 securities (72),
    // vision on tcp with the two TLS variants (2), shadowsocks x7 and socks x2 bare (9).
    assert_eq!(count(&wheel_sing_box()), 83);
    // With uTLS, REALITY too: 4 protocols x 6 transports, and vision over tcp.
    assert_eq!(count(&binary(CoreKind::SingBox, "1.14.4")), 108);
    // Recent Xray: no h2, no allowInsecure; REALITY not over ws/httpupgrade. 13 protocols x
    // (tcp 3 + ws 2 + ws 2 + grpc 3 + httpupgrade 2), vision over tcp with tls or reality.
    assert_eq!(count(&binary(CoreKind::Xray, "26.3.27")), 13 * 12 + 2);
}

#[test]
fn quic_and_anytls_need_sing_box_or_mihomo() {
    for out in newer_outbounds() {
        for core in [v2ray4(), binary(CoreKind::Xray, "25.10.15")] {
            let name = crate::core::support::protocol_name(&out);
            assert_eq!(
                refusal(&core, &out),
                format!(
                    "{} {} cannot run {name} ({name} link); use sing-box or mihomo (set \
                     runtime.core)",
                    core.kind, core.version
                )
            );
        }
        assert!(check_support(&wheel_sing_box(), &out).is_ok(), "{out:?}");
    }
}

#[test]
fn simple_obfs_needs_sing_box_or_mihomo() {
    for out in obfs_outbounds() {
        assert_eq!(
            refusal(&v2ray4(), &out),
            "v2ray 4.34.0 cannot run the simple-obfs plugin (shadowsocks plugin obfs-local); use \
             sing-box or mihomo (set runtime.core)"
        );
        assert!(check_support(&binary(CoreKind::Xray, "25.10.15"), &out).is_err());
        assert!(check_support(&wheel_sing_box(), &out).is_ok(), "{out:?}");
        assert!(check_support(&binary(CoreKind::Mihomo, "1.19.32"), &out).is_ok());
    }
}

#[test]
fn xhttp_runs_on_xray_and_mihomo() {
    let mihomo = binary(CoreKind::Mihomo, "1.19.32");
    for (i, out) in xhttp_outbounds().iter().enumerate() {
        assert!(check_support(&binary(CoreKind::Xray, "25.10.15"), out).is_ok());
        assert_eq!(
            refusal(&binary(CoreKind::Xray, "24.10.31"), out),
            "xray 24.10.31 cannot run the XHTTP transport (xhttp), which Xray has under that \
             name from 24.11.30; use a newer xray, or mihomo (set runtime.core or \
             runtime.core_path)"
        );
        // Index 1 is REALITY, which V2Ray and the wheel's sing-box refuse first.
        let (v2ray_says, sing_box_says) = match i {
            1 => ("REALITY", "REALITY"),
            _ => ("XHTTP", "sing-box has no XHTTP"),
        };
        let v2ray = refusal(&v2ray4(), out);
        assert!(v2ray.contains(v2ray_says), "{v2ray}");
        let sing_box = refusal(&wheel_sing_box(), out);
        assert!(sing_box.contains(sing_box_says), "{sing_box}");
        let release = refusal(&binary(CoreKind::SingBox, "1.14.4"), out);
        assert!(release.contains("sing-box has no XHTTP"), "{release}");
        assert_eq!(check_support(&mihomo, out).is_ok(), i < 2, "{out:?}");
    }
}
