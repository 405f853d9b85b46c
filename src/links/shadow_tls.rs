//! The `shadow-tls=` parameter of `ss://` links (Shadowrocket's form): base64 of a JSON object
//! `{"version": "3", "host": "www.example.com", "password": "..."}`. The ShadowTLS server relays
//! a real TLS handshake with `host`, so the stream looks like a visit to that site.

use serde_json::Value;

use super::common::decode_base64_text;
use super::error::{quote, LinkError};
use super::model::{Scheme, Transport};

const EXPECTED: &str = "base64 of a JSON object with \"version\" (1, 2 or 3), \"host\" and \
     \"password\"";
const VERSION_EXPECTED: &str = "1, 2 or 3";
/// The keys the object may hold; another one would change the stream in a way xrat cannot say.
const KEYS: [&str; 3] = ["version", "host", "password"];

/// Reads a `shadow-tls=` value into [`Transport::ShadowTls`].
pub(crate) fn parse(value: &str) -> Result<Transport, LinkError> {
    let scheme = Scheme::Shadowsocks;
    let invalid = || LinkError::invalid(scheme, "parameter \"shadow-tls\"", value, EXPECTED);
    // A raw '+' in a query reads as a space; base64 has no spaces, so it was a '+'.
    let text = decode_base64_text(&value.replace(' ', "+")).ok_or_else(invalid)?;
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(&text) else {
        return Err(invalid());
    };
    if let Some(key) = object.keys().find(|key| !KEYS.contains(&key.as_str())) {
        return Err(LinkError::Unsupported {
            scheme,
            what: format!("ShadowTLS option \"{}\"", quote(key)),
            fix: "use a link whose shadow-tls object has only version, host and password",
        });
    }
    let version = match object.get("version") {
        Some(Value::String(text)) => text.trim().parse::<u8>().ok(),
        Some(Value::Number(number)) => number.as_u64().and_then(|n| u8::try_from(n).ok()),
        None => Some(3),
        Some(_) => None,
    };
    let shown = match object.get("version") {
        Some(Value::String(text)) => text.clone(),
        other => other.map(Value::to_string).unwrap_or_default(),
    };
    let version = version.filter(|v| (1..=3).contains(v)).ok_or_else(|| {
        LinkError::invalid(scheme, "ShadowTLS \"version\"", &shown, VERSION_EXPECTED)
    })?;
    let text_field = |key: &str| match object.get(key) {
        Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
        _ => None,
    };
    let host = text_field("host")
        .ok_or_else(|| LinkError::missing(scheme, "ShadowTLS \"host\" (the handshake server)"))?;
    let password = text_field("password").unwrap_or_default();
    if version > 1 && password.is_empty() {
        return Err(LinkError::missing(
            scheme,
            "ShadowTLS \"password\" (versions 2 and 3 need one)",
        ));
    }
    Ok(Transport::ShadowTls {
        version,
        host,
        password,
    })
}

#[cfg(test)]
mod tests {
    use base64::{engine::general_purpose::STANDARD, Engine};

    use super::*;

    fn encoded(json: &str) -> String {
        STANDARD.encode(json)
    }

    #[test]
    fn shadowrocket_object() {
        let value = encoded(r#"{"version":"3","host":"www.example.com","password":"pw"}"#);
        assert_eq!(
            parse(&value).unwrap(),
            Transport::ShadowTls {
                version: 3,
                host: "www.example.com".into(),
                password: "pw".into()
            }
        );
        let value = encoded(r#"{"version":2,"host":"h.example","password":"p"}"#);
        assert!(matches!(
            parse(&value).unwrap(),
            Transport::ShadowTls { version: 2, .. }
        ));
    }

    #[test]
    fn refusals_name_the_value() {
        let err = |json: &str| parse(&encoded(json)).unwrap_err().to_string();
        assert_eq!(
            err(r#"{"version":"4","host":"h","password":"p"}"#),
            "ss: ShadowTLS \"version\" is \"4\", expected 1, 2 or 3"
        );
        assert_eq!(
            err(r#"{"version":3,"password":"p"}"#),
            "ss: missing ShadowTLS \"host\" (the handshake server)"
        );
        assert_eq!(
            err(r#"{"version":3,"host":"h"}"#),
            "ss: missing ShadowTLS \"password\" (versions 2 and 3 need one)"
        );
        assert_eq!(
            err(r#"{"version":3,"host":"h","password":"p","address":"x"}"#),
            "ss: ShadowTLS option \"address\" is not supported; use a link whose shadow-tls \
             object has only version, host and password"
        );
        assert_eq!(
            parse("%%%").unwrap_err().to_string(),
            "ss: parameter \"shadow-tls\" is \"%%%\", expected base64 of a JSON object with \
             \"version\" (1, 2 or 3), \"host\" and \"password\""
        );
    }
}
