//! Pieces every scheme shares: lenient base64, percent-decoding, and the
//! `scheme://user@host:port?query#name` layout of vless, trojan, ss (SIP002) and socks links.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use url::{form_urlencoded, Host, ParseError, Url};

use super::error::{LinkError, PORT_EXPECTED};
use super::model::{Outbound, ParsedLink, Protocol, Scheme};
use super::params::{security, transport, Params};

/// Link producers disagree on padding and some emit non-canonical trailing bits, so decoding
/// accepts both rather than rejecting links other clients import fine.
const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Decodes standard or URL-safe base64, padded or not. ASCII whitespace is dropped first
/// because subscription servers often wrap the blob at 76 columns.
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return None;
    }
    STANDARD
        .decode(&compact)
        .or_else(|_| URL_SAFE.decode(&compact))
        .ok()
}

/// [`decode_base64`] for payloads that must be UTF-8 text.
pub(crate) fn decode_base64_text(text: &str) -> Option<String> {
    String::from_utf8(decode_base64(text)?).ok()
}

/// Percent-decodes `text`, leaving `+` alone (outside a query it is a literal plus, and
/// passwords and base64 keys contain it). Invalid UTF-8 becomes U+FFFD.
pub(crate) fn percent_decode(text: &str) -> String {
    // `url` exposes its percent-decoder only through form_urlencoded, which would also turn
    // '+' into a space and split at '&' and '='; escaping those three keeps them literal.
    let escaped = text
        .replace('+', "%2B")
        .replace('&', "%26")
        .replace('=', "%3D");
    form_urlencoded::parse(escaped.as_bytes())
        .next()
        .map(|(decoded, _)| decoded.into_owned())
        .unwrap_or_default()
}

/// `<scheme> <host>:<port>`, with IPv6 addresses bracketed so the port stays readable.
pub(crate) fn default_name(scheme: Scheme, server: &str, port: u16) -> String {
    if server.contains(':') {
        format!("{scheme} [{server}]:{port}")
    } else {
        format!("{scheme} {server}:{port}")
    }
}

/// Wraps an outbound with its raw text and a name, defaulting the name.
pub(crate) fn finish(
    raw: &str,
    scheme: Scheme,
    name: Option<String>,
    outbound: Outbound,
) -> ParsedLink {
    let name = name.unwrap_or_else(|| default_name(scheme, &outbound.server, outbound.port));
    ParsedLink {
        raw: raw.to_owned(),
        name,
        outbound,
    }
}

/// A URL-shaped link taken apart, everything percent-decoded.
#[derive(Debug)]
pub(crate) struct UrlLink {
    /// Which scheme the caller parsed it as.
    pub scheme: Scheme,
    /// Userinfo before the first `:` (or all of it).
    pub username: String,
    /// Userinfo after the first `:`, if there was one.
    pub password: Option<String>,
    /// Host without brackets.
    pub server: String,
    /// Port, never 0.
    pub port: u16,
    /// The fragment, if not blank.
    pub name: Option<String>,
    /// Query parameters.
    pub params: Params,
}

impl UrlLink {
    /// Parses `scheme://user@host:port?query#name` with the `url` crate and checks that host
    /// and port are present.
    pub(crate) fn parse(scheme: Scheme, line: &str) -> Result<UrlLink, LinkError> {
        let url = Url::parse(line).map_err(|err| url_error(scheme, line, err))?;
        let server = match url.host() {
            Some(Host::Ipv6(addr)) => addr.to_string(),
            Some(Host::Ipv4(addr)) => addr.to_string(),
            // Non-special schemes keep hosts percent-encoded (e.g. IDNs in UTF-8).
            Some(Host::Domain(name)) if !name.is_empty() => percent_decode(name),
            _ => return Err(LinkError::missing(scheme, "host")),
        };
        let port = match url.port() {
            None => return Err(LinkError::missing(scheme, "port")),
            Some(0) => return Err(LinkError::invalid(scheme, "port", "0", PORT_EXPECTED)),
            Some(port) => port,
        };
        let name = url
            .fragment()
            .map(percent_decode)
            .filter(|name| !name.trim().is_empty());
        Ok(UrlLink {
            scheme,
            username: percent_decode(url.username()),
            password: url.password().map(percent_decode),
            server,
            port,
            name,
            params: Params::from_url(scheme, &url),
        })
    }

    /// Reads transport and security from the query and builds the final link.
    /// `default_security` applies when the query has no `security` (trojan implies TLS).
    pub(crate) fn into_parsed(
        self,
        raw: &str,
        protocol: Protocol,
        default_security: &str,
    ) -> Result<ParsedLink, LinkError> {
        let outbound = Outbound {
            protocol,
            transport: transport(&self.params)?,
            security: security(&self.params, default_security)?,
            server: self.server,
            port: self.port,
        };
        Ok(finish(raw, self.scheme, self.name, outbound))
    }
}

/// Maps `url` failures to our messages; the common ones get specific wording.
fn url_error(scheme: Scheme, line: &str, err: ParseError) -> LinkError {
    match err {
        ParseError::EmptyHost => LinkError::missing(scheme, "host"),
        ParseError::InvalidPort => {
            LinkError::invalid(scheme, "port", port_text(line), PORT_EXPECTED)
        }
        other => LinkError::Malformed {
            scheme,
            detail: other.to_string(),
        },
    }
}

/// Finds the port text for the error message only: `url` reports a bad port without saying
/// what it was. The link has already been rejected, so this need not be exact.
pub(crate) fn port_text(line: &str) -> &str {
    let rest = line.split_once("://").map_or(line, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // `url` splits userinfo at the last '@', and IPv6 hosts contain ':' inside brackets.
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let after_host = host_port
        .rsplit_once(']')
        .map_or(host_port, |(_, rest)| rest);
    after_host.split_once(':').map_or("", |(_, port)| port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_accepts_both_alphabets_with_and_without_padding() {
        let want = b"chacha20-ietf-poly1305:Pa55w0rd?>".to_vec();
        for text in [
            "Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpQYTU1dzByZD8-",
            "Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpQYTU1dzByZD8+",
        ] {
            assert_eq!(decode_base64(text), Some(want.clone()), "{text}");
        }
        for text in ["+/8=", "+/8", "-_8=", "-_8"] {
            assert_eq!(decode_base64(text), Some(vec![0xfb, 0xff]), "{text}");
        }
        assert_eq!(
            decode_base64("YWxpY2U6d29uZGVybGFuZA==").unwrap(),
            b"alice:wonderland"
        );
        assert_eq!(
            decode_base64("YWxpY2U6d29uZGVybGFuZA").unwrap(),
            b"alice:wonderland"
        );
        assert_eq!(
            decode_base64("YWxp\r\nY2U6d29u\nZGVybGFuZA==").unwrap(),
            b"alice:wonderland"
        );
        assert_eq!(decode_base64(""), None);
        assert_eq!(decode_base64("not base64!"), None);
        assert_eq!(decode_base64("a"), None);
    }

    #[test]
    fn percent_decode_keeps_plus_and_separators() {
        assert_eq!(percent_decode("a%20b%2Bc+d&e=f"), "a b+c+d&e=f");
        assert_eq!(percent_decode("%F0%9F%9A%80"), "🚀");
        assert_eq!(percent_decode(""), "");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn default_name_brackets_ipv6() {
        assert_eq!(
            default_name(Scheme::Vless, "2001:db8::1", 443),
            "vless [2001:db8::1]:443"
        );
        assert_eq!(
            default_name(Scheme::Socks, "10.0.0.1", 1080),
            "socks 10.0.0.1:1080"
        );
    }

    #[test]
    fn url_link_decodes_parts() {
        let line = "trojan://p%40ss%3Aword@[2001:db8::1]:8443?sni=a#Home%20%F0%9F%8F%A0";
        let link = UrlLink::parse(Scheme::Trojan, line).unwrap();
        assert_eq!(link.username, "p@ss:word");
        assert_eq!(link.password, None);
        assert_eq!(link.server, "2001:db8::1");
        assert_eq!(link.port, 8443);
        assert_eq!(link.name.as_deref(), Some("Home 🏠"));
    }

    #[test]
    fn url_link_errors() {
        let err = |line| UrlLink::parse(Scheme::Vless, line).unwrap_err().to_string();
        assert_eq!(err("vless://id@host.example"), "vless: missing port");
        assert_eq!(err("vless://id@:443"), "vless: missing host");
        assert_eq!(
            err("vless://id@host.example:44a3?type=ws"),
            "vless: port is \"44a3\", expected a number 1-65535"
        );
        assert_eq!(
            err("vless://id@[2001:db8::1]:70000"),
            "vless: port is \"70000\", expected a number 1-65535"
        );
        assert_eq!(
            err("vless://id@host.example:0"),
            "vless: port is \"0\", expected a number 1-65535"
        );
        assert_eq!(
            err("vless://id@[2001:db8::1:443"),
            "vless: cannot parse link: invalid IPv6 address"
        );
    }
}
