//! Share links (`vmess://`, `vless://`, `trojan://`, `ss://`, `socks://`, `hysteria2://` or
//! `hy2://`, `tuic://`, `anytls://`, `http://` and `https://` proxies, `wireguard://` or
//! `wg://`) and subscription blobs,
//! parsed into a typed [`Outbound`] that the store persists as JSON and the config generator
//! turns into a core's outbound.
//!
//! [`parse_link`] handles one link; [`parse_input`] handles pasted text or a downloaded
//! subscription and reports per line, so the CLI can import the good lines and print
//! `line 3: vless: missing port` for the rest.

mod anytls;
mod common;
mod error;
mod http;
mod hysteria2;
mod model;
mod params;
mod shadow_tls;
mod socks;
mod ss;
mod subscription;
mod trojan;
mod tuic;
mod vless;
mod vmess;
mod wireguard;

pub use error::LinkError;
pub use model::{
    ObfsMode, Outbound, ParsedLink, Protocol, RealitySettings, Scheme, Security, ShadowsocksMethod,
    SocksAuth, TlsSettings, Transport, VmessSecurity,
};
pub use subscription::{parse_input, LineResult};

/// Parses one share link. Surrounding whitespace is ignored; everything else is kept verbatim
/// in [`ParsedLink::raw`].
pub fn parse_link(line: &str) -> Result<ParsedLink, LinkError> {
    let line = line.trim();
    let Some((scheme, _)) = line.split_once("://") else {
        return Err(LinkError::NotALink {
            input: error::quote(line),
        });
    };
    match Scheme::from_name(scheme) {
        Some(Scheme::Vmess) => vmess::parse(line),
        Some(Scheme::Vless) => vless::parse(line),
        Some(Scheme::Trojan) => trojan::parse(line),
        Some(Scheme::Shadowsocks) => ss::parse(line),
        Some(Scheme::Socks) => socks::parse(line),
        Some(Scheme::Hysteria2) => hysteria2::parse(line),
        Some(Scheme::Tuic) => tuic::parse(line),
        Some(Scheme::Anytls) => anytls::parse(line),
        Some(Scheme::Http) => http::parse(line),
        Some(Scheme::Wireguard) => wireguard::parse(line),
        None => Err(LinkError::UnknownScheme {
            scheme: error::quote(scheme),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> String {
        parse_link(line).unwrap_err().to_string()
    }

    #[test]
    fn dispatches_by_scheme_ignoring_case_and_whitespace() {
        let link = parse_link("  VLESS://id@example.com:443#n \r\n").unwrap();
        assert_eq!(link.raw, "VLESS://id@example.com:443#n");
        assert!(matches!(link.outbound.protocol, Protocol::Vless { .. }));
        let socks = parse_link("socks5://u:p@example.com:1080").unwrap();
        assert!(matches!(socks.outbound.protocol, Protocol::Socks { .. }));
    }

    #[test]
    fn scheme_errors() {
        assert_eq!(
            err("naive+https://u:p@example.com:443"),
            "unknown scheme \"naive+https\"; supported: vmess, vless, trojan, ss, socks, \
             hysteria2 (hy2), tuic, anytls, http, https, wireguard (wg)"
        );
        assert_eq!(err(""), "not a share link: \"\"; expected <scheme>://...");
        assert_eq!(
            err("example.com:443"),
            "not a share link: \"example.com:443\"; expected <scheme>://..."
        );
    }

    #[test]
    fn long_input_is_shortened_in_messages() {
        let message = err(&format!("garbage {}", "x".repeat(500)));
        assert!(message.chars().count() < 120, "{message}");
        assert!(message.contains('…'));
        let message = err(&format!(
            "vless://id@example.com:443?type={}",
            "k".repeat(500)
        ));
        assert!(message.chars().count() < 160, "{message}");
    }

    #[test]
    fn json_round_trip() {
        let line =
            "vless://b831381d-6324-4d53-ad4f-8cda48b30811@[2001:db8::1]:443?security=reality\
            &pbk=SbVKOEMjK0sIlbwg4akyBg5mL5KZwwB-ed4eEE7YnRc&sid=ab&flow=xtls-rprx-vision#R";
        let link = parse_link(line).unwrap();
        let json = serde_json::to_string(&link).unwrap();
        assert!(json.contains(r#""protocol":{"type":"vless""#), "{json}");
        assert!(json.contains(r#""security":{"type":"reality""#), "{json}");
        let back: ParsedLink = serde_json::from_str(&json).unwrap();
        assert_eq!(back, link);
        let ss = parse_link("ss://chacha20-poly1305:pw@192.0.2.1:8388").unwrap();
        let json = serde_json::to_string(&ss.outbound.protocol).unwrap();
        assert_eq!(
            json,
            r#"{"type":"shadowsocks","method":"chacha20-ietf-poly1305","password":"pw"}"#
        );
    }
}
