//! Turns supervisor replies into response lines, caching the ping body: it changes once a second.

use crate::ipc::encode::{write_error, write_response, write_response_raw};
use crate::ipc::protocol::{Code, PingPayload};
use crate::ipc::RawId;
use crate::supervisor::Reply;

/// Encoder with the cached ping payload.
#[derive(Debug)]
pub struct ReplyEncoder {
    ping: Option<(u32, u64, Vec<u8>)>,
    /// The loop's backend, reported by `daemon_ping`.
    backend: &'static str,
}

impl ReplyEncoder {
    /// An encoder whose pings report `backend`.
    pub fn new(backend: &'static str) -> ReplyEncoder {
        ReplyEncoder {
            ping: None,
            backend,
        }
    }

    /// Appends the response line for `reply` to `out`.
    /// A `message` replaces "success" on a successful reply (a warning the caller should see).
    pub fn encode(&mut self, out: &mut Vec<u8>, id: &RawId, reply: &Reply, message: Option<&str>) {
        if let (Some(message), Reply::Disconnected(payload)) = (message, reply) {
            return write_response(out, id, Code::Ok, message, payload);
        }
        match reply {
            Reply::Ping { pid, uptime_secs } => {
                let body = self.ping_body(*pid, *uptime_secs);
                write_response_raw(out, id, Code::Ok, "success", body);
            }
            Reply::Shutdown(payload) => write_response(out, id, Code::Ok, "success", payload),
            Reply::RuntimeStatus(payload) => write_response(out, id, Code::Ok, "success", payload),
            Reply::ProxyStatus(payload) => write_response(out, id, Code::Ok, "success", payload),
            Reply::Connected(payload) => write_response(out, id, Code::Ok, "success", payload),
            Reply::Disconnected(payload) => write_response(out, id, Code::Ok, "success", payload),
            Reply::Replaced(payload) => write_response(out, id, Code::Ok, "success", payload),
            Reply::Rotation(payload) => write_response(out, id, Code::Ok, "success", payload),
            Reply::Reloaded(payload) => write_response(out, id, Code::Ok, "success", payload),
            Reply::ConfigTested(payload) => write_response(out, id, Code::Ok, "success", payload),
            Reply::Subscribed(payload) => write_response(out, id, Code::Ok, "success", payload),
            Reply::Error { code, message } => write_error(out, id, *code, message),
        }
    }

    fn ping_body(&mut self, pid: u32, uptime_secs: u64) -> &[u8] {
        let fresh = matches!(&self.ping, Some((p, u, _)) if *p == pid && *u == uptime_secs);
        if !fresh {
            let payload = PingPayload {
                daemon_ready: true,
                pid,
                version: env!("CARGO_PKG_VERSION").to_string(),
                uptime_secs,
                backend: Some(self.backend.to_string()),
            };
            let body = serde_json::to_vec(&payload).expect("ping payload serializes");
            self.ping = Some((pid, uptime_secs, body));
        }
        &self.ping.as_ref().expect("just filled").2
    }
}
