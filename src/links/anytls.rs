//! `anytls://password@host:port/?sni=..&insecure=1&fp=..#name` (as sing-box and mihomo
//! clients share them). AnyTLS always runs over TLS.

use super::common::{finish, UrlLink};
use super::error::LinkError;
use super::model::{Outbound, ParsedLink, Protocol, Scheme, Security, Transport};
use super::params::tls_settings;

/// Parses one `anytls://` link.
pub(crate) fn parse(line: &str) -> Result<ParsedLink, LinkError> {
    let scheme = Scheme::Anytls;
    let link = UrlLink::parse(scheme, line)?;
    let password = match &link.password {
        Some(rest) => format!("{}:{rest}", link.username),
        None => link.username.clone(),
    };
    if password.is_empty() {
        return Err(LinkError::missing(scheme, "password before '@'"));
    }
    let outbound = Outbound {
        protocol: Protocol::Anytls { password },
        security: Security::Tls(tls_settings(&link.params)?),
        server: link.server.clone(),
        port: link.port,
        transport: Transport::Tcp,
    };
    Ok(finish(line, scheme, link.name, outbound))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::model::TlsSettings;

    #[test]
    fn full_link_and_errors() {
        let link = parse(
            "anytls://s3cr%2Ft@any.example.com:443/?sni=cdn.example.com&insecure=1&fp=chrome#AT",
        )
        .unwrap();
        assert_eq!(link.name, "AT");
        assert_eq!(
            link.outbound.protocol,
            Protocol::Anytls {
                password: "s3cr/t".into()
            }
        );
        assert_eq!(
            link.outbound.security,
            Security::Tls(TlsSettings {
                sni: Some("cdn.example.com".into()),
                alpn: Vec::new(),
                fingerprint: Some("chrome".into()),
                allow_insecure: true,
                ech: None,
            })
        );
        assert_eq!(
            parse("anytls://@any.example.com:443")
                .unwrap_err()
                .to_string(),
            "anytls: missing password before '@'"
        );
    }
}
