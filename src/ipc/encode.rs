//! The daemon's response encoder: writes straight into a connection's output buffer, so that a
//! reply costs one serialization and no intermediate `Value` or `String`.

use serde::Serialize;

use super::decode::RawId;
use super::protocol::{Code, ErrorPayload};

/// Appends one response line, payload serialized from `payload`.
pub fn write_response<P: Serialize>(
    out: &mut Vec<u8>,
    id: &RawId,
    code: Code,
    message: &str,
    payload: &P,
) {
    write_head(out, id, code, message);
    // Serializing plain structs and strings into a Vec cannot fail.
    serde_json::to_writer(&mut *out, payload).expect("payload serializes");
    out.extend_from_slice(b"}\n");
}

/// Appends one response line whose payload is already JSON (a cached body).
pub fn write_response_raw(
    out: &mut Vec<u8>,
    id: &RawId,
    code: Code,
    message: &str,
    payload: &[u8],
) {
    write_head(out, id, code, message);
    out.extend_from_slice(payload);
    out.extend_from_slice(b"}\n");
}

/// Appends one error line with payload `{"error": <meaning>}`.
pub fn write_error(out: &mut Vec<u8>, id: &RawId, code: Code, message: &str) {
    let payload = ErrorPayload {
        error: code.meaning().to_string(),
    };
    write_response(out, id, code, message, &payload);
}

fn write_head(out: &mut Vec<u8>, id: &RawId, code: Code, message: &str) {
    out.extend_from_slice(b"{\"protocol_version\":1,\"id\":");
    out.extend_from_slice(id.as_json());
    out.extend_from_slice(if code == Code::Ok {
        b",\"ok\":true,\"code\":"
    } else {
        b",\"ok\":false,\"code\":"
    });
    // Three ASCII digits; formatting through `fmt` would cost more than the rest of the head.
    let n = code.number();
    out.extend_from_slice(&[
        b'0' + (n / 100) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]);
    out.extend_from_slice(b",\"message\":");
    serde_json::to_writer(&mut *out, message).expect("a string serializes");
    out.extend_from_slice(b",\"payload\":");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::decode::decode_request;
    use crate::ipc::protocol::{PingPayload, ResponseEnvelope};

    #[test]
    fn output_parses_as_the_typed_envelope() {
        let (id, _) =
            decode_request(br#"{"protocol_version":1,"id":"k","request":{"type":"daemon_ping"}}"#)
                .unwrap();
        let mut out = Vec::new();
        let ping = PingPayload {
            daemon_ready: true,
            pid: 4,
            version: "0.1.0".into(),
            uptime_secs: 2,
            backend: Some("epoll".into()),
        };
        write_response(&mut out, &id, Code::Ok, "success", &ping);
        write_error(&mut out, &RawId::NONE, Code::Busy, "another \"op\" runs");
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        let first: ResponseEnvelope = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(first.id, Some(serde_json::json!("k")));
        assert!(first.ok);
        assert_eq!(first.code, 200);
        assert_eq!(
            serde_json::from_value::<PingPayload>(first.payload).unwrap(),
            ping
        );
        let second: ResponseEnvelope = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(second.id, None);
        assert!(!second.ok);
        assert_eq!(second.code, 423);
        assert_eq!(second.message, "another \"op\" runs");
        assert_eq!(second.payload, serde_json::json!({"error": "busy"}));
        assert!(text.ends_with('\n'));
    }
}
