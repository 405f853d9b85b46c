//! `http://[user:pass@]host:port[/][#name]` and `https://...` HTTP proxy links (as v2rayN and
//! sing-box share them; `https` means TLS to the proxy, with `sni=` and `allowInsecure=` read as
//! for other links). A link with a path is a web address, most likely a subscription URL
//! pasted into the wrong command, and is refused rather than taken for a proxy on port 80.

use url::{Host, Url};

use super::common::{finish, percent_decode};
use super::error::{quote, LinkError, PORT_EXPECTED};
use super::model::{Outbound, ParsedLink, Protocol, Scheme, Security, SocksAuth, Transport};
use super::params::{tls_settings, Params};

/// Parses one `http://` or `https://` proxy link.
pub(crate) fn parse(line: &str) -> Result<ParsedLink, LinkError> {
    let scheme = Scheme::Http;
    let url = Url::parse(line).map_err(|err| match err {
        url::ParseError::EmptyHost => LinkError::missing(scheme, "host"),
        url::ParseError::InvalidPort => {
            LinkError::invalid(scheme, "port", "(not a number)", PORT_EXPECTED)
        }
        other => LinkError::Malformed {
            scheme,
            detail: other.to_string(),
        },
    })?;
    if !matches!(url.path(), "" | "/") {
        return Err(LinkError::Unsupported {
            scheme,
            what: format!("a link with a path (\"{}\")", quote(url.path())),
            fix: "an HTTP proxy link is http[s]://[user:pass@]host:port; import a \
                  subscription's content, not its address",
        });
    }
    let server = match url.host() {
        Some(Host::Ipv6(addr)) => addr.to_string(),
        Some(Host::Ipv4(addr)) => addr.to_string(),
        Some(Host::Domain(name)) if !name.is_empty() => name.to_owned(),
        _ => return Err(LinkError::missing(scheme, "host")),
    };
    // `url` hides the scheme's default port (80, 443); the proxy listens there then.
    let port = url
        .port_or_known_default()
        .ok_or(LinkError::missing(scheme, "port"))?;
    if port == 0 {
        return Err(LinkError::invalid(scheme, "port", "0", PORT_EXPECTED));
    }
    let username = percent_decode(url.username());
    let password = url.password().map(percent_decode).unwrap_or_default();
    let auth = match (username.is_empty(), password.is_empty()) {
        (true, true) => None,
        (false, _) => Some(SocksAuth { username, password }),
        (true, false) => return Err(LinkError::missing(scheme, "user name before ':'")),
    };
    let security = if url.scheme().eq_ignore_ascii_case("https") {
        Security::Tls(tls_settings(&Params::from_url(scheme, &url))?)
    } else {
        Security::None
    };
    let name = url
        .fragment()
        .map(percent_decode)
        .filter(|name| !name.trim().is_empty());
    let outbound = Outbound {
        protocol: Protocol::Http { auth },
        server,
        port,
        transport: Transport::Tcp,
        security,
    };
    Ok(finish(line, scheme, name, outbound))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::model::TlsSettings;

    #[test]
    fn http_and_https() {
        let link = parse("http://u%40x:p%3Ass@192.0.2.5:3128#Office").unwrap();
        assert_eq!(link.name, "Office");
        let out = link.outbound;
        assert_eq!((out.server.as_str(), out.port), ("192.0.2.5", 3128));
        assert_eq!(
            out.protocol,
            Protocol::Http {
                auth: Some(SocksAuth {
                    username: "u@x".into(),
                    password: "p:ss".into()
                })
            }
        );
        assert_eq!(out.security, Security::None);
        let tls =
            parse("https://proxy.example.com/?sni=front.example.com&allowInsecure=1").unwrap();
        assert_eq!(tls.name, "http proxy.example.com:443");
        assert_eq!(tls.outbound.protocol, Protocol::Http { auth: None });
        assert_eq!(
            tls.outbound.security,
            Security::Tls(TlsSettings {
                sni: Some("front.example.com".into()),
                alpn: Vec::new(),
                fingerprint: None,
                allow_insecure: true,
                ech: None,
            })
        );
        assert_eq!(parse("http://[2001:db8::5]").unwrap().outbound.port, 80);
        let user_only = parse("http://user@192.0.2.5:8080").unwrap();
        assert_eq!(
            user_only.outbound.protocol,
            Protocol::Http {
                auth: Some(SocksAuth {
                    username: "user".into(),
                    password: String::new()
                })
            }
        );
    }

    #[test]
    fn errors() {
        let err = |line: &str| crate::links::parse_link(line).unwrap_err().to_string();
        assert_eq!(
            err("https://example.com/api/v1/client/subscribe?token=x"),
            "http: a link with a path (\"/api/v1/client/subscribe\") is not supported; an HTTP \
             proxy link is http[s]://[user:pass@]host:port; import a subscription's content, not \
             its address"
        );
        assert_eq!(
            err("http://:pw@192.0.2.5:8080"),
            "http: missing user name before ':'"
        );
        assert_eq!(
            err("http://192.0.2.5:0"),
            "http: port is \"0\", expected a number 1-65535"
        );
        assert_eq!(
            err("http://192.0.2.5:99999"),
            "http: port is \"(not a number)\", expected a number 1-65535"
        );
    }
}
