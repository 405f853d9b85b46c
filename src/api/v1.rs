//! xrat's own `/v1` routes: each is one daemon request (or a store read for `/v1/configs`),
//! and the daemon's response envelope goes back as the body.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::daemon;
use super::gate::{envelope_error, json_response, App};
use crate::ipc::client::{ClientError, READ_TIMEOUT_DEFAULT};
use crate::ipc::protocol::{Request as DaemonRequest, ResponseEnvelope, Trigger, PROTOCOL_VERSION};

/// How long connect and disconnect may take: stopping the old core (3 s grace) and waiting for
/// the new one (`ready_timeout_ms`), with room to spare.
pub const RUNTIME_OP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a rotation may take: it batch-tests every candidate and may try several.
pub const ROTATE_TIMEOUT: Duration = Duration::from_secs(300);

/// The `/v1` routes; a wrong method gets 405 with `Allow` and an envelope body.
pub fn routes() -> Router<App> {
    let only = |allow: &'static str, route: MethodRouter<App>| {
        route.fallback(move |uri: Uri, method: axum::http::Method| async move {
            let path = uri.path();
            let message = format!("{path} takes {allow}, not {method}");
            let mut r = envelope_error(405, "method_not_allowed", message);
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            r
        })
    };
    Router::new()
        .route("/v1/daemon", only("GET", get(ping)))
        .route("/v1/runtime", only("GET", get(runtime)))
        .route("/v1/proxy", only("GET", get(proxy)))
        .route("/v1/configs", only("GET", get(configs)))
        .route("/v1/runtime/connect", only("POST", post(connect)))
        .route("/v1/runtime/disconnect", only("POST", post(disconnect)))
        .route("/v1/proxy/start", only("POST", post(proxy_start)))
        .route("/v1/proxy/stop", only("POST", post(proxy_stop)))
        .route("/v1/proxy/rotate", only("POST", post(rotate)))
}

/// The HTTP status for a protocol code. 426 (unsupported version) is the API's own request
/// being wrong, which no HTTP client can fix, so it reads as a plain 400; a code this build does
/// not know means the daemon answered something unexpected: 502.
pub fn http_status(code: u16) -> u16 {
    match code {
        200 | 400 | 403 | 404 | 409 | 413 | 423 | 500 | 501 | 503 | 504 => code,
        426 => 400,
        _ => 502,
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

/// One daemon request, its envelope passed through.
async fn pass_through(app: &App, request: DaemonRequest, timeout: Duration) -> Response {
    match daemon::call(&app.paths, request, timeout).await {
        Ok(envelope) => envelope_response(&envelope),
        Err(e) => {
            let (status, meaning) = client_failure_status(&e);
            envelope_error(status, meaning, e.to_string())
        }
    }
}

fn envelope_response(envelope: &ResponseEnvelope) -> Response {
    let mut body = serde_json::to_vec(envelope).expect("envelopes serialize");
    body.push(b'\n');
    json_response(http_status(envelope.code), body)
}

async fn ping(State(app): State<App>) -> Response {
    pass_through(&app, DaemonRequest::DaemonPing, READ_TIMEOUT_DEFAULT).await
}

async fn runtime(State(app): State<App>) -> Response {
    pass_through(&app, DaemonRequest::RuntimeStatus, READ_TIMEOUT_DEFAULT).await
}

async fn proxy(State(app): State<App>) -> Response {
    pass_through(&app, DaemonRequest::ProxyStatus, READ_TIMEOUT_DEFAULT).await
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

async fn connect(State(app): State<App>, body: Bytes) -> Response {
    let example = r#"{"config_id": 1}"#;
    match parse_body::<ConnectBody>(&body, None, example) {
        Ok(ConnectBody { config_id }) => {
            let request = DaemonRequest::RuntimeConnect { config_id };
            pass_through(&app, request, RUNTIME_OP_TIMEOUT).await
        }
        Err(r) => r,
    }
}

async fn no_params(app: &App, body: &[u8], request: DaemonRequest, timeout: Duration) -> Response {
    match parse_body(body, Some(NoParams {}), "{}") {
        Ok(NoParams {}) => pass_through(app, request, timeout).await,
        Err(r) => r,
    }
}

async fn disconnect(State(app): State<App>, body: Bytes) -> Response {
    no_params(
        &app,
        &body,
        DaemonRequest::RuntimeDisconnect,
        RUNTIME_OP_TIMEOUT,
    )
    .await
}

async fn proxy_start(State(app): State<App>, body: Bytes) -> Response {
    no_params(&app, &body, DaemonRequest::ProxyStart, READ_TIMEOUT_DEFAULT).await
}

async fn proxy_stop(State(app): State<App>, body: Bytes) -> Response {
    no_params(&app, &body, DaemonRequest::ProxyStop, READ_TIMEOUT_DEFAULT).await
}

async fn rotate(State(app): State<App>, body: Bytes) -> Response {
    let example = r#"{} or {"config_id": 2}"#;
    match parse_body(&body, Some(RotateBody::default()), example) {
        Ok(RotateBody { config_id }) => {
            let request = DaemonRequest::RuntimeReplace {
                trigger: Trigger::Manual,
                candidate_id: config_id,
            };
            pass_through(&app, request, ROTATE_TIMEOUT).await
        }
        Err(r) => r,
    }
}

/// Decodes a JSON body; an empty one is `empty` (None: the body is required).
pub fn parse_body<T: DeserializeOwned>(
    body: &[u8],
    empty: Option<T>,
    example: &str,
) -> Result<T, Response> {
    if body.trim_ascii().is_empty() {
        return empty.ok_or_else(|| {
            let message = format!("this endpoint needs a JSON body such as {example}");
            envelope_error(400, "bad_request", message)
        });
    }
    let bad = |why: String| {
        let message = format!("bad JSON body ({why}); send {example}");
        envelope_error(400, "bad_request", message)
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
async fn configs(State(app): State<App>) -> Response {
    let rows = match daemon::store(&app.paths, |store| store.configs()).await {
        Ok(rows) => rows,
        Err(e) => return envelope_error(500, "internal", e),
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
    envelope_response(&envelope)
}
