//! `tuic://uuid:password@host:port?congestion_control=bbr&udp_relay_mode=native&alpn=h3
//! &sni=..&allow_insecure=1#name` (TUIC v5, as v2rayN, NekoBox and sing-box write them).

use super::common::{finish, UrlLink};
use super::error::LinkError;
use super::model::{Outbound, ParsedLink, Protocol, Scheme, Security, Transport};
use super::params::tls_settings;

const CONGESTION: [&str; 3] = ["cubic", "new_reno", "bbr"];
const CONGESTION_EXPECTED: &str = "cubic, new_reno or bbr";
const RELAY: [&str; 2] = ["native", "quic"];
const RELAY_EXPECTED: &str = "native or quic";

/// Parses one `tuic://` link.
pub(crate) fn parse(line: &str) -> Result<ParsedLink, LinkError> {
    let scheme = Scheme::Tuic;
    let link = UrlLink::parse(scheme, line)?;
    if link.username.is_empty() {
        return Err(LinkError::missing(scheme, "uuid before ':'"));
    }
    let password = link
        .password
        .clone()
        .filter(|password| !password.is_empty())
        .ok_or(LinkError::missing(
            scheme,
            "password after the uuid (TUIC v5 needs one)",
        ))?;
    let params = &link.params;
    let choice = |key: &str, allowed: &[&str], expected: &'static str| match params.get(key) {
        None => Ok(None),
        Some(value) if allowed.contains(&value.to_ascii_lowercase().as_str()) => {
            Ok(Some(value.to_ascii_lowercase()))
        }
        Some(value) => Err(params.invalid(key, value, expected)),
    };
    let congestion_control = choice("congestion_control", &CONGESTION, CONGESTION_EXPECTED)?;
    let udp_relay_mode = choice("udp_relay_mode", &RELAY, RELAY_EXPECTED)?;
    if params.flag("disable_sni")? {
        return Err(LinkError::Unsupported {
            scheme,
            what: "sending no server name (disable_sni=1)".into(),
            fix: "use a link without it",
        });
    }
    let mut tls = tls_settings(params)?;
    tls.allow_insecure |= params.flag("allow_insecure")?;
    tls.fingerprint = None;
    let outbound = Outbound {
        protocol: Protocol::Tuic {
            uuid: link.username.clone(),
            password,
            congestion_control,
            udp_relay_mode,
            zero_rtt: params.flag("reduce_rtt")?,
        },
        server: link.server.clone(),
        port: link.port,
        transport: Transport::Tcp,
        security: Security::Tls(tls),
    };
    Ok(finish(line, scheme, link.name, outbound))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::model::TlsSettings;

    const ID: &str = "b831381d-6324-4d53-ad4f-8cda48b30811";

    #[test]
    fn full_link() {
        let line = "tuic://b831381d-6324-4d53-ad4f-8cda48b30811:p%40ss@tuic.example.com:443\
            ?congestion_control=BBR&udp_relay_mode=native&alpn=h3&sni=tuic.example.com\
            &allow_insecure=1&reduce_rtt=1#TUIC";
        let link = parse(line).unwrap();
        assert_eq!(link.name, "TUIC");
        assert_eq!(
            link.outbound.protocol,
            Protocol::Tuic {
                uuid: ID.into(),
                password: "p@ss".into(),
                congestion_control: Some("bbr".into()),
                udp_relay_mode: Some("native".into()),
                zero_rtt: true,
            }
        );
        assert_eq!(
            link.outbound.security,
            Security::Tls(TlsSettings {
                sni: Some("tuic.example.com".into()),
                alpn: vec!["h3".into()],
                fingerprint: None,
                allow_insecure: true,
                ech: None,
            })
        );
        let bare = parse(&format!("tuic://{ID}:pw@192.0.2.9:8443")).unwrap();
        assert_eq!(bare.name, "tuic 192.0.2.9:8443");
        assert!(matches!(
            bare.outbound.protocol,
            Protocol::Tuic {
                congestion_control: None,
                udp_relay_mode: None,
                zero_rtt: false,
                ..
            }
        ));
    }

    #[test]
    fn errors() {
        let err = |line: &str| parse(line).unwrap_err().to_string();
        assert_eq!(
            err(&format!("tuic://{ID}@tuic.example.com:443")),
            "tuic: missing password after the uuid (TUIC v5 needs one)"
        );
        assert_eq!(
            err("tuic://:pw@tuic.example.com:443"),
            "tuic: missing uuid before ':'"
        );
        assert_eq!(
            err(&format!(
                "tuic://{ID}:pw@tuic.example.com:443?congestion_control=reno"
            )),
            "tuic: parameter \"congestion_control\" is \"reno\", expected cubic, new_reno or bbr"
        );
        assert_eq!(
            err(&format!(
                "tuic://{ID}:pw@tuic.example.com:443?udp_relay_mode=tcp"
            )),
            "tuic: parameter \"udp_relay_mode\" is \"tcp\", expected native or quic"
        );
        assert_eq!(
            err(&format!(
                "tuic://{ID}:pw@tuic.example.com:443?disable_sni=1"
            )),
            "tuic: sending no server name (disable_sni=1) is not supported; use a link without it"
        );
    }
}
