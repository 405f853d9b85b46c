//! `vless://uuid@host:port?type=..&security=..&flow=..#name` (the Xray share-link standard).

use super::common::UrlLink;
use super::error::LinkError;
use super::model::{ParsedLink, Protocol, Scheme};
use super::params::Params;

/// Flows current cores accept; the old `xtls-rprx-direct`/`-splice` were removed from Xray.
const FLOWS: [&str; 2] = ["xtls-rprx-vision", "xtls-rprx-vision-udp443"];
const FLOW_EXPECTED: &str = "xtls-rprx-vision, xtls-rprx-vision-udp443 or none";

/// Parses one `vless://` link.
pub(crate) fn parse(line: &str) -> Result<ParsedLink, LinkError> {
    let link = UrlLink::parse(Scheme::Vless, line)?;
    if link.username.is_empty() {
        return Err(LinkError::missing(Scheme::Vless, "user id before '@'"));
    }
    let protocol = Protocol::Vless {
        id: link.username.clone(),
        flow: flow(&link.params)?,
        encryption: link.params.get("encryption").unwrap_or("none").to_owned(),
    };
    link.into_parsed(line, protocol, "none")
}

fn flow(params: &Params) -> Result<Option<String>, LinkError> {
    match params.get("flow") {
        None => Ok(None),
        Some(flow) if flow.eq_ignore_ascii_case("none") => Ok(None),
        Some(flow) if FLOWS.contains(&flow) => Ok(Some(flow.to_owned())),
        Some(flow) => Err(params.invalid("flow", flow, FLOW_EXPECTED)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::model::{RealitySettings, Security, TlsSettings, Transport};

    const ID: &str = "b831381d-6324-4d53-ad4f-8cda48b30811";

    /// An ECHConfigList as `sing-box generate ech-keypair public.example.com` printed it.
    const ECH: &str =
        "AE3+DQBJAAAgACDAAkKpwyy2MHnRyGujq8NLGOfqaaxzsZLMQgF0jAh/LwAMAAEAAQABAAIAAQAD\
        ABJwdWJsaWMuZXhhbXBsZS5jb20AAA==";

    #[test]
    fn ech_is_carried() {
        // Links percent-encode it, or leave '+' and '/' raw (a raw '+' reads as a space).
        for written in [ECH.replace('+', "%2B").replace('/', "%2F"), ECH.to_owned()] {
            let line = format!("vless://{ID}@h.example.com:443?security=tls&sni=h&ech={written}");
            let Security::Tls(tls) = parse(&line).unwrap().outbound.security else {
                panic!("not tls");
            };
            assert_eq!(tls.ech.as_deref(), Some(ECH), "{line}");
        }
    }

    #[test]
    fn reality_vision() {
        let line = "vless://b831381d-6324-4d53-ad4f-8cda48b30811@203.0.113.7:443\
            ?encryption=none&flow=xtls-rprx-vision&security=reality&sni=www.microsoft.com\
            &fp=chrome&pbk=SbVKOEMjK0sIlbwg4akyBg5mL5KZwwB-ed4eEE7YnRc&sid=6ba85179e30d4fc2\
            &spx=%2F&type=tcp&headerType=none#%F0%9F%87%A9%F0%9F%87%AA%20DE%20Reality";
        let link = parse(line).unwrap();
        assert_eq!(link.raw, line);
        assert_eq!(link.name, "🇩🇪 DE Reality");
        let out = link.outbound;
        assert_eq!((out.server.as_str(), out.port), ("203.0.113.7", 443));
        assert_eq!(
            out.protocol,
            Protocol::Vless {
                id: ID.into(),
                flow: Some("xtls-rprx-vision".into()),
                encryption: "none".into()
            }
        );
        assert_eq!(out.transport, Transport::Tcp);
        assert_eq!(
            out.security,
            Security::Reality(RealitySettings {
                public_key: "SbVKOEMjK0sIlbwg4akyBg5mL5KZwwB-ed4eEE7YnRc".into(),
                short_id: "6ba85179e30d4fc2".into(),
                spider_x: Some("/".into()),
                sni: Some("www.microsoft.com".into()),
                fingerprint: Some("chrome".into()),
            })
        );
    }

    #[test]
    fn grpc_tls() {
        let line = "vless://b831381d-6324-4d53-ad4f-8cda48b30811@grpc.example.org:443\
            ?encryption=none&security=tls&sni=grpc.example.org&alpn=h2&fp=firefox\
            &type=grpc&serviceName=vless-grpc&mode=gun#gRPC%20node";
        let out = parse(line).unwrap().outbound;
        assert_eq!(
            out.transport,
            Transport::Grpc {
                service_name: "vless-grpc".into(),
                multi_mode: false
            }
        );
        assert_eq!(
            out.security,
            Security::Tls(TlsSettings {
                sni: Some("grpc.example.org".into()),
                alpn: vec!["h2".into()],
                fingerprint: Some("firefox".into()),
                allow_insecure: false,
                ech: None,
            })
        );
    }

    #[test]
    fn ipv6_host_without_name_or_query() {
        let link = parse("vless://b831381d-6324-4d53-ad4f-8cda48b30811@[2001:db8::1]:443").unwrap();
        assert_eq!(link.name, "vless [2001:db8::1]:443");
        assert_eq!(link.outbound.server, "2001:db8::1");
        assert_eq!(link.outbound.security, Security::None);
        assert_eq!(
            link.outbound.protocol,
            Protocol::Vless {
                id: ID.into(),
                flow: None,
                encryption: "none".into()
            }
        );
    }

    #[test]
    fn xhttp() {
        let line = "vless://b831381d-6324-4d53-ad4f-8cda48b30811@x.example.com:443?security=tls\
            &sni=x.example.com&type=xhttp&path=%2Fxh&host=cdn.example.com&mode=packet-up\
            &extra=%7B%22xPaddingBytes%22%3A%22100-1000%22%7D#XHTTP";
        assert_eq!(
            parse(line).unwrap().outbound.transport,
            Transport::Xhttp {
                path: "/xh".into(),
                host: Some("cdn.example.com".into()),
                mode: Some("packet-up".into()),
                extra: Some(r#"{"xPaddingBytes":"100-1000"}"#.into()),
            }
        );
        // Defaults: auto mode and an empty extra are left out; splithttp is the old name.
        let bare = parse("vless://id@x.example.com:443?type=splithttp&mode=auto&extra=%7B%7D")
            .unwrap()
            .outbound
            .transport;
        assert_eq!(
            bare,
            Transport::Xhttp {
                path: "/".into(),
                host: None,
                mode: None,
                extra: None
            }
        );
    }

    #[test]
    fn errors() {
        let err = |line: &str| parse(line).unwrap_err().to_string();
        assert_eq!(
            err("vless://@vless.example.com:443?type=ws"),
            "vless: missing user id before '@'"
        );
        assert_eq!(
            err("vless://vless.example.com:443"),
            "vless: missing user id before '@'"
        );
        assert_eq!(
            err("vless://b831381d-6324-4d53-ad4f-8cda48b30811@vless.example.com?security=tls"),
            "vless: missing port"
        );
        assert_eq!(
            err("vless://id@vless.example.com:443?security=tls&flow=xtls-rprx-direct"),
            "vless: parameter \"flow\" is \"xtls-rprx-direct\", \
             expected xtls-rprx-vision, xtls-rprx-vision-udp443 or none"
        );
        assert_eq!(
            err("vless://id@vless.example.com:443?security=tls&ech=AEX%2B"),
            "vless: parameter \"ech\" is \"AEX+\", expected the server's ECHConfigList in \
             base64 (as `sing-box generate ech-keypair` prints it); a DNS name to look it up is \
             not supported"
        );
        assert_eq!(
            err("vless://id@vless.example.com:443?security=tls&ech=cloudflare-ech.com"),
            "vless: parameter \"ech\" is \"cloudflare-ech.com\", expected the server's \
             ECHConfigList in base64 (as `sing-box generate ech-keypair` prints it); a DNS name \
             to look it up is not supported"
        );
        assert_eq!(
            err("vless://id@vless.example.com:443?type=xhttp&mode=packet"),
            "vless: parameter \"mode\" is \"packet\", expected auto, packet-up, stream-up or \
             stream-one"
        );
        assert_eq!(
            err("vless://id@vless.example.com:443?type=xhttp&extra=%5B1%5D"),
            "vless: parameter \"extra\" is \"[1]\", expected a JSON object"
        );
    }
}
