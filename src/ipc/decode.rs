//! The daemon's request decoder: one pass of serde_json over a borrowed line, no allocation on
//! the success path. The id is kept as its raw JSON text so that it can be echoed byte for byte.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::protocol::{Code, Request, Trigger, ID_BYTES_MAX, PROTOCOL_VERSION, REQUEST_KINDS};

/// Longest id as raw JSON text. A string id holds at most [`ID_BYTES_MAX`] bytes; escapes may make
/// its JSON form longer, up to this bound.
pub const ID_RAW_BYTES_MAX: usize = 2 * ID_BYTES_MAX + 2;

/// A request id as raw JSON (a number or a string), stored inline so that it moves without
/// allocating. An empty id means "no id" and is echoed as `null`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RawId {
    len: u8,
    bytes: [u8; ID_RAW_BYTES_MAX],
}

const _: () = assert!(ID_RAW_BYTES_MAX <= u8::MAX as usize);

impl RawId {
    /// No id was sent.
    pub const NONE: RawId = RawId {
        len: 0,
        bytes: [0; ID_RAW_BYTES_MAX],
    };

    /// The id as JSON text, `null` when absent.
    pub fn as_json(&self) -> &[u8] {
        if self.len == 0 {
            b"null"
        } else {
            &self.bytes[..self.len as usize]
        }
    }

    fn from_raw(raw: &RawValue) -> Result<RawId, String> {
        let text = raw.get();
        let valid = match text.as_bytes().first() {
            Some(b'"') => serde_json::from_str::<Cow<str>>(text)
                .map(|s| s.len() <= ID_BYTES_MAX)
                .unwrap_or(false),
            // RawValue does not range-check numbers; an id serde_json cannot read back (1e999)
            // would make the echoing reply unreadable to the client, so it is refused.
            // A plain integer always reads back; only exponents and fractions need the check.
            Some(b'-' | b'0'..=b'9') if is_integer(text) => true,
            Some(b'-' | b'0'..=b'9') => serde_json::from_str::<serde_json::Number>(text).is_ok(),
            Some(b'n') => return Ok(RawId::NONE),
            _ => false,
        };
        if !valid || text.len() > ID_RAW_BYTES_MAX {
            return Err(format!(
                "field `id` must be a number or a string of at most {ID_BYTES_MAX} bytes, got {}",
                excerpt(text)
            ));
        }
        let mut id = RawId::NONE;
        id.bytes[..text.len()].copy_from_slice(text.as_bytes());
        id.len = text.len() as u8;
        Ok(id)
    }
}

/// `text`, already valid JSON, is an integer: digits after an optional minus sign.
fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

impl std::fmt::Debug for RawId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_json()))
    }
}

/// A request line that could not be turned into a [`Request`], with the answer it deserves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// 400 or 426.
    pub code: Code,
    /// A sentence a person can act on.
    pub message: String,
    /// The id, when it could be recovered, so that even errors are correlated.
    pub id: RawId,
}

#[derive(Deserialize)]
struct Wire<'a> {
    protocol_version: Option<u64>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    request: Option<Body<'a>>,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    config_id: Option<i64>,
    #[serde(borrow)]
    trigger: Option<Cow<'a, str>>,
    candidate_id: Option<i64>,
    config_ids: Option<Vec<i64>>,
    #[serde(borrow)]
    url: Option<Cow<'a, str>>,
    timeout_ms: Option<u64>,
    concurrency: Option<u32>,
    #[serde(borrow)]
    events: Option<Vec<Cow<'a, str>>>,
}

/// Only what is needed to answer a line that failed the strict pass.
#[derive(Deserialize)]
struct Lenient<'a> {
    #[serde(borrow)]
    protocol_version: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

/// Decodes one request line (without its newline).
// The Ok side carries the same inline id, so boxing the error would save no copying.
#[allow(clippy::result_large_err)]
pub fn decode_request(line: &[u8]) -> Result<(RawId, Request), DecodeError> {
    // serde would accept a struct written as an array; the protocol does not.
    if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let kind = match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
            Ok(_) => "request must be a JSON object".to_string(),
            Err(e) => format!("request is not valid JSON ({e})"),
        };
        return Err(bad(
            format!("{kind}; send one JSON object per line"),
            RawId::NONE,
        ));
    }
    // Checked once as a whole, the line's strings are borrowed without checking each one again
    // (that check was a sixth of the decoder's instructions). A line that is not UTF-8 goes
    // through the byte reader, whose error names where it breaks.
    let wire = match std::str::from_utf8(line) {
        Ok(text) => serde_json::from_str::<Wire>(text),
        Err(_) => serde_json::from_slice::<Wire>(line),
    };
    match wire {
        Ok(wire) => decode_wire(wire),
        Err(err) => Err(explain_parse_failure(line, &err)),
    }
}

#[allow(clippy::result_large_err)]
fn decode_wire(wire: Wire<'_>) -> Result<(RawId, Request), DecodeError> {
    let id = match wire.id {
        None => RawId::NONE,
        Some(raw) => RawId::from_raw(raw).map_err(|message| bad(message, RawId::NONE))?,
    };
    match wire.protocol_version {
        Some(PROTOCOL_VERSION) => {}
        Some(other) => return Err(unsupported(&other.to_string(), id)),
        None => {
            return Err(bad(
                format!(
                "missing field `protocol_version`; send \"protocol_version\": {PROTOCOL_VERSION}"
            ),
                id,
            ))
        }
    }
    let Some(body) = wire.request else {
        return Err(bad(
            "missing field `request`; send \"request\": {\"type\": \"daemon_ping\"}".into(),
            id,
        ));
    };
    let request = decode_body(body).map_err(|message| bad(message, id))?;
    Ok((id, request))
}

fn decode_body(body: Body<'_>) -> Result<Request, String> {
    let Some(kind) = body.kind.clone() else {
        return Err("missing field `request.type`".into());
    };
    let request = match kind.as_ref() {
        "daemon_ping" | "DaemonPing" => Request::DaemonPing,
        "daemon_shutdown" | "DaemonShutdown" => Request::DaemonShutdown,
        "runtime_status" | "RuntimeStatus" => Request::RuntimeStatus,
        "runtime_connect" | "RuntimeConnect" => Request::RuntimeConnect {
            config_id: body
                .config_id
                .ok_or("runtime_connect needs the integer field `request.config_id`")?,
        },
        "runtime_replace" | "RuntimeReplace" => Request::RuntimeReplace {
            trigger: decode_trigger(body.trigger.as_deref())?,
            candidate_id: body.candidate_id,
        },
        "runtime_disconnect" | "RuntimeDisconnect" => Request::RuntimeDisconnect,
        "proxy_start" | "ProxyStart" => Request::ProxyStart,
        "proxy_stop" | "ProxyStop" => Request::ProxyStop,
        "proxy_status" | "ProxyStatus" => Request::ProxyStatus,
        "daemon_reload" | "DaemonReload" => Request::DaemonReload,
        "config_test" | "ConfigTest" => decode_config_test(body)?,
        "subscribe" | "Subscribe" => decode_subscribe(body.events.unwrap_or_default())?,
        other => {
            return Err(format!(
                "unknown request type {}; known types: {}",
                excerpt(&format!("{other:?}")),
                REQUEST_KINDS.join(", ")
            ))
        }
    };
    Ok(request)
}

/// `config_test`'s fields, bounded as `xrat config test` bounds its flags.
fn decode_config_test(body: Body<'_>) -> Result<Request, String> {
    use crate::ctest::{self, CONCURRENCY_MAX, CONFIGS_MAX, TIMEOUT_MS_MAX, TIMEOUT_MS_MIN};
    let config_ids = body.config_ids.unwrap_or_default();
    if config_ids.len() > CONFIGS_MAX {
        return Err(format!(
            "config_test names {} configs in `request.config_ids`; name at most {CONFIGS_MAX}",
            config_ids.len()
        ));
    }
    let url = body.url.map(Cow::into_owned);
    if let Some(url) = &url {
        crate::probe::ProbeTarget::parse(url).map_err(|e| format!("`request.url`: {e}"))?;
    }
    let timeout_ms = body.timeout_ms;
    let concurrency = body.concurrency;
    if timeout_ms.is_some() || concurrency.is_some() {
        ctest::check_limits(
            timeout_ms.unwrap_or(ctest::TIMEOUT_MS_DEFAULT),
            concurrency.unwrap_or(ctest::CONCURRENCY_DEFAULT),
        )
        .map_err(|_| {
            format!(
                "config_test needs `request.timeout_ms` between {TIMEOUT_MS_MIN} and {TIMEOUT_MS_MAX} and `request.concurrency` between 1 and {CONCURRENCY_MAX}"
            )
        })?;
    }
    Ok(Request::ConfigTest {
        config_ids,
        url,
        timeout_ms,
        concurrency,
    })
}

/// `subscribe`'s categories: every name must be known (an unknown one is a typo, not a filter
/// that silently matches nothing).
fn decode_subscribe(names: Vec<Cow<'_, str>>) -> Result<Request, String> {
    use super::events::{Category, CATEGORIES};
    let mut events = Vec::with_capacity(names.len().min(CATEGORIES.len()));
    for name in &names {
        let Some(category) = Category::from_name(name) else {
            return Err(format!(
                "unknown event category {} in `request.events`; valid categories: {} (an empty list means all)",
                excerpt(&format!("{name:?}")),
                Category::names()
            ));
        };
        if !events.contains(&category) {
            events.push(category);
        }
    }
    Ok(Request::Subscribe { events })
}

fn decode_trigger(trigger: Option<&str>) -> Result<Trigger, String> {
    let Some(name) = trigger else {
        return Err("runtime_replace needs the field `request.trigger` (manual, timer or health_check_failed)".into());
    };
    Trigger::from_name(name).ok_or_else(|| {
        format!(
            "unknown trigger {}; use manual, timer or health_check_failed",
            excerpt(&format!("{name:?}"))
        )
    })
}

/// The strict pass failed: recover the id and the version if the line is JSON at all, so that a
/// newer client gets 426 rather than a confusing 400.
fn explain_parse_failure(line: &[u8], err: &serde_json::Error) -> DecodeError {
    let Ok(lenient) = serde_json::from_slice::<Lenient>(line) else {
        let message = if err.is_syntax() || err.is_eof() {
            format!("request is not valid JSON ({err}); send one JSON object per line")
        } else {
            format!("request must be a JSON object ({err})")
        };
        return bad(message, RawId::NONE);
    };
    let id = lenient
        .id
        .and_then(|raw| RawId::from_raw(raw).ok())
        .unwrap_or(RawId::NONE);
    if let Some(version) = lenient.protocol_version {
        if version.get() != "1" {
            return unsupported(version.get(), id);
        }
    }
    bad(format!("malformed request: {err}"), id)
}

fn bad(message: String, id: RawId) -> DecodeError {
    DecodeError {
        code: Code::BadRequest,
        message,
        id,
    }
}

fn unsupported(version: &str, id: RawId) -> DecodeError {
    DecodeError {
        code: Code::UnsupportedVersion,
        message: format!(
            "protocol_version {} is not supported; this daemon speaks protocol_version {PROTOCOL_VERSION}",
            excerpt(version)
        ),
        id,
    }
}

/// Echoing client input into messages is useful, but never whole kilobytes of it.
fn excerpt(text: &str) -> Cow<'_, str> {
    const EXCERPT_CHARS_MAX: usize = 80;
    match text.char_indices().nth(EXCERPT_CHARS_MAX) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!("{}…", &text[..cut])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> (String, Request) {
        let (id, request) = decode_request(line.as_bytes()).expect(line);
        (String::from_utf8(id.as_json().to_vec()).unwrap(), request)
    }

    fn err(line: &str) -> DecodeError {
        decode_request(line.as_bytes()).expect_err(line)
    }

    #[test]
    fn decodes_every_type_in_both_spellings() {
        let cases = [
            (r#"{"type":"daemon_ping"}"#, Request::DaemonPing),
            (r#"{"type":"DaemonShutdown"}"#, Request::DaemonShutdown),
            (r#"{"type":"RuntimeStatus"}"#, Request::RuntimeStatus),
            (
                r#"{"type":"runtime_connect","config_id":42}"#,
                Request::RuntimeConnect { config_id: 42 },
            ),
            (
                r#"{"type":"RuntimeReplace","trigger":"timer","candidate_id":3}"#,
                Request::RuntimeReplace {
                    trigger: Trigger::Timer,
                    candidate_id: Some(3),
                },
            ),
            (
                r#"{"type":"runtime_disconnect"}"#,
                Request::RuntimeDisconnect,
            ),
            (r#"{"type":"ProxyStart"}"#, Request::ProxyStart),
            (r#"{"type":"proxy_stop"}"#, Request::ProxyStop),
            (r#"{"type":"proxy_status"}"#, Request::ProxyStatus),
        ];
        for (body, want) in cases {
            let line = format!(r#"{{"protocol_version":1,"id":7,"request":{body}}}"#);
            assert_eq!(ok(&line), ("7".to_string(), want));
        }
    }

    #[test]
    fn subscribe_names_its_categories_and_refuses_unknown_ones() {
        use crate::ipc::events::Category;
        let line = r#"{"protocol_version":1,"request":{"type":"subscribe","events":["relay","session","relay"]}}"#;
        assert_eq!(
            ok(line).1,
            Request::Subscribe {
                events: vec![Category::Relay, Category::Session]
            }
        );
        let all = r#"{"protocol_version":1,"request":{"type":"Subscribe"}}"#;
        assert_eq!(ok(all).1, Request::Subscribe { events: vec![] });
        let e = err(
            r#"{"protocol_version":1,"id":3,"request":{"type":"subscribe","events":["sessions"]}}"#,
        );
        assert_eq!(e.code, Code::BadRequest);
        assert!(e.message.contains("\"sessions\""), "{}", e.message);
        assert!(e
            .message
            .contains("session, health, rotation, config, pool, relay"));
        assert_eq!(e.id.as_json(), b"3");
    }

    #[test]
    fn echoes_ids_verbatim() {
        let line = r#"{"protocol_version":1,"id":"a\"b","request":{"type":"daemon_ping"}}"#;
        assert_eq!(ok(line).0, r#""a\"b""#);
        let line = r#"{"protocol_version":1,"request":{"type":"daemon_ping"}}"#;
        assert_eq!(ok(line).0, "null");
    }

    #[test]
    fn rejects_long_or_odd_ids() {
        let long = "x".repeat(ID_BYTES_MAX + 1);
        let line =
            format!(r#"{{"protocol_version":1,"id":"{long}","request":{{"type":"daemon_ping"}}}}"#);
        assert_eq!(err(&line).code, Code::BadRequest);
        let line = r#"{"protocol_version":1,"id":[1],"request":{"type":"daemon_ping"}}"#;
        assert!(err(line)
            .message
            .contains("field `id` must be a number or a string"));
    }

    /// Found by the `request` fuzz target: a number id out of f64 range was echoed verbatim, so
    /// the reply was JSON that serde_json (the CLI's own client) rejects.
    #[test]
    fn fuzz_regression_out_of_range_number_id_is_not_echoed() {
        let crash = r#"{"protocol_version":1,"verosni":1,"id":999999E9990000000000000000008,"config_idiTTTTTTTTTTTTTTTTTTTTTTTTTTE99900000id":99}"#;
        let e = err(crash);
        assert_eq!(e.code, Code::BadRequest);
        assert_eq!(e.id.as_json(), b"null");
        for id in ["1e999", "-1e400", "123456789e310"] {
            let line =
                format!(r#"{{"protocol_version":1,"id":{id},"request":{{"type":"daemon_ping"}}}}"#);
            let e = err(&line);
            assert!(
                e.message.contains("field `id` must be a number"),
                "{}",
                e.message
            );
            assert_eq!(e.id.as_json(), b"null");
        }
        // Large but finite numbers are still echoed byte for byte.
        let line = r#"{"protocol_version":1,"id":1.5e300,"request":{"type":"daemon_ping"}}"#;
        assert_eq!(ok(line).0, "1.5e300");
        let line = r#"{"protocol_version":1,"id":123456789012345678901234567890,"request":{"type":"daemon_ping"}}"#;
        assert_eq!(ok(line).0, "123456789012345678901234567890");
        // Integers take the short path; every shape of them is echoed as sent.
        for id in ["0", "-0", "7", "-42", &"9".repeat(ID_RAW_BYTES_MAX)] {
            let line =
                format!(r#"{{"protocol_version":1,"id":{id},"request":{{"type":"daemon_ping"}}}}"#);
            assert_eq!(ok(&line).0, id);
        }
        let line = format!(
            r#"{{"protocol_version":1,"id":{},"request":{{"type":"daemon_ping"}}}}"#,
            "9".repeat(ID_RAW_BYTES_MAX + 1)
        );
        assert!(err(&line).message.contains("field `id` must be a number"));
    }

    #[test]
    fn a_line_that_is_not_utf8_is_refused_with_where_it_breaks() {
        let mut line = br#"{"protocol_version":1,"id":3,"request":{"type":"daemon_"#.to_vec();
        line.extend_from_slice(b"\xff\xfe");
        line.extend_from_slice(br#"ping"}}"#);
        let e = decode_request(&line).expect_err("not UTF-8");
        assert_eq!(e.code, Code::BadRequest);
        assert!(e.message.contains("column"), "{}", e.message);
        assert_eq!(e.id.as_json(), b"3");
    }

    #[test]
    fn explains_bad_lines() {
        assert!(err("hello")
            .message
            .starts_with("request is not valid JSON"));
        assert!(err("[1,2]")
            .message
            .starts_with("request must be a JSON object"));
        let unknown = err(r#"{"protocol_version":1,"id":1,"request":{"type":"fly"}}"#);
        assert_eq!(unknown.code, Code::BadRequest);
        assert!(unknown
            .message
            .starts_with("unknown request type \"fly\"; known types: daemon_ping"));
        assert_eq!(unknown.id.as_json(), b"1");
        let missing = err(r#"{"protocol_version":1,"request":{"type":"runtime_connect"}}"#);
        assert_eq!(
            missing.message,
            "runtime_connect needs the integer field `request.config_id`"
        );
    }

    #[test]
    fn wrong_version_is_426_even_when_the_shape_is_new() {
        let e = err(r#"{"protocol_version":2,"id":"x","request":{"type":"daemon_ping"}}"#);
        assert_eq!(e.code, Code::UnsupportedVersion);
        assert_eq!(e.id.as_json(), br#""x""#);
        assert!(e.message.contains("speaks protocol_version 1"));
        let e = err(r#"{"protocol_version":"2","request":{"kind":[]}}"#);
        assert_eq!(e.code, Code::UnsupportedVersion);
        let e = err(r#"{"request":{"type":"daemon_ping"}}"#);
        assert_eq!(e.code, Code::BadRequest);
        assert!(e.message.contains("missing field `protocol_version`"));
    }

    #[test]
    fn wrong_field_type_keeps_the_id() {
        let e = err(
            r#"{"protocol_version":1,"id":9,"request":{"type":"runtime_connect","config_id":"x"}}"#,
        );
        assert_eq!(e.code, Code::BadRequest);
        assert_eq!(e.id.as_json(), b"9");
        assert!(e.message.starts_with("malformed request: invalid type"));
    }
}
