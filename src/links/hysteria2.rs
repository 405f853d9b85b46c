//! `hysteria2://auth@host:port/?sni=..&insecure=1&obfs=salamander&obfs-password=..#name` (also
//! `hy2://`), as the Hysteria 2 project and v2rayN write them.

use super::common::{port_text, UrlLink};
use super::error::{quote, LinkError};
use super::model::{ParsedLink, Protocol, Scheme, Security, Transport};
use super::params::tls_settings;

const OBFS_EXPECTED: &str = "salamander or none";

/// Parses one `hysteria2://` or `hy2://` link.
pub(crate) fn parse(line: &str) -> Result<ParsedLink, LinkError> {
    let scheme = Scheme::Hysteria2;
    let ports = port_text(line);
    if ports.contains(['-', ',']) {
        return Err(LinkError::Unsupported {
            scheme,
            what: format!("port hopping (ports \"{}\")", quote(ports)),
            fix: "use a link with one port",
        });
    }
    let link = UrlLink::parse(scheme, line)?;
    let password = match &link.password {
        Some(rest) => format!("{}:{rest}", link.username),
        None => link.username.clone(),
    };
    if password.is_empty() {
        return Err(LinkError::missing(scheme, "password before '@'"));
    }
    let params = &link.params;
    for (key, what) in [
        ("mport", "port hopping (parameter \"mport\")"),
        ("pinSHA256", "certificate pinning (parameter \"pinSHA256\")"),
    ] {
        if params.get(key).is_some() {
            return Err(LinkError::Unsupported {
                scheme,
                what: what.into(),
                fix: "use a link without it",
            });
        }
    }
    let obfs_password = match params.get("obfs") {
        None => None,
        Some(obfs) if obfs.eq_ignore_ascii_case("none") => None,
        Some(obfs) if obfs.eq_ignore_ascii_case("salamander") => {
            let password = params.get("obfs-password").ok_or(LinkError::missing(
                scheme,
                "parameter \"obfs-password\" (salamander password)",
            ))?;
            Some(password.to_owned())
        }
        Some(obfs) => return Err(params.invalid("obfs", obfs, OBFS_EXPECTED)),
    };
    let mut tls = tls_settings(params)?;
    // QUIC has no uTLS fingerprint; a `fp=` here means nothing to any core.
    tls.fingerprint = None;
    let outbound = super::model::Outbound {
        protocol: Protocol::Hysteria2 {
            password,
            obfs_password,
        },
        server: link.server,
        port: link.port,
        transport: Transport::Tcp,
        security: Security::Tls(tls),
    };
    Ok(super::common::finish(line, scheme, link.name, outbound))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::model::TlsSettings;

    #[test]
    fn full_link_and_the_hy2_alias() {
        let line = "hysteria2://letme%40in@hy.example.com:8443/?sni=real.example.com&insecure=1\
            &obfs=salamander&obfs-password=cry_me_a_r1ver&alpn=h3#HY2%20node";
        let link = parse(line).unwrap();
        assert_eq!(link.name, "HY2 node");
        let out = link.outbound;
        assert_eq!((out.server.as_str(), out.port), ("hy.example.com", 8443));
        assert_eq!(
            out.protocol,
            Protocol::Hysteria2 {
                password: "letme@in".into(),
                obfs_password: Some("cry_me_a_r1ver".into()),
            }
        );
        assert_eq!(out.transport, Transport::Tcp);
        assert_eq!(
            out.security,
            Security::Tls(TlsSettings {
                sni: Some("real.example.com".into()),
                alpn: vec!["h3".into()],
                fingerprint: None,
                allow_insecure: true,
                ech: None,
            })
        );
        let short =
            crate::links::parse_link("hy2://user:pass@[2001:db8::2]:443?fp=chrome").unwrap();
        assert_eq!(short.name, "hysteria2 [2001:db8::2]:443");
        assert_eq!(
            short.outbound.protocol,
            Protocol::Hysteria2 {
                password: "user:pass".into(),
                obfs_password: None
            }
        );
        let Security::Tls(tls) = short.outbound.security else {
            panic!("not tls")
        };
        assert_eq!(tls.fingerprint, None);
    }

    #[test]
    fn errors() {
        let err = |line: &str| crate::links::parse_link(line).unwrap_err().to_string();
        assert_eq!(
            err("hysteria2://pw@hy.example.com:443-448/?sni=a"),
            "hysteria2: port hopping (ports \"443-448\") is not supported; use a link with one port"
        );
        assert_eq!(
            err("hy2://pw@hy.example.com:443?mport=1000-2000"),
            "hysteria2: port hopping (parameter \"mport\") is not supported; use a link without it"
        );
        assert_eq!(
            err("hy2://pw@hy.example.com:443?pinSHA256=AB:CD"),
            "hysteria2: certificate pinning (parameter \"pinSHA256\") is not supported; use a \
             link without it"
        );
        assert_eq!(
            err("hy2://pw@hy.example.com:443?obfs=salamander"),
            "hysteria2: missing parameter \"obfs-password\" (salamander password)"
        );
        assert_eq!(
            err("hy2://pw@hy.example.com:443?obfs=xor"),
            "hysteria2: parameter \"obfs\" is \"xor\", expected salamander or none"
        );
        assert_eq!(
            err("hy2://@hy.example.com:443"),
            "hysteria2: missing password before '@'"
        );
        assert_eq!(err("hy2://pw@hy.example.com"), "hysteria2: missing port");
    }
}
