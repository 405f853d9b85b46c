//! Subscription bodies: which format a body is, and its entries as share links. Formats: a
//! base64 blob or a plain link list (via [`crate::links::parse_input`]), SIP008 JSON, Clash /
//! mihomo YAML (`proxies:`) and sing-box JSON (`outbounds`). A bad entry is reported on its own;
//! a body in none of these formats is an error.

use serde_json::Value;

use super::node::{Kind, Node, Stream, Tls};
use super::SubsError;
use crate::links::{parse_input, parse_link, LinkError, ParsedLink};

/// Entries read from one body; more is refused (a provider list is hundreds at most).
pub const ENTRIES_MAX: usize = 10_000;

/// The formats understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Links, one per line, possibly base64-wrapped.
    Links,
    /// SIP008 JSON (`servers`).
    Sip008,
    /// Clash / mihomo YAML (`proxies`).
    Clash,
    /// sing-box JSON (`outbounds`).
    SingBox,
}

impl Format {
    /// For messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Links => "share links",
            Format::Sip008 => "SIP008 JSON",
            Format::Clash => "Clash YAML",
            Format::SingBox => "sing-box JSON",
        }
    }
}

/// One entry of a body.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Where it is, for messages: `line 3`, `proxies[2] "name"`.
    pub label: String,
    /// The link, or why the entry is not usable.
    pub result: Result<ParsedLink, String>,
}

/// A parsed body.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// Which format it was.
    pub format: Format,
    /// Its entries in order.
    pub entries: Vec<Entry>,
}

/// Reads a body. `origin` names the URL or file in errors.
pub fn parse_body(text: &str, origin: &str) -> Result<Parsed, SubsError> {
    let text = text.trim_start_matches('\u{feff}').trim();
    let bad = |detail: String| SubsError::BadContent {
        origin: origin.to_owned(),
        detail,
    };
    if text.is_empty() {
        return Err(bad("the body is empty".into()));
    }
    let parsed = if text.starts_with('{') || text.starts_with('[') {
        let value: Value =
            serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON ({e})")))?;
        json_body(&value).ok_or_else(|| {
            bad("JSON with neither \"servers\" (SIP008) nor \"outbounds\" (sing-box)".into())
        })?
    } else if let Some(parsed) = clash_body(text) {
        parsed
    } else {
        links_body(text).ok_or_else(|| {
            bad("no share links, base64 subscription, SIP008, Clash YAML or sing-box JSON".into())
        })?
    };
    if parsed.entries.len() > ENTRIES_MAX {
        return Err(bad(format!(
            "{} entries, more than the {ENTRIES_MAX} allowed",
            parsed.entries.len()
        )));
    }
    Ok(parsed)
}

fn links_body(text: &str) -> Option<Parsed> {
    let lines = parse_input(text);
    // A body where no line even looks like a link (an HTML error page, a wrong file) is bad
    // content, not a list of failed links.
    let any_link = lines
        .iter()
        .any(|l| !matches!(l.result, Err(LinkError::NotALink { .. })));
    if !any_link {
        return None;
    }
    let entries = lines
        .into_iter()
        .map(|l| Entry {
            label: format!("line {}", l.line),
            result: l.result.map_err(|e| e.to_string()),
        })
        .collect();
    Some(Parsed {
        format: Format::Links,
        entries,
    })
}

fn json_body(value: &Value) -> Option<Parsed> {
    if let Some(servers) = value.get("servers").and_then(Value::as_array) {
        let entries = servers
            .iter()
            .enumerate()
            .map(|(i, s)| entry(format!("servers[{i}]"), s, sip008))
            .collect();
        return Some(Parsed {
            format: Format::Sip008,
            entries,
        });
    }
    let outbounds = value.get("outbounds").and_then(Value::as_array)?;
    let entries = outbounds
        .iter()
        .enumerate()
        // Selectors, direct, block and dns outbounds are routing, not servers.
        .filter(|(_, o)| {
            !matches!(
                text(o, "type").unwrap_or_default().as_str(),
                "selector" | "urltest" | "direct" | "block" | "dns"
            )
        })
        .map(|(i, o)| entry(format!("outbounds[{i}]"), o, super::singbox::node))
        .collect();
    Some(Parsed {
        format: Format::SingBox,
        entries,
    })
}

fn clash_body(text: &str) -> Option<Parsed> {
    let value: Value = serde_yaml_ng::from_str(text).ok()?;
    let proxies = value.get("proxies")?.as_array()?;
    let entries = proxies
        .iter()
        .enumerate()
        .map(|(i, p)| entry(format!("proxies[{i}]"), p, super::clash::node))
        .collect();
    Some(Parsed {
        format: Format::Clash,
        entries,
    })
}

/// Converts one structured entry through its share link.
fn entry(label: String, value: &Value, convert: fn(&Value) -> Result<Node, String>) -> Entry {
    let label = match text(value, "tag")
        .or_else(|| text(value, "name"))
        .or_else(|| text(value, "remarks"))
    {
        Some(name) => format!("{label} {name:?}"),
        None => label,
    };
    let result =
        convert(value).and_then(|node| parse_link(&node.to_link()).map_err(|e| e.to_string()));
    Entry { label, result }
}

/// A string field (numbers are accepted as their text: YAML often has unquoted passwords).
pub(super) fn text(value: &Value, key: &str) -> Option<String> {
    match value.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A required string field.
pub(super) fn need(value: &Value, key: &str) -> Result<String, String> {
    text(value, key).ok_or_else(|| format!("missing \"{key}\""))
}

/// A port field (number or numeric string), 1..=65535.
pub(super) fn port(value: &Value, key: &str) -> Result<u16, String> {
    let raw = need(value, key)?;
    raw.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("\"{key}\" is {raw:?}, not a port between 1 and 65535"))
}

/// A boolean field; absent is false.
pub(super) fn flag(value: &Value, key: &str) -> bool {
    match value.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true" || s == "1",
        Some(Value::Number(n)) => n.as_u64() == Some(1),
        _ => false,
    }
}

/// A list of strings, or a comma-separated string.
pub(super) fn list(value: &Value, key: &str) -> Vec<String> {
    match value.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) if !s.is_empty() => s.split(',').map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// SIP008: `{"server", "server_port", "password", "method", "plugin", "plugin_opts", "remarks"}`.
fn sip008(value: &Value) -> Result<Node, String> {
    let server = need(value, "server")?;
    let port = port(value, "server_port")?;
    let plugin = text(value, "plugin").map(|name| match text(value, "plugin_opts") {
        Some(opts) => format!("{name};{opts}"),
        None => name,
    });
    Ok(Node {
        name: text(value, "remarks").unwrap_or_else(|| format!("ss {server}:{port}")),
        kind: Kind::Shadowsocks {
            method: need(value, "method")?,
            password: need(value, "password")?,
            plugin,
        },
        server,
        port,
        stream: Stream::default(),
        tls: Tls::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip008_and_bad_content() {
        let body = r#"{"version":1,"servers":[
            {"id":"1","remarks":"Tokyo","server":"198.51.100.1","server_port":8388,
             "password":"pw","method":"chacha20-ietf-poly1305"},
            {"server":"198.51.100.2","server_port":0,"password":"pw","method":"aes-256-gcm"},
            {"server":"198.51.100.3","server_port":"8389","password":"pw","method":"rc4-md5"}]}"#;
        let parsed = parse_body(body, "u").unwrap();
        assert_eq!(parsed.format, Format::Sip008);
        assert_eq!(parsed.entries[0].result.as_ref().unwrap().name, "Tokyo");
        assert!(parsed.entries[1]
            .result
            .as_ref()
            .unwrap_err()
            .contains("not a port"));
        assert!(parsed.entries[2].result.is_err());
        let err = parse_body("<html>not found</html>", "https://x/s").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("https://x/s: not a subscription"),
            "{err}"
        );
        assert!(parse_body("{\"a\":1}", "u").is_err());
        assert!(parse_body("", "u").is_err());
    }
}
