//! The endpoints: checks every request (browser headers, token), routes it, calls the daemon or
//! the store, and maps the answer to an HTTP response.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::auth::Token;
use super::http::{Request, Response};
use crate::ipc::client::{Client, ClientError, READ_TIMEOUT_DEFAULT};
use crate::ipc::protocol::{Request as DaemonRequest, ResponseEnvelope, Trigger, PROTOCOL_VERSION};
use crate::paths::Paths;
use crate::store::Store;

/// How long connect and disconnect may take: stopping the old core (3 s grace) and waiting for
/// the new one (`ready_timeout_ms`), with room to spare.
pub const RUNTIME_OP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a rotation may take: it batch-tests every candidate and may try several.
pub const ROTATE_TIMEOUT: Duration = Duration::from_secs(300);

/// What the API serves for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /v1/daemon`.
    Daemon,
    /// `GET /v1/runtime`.
    Runtime,
    /// `GET /v1/proxy`.
    Proxy,
    /// `GET /v1/configs`.
    Configs,
    /// `POST /v1/runtime/connect`.
    Connect,
    /// `POST /v1/runtime/disconnect`.
    Disconnect,
    /// `POST /v1/proxy/start`.
    ProxyStart,
    /// `POST /v1/proxy/stop`.
    ProxyStop,
    /// `POST /v1/proxy/rotate`.
    Rotate,
}

/// Every path with its one method.
pub const ROUTES: [(&str, &str, Endpoint); 9] = [
    ("GET", "/v1/daemon", Endpoint::Daemon),
    ("GET", "/v1/runtime", Endpoint::Runtime),
    ("GET", "/v1/proxy", Endpoint::Proxy),
    ("GET", "/v1/configs", Endpoint::Configs),
    ("POST", "/v1/runtime/connect", Endpoint::Connect),
    ("POST", "/v1/runtime/disconnect", Endpoint::Disconnect),
    ("POST", "/v1/proxy/start", Endpoint::ProxyStart),
    ("POST", "/v1/proxy/stop", Endpoint::ProxyStop),
    ("POST", "/v1/proxy/rotate", Endpoint::Rotate),
];

/// Why a request matched no endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// No such path (404).
    NotFound,
    /// The path exists for this method only (405, `Allow: <method>`).
    MethodNotAllowed(&'static str),
}

/// Finds the endpoint for `method` and `path`.
pub fn route(method: &str, path: &str) -> Result<Endpoint, RouteError> {
    let (allowed, _, endpoint) = ROUTES
        .iter()
        .find(|(_, p, _)| *p == path)
        .ok_or(RouteError::NotFound)?;
    if *allowed == method {
        Ok(*endpoint)
    } else {
        Err(RouteError::MethodNotAllowed(allowed))
    }
}

/// The HTTP status for a protocol code. 426 (unsupported version) is the API's own request
/// being wrong, which no HTTP client can fix, so it reads as a plain 400; a code this build does
/// not know means the daemon answered something unexpected: 502.
pub fn http_status(code: u16) -> u16 {
    match code {
        200 | 400 | 404 | 409 | 413 | 423 | 500 | 501 | 503 | 504 => code,
        426 => 400,
        _ => 502,
    }
}

/// What every request handler needs; immutable and shared by all connection threads.
#[derive(Debug)]
pub struct Context {
    /// Where the daemon socket and the store are.
    pub paths: Paths,
    /// The token requests must carry.
    pub token: Token,
}

/// Answers one request. Browser headers are checked before the token so a web page learns
/// nothing, not even whether a guessed token is right; the path only after the token so
/// unauthenticated callers cannot map the API.
pub fn respond(ctx: &Context, request: &Request) -> Response {
    if request.has_header("origin") || request.has_header("referer") {
        return Response::error(
            403,
            "forbidden",
            "requests from web browsers (with an Origin or Referer header) are refused".into(),
        );
    }
    if !ctx.token.authorizes(request.header_values("authorization")) {
        // The token file's path is not named: it would tell a remote caller the user's home.
        let message = "missing or wrong token; send `Authorization: Bearer <token>` with the \
                       token from api.token in the xrat root (its path is printed at start)"
            .to_owned();
        return Response::error(401, "unauthorized", message)
            .with_header("WWW-Authenticate", "Bearer");
    }
    let endpoint = match route(&request.method, &request.path) {
        Ok(endpoint) => endpoint,
        Err(RouteError::NotFound) => {
            let message = format!("no endpoint {}; see docs/API.md", request.path);
            return Response::error(404, "not_found", message);
        }
        Err(RouteError::MethodNotAllowed(allow)) => {
            let message = format!("{} takes {allow}, not {}", request.path, request.method);
            return Response::error(405, "method_not_allowed", message).with_header("Allow", allow);
        }
    };
    if endpoint == Endpoint::Configs {
        return configs(&ctx.paths);
    }
    match daemon_request(endpoint, &request.body) {
        Ok((daemon_request, timeout)) => call_daemon(&ctx.paths, daemon_request, timeout),
        Err(response) => response,
    }
}

/// `POST /v1/runtime/connect` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectBody {
    config_id: i64,
}

/// `POST /v1/proxy/rotate` body (optional).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    config_id: Option<i64>,
}

/// Body of the POSTs that take no parameters: absent or `{}`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// The daemon request for a daemon-backed endpoint, and how long it may take.
fn daemon_request(endpoint: Endpoint, body: &[u8]) -> Result<(DaemonRequest, Duration), Response> {
    let fast = READ_TIMEOUT_DEFAULT;
    Ok(match endpoint {
        Endpoint::Daemon => (DaemonRequest::DaemonPing, fast),
        Endpoint::Runtime => (DaemonRequest::RuntimeStatus, fast),
        Endpoint::Proxy => (DaemonRequest::ProxyStatus, fast),
        Endpoint::Connect => {
            let example = r#"{"config_id": 1}"#;
            let ConnectBody { config_id } = parse_body(body, None, example)?;
            (
                DaemonRequest::RuntimeConnect { config_id },
                RUNTIME_OP_TIMEOUT,
            )
        }
        Endpoint::Disconnect => {
            parse_body(body, Some(NoParams {}), "{}")?;
            (DaemonRequest::RuntimeDisconnect, RUNTIME_OP_TIMEOUT)
        }
        Endpoint::ProxyStart | Endpoint::ProxyStop => {
            parse_body(body, Some(NoParams {}), "{}")?;
            let request = if endpoint == Endpoint::ProxyStart {
                DaemonRequest::ProxyStart
            } else {
                DaemonRequest::ProxyStop
            };
            (request, fast)
        }
        Endpoint::Rotate => {
            let example = r#"{} or {"config_id": 2}"#;
            let RotateBody { config_id } = parse_body(body, Some(RotateBody::default()), example)?;
            let request = DaemonRequest::RuntimeReplace {
                trigger: Trigger::Manual,
                candidate_id: config_id,
            };
            (request, ROTATE_TIMEOUT)
        }
        Endpoint::Configs => unreachable!("/v1/configs is served from the store"),
    })
}

/// Decodes a JSON body; an empty one is `empty` (None: the body is required).
fn parse_body<T: DeserializeOwned>(
    body: &[u8],
    empty: Option<T>,
    example: &str,
) -> Result<T, Response> {
    if body.trim_ascii().is_empty() {
        return empty.ok_or_else(|| {
            let message = format!("this endpoint needs a JSON body such as {example}");
            Response::error(400, "bad_request", message)
        });
    }
    let bad = |why: String| {
        let message = format!("bad JSON body ({why}); send {example}");
        Response::error(400, "bad_request", message)
    };
    // Through Value first: serde would otherwise also take a struct from an array (`[1]`).
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) if value.is_object() => {
            serde_json::from_value(value).map_err(|e| bad(e.to_string()))
        }
        Ok(_) => Err(bad("not a JSON object".into())),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// One request over a fresh daemon connection: the API keeps nothing between requests.
fn call_daemon(paths: &Paths, request: DaemonRequest, timeout: Duration) -> Response {
    let socket = match paths.checked_socket() {
        Ok(socket) => socket,
        Err(e) => return Response::error(500, "internal", e.to_string()),
    };
    let answer = Client::connect(&socket, &paths.daemon_log(), timeout)
        .and_then(|mut client| client.call(request));
    match answer {
        Ok(envelope) => Response::json(http_status(envelope.code), &envelope),
        Err(e) => {
            let (status, meaning) = client_failure_status(&e);
            Response::error(status, meaning, e.to_string())
        }
    }
}

/// A daemon that cannot be reached is 503 (the API itself is fine, its backend is not); one
/// that took too long is 504; a garbled exchange is 502.
pub fn client_failure_status(error: &ClientError) -> (u16, &'static str) {
    match error {
        e if e.is_unreachable() => (503, "unavailable"),
        ClientError::ConnectTimeout { .. } => (503, "unavailable"),
        ClientError::Timeout { .. } => (504, "timeout"),
        _ => (502, "bad_gateway"),
    }
}

/// A stored config without its secrets (`raw_link` and `outbound` hold credentials).
#[derive(Debug, Serialize)]
struct ConfigView {
    id: i64,
    name: String,
    scheme: String,
    server: String,
    port: u16,
    enabled: bool,
    created_at: u64,
}

/// `GET /v1/configs`: read from the store, so it answers whether or not the daemon runs.
fn configs(paths: &Paths) -> Response {
    let rows = match Store::open(&paths.database()).and_then(|store| store.configs()) {
        Ok(rows) => rows,
        Err(e) => return Response::error(500, "internal", e.to_string()),
    };
    let configs: Vec<ConfigView> = rows
        .into_iter()
        .map(|row| ConfigView {
            id: row.id,
            name: row.name,
            scheme: row.scheme,
            server: row.server,
            port: row.port,
            enabled: row.enabled,
            created_at: row.created_at,
        })
        .collect();
    let envelope = ResponseEnvelope {
        protocol_version: PROTOCOL_VERSION,
        id: None,
        ok: true,
        code: 200,
        message: "success".into(),
        payload: serde_json::json!({ "configs": configs }),
    };
    Response::json(200, &envelope)
}
