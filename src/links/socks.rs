//! `socks://` and `socks5://` links: no auth, `user:pass@` (percent-encoded), or v2rayN's
//! `base64(user:pass)@`.

use super::common::{decode_base64_text, finish, UrlLink};
use super::error::LinkError;
use super::model::{Outbound, ParsedLink, Protocol, Scheme, Security, SocksAuth, Transport};

/// Parses one `socks://` or `socks5://` link. Query parameters are ignored: SOCKS links carry
/// no transport or TLS settings.
pub(crate) fn parse(line: &str) -> Result<ParsedLink, LinkError> {
    let link = UrlLink::parse(Scheme::Socks, line)?;
    let auth = match link.password {
        Some(ref password) => Some(SocksAuth {
            username: link.username.clone(),
            password: password.clone(),
        }),
        None if link.username.is_empty() => None,
        None => decode_auth(&link.username)?,
    };
    let outbound = Outbound {
        protocol: Protocol::Socks { auth },
        server: link.server,
        port: link.port,
        transport: Transport::Tcp,
        security: Security::None,
    };
    Ok(finish(line, Scheme::Socks, link.name, outbound))
}

/// A userinfo without ':' can only be v2rayN's base64 form, since SOCKS5 auth needs both parts.
fn decode_auth(userinfo: &str) -> Result<Option<SocksAuth>, LinkError> {
    let invalid = LinkError::Base64 {
        scheme: Scheme::Socks,
        what: "user info",
        expected: "base64 of user:password (or user:password percent-encoded)",
    };
    let text = decode_base64_text(userinfo).ok_or(invalid.clone())?;
    let (username, password) = text.split_once(':').ok_or(invalid)?;
    // v2rayN writes base64(":") for "no auth".
    if username.is_empty() && password.is_empty() {
        return Ok(None);
    }
    Ok(Some(SocksAuth {
        username: username.to_owned(),
        password: password.to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(line: &str) -> Option<SocksAuth> {
        match parse(line).unwrap().outbound.protocol {
            Protocol::Socks { auth } => auth,
            other => panic!("not socks: {other:?}"),
        }
    }

    fn pair(username: &str, password: &str) -> Option<SocksAuth> {
        Some(SocksAuth {
            username: username.into(),
            password: password.into(),
        })
    }

    #[test]
    fn base64_auth() {
        let line = "socks://YWxpY2U6d29uZGVybGFuZA==@127.0.0.1:1080#Local%20SOCKS";
        let link = parse(line).unwrap();
        assert_eq!(link.name, "Local SOCKS");
        assert_eq!(
            (link.outbound.server.as_str(), link.outbound.port),
            ("127.0.0.1", 1080)
        );
        assert_eq!(link.outbound.transport, Transport::Tcp);
        assert_eq!(link.outbound.security, Security::None);
        assert_eq!(auth(line), pair("alice", "wonderland"));
        assert_eq!(
            auth("socks://YWxpY2U6d29uZGVybGFuZA@127.0.0.1:1080"),
            pair("alice", "wonderland")
        );
        assert_eq!(auth("socks://Og==@127.0.0.1:1080"), None);
    }

    #[test]
    fn plain_auth_and_no_auth() {
        assert_eq!(
            auth("socks5://alice:s3cr%40t%3A1@proxy.example.com:1080"),
            pair("alice", "s3cr@t:1")
        );
        let link = parse("socks://[fd00::10]:1080").unwrap();
        assert_eq!(link.name, "socks [fd00::10]:1080");
        assert_eq!(link.outbound.protocol, Protocol::Socks { auth: None });
        assert_eq!(
            parse("SOCKS5://10.0.0.1:1080").unwrap().name,
            "socks 10.0.0.1:1080"
        );
    }

    #[test]
    fn errors() {
        let err = |line: &str| parse(line).unwrap_err().to_string();
        assert_eq!(
            err("socks://alice@127.0.0.1:1080"),
            "socks: user info is not valid base64, \
             expected base64 of user:password (or user:password percent-encoded)"
        );
        assert_eq!(
            err("socks5://alice:pw@proxy.example.com"),
            "socks: missing port"
        );
    }
}
