//! Wire types of IPC protocol v1 (DESIGN §4): the request envelope, the nine request types,
//! response codes and the typed payloads.
//!
//! Two decoders share these types. [`RequestEnvelope`] is the plain typed serde form that clients
//! (and the benchmark peers) use. The daemon's hot path uses [`crate::ipc::decode`], which borrows
//! from the input line and allocates nothing, but yields the same [`Request`].

use serde::{Deserialize, Serialize};

/// The only protocol version this build speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// Longest accepted request id, in bytes of its decoded string (DESIGN §4).
pub const ID_BYTES_MAX: usize = 64;

/// A request as it travels on the wire, in typed form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// Must be [`PROTOCOL_VERSION`].
    pub protocol_version: u64,
    /// Optional correlation id, echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<serde_json::Value>,
    /// What is asked.
    pub request: Request,
}

/// Every request type of protocol v1. PascalCase names are accepted as aliases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Liveness and identity of the daemon.
    #[serde(alias = "DaemonPing")]
    DaemonPing,
    /// Stop the session and exit.
    #[serde(alias = "DaemonShutdown")]
    DaemonShutdown,
    /// State of the running session.
    #[serde(alias = "RuntimeStatus")]
    RuntimeStatus,
    /// Start (or switch to) a session for a stored config.
    #[serde(alias = "RuntimeConnect")]
    RuntimeConnect {
        /// Stored config to connect.
        config_id: i64,
    },
    /// Rotate to another config.
    #[serde(alias = "RuntimeReplace")]
    RuntimeReplace {
        /// Why the rotation happens.
        trigger: Trigger,
        /// A specific config to rotate to; the best tested candidate when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        candidate_id: Option<i64>,
    },
    /// Stop the session.
    #[serde(alias = "RuntimeDisconnect")]
    RuntimeDisconnect,
    /// Enable automatic rotation.
    #[serde(alias = "ProxyStart")]
    ProxyStart,
    /// Disable automatic rotation.
    #[serde(alias = "ProxyStop")]
    ProxyStop,
    /// Rotation settings and history.
    #[serde(alias = "ProxyStatus")]
    ProxyStatus,
    /// Re-read config.toml (the same as SIGHUP).
    #[serde(alias = "DaemonReload")]
    DaemonReload,
    /// Batch-test stored configs through a temporary core (issue 12); obeys the busy rule.
    #[serde(alias = "ConfigTest")]
    ConfigTest {
        /// The configs, enabled or not; empty for every enabled config.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        config_ids: Vec<i64>,
        /// The http:// URL probed through each; `health.probe_url` when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// One probe's deadline; `health.timeout_ms` when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// Probes at once; `runtime.rotation.test_concurrency` when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        concurrency: Option<u32>,
    },
    /// Stream events on this connection (issue 13); see [`crate::ipc::events`].
    #[serde(alias = "Subscribe")]
    Subscribe {
        /// The categories; empty for every one.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        events: Vec<crate::ipc::events::Category>,
    },
}

/// Every request kind, in the order of DESIGN §4.
pub const REQUEST_KINDS: [&str; 12] = [
    "daemon_ping",
    "daemon_shutdown",
    "runtime_status",
    "runtime_connect",
    "runtime_replace",
    "runtime_disconnect",
    "proxy_start",
    "proxy_stop",
    "proxy_status",
    "daemon_reload",
    "config_test",
    "subscribe",
];

/// The requests a read-only peer (docs/PROTOCOL.md "Access") may send: they look and change
/// nothing. Matched by wire name; every other request, present or future, needs read-write
/// access.
pub const READ_ONLY_REQUESTS: [&str; 4] =
    ["daemon_ping", "runtime_status", "proxy_status", "subscribe"];

impl Request {
    /// The snake_case wire name of this request.
    pub fn name(&self) -> &'static str {
        match self {
            Request::DaemonPing => "daemon_ping",
            Request::DaemonShutdown => "daemon_shutdown",
            Request::RuntimeStatus => "runtime_status",
            Request::RuntimeConnect { .. } => "runtime_connect",
            Request::RuntimeReplace { .. } => "runtime_replace",
            Request::RuntimeDisconnect => "runtime_disconnect",
            Request::ProxyStart => "proxy_start",
            Request::ProxyStop => "proxy_stop",
            Request::ProxyStatus => "proxy_status",
            Request::DaemonReload => "daemon_reload",
            Request::ConfigTest { .. } => "config_test",
            Request::Subscribe { .. } => "subscribe",
        }
    }

    /// True for the requests a read-only peer may send (see [`READ_ONLY_REQUESTS`]).
    pub fn is_read_only(&self) -> bool {
        READ_ONLY_REQUESTS.contains(&self.name())
    }

    /// True for the requests that change the session and so obey the busy rule.
    pub fn is_runtime_operation(&self) -> bool {
        matches!(
            self,
            Request::RuntimeConnect { .. }
                | Request::RuntimeReplace { .. }
                | Request::RuntimeDisconnect
                | Request::ConfigTest { .. }
        )
    }
}

/// What started a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Asked for by a person or a script.
    Manual,
    /// The rotation interval elapsed.
    Timer,
    /// Health probes failed `failure_threshold` times in a row.
    HealthCheckFailed,
}

impl Trigger {
    /// Parses the wire name of a trigger.
    pub fn from_name(name: &str) -> Option<Trigger> {
        match name {
            "manual" => Some(Trigger::Manual),
            "timer" => Some(Trigger::Timer),
            "health_check_failed" => Some(Trigger::HealthCheckFailed),
            _ => None,
        }
    }
}

/// A response code of protocol v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 200 success.
    Ok,
    /// 400: not JSON, not an object, unknown type, missing or wrong field.
    BadRequest,
    /// 403: the peer may only read (`daemon.socket_group`) and the request changes something.
    Forbidden,
    /// 404: config id unknown or disabled.
    NotFound,
    /// 408: a partial request line was not completed within `daemon.frame_timeout_ms`; the
    /// connection is closed after the reply.
    FrameTimeout,
    /// 409: request not valid in this state.
    Conflict,
    /// 413: line over the frame limit; the connection is closed after the reply.
    FrameTooLarge,
    /// 423: another runtime operation is in flight.
    Busy,
    /// 426: `protocol_version` is not 1.
    UnsupportedVersion,
    /// 500: a bug or an OS error.
    Internal,
    /// 501: the request exists in v1 but this build does not implement it yet.
    NotImplemented,
    /// 503: shutting down, or connection limit reached.
    Unavailable,
    /// 504: the core did not become ready in time.
    Timeout,
}

impl Code {
    /// Numeric status.
    pub fn number(self) -> u16 {
        match self {
            Code::Ok => 200,
            Code::BadRequest => 400,
            Code::Forbidden => 403,
            Code::NotFound => 404,
            Code::FrameTimeout => 408,
            Code::Conflict => 409,
            Code::FrameTooLarge => 413,
            Code::Busy => 423,
            Code::UnsupportedVersion => 426,
            Code::Internal => 500,
            Code::NotImplemented => 501,
            Code::Unavailable => 503,
            Code::Timeout => 504,
        }
    }

    /// The short meaning, used as `payload.error` on failures and `message` on success.
    pub fn meaning(self) -> &'static str {
        match self {
            Code::Ok => "success",
            Code::BadRequest => "bad_request",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::FrameTimeout => "frame_timeout",
            Code::Conflict => "conflict",
            Code::FrameTooLarge => "frame_too_large",
            Code::Busy => "busy",
            Code::UnsupportedVersion => "unsupported_version",
            Code::Internal => "internal",
            Code::NotImplemented => "not_implemented",
            Code::Unavailable => "unavailable",
            Code::Timeout => "timeout",
        }
    }
}

/// `daemon_reload` (and SIGHUP): what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadPayload {
    /// The file was read and is valid.
    pub reloaded: bool,
    /// Changed keys now in force (dotted, e.g. `runtime.rotation.interval_secs`).
    pub applied: Vec<String>,
    /// Changed keys that take effect only after `xrat daemon stop` and start.
    pub restart_needed: Vec<String>,
}

/// `config_test`: one result per config, in the order asked (every enabled config by id when
/// none was named).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigTestPayload {
    /// The URL probed.
    pub url: String,
    /// One probe's deadline.
    pub timeout_ms: u64,
    /// Probes at once.
    pub concurrency: u32,
    /// The results.
    pub results: Vec<crate::ctest::TestOutcome>,
}

/// A response as it travels on the wire, in typed form (what clients decode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    /// Always [`PROTOCOL_VERSION`].
    pub protocol_version: u64,
    /// The request's id, or null.
    #[serde(default)]
    pub id: Option<serde_json::Value>,
    /// True exactly when `code` is 200.
    pub ok: bool,
    /// Numeric code (see [`Code`]).
    pub code: u16,
    /// "success", or a sentence a person can act on.
    pub message: String,
    /// Request-specific payload, or `{"error": meaning, ...}`.
    pub payload: serde_json::Value,
}

/// Payload of `daemon_ping`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingPayload {
    /// True while the daemon serves requests.
    pub daemon_ready: bool,
    /// The daemon's process id.
    pub pid: u32,
    /// The daemon's version.
    pub version: String,
    /// Whole seconds since the daemon started.
    pub uptime_secs: u64,
    /// The event loop's backend: `io_uring` or `epoll` (absent from daemons before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// Payload of `daemon_shutdown`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShutdownPayload {
    /// Always false: the daemon is going away.
    pub daemon_ready: bool,
    /// True when a running session was stopped.
    pub runtime_disconnected: bool,
}

/// Health accounting of the active session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthView {
    /// Unix seconds of the last probe.
    pub last_check_at: Option<u64>,
    /// Latency of the last successful probe.
    pub last_latency_ms: Option<u64>,
    /// Failed probes in a row.
    pub consecutive_failures: u32,
    /// What the last failed probe saw.
    pub last_error: Option<String>,
}

/// One member of the pool core (front mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolMemberView {
    /// The stored config.
    pub config_id: i64,
    /// True for the member new connections go to.
    pub active: bool,
    /// Its internal SOCKS inbound, host:port.
    pub socks_addr: String,
    /// Latency of its last successful probe.
    pub latency_ms: Option<u64>,
    /// Whether the front may relay to it (its last probe passed and passive failures are
    /// under `health.passive_failures`).
    pub alive: bool,
    /// Failed relayed openings within `health.passive_window_ms`.
    pub passive_failures: u32,
    /// What failed it last, if it is not alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The front relay's counters since the daemon started (front mode).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayView {
    /// Relayed connections open now.
    pub connections_open: u64,
    /// Relayed connections accepted since start.
    pub connections_total: u64,
    /// Bytes from clients to cores.
    pub bytes_up: u64,
    /// Bytes from cores to clients.
    pub bytes_down: u64,
    /// Openings replayed on another member.
    pub retries: u64,
    /// Openings that failed on a member (each counts as a passive failure).
    pub failures: u64,
    /// Connections refused because `daemon.relay_connections_max` were open.
    pub refused_at_limit: u64,
    /// Bulk directions moved socket to socket in the kernel (`relay.splice`), each counted
    /// once when it began.
    #[serde(default)]
    pub spliced: u64,
    /// Openings moved off a member that died while they waited for the remote's first byte
    /// (each is also one of `retries`).
    #[serde(default)]
    pub rerouted: u64,
}

/// Payload of `runtime_status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeStatusPayload {
    /// idle, starting, running, degraded or stopping.
    pub runtime_status: String,
    /// The active session.
    pub session_id: Option<i64>,
    /// The stored config the session runs.
    pub active_config_id: Option<i64>,
    /// That config's stored name, so that `xrat status` needs no database of its own. Absent
    /// when there is no session or the daemon's database could not tell it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_config_name: Option<String>,
    /// The core's process id.
    pub pid: Option<u32>,
    /// Whether that process is alive.
    pub pid_running: bool,
    /// Which core runs the session.
    pub core: Option<String>,
    /// The SOCKS inbound, host:port.
    pub socks_addr: Option<String>,
    /// The HTTP inbound, host:port, when enabled.
    pub http_addr: Option<String>,
    /// Unix seconds when the session started.
    pub started_at: Option<u64>,
    /// Health accounting.
    pub health: HealthView,
    /// A state change the daemon could not record yet (disk full, database locked); it is
    /// retried until written. Absent when everything is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
    /// `front` (the daemon binds the user's ports and relays) or `direct` (the core binds them).
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Front mode: the user's SOCKS port as the daemon bound it, host:port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_socks_addr: Option<String>,
    /// Front mode: the user's HTTP port as the daemon bound it, when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_http_addr: Option<String>,
    /// Front mode: the pool core's members, the active one first. Empty in direct mode.
    #[serde(default)]
    pub pool: Vec<PoolMemberView>,
    /// Front mode: the relay's counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayView>,
}

fn default_mode() -> String {
    "direct".into()
}

/// Payload of `proxy_status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyStatusPayload {
    /// Whether automatic rotation runs.
    pub rotation_enabled: bool,
    /// Timer rotation period.
    pub interval_secs: u64,
    /// Whether failed health checks trigger a rotation.
    pub health_trigger_enabled: bool,
    /// Quiet time after a rotation for timer and health triggers.
    pub cooldown_secs: u64,
    /// Whether the cooldown is in force now.
    pub cooldown_active: bool,
    /// The stored config the session runs.
    pub active_config_id: Option<i64>,
    /// Trigger of the last rotation.
    pub last_trigger: Option<String>,
    /// Result of the last rotation.
    pub last_result: Option<String>,
    /// Unix seconds of the last rotation.
    pub last_rotation_at: Option<u64>,
    /// Unix seconds of the next timer rotation.
    pub next_rotation_at: Option<u64>,
    /// The config the last rotation chose or tried.
    pub last_candidate_config_id: Option<i64>,
    /// Failures in a row that trigger a rotation.
    pub health_failure_threshold: u32,
    /// Failed probes in a row now.
    pub consecutive_health_failures: u32,
    /// What the last failed probe saw.
    pub last_health_error: Option<String>,
    /// Front mode: the pool core's members, the active one first. Empty in direct mode.
    #[serde(default)]
    pub pool: Vec<PoolMemberView>,
}

/// Payload of `runtime_connect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectPayload {
    /// The stored config now running.
    pub config_id: i64,
    /// The session running it.
    pub session_id: i64,
    /// The core's pid.
    pub pid: u32,
    /// The session this connect stopped, if another was running.
    pub replaced_session_id: Option<i64>,
    /// True when the config was already running and nothing changed.
    pub already_active: bool,
}

/// Payload of `runtime_disconnect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisconnectPayload {
    /// The session that was stopped.
    pub stopped_session: i64,
}

/// Payload of `runtime_replace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplacePayload {
    /// What started it.
    pub trigger: Trigger,
    /// True when a new config now runs.
    pub replaced: bool,
    /// The session before the rotation.
    pub old_session_id: i64,
    /// The config running now (the old one when nothing better worked).
    pub new_config_id: Option<i64>,
    /// The session running now.
    pub new_session_id: Option<i64>,
    /// Its core's pid.
    pub new_pid: Option<u32>,
    /// Candidates probed in the batch test.
    pub tested_candidates: u32,
    /// `switched`, `no_working_candidate`, `restored` or `failed`.
    pub result: String,
    /// What happened, in words.
    pub detail: String,
}

/// Payload of `proxy_start` and `proxy_stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationPayload {
    /// Whether automatic rotation now runs.
    pub rotation_enabled: bool,
}

/// Payload of every failed response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorPayload {
    /// The code's meaning, e.g. "bad_request".
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_envelope_accepts_both_spellings() {
        let snake: RequestEnvelope = serde_json::from_str(
            r#"{"protocol_version":1,"id":"a","request":{"type":"runtime_connect","config_id":4}}"#,
        )
        .unwrap();
        let pascal: RequestEnvelope = serde_json::from_str(
            r#"{"protocol_version":1,"id":"a","request":{"type":"RuntimeConnect","config_id":4}}"#,
        )
        .unwrap();
        assert_eq!(snake, pascal);
        assert_eq!(snake.request, Request::RuntimeConnect { config_id: 4 });
    }

    #[test]
    fn names_match_the_serde_tags() {
        let all = [
            Request::DaemonPing,
            Request::DaemonShutdown,
            Request::RuntimeStatus,
            Request::RuntimeConnect { config_id: 1 },
            Request::RuntimeReplace {
                trigger: Trigger::Manual,
                candidate_id: None,
            },
            Request::RuntimeDisconnect,
            Request::ProxyStart,
            Request::ProxyStop,
            Request::ProxyStatus,
            Request::DaemonReload,
            Request::ConfigTest {
                config_ids: vec![1],
                url: None,
                timeout_ms: None,
                concurrency: None,
            },
            Request::Subscribe { events: vec![] },
        ];
        assert_eq!(all.len(), REQUEST_KINDS.len());
        for (request, name) in all.iter().zip(REQUEST_KINDS) {
            let json = serde_json::to_value(request).unwrap();
            assert_eq!(json["type"], name);
            assert_eq!(request.name(), name);
        }
    }

    #[test]
    fn only_the_looking_requests_are_read_only() {
        let read_only: Vec<&str> = REQUEST_KINDS
            .into_iter()
            .filter(|name| READ_ONLY_REQUESTS.contains(name))
            .collect();
        assert_eq!(
            read_only,
            ["daemon_ping", "runtime_status", "proxy_status", "subscribe"]
        );
        assert!(Request::Subscribe { events: vec![] }.is_read_only());
        assert!(Request::DaemonPing.is_read_only());
        assert!(Request::ProxyStatus.is_read_only());
        assert!(!Request::DaemonShutdown.is_read_only());
        assert!(!Request::ProxyStop.is_read_only());
        assert!(!Request::DaemonReload.is_read_only());
        assert!(!Request::RuntimeConnect { config_id: 1 }.is_read_only());
    }

    #[test]
    fn codes_are_distinct() {
        let codes = [
            Code::Ok,
            Code::BadRequest,
            Code::Forbidden,
            Code::NotFound,
            Code::FrameTimeout,
            Code::Conflict,
            Code::FrameTooLarge,
            Code::Busy,
            Code::UnsupportedVersion,
            Code::Internal,
            Code::NotImplemented,
            Code::Unavailable,
            Code::Timeout,
        ];
        let mut numbers: Vec<u16> = codes.iter().map(|c| c.number()).collect();
        numbers.dedup();
        assert_eq!(numbers.len(), codes.len());
    }
}
