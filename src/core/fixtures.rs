//! Test data shared by the core tests: outbounds of every protocol, transport and security,
//! fake `CoreBinary` values, and the real core binaries (a missing one fails the test with an
//! install hint; it never skips).

use std::path::{Path, PathBuf};

use super::{detect_at, CoreBinary, CoreKind};
use crate::links::{
    Outbound, Protocol, RealitySettings, Security, ShadowsocksMethod, SocksAuth, TlsSettings,
    Transport, VmessSecurity,
};
use crate::settings::CoreChoice;

/// A user id as links carry it.
pub(crate) const ID: &str = "b831381d-6324-4d53-ad4f-8cda48b30811";
/// A REALITY public key (base64url x25519).
pub(crate) const PUBLIC_KEY: &str = "SbVKOEMjK0sIlbwg4akyBg5mL5KZwwB-ed4eEE7YnRc";

/// A `CoreBinary` that was never run: uTLS as the official builds have it.
pub(crate) fn binary(kind: CoreKind, version: &str) -> CoreBinary {
    CoreBinary {
        kind,
        path: PathBuf::from(format!("/usr/bin/{}", kind.name())),
        version: version.into(),
        utls: kind != CoreKind::V2ray4 && kind != CoreKind::V2ray5,
    }
}

/// An outbound to `proxy.example.com:443`.
pub(crate) fn outbound(protocol: Protocol, transport: Transport, security: Security) -> Outbound {
    Outbound {
        protocol,
        server: "proxy.example.com".into(),
        port: 443,
        transport,
        security,
    }
}

/// Plain VLESS.
pub(crate) fn vless() -> Protocol {
    Protocol::Vless {
        id: ID.into(),
        flow: None,
        encryption: "none".into(),
    }
}

/// VLESS with the Vision flow.
pub(crate) fn vision() -> Protocol {
    Protocol::Vless {
        id: ID.into(),
        flow: Some("xtls-rprx-vision".into()),
        encryption: "none".into(),
    }
}

/// TLS with every field set.
pub(crate) fn tls_full() -> Security {
    Security::Tls(TlsSettings {
        sni: Some("cdn.example.com".into()),
        alpn: vec!["h2".into(), "http/1.1".into()],
        fingerprint: Some("chrome".into()),
        allow_insecure: true,
        ech: None,
    })
}

/// TLS with defaults only.
pub(crate) fn tls_plain() -> Security {
    Security::Tls(TlsSettings {
        sni: None,
        alpn: Vec::new(),
        fingerprint: None,
        allow_insecure: false,
        ech: None,
    })
}

/// REALITY as a typical link has it.
pub(crate) fn reality() -> Security {
    Security::Reality(RealitySettings {
        public_key: PUBLIC_KEY.into(),
        short_id: "6ba85179e30d4fc2".into(),
        spider_x: Some("/".into()),
        sni: Some("www.microsoft.com".into()),
        fingerprint: Some("firefox".into()),
    })
}

/// WebSocket with early data and a Host header.
pub(crate) fn ws() -> Transport {
    Transport::Ws {
        path: "/ws?ed=2048".into(),
        host: Some("cdn.example.com".into()),
    }
}

/// The outbound used for the sample in the report: vless + ws + tls.
pub(crate) fn vless_ws_tls() -> Outbound {
    outbound(vless(), ws(), tls_full())
}

/// Trojan over TCP with plain TLS: a second, different member for batch and pool tests.
pub(crate) fn trojan_tls() -> Outbound {
    let password = "p".into();
    outbound(Protocol::Trojan { password }, Transport::Tcp, tls_plain())
}

/// Every protocol variant the model has, with keys the cores accept (Shadowsocks 2022 keys
/// are base64 of 16 or 32 bytes, which sing-box checks).
pub(crate) fn all_protocols() -> Vec<Protocol> {
    let mut protocols = vec![
        Protocol::Vmess {
            id: ID.into(),
            alter_id: 0,
            security: VmessSecurity::Auto,
        },
        Protocol::Vmess {
            id: ID.into(),
            alter_id: 0,
            security: VmessSecurity::Zero,
        },
        vless(),
        vision(),
        Protocol::Trojan {
            password: "tr0jan pass".into(),
        },
        Protocol::Socks { auth: None },
        Protocol::Socks {
            auth: Some(SocksAuth {
                username: "user".into(),
                password: "pass".into(),
            }),
        },
    ];
    let key16 = "MTIzNDU2Nzg5MDEyMzQ1Ng==";
    let key32 = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=";
    for (method, password) in [
        (ShadowsocksMethod::Aes128Gcm, "pw"),
        (ShadowsocksMethod::Aes256Gcm, "pw"),
        (ShadowsocksMethod::Chacha20IetfPoly1305, "pw"),
        (ShadowsocksMethod::Xchacha20IetfPoly1305, "pw"),
        (ShadowsocksMethod::Blake3Aes128Gcm, key16),
        (ShadowsocksMethod::Blake3Aes256Gcm, key32),
        (ShadowsocksMethod::Blake3Chacha20Poly1305, key32),
    ] {
        protocols.push(Protocol::Shadowsocks {
            method,
            password: password.into(),
        });
    }
    protocols
}

/// Every transport.
pub(crate) fn all_transports() -> Vec<Transport> {
    vec![
        Transport::Tcp,
        ws(),
        Transport::Ws {
            path: "/".into(),
            host: None,
        },
        Transport::Grpc {
            service_name: "svc".into(),
            multi_mode: true,
        },
        Transport::H2 {
            path: "/h2".into(),
            host: vec!["a.example.com".into(), "b.example.com".into()],
        },
        Transport::HttpUpgrade {
            path: "/up".into(),
            host: Some("cdn.example.com".into()),
        },
    ]
}

/// Every security, TLS both bare and fully specified.
pub(crate) fn all_securities() -> Vec<Security> {
    vec![Security::None, tls_plain(), tls_full(), reality()]
}

/// Every combination of the above.
pub(crate) fn all_outbounds() -> Vec<Outbound> {
    let mut all = Vec::new();
    for protocol in all_protocols() {
        for transport in all_transports() {
            for security in all_securities() {
                all.push(outbound(protocol.clone(), transport.clone(), security));
            }
        }
    }
    all
}

/// Hysteria 2, TUIC and AnyTLS outbounds as their parsers build them (own stream, TLS), with
/// every optional field both set and unset.
pub(crate) fn newer_outbounds() -> Vec<Outbound> {
    let quic_tls = Security::Tls(TlsSettings {
        sni: Some("quic.example.com".into()),
        alpn: vec!["h3".into()],
        fingerprint: None,
        allow_insecure: true,
        ech: None,
    });
    let protocols = [
        (
            Protocol::Hysteria2 {
                password: "hy2 pass".into(),
                obfs_password: None,
            },
            tls_plain(),
        ),
        (
            Protocol::Hysteria2 {
                password: "hy2 pass".into(),
                obfs_password: Some("salamander pass".into()),
            },
            quic_tls.clone(),
        ),
        (
            Protocol::Tuic {
                uuid: ID.into(),
                password: "tuic pass".into(),
                congestion_control: None,
                udp_relay_mode: None,
                zero_rtt: false,
            },
            tls_plain(),
        ),
        (
            Protocol::Tuic {
                uuid: ID.into(),
                password: "tuic pass".into(),
                congestion_control: Some("bbr".into()),
                udp_relay_mode: Some("quic".into()),
                zero_rtt: true,
            },
            quic_tls,
        ),
        (
            Protocol::Anytls {
                password: "anytls pass".into(),
            },
            tls_plain(),
        ),
        (
            Protocol::Anytls {
                password: "anytls pass".into(),
            },
            tls_full(),
        ),
    ];
    protocols
        .into_iter()
        .map(|(protocol, security)| outbound(protocol, Transport::Tcp, security))
        .collect()
}

/// WireGuard peers: minimal (IPv4 only) and with every optional field.
pub(crate) fn wireguard_outbounds() -> Vec<Outbound> {
    let peer = |full: bool| Protocol::Wireguard {
        private_key: "yAnz5TF+lXXJte14tji3zlMNq+hdTFVPzk+AH3MiqHc=".into(),
        public_key: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=".into(),
        pre_shared_key: full.then(|| "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=".into()),
        ipv4: Some("172.16.0.2".into()),
        ipv6: full.then(|| "fd01::2".into()),
        reserved: full.then_some([1, 2, 3]),
        mtu: full.then_some(1280),
    };
    [false, true]
        .into_iter()
        .map(|full| outbound(peer(full), Transport::Tcp, Security::None))
        .collect()
}

/// VLESS over XHTTP: TLS with host and mode, REALITY with defaults, and one with Xray's
/// `extra` (which only Xray takes).
pub(crate) fn xhttp_outbounds() -> Vec<Outbound> {
    let xhttp = |host: Option<&str>, mode: Option<&str>, extra: Option<&str>| Transport::Xhttp {
        path: "/xh".into(),
        host: host.map(str::to_owned),
        mode: mode.map(str::to_owned),
        extra: extra.map(str::to_owned),
    };
    vec![
        outbound(
            vless(),
            xhttp(Some("cdn.example.com"), Some("packet-up"), None),
            tls_full(),
        ),
        outbound(vless(), xhttp(None, None, None), reality()),
        outbound(
            vless(),
            xhttp(
                None,
                Some("stream-one"),
                Some(r#"{"xPaddingBytes":"100-1000"}"#),
            ),
            tls_plain(),
        ),
    ]
}

/// HTTP proxies: without and with auth, plain and over TLS.
pub(crate) fn http_outbounds() -> Vec<Outbound> {
    let auth = Some(SocksAuth {
        username: "user".into(),
        password: "pass".into(),
    });
    let sni_insecure = Security::Tls(TlsSettings {
        sni: Some("proxy.example.com".into()),
        alpn: Vec::new(),
        fingerprint: None,
        allow_insecure: true,
        ech: None,
    });
    vec![
        outbound(
            Protocol::Http { auth: None },
            Transport::Tcp,
            Security::None,
        ),
        outbound(
            Protocol::Http { auth: auth.clone() },
            Transport::Tcp,
            Security::None,
        ),
        outbound(Protocol::Http { auth: None }, Transport::Tcp, tls_plain()),
        outbound(Protocol::Http { auth }, Transport::Tcp, sni_insecure),
    ]
}

/// Shadowsocks with the simple-obfs plugin, both modes, with and without a host.
pub(crate) fn obfs_outbounds() -> Vec<Outbound> {
    [
        (crate::links::ObfsMode::Http, Some("www.bing.com")),
        (crate::links::ObfsMode::Tls, None),
    ]
    .into_iter()
    .map(|(mode, host)| {
        let protocol = Protocol::Shadowsocks {
            method: ShadowsocksMethod::Aes256Gcm,
            password: "pw".into(),
        };
        let transport = Transport::Obfs {
            mode,
            host: host.map(str::to_owned),
        };
        outbound(protocol, transport, Security::None)
    })
    .collect()
}

/// An ECHConfigList as `sing-box generate ech-keypair public.example.com` printed it.
pub(crate) const ECH: &str = "AE3+DQBJAAAgACDAAkKpwyy2MHnRyGujq8NLGOfqaaxzsZLMQgF0jAh/LwAMAAEAAQAB\
    AAIAAQADABJwdWJsaWMuZXhhbXBsZS5jb20AAA==";

/// What changes the handshake: ECH on vless (tcp, ws), vmess and trojan; Shadowsocks through
/// ShadowTLS v3 and v1 (no password).
pub(crate) fn handshake_outbounds() -> Vec<Outbound> {
    let ech = Security::Tls(TlsSettings {
        sni: Some("inner.example.com".into()),
        alpn: Vec::new(),
        fingerprint: None,
        allow_insecure: false,
        ech: Some(ECH.into()),
    });
    let vmess = all_protocols().remove(0);
    let trojan = Protocol::Trojan {
        password: "pw".into(),
    };
    let ss = Protocol::Shadowsocks {
        method: ShadowsocksMethod::Aes256Gcm,
        password: "pw".into(),
    };
    let shadow_tls = |version: u8, password: &str| Transport::ShadowTls {
        version,
        host: "www.example.com".into(),
        password: password.into(),
    };
    vec![
        outbound(vless(), Transport::Tcp, ech.clone()),
        outbound(vless(), ws(), ech.clone()),
        outbound(vmess, Transport::Tcp, ech.clone()),
        outbound(trojan, Transport::Tcp, ech),
        outbound(ss.clone(), shadow_tls(3, "st pass"), Security::None),
        outbound(ss, shadow_tls(1, ""), Security::None),
    ]
}

/// The real V2Ray: `$XRAT_V2RAY`, else `v2ray` on PATH. Panics with an install hint.
pub(crate) fn real_v2ray() -> CoreBinary {
    real("XRAT_V2RAY", "v2ray", CoreChoice::V2ray)
}

/// The real sing-box: `$XRAT_SING_BOX`, else PATH, else `<repo>/.cores/bin/sing-box`.
pub(crate) fn real_sing_box() -> CoreBinary {
    real("XRAT_SING_BOX", "sing-box", CoreChoice::SingBox)
}

/// The real mihomo: `$XRAT_MIHOMO`, else PATH, else `<repo>/.cores/bin/mihomo`.
pub(crate) fn real_mihomo() -> CoreBinary {
    real("XRAT_MIHOMO", "mihomo", CoreChoice::Mihomo)
}

/// The real Xray when `$XRAT_XRAY` or PATH has one; it is not installed by `.ci/install-cores`.
pub(crate) fn real_xray() -> Option<CoreBinary> {
    let path = locate("XRAT_XRAY", "xray")?;
    Some(detect_at(&path, CoreChoice::Xray).expect("xray version"))
}

fn real(env: &str, name: &str, choice: CoreChoice) -> CoreBinary {
    let Some(path) = locate(env, name) else {
        panic!(
            "{name} not found (looked at ${env}, PATH and {}); run .ci/install-cores",
            cores_dir().display()
        );
    };
    detect_at(&path, choice).unwrap_or_else(|err| panic!("{err}; run .ci/install-cores"))
}

fn locate(env: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let search = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&search)
        .chain([cores_dir()])
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

fn cores_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".cores")
        .join("bin")
}
