//! `vmess://` links: v2rayN's `vmess://base64(JSON)`, and the Xray-standard URL form
//! `vmess://uuid@host:port?encryption=..&type=..#name`.

use serde_json::{Map, Value};

use super::common::{decode_base64_text, finish, percent_decode, UrlLink};
use super::error::{quote, LinkError, PORT_EXPECTED};
use super::model::{Outbound, ParsedLink, Protocol, Scheme, VmessSecurity};
use super::params::{security, transport, Params};

const SCHEME: Scheme = Scheme::Vmess;

/// v2rayN field → query name. `path` feeds both `path` and `serviceName`, and `type` both
/// `headerType` and `mode`, because v2rayN reuses them per transport; the transport reader
/// picks the one it needs.
const FIELD_PARAMS: [(&str, &str); 11] = [
    ("net", "type"),
    ("type", "headerType"),
    ("type", "mode"),
    ("host", "host"),
    ("path", "path"),
    ("path", "serviceName"),
    ("tls", "security"),
    ("sni", "sni"),
    ("alpn", "alpn"),
    ("fp", "fp"),
    ("allowInsecure", "allowInsecure"),
];

/// Parses one `vmess://` link.
pub(crate) fn parse(line: &str) -> Result<ParsedLink, LinkError> {
    let body = line.split_once("://").map_or(line, |(_, body)| body);
    let (payload, fragment) = match body.split_once('#') {
        Some((payload, fragment)) => (payload, Some(fragment)),
        None => (body, None),
    };
    // Neither base64 alphabet has '@', so it marks the URL form.
    if payload.contains('@') {
        return url_form(line);
    }
    json_form(line, payload, fragment)
}

fn url_form(line: &str) -> Result<ParsedLink, LinkError> {
    let link = UrlLink::parse(SCHEME, line)?;
    if link.username.is_empty() {
        return Err(LinkError::missing(SCHEME, "user id before '@'"));
    }
    let security = match link.params.get("encryption") {
        None => VmessSecurity::Auto,
        Some(name) => VmessSecurity::from_name(name).ok_or_else(|| {
            link.params
                .invalid("encryption", name, VmessSecurity::EXPECTED)
        })?,
    };
    let protocol = Protocol::Vmess {
        id: link.username.clone(),
        alter_id: 0,
        security,
    };
    link.into_parsed(line, protocol, "none")
}

fn json_form(line: &str, payload: &str, fragment: Option<&str>) -> Result<ParsedLink, LinkError> {
    let text = decode_base64_text(&percent_decode(payload)).ok_or(LinkError::Base64 {
        scheme: SCHEME,
        what: "payload",
        expected: "base64 of a v2rayN JSON object",
    })?;
    let fields = Fields::parse(&text)?;
    let server = fields
        .text("add")?
        .ok_or(LinkError::missing(SCHEME, "field \"add\" (server address)"))?;
    let port = fields.port()?;
    let id = fields
        .text("id")?
        .ok_or(LinkError::missing(SCHEME, "field \"id\" (user id)"))?;
    let protocol = Protocol::Vmess {
        id,
        alter_id: fields.alter_id()?,
        security: fields.security()?,
    };
    let params = fields.params()?;
    // v2rayN's JSON has no REALITY fields, so only TLS makes sense here.
    if let Some(tls) = params.get("security") {
        if !tls.eq_ignore_ascii_case("tls") && !tls.eq_ignore_ascii_case("none") {
            return Err(params.invalid("security", tls, "\"tls\" or empty"));
        }
    }
    let outbound = Outbound {
        protocol,
        server: server.trim_matches(['[', ']']).to_owned(),
        port,
        transport: transport(&params)?,
        security: security(&params, "none")?,
    };
    let name = match fields.text("ps")? {
        Some(name) => Some(name),
        None => fragment
            .map(percent_decode)
            .filter(|name| !name.trim().is_empty()),
    };
    Ok(finish(line, SCHEME, name, outbound))
}

/// The decoded JSON object. Producers write numbers as strings and vice versa, so every
/// accessor takes both.
struct Fields(Map<String, Value>);

impl Fields {
    fn parse(text: &str) -> Result<Fields, LinkError> {
        match serde_json::from_str(text) {
            Ok(Value::Object(map)) => Ok(Fields(map)),
            Ok(_) => Err(LinkError::Json {
                detail: "top level is not an object".to_owned(),
            }),
            Err(err) => Err(LinkError::Json {
                detail: quote(&err.to_string()),
            }),
        }
    }

    /// A string, number or bool field as trimmed text; absent, null or blank is `None`.
    fn text(&self, field: &str) -> Result<Option<String>, LinkError> {
        let text = match self.0.get(field) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(text)) => text.trim().to_owned(),
            Some(Value::Number(number)) => number.to_string(),
            Some(Value::Bool(flag)) => flag.to_string(),
            Some(other) => {
                let what = format!("field \"{field}\"");
                let value = other.to_string();
                return Err(LinkError::invalid(
                    SCHEME,
                    what,
                    &value,
                    "a string or number",
                ));
            }
        };
        Ok(Some(text).filter(|text| !text.is_empty()))
    }

    fn port(&self) -> Result<u16, LinkError> {
        let text = self
            .text("port")?
            .ok_or(LinkError::missing(SCHEME, "field \"port\""))?;
        match text.parse::<u16>() {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(LinkError::invalid(
                SCHEME,
                "field \"port\"",
                &text,
                PORT_EXPECTED,
            )),
        }
    }

    fn alter_id(&self) -> Result<u16, LinkError> {
        let Some(text) = self.text("aid")? else {
            return Ok(0);
        };
        text.parse()
            .map_err(|_| LinkError::invalid(SCHEME, "field \"aid\"", &text, "a number 0-65535"))
    }

    fn security(&self) -> Result<VmessSecurity, LinkError> {
        let Some(name) = self.text("scy")? else {
            return Ok(VmessSecurity::Auto);
        };
        VmessSecurity::from_name(&name).ok_or_else(|| {
            LinkError::invalid(SCHEME, "field \"scy\"", &name, VmessSecurity::EXPECTED)
        })
    }

    fn params(&self) -> Result<Params, LinkError> {
        let mut params = Params::new(SCHEME);
        for (field, key) in FIELD_PARAMS {
            if let Some(value) = self.text(field)? {
                params.insert(key, field, value);
            }
        }
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine;

    use super::*;
    use crate::links::model::{Security, TlsSettings, Transport};

    /// What v2rayN exports: pretty-printed JSON, padded standard base64, strings everywhere.
    const WS_TLS: &str =
        "vmess://ewogICJ2IjogIjIiLAogICJwcyI6ICLwn4ev8J+HtSBUb2t5byAwMSB8IHdzK3RscyIsCiAgImFk\
        ZCI6ICJqcDEuZXhhbXBsZS5uZXQiLAogICJwb3J0IjogIjQ0MyIsCiAgImlkIjogImI4MzEzODFkLTYzMjQt\
        NGQ1My1hZDRmLThjZGE0OGIzMDgxMSIsCiAgImFpZCI6ICIwIiwKICAic2N5IjogImF1dG8iLAogICJuZXQi\
        OiAid3MiLAogICJ0eXBlIjogIm5vbmUiLAogICJob3N0IjogImNkbi5leGFtcGxlLm5ldCIsCiAgInBhdGgi\
        OiAiL3Ztd3M/ZWQ9MjA0OCIsCiAgInRscyI6ICJ0bHMiLAogICJzbmkiOiAiY2RuLmV4YW1wbGUubmV0IiwK\
        ICAiYWxwbiI6ICJoMixodHRwLzEuMSIsCiAgImZwIjogImNocm9tZSIKfQ==";
    const ID: &str = "b831381d-6324-4d53-ad4f-8cda48b30811";

    fn link(json: &str) -> String {
        format!("vmess://{}", STANDARD.encode(json))
    }

    fn err(json: &str) -> String {
        parse(&link(json)).unwrap_err().to_string()
    }

    #[test]
    fn v2rayn_ws_tls() {
        let parsed = parse(WS_TLS).unwrap();
        assert_eq!(parsed.raw, WS_TLS);
        assert_eq!(parsed.name, "🇯🇵 Tokyo 01 | ws+tls");
        let out = parsed.outbound;
        assert_eq!((out.server.as_str(), out.port), ("jp1.example.net", 443));
        let want = Protocol::Vmess {
            id: ID.into(),
            alter_id: 0,
            security: VmessSecurity::Auto,
        };
        assert_eq!(out.protocol, want);
        let path = "/vmws?ed=2048".into();
        let host = Some("cdn.example.net".into());
        assert_eq!(out.transport, Transport::Ws { path, host });
        let tls = TlsSettings {
            sni: Some("cdn.example.net".into()),
            alpn: vec!["h2".into(), "http/1.1".into()],
            fingerprint: Some("chrome".into()),
            allow_insecure: false,
            ech: None,
        };
        assert_eq!(out.security, Security::Tls(tls));
    }

    #[test]
    fn numbers_grpc_and_url_safe_unpadded() {
        let json = concat!(
            r#"{"v":2,"ps":"","add":"[2001:db8::5]","port":8443,"#,
            r#""id":"b831381d-6324-4d53-ad4f-8cda48b30811","aid":64,"#,
            r#""scy":"chacha20-poly1305","net":"grpc","type":"multi","path":"vm-grpc","tls":""}"#,
        );
        let line = format!("vmess://{}#Backup%20gRPC", URL_SAFE_NO_PAD.encode(json));
        let parsed = parse(&line).unwrap();
        assert_eq!(parsed.name, "Backup gRPC");
        let out = parsed.outbound;
        assert_eq!((out.server.as_str(), out.port), ("2001:db8::5", 8443));
        let want = Protocol::Vmess {
            id: ID.into(),
            alter_id: 64,
            security: VmessSecurity::Chacha20Poly1305,
        };
        assert_eq!(out.protocol, want);
        let service_name = "vm-grpc".into();
        let grpc = Transport::Grpc {
            service_name,
            multi_mode: true,
        };
        assert_eq!(out.transport, grpc);
        assert_eq!(out.security, Security::None);
    }

    #[test]
    fn minimal_json_gets_defaults() {
        let parsed = parse(&link(r#"{"add":"203.0.113.9","port":"10086","id":"u"}"#)).unwrap();
        assert_eq!(parsed.name, "vmess 203.0.113.9:10086");
        assert_eq!(parsed.outbound.transport, Transport::Tcp);
        let h2 = parse(&link(
            r#"{"add":"h","port":1,"id":"u","net":"h2","host":"a.example,b.example","tls":"tls"}"#,
        ));
        let host = vec!["a.example".to_owned(), "b.example".to_owned()];
        let want = Transport::H2 {
            path: "/".into(),
            host,
        };
        assert_eq!(h2.unwrap().outbound.transport, want);
    }

    #[test]
    fn url_form() {
        let line = "vmess://b831381d-6324-4d53-ad4f-8cda48b30811@vm.example.com:443\
            ?encryption=aes-128-gcm&type=httpupgrade&path=%2Fup&host=vm.example.com\
            &security=tls&sni=vm.example.com#HU";
        let out = parse(line).unwrap().outbound;
        let want = Protocol::Vmess {
            id: ID.into(),
            alter_id: 0,
            security: VmessSecurity::Aes128Gcm,
        };
        assert_eq!(out.protocol, want);
        let host = Some("vm.example.com".into());
        let upgrade = Transport::HttpUpgrade {
            path: "/up".into(),
            host,
        };
        assert_eq!(out.transport, upgrade);
        assert_eq!(
            parse("vmess://u@vm.example.com:443?encryption=aes-256-cfb")
                .unwrap_err()
                .to_string(),
            "vmess: parameter \"encryption\" is \"aes-256-cfb\", \
             expected auto, aes-128-gcm, chacha20-poly1305, none or zero"
        );
    }

    #[test]
    fn field_errors() {
        let base = r#""add":"vm.example.com","id":"u""#;
        assert_eq!(
            err(&format!(r#"{{{base},"port":"abc"}}"#)),
            "vmess: field \"port\" is \"abc\", expected a number 1-65535"
        );
        assert_eq!(
            err(&format!(r#"{{{base},"port":70000}}"#)),
            "vmess: field \"port\" is \"70000\", expected a number 1-65535"
        );
        assert_eq!(err(&format!("{{{base}}}")), "vmess: missing field \"port\"");
        assert_eq!(
            err(r#"{"add":"","port":443,"id":"u"}"#),
            "vmess: missing field \"add\" (server address)"
        );
        assert_eq!(
            err(r#"{"add":"h","port":443}"#),
            "vmess: missing field \"id\" (user id)"
        );
        assert_eq!(
            err(&format!(r#"{{{base},"port":1,"aid":"-1"}}"#)),
            "vmess: field \"aid\" is \"-1\", expected a number 0-65535"
        );
        assert_eq!(
            err(&format!(r#"{{{base},"port":1,"scy":"aes-256-cfb"}}"#)),
            "vmess: field \"scy\" is \"aes-256-cfb\", \
             expected auto, aes-128-gcm, chacha20-poly1305, none or zero"
        );
        assert_eq!(
            err(&format!(r#"{{{base},"port":1,"net":"kcp"}}"#)),
            "vmess: field \"net\" is \"kcp\", expected tcp, ws, grpc, h2, httpupgrade or xhttp"
        );
        assert_eq!(
            err(&format!(r#"{{{base},"port":1,"net":"tcp","type":"http"}}"#)),
            "vmess: field \"type\" is \"http\", \
             expected none (http header obfuscation is not supported)"
        );
        assert_eq!(
            err(&format!(r#"{{{base},"port":1,"tls":"reality"}}"#)),
            "vmess: field \"tls\" is \"reality\", expected \"tls\" or empty"
        );
        assert_eq!(
            err(&format!(r#"{{{base},"port":1,"host":["a","b"]}}"#)),
            "vmess: field \"host\" is \"[\\\"a\\\",\\\"b\\\"]\", expected a string or number"
        );
    }

    #[test]
    fn payload_errors() {
        assert_eq!(
            parse("vmess://this is not base64").unwrap_err().to_string(),
            "vmess: payload is not valid base64, expected base64 of a v2rayN JSON object"
        );
        assert_eq!(
            err("{add: 1}"),
            "vmess: payload is not valid JSON (key must be a string at line 1 column 2), \
             expected a v2rayN JSON object"
        );
        assert_eq!(
            err("[1, 2]"),
            "vmess: payload is not valid JSON (top level is not an object), \
             expected a v2rayN JSON object"
        );
    }
}
