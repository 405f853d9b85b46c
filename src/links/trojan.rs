//! `trojan://password@host:port?security=..&type=..#name`.

use super::common::UrlLink;
use super::error::LinkError;
use super::model::{ParsedLink, Protocol, Scheme};

/// Parses one `trojan://` link. TLS is assumed unless the link says `security=none`, because
/// trojan is defined over TLS and most links leave it implicit.
pub(crate) fn parse(line: &str) -> Result<ParsedLink, LinkError> {
    let link = UrlLink::parse(Scheme::Trojan, line)?;
    // An unescaped ':' in the password makes `url` split it into user and password.
    let password = match &link.password {
        Some(rest) => format!("{}:{rest}", link.username),
        None => link.username.clone(),
    };
    if password.is_empty() {
        return Err(LinkError::missing(Scheme::Trojan, "password before '@'"));
    }
    link.into_parsed(line, Protocol::Trojan { password }, "tls")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::model::{Security, TlsSettings, Transport};

    #[test]
    fn ws_tls_with_encoded_password_and_emoji_name() {
        let line = "trojan://p%40ss%2Fw0rd%20x@trojan.example.com:443?security=tls\
            &sni=trojan.example.com&type=ws&host=trojan.example.com&path=%2Ftrojan-ws\
            &allowInsecure=1#US%20West%20%F0%9F%87%BA%F0%9F%87%B8";
        let link = parse(line).unwrap();
        assert_eq!(link.name, "US West 🇺🇸");
        let out = link.outbound;
        assert_eq!(
            out.protocol,
            Protocol::Trojan {
                password: "p@ss/w0rd x".into()
            }
        );
        assert_eq!(
            out.transport,
            Transport::Ws {
                path: "/trojan-ws".into(),
                host: Some("trojan.example.com".into())
            }
        );
        assert_eq!(
            out.security,
            Security::Tls(TlsSettings {
                sni: Some("trojan.example.com".into()),
                alpn: vec![],
                fingerprint: None,
                allow_insecure: true,
                ech: None,
            })
        );
    }

    #[test]
    fn tls_is_implied_and_colon_in_password_kept() {
        let link = parse("trojan://a:b+c@198.51.100.9:8443?peer=cdn.example.net").unwrap();
        assert_eq!(link.name, "trojan 198.51.100.9:8443");
        assert_eq!(
            link.outbound.protocol,
            Protocol::Trojan {
                password: "a:b+c".into()
            }
        );
        let Security::Tls(tls) = link.outbound.security else {
            panic!("expected tls");
        };
        assert_eq!(tls.sni.as_deref(), Some("cdn.example.net"));
        let plain = parse("trojan://pw@10.0.0.2:80?security=none#lab").unwrap();
        assert_eq!(plain.outbound.security, Security::None);
    }

    #[test]
    fn errors() {
        let err = |line: &str| parse(line).unwrap_err().to_string();
        assert_eq!(
            err("trojan://@trojan.example.com:443#x"),
            "trojan: missing password before '@'"
        );
        assert_eq!(
            err("trojan://pw@trojan.example.com:https"),
            "trojan: port is \"https\", expected a number 1-65535"
        );
        assert_eq!(
            err("trojan://pw@trojan.example.com:443?security=tls&insecure=yes"),
            "trojan: parameter \"insecure\" is \"yes\", expected 0, 1, true or false"
        );
    }
}
