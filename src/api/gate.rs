//! What every request passes before a route: browser origin (CORS allow-list or 403), the
//! token, the body (buffered under a size and a time limit); and the shared state, the router
//! and the error shapes of both dialects.

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt;
use tokio::sync::{watch, Semaphore};

use super::auth::Token;
use super::{dashboard, is_loopback, ServeOptions, BODY_BYTES_MAX, BODY_TIMEOUT, WEBSOCKETS_MAX};
use crate::ipc::protocol::{ResponseEnvelope, PROTOCOL_VERSION};
use crate::paths::Paths;
use crate::settings::Settings;

/// How long a preflight's answer may be cached by the browser, in seconds.
const CORS_MAX_AGE_SECS: &str = "600";
/// Methods a page from an allowed origin may use (what Clash dashboards send).
const CORS_METHODS: &str = "GET, PUT, PATCH, POST, DELETE";
/// Request headers such a page may send.
const CORS_HEADERS: &str = "Authorization, Content-Type";
/// After a body over [`BODY_BYTES_MAX`], how much more is read and dropped before the 413, so
/// closing with unread input does not make the kernel reset the answer away.
const DRAIN_BYTES_MAX: usize = 1024 * 1024;

/// The state every handler shares; cheap to clone.
#[derive(Clone)]
pub struct App(Arc<AppInner>);

/// See [`App`].
pub struct AppInner {
    /// Where the daemon socket and the store are.
    pub paths: Paths,
    /// The token requests must carry.
    pub token: Token,
    /// `config.toml` as read at start (ports for `/configs`, log level).
    pub settings: Settings,
    /// Origins allowed from browsers: `api.cors_origins` plus the API's own.
    pub origins: HashSet<String>,
    /// `--dashboard DIR`.
    pub dashboard: Option<PathBuf>,
    /// Permits for WebSocket streams ([`WEBSOCKETS_MAX`]).
    pub streams: Arc<Semaphore>,
    /// Turns true when the server stops; streams end on it.
    pub stop: watch::Receiver<bool>,
}

impl std::ops::Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl App {
    /// The state for a server bound at `bound`.
    pub fn new(
        paths: Paths,
        token: Token,
        settings: &Settings,
        bound: SocketAddr,
        options: &ServeOptions,
        stop: watch::Receiver<bool>,
    ) -> App {
        let mut origins: HashSet<String> = settings.api.cors_origins.iter().cloned().collect();
        origins.extend(own_origins(bound));
        App(Arc::new(AppInner {
            paths,
            token,
            settings: settings.clone(),
            origins,
            dashboard: options.dashboard.clone(),
            streams: Arc::new(Semaphore::new(WEBSOCKETS_MAX)),
            stop,
        }))
    }

    /// WebSocket streams open now.
    pub fn streams_open(&self) -> usize {
        WEBSOCKETS_MAX - self.streams.available_permits()
    }
}

/// The API's own origins: a dashboard served with `--dashboard` runs there. On loopback,
/// `localhost` too: browsers resolve it to loopback themselves, so no rebinding is possible.
pub fn own_origins(bound: SocketAddr) -> Vec<String> {
    let mut own = vec![format!("http://{bound}")];
    if is_loopback(bound.ip()) {
        own.push(format!("http://localhost:{}", bound.port()));
    }
    own
}

/// Every route, behind [`guard`].
pub fn router(app: App) -> Router {
    Router::new()
        .merge(super::v1::routes())
        .merge(super::clash::routes())
        .merge(super::streams::routes())
        .merge(dashboard::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// True for the `/v1` dialect (envelope bodies); every other path speaks Clash.
pub fn is_v1(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// An error in the dialect of `path`.
pub fn error_for(path: &str, status: u16, meaning: &str, message: String) -> Response {
    if is_v1(path) {
        envelope_error(status, meaning, message)
    } else {
        clash_error(status, message)
    }
}

/// The body of a `/v1` error: the daemon's envelope shape with `id: null`.
pub fn envelope_error_body(status: u16, meaning: &str, message: &str) -> Vec<u8> {
    let envelope = ResponseEnvelope {
        protocol_version: PROTOCOL_VERSION,
        id: None,
        ok: false,
        code: status,
        message: message.to_owned(),
        payload: serde_json::json!({ "error": meaning }),
    };
    let mut body = serde_json::to_vec(&envelope).expect("envelopes serialize");
    body.push(b'\n');
    body
}

/// A JSON body with `Cache-Control: no-store` (answers are live state).
pub fn json_response(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let headers = [
        (header::CONTENT_TYPE, "application/json"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    (status, headers, body).into_response()
}

/// A `/v1` error response.
pub fn envelope_error(status: u16, meaning: &str, message: String) -> Response {
    json_response(status, envelope_error_body(status, meaning, &message))
}

/// A Clash error response: `{"message": ...}`, which is what Clash dashboards show.
pub fn clash_error(status: u16, message: String) -> Response {
    let mut body =
        serde_json::to_vec(&serde_json::json!({ "message": message })).expect("json serializes");
    body.push(b'\n');
    json_response(status, body)
}

async fn not_found(request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let message = if is_v1(&path) {
        format!("no endpoint {path}; see docs/API.md")
    } else {
        format!("xrat has no {path}; see docs/API.md for the Clash routes it serves")
    };
    error_for(&path, 404, "not_found", message)
}

/// The origin a browser request comes from: its `Origin`, else its `Referer`'s origin (browsers
/// send only a Referer on same-origin GETs). None: not from a browser. `Some("null")` for an
/// opaque origin, which no allow-list holds.
fn request_origin(headers: &HeaderMap) -> Option<String> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        return Some(origin.to_str().unwrap_or("null").to_owned());
    }
    let referer = headers.get(header::REFERER)?;
    let url = referer.to_str().ok().and_then(|r| url::Url::parse(r).ok());
    Some(url.map_or("null".into(), |u| u.origin().ascii_serialization()))
}

/// The checks, in order: static dashboard files pass; a browser origin must be allowed (403
/// before the token is looked at, so a page learns nothing); a preflight from an allowed origin
/// is answered without the token; then the token; then the body is buffered.
pub async fn guard(State(app): State<App>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = check(&app, request, next).await;
    // A one-line access log (never headers: they hold the token).
    let _ = writeln!(
        std::io::stderr(),
        "{method} {path} {} {} ms",
        response.status().as_u16(),
        started.elapsed().as_millis()
    );
    response
}

async fn check(app: &App, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if dashboard::is_ui_path(&path) && app.dashboard.is_some() {
        return next.run(request).await;
    }
    let origin = request_origin(request.headers());
    let cors = match &origin {
        Some(o) if app.origins.contains(o) => Some(o.clone()),
        Some(o) => {
            let message = format!(
                "requests from web pages are refused unless their origin is in api.cors_origins (this one is {o:?})"
            );
            return error_for(&path, 403, "forbidden", message);
        }
        None => None,
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if cors.is_some() && preflight {
        StatusCode::NO_CONTENT.into_response()
    } else if !authorized(&app.token, &request) {
        // The token file's path is not named: it would tell a remote caller the user's home.
        let message = "missing or wrong token; send `Authorization: Bearer <token>` with the \
                       token from api.token in the xrat root (its path is printed at start)";
        let mut r = error_for(&path, 401, "unauthorized", message.to_owned());
        let bearer = HeaderValue::from_static("Bearer");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, bearer);
        r
    } else {
        match buffer_body(request).await {
            Ok(request) => next.run(request).await,
            Err((status, meaning, message)) => error_for(&path, status, meaning, message),
        }
    };
    if let Some(origin) = cors {
        add_cors(response.headers_mut(), &origin, preflight);
    }
    response
}

fn add_cors(headers: &mut HeaderMap, origin: &str, preflight: bool) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    if preflight {
        let pairs = [
            (header::ACCESS_CONTROL_ALLOW_METHODS, CORS_METHODS),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, CORS_HEADERS),
            (header::ACCESS_CONTROL_MAX_AGE, CORS_MAX_AGE_SECS),
        ];
        for (name, value) in pairs {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
}

/// `Authorization: Bearer <token>` (exactly one such header); on a WebSocket upgrade also
/// `?token=<token>`, because browsers cannot set headers on WebSocket requests.
pub fn authorized(token: &Token, request: &Request) -> bool {
    let headers = request.headers();
    let values = headers.get_all(header::AUTHORIZATION);
    if values.iter().next().is_some() {
        return token.authorizes(values.iter().map(HeaderValue::as_bytes));
    }
    let upgrade = headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    upgrade && query_token(request.uri().query()).is_some_and(|t| token.matches(t.as_bytes()))
}

/// The `token` parameter of a query string, percent-decoded.
pub fn query_token(query: Option<&str>) -> Option<String> {
    let pairs = url::form_urlencoded::parse(query?.as_bytes());
    pairs
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

type BodyError = (u16, &'static str, String);

/// Reads the whole body within [`BODY_TIMEOUT`], at most [`BODY_BYTES_MAX`] bytes.
async fn buffer_body(request: Request) -> Result<Request, BodyError> {
    let (parts, body) = request.into_parts();
    let timeout = || {
        let limit = BODY_TIMEOUT.as_millis();
        (
            408,
            "timeout",
            format!("the request body did not arrive whole within {limit} ms of its head"),
        )
    };
    let bytes = tokio::time::timeout(BODY_TIMEOUT, collect_bounded(body))
        .await
        .map_err(|_| timeout())??;
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

async fn collect_bounded(mut body: Body) -> Result<Bytes, BodyError> {
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| (400, "bad_request", format!("cannot read the body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen <= BODY_BYTES_MAX {
            kept.extend_from_slice(&data);
        } else if seen > DRAIN_BYTES_MAX {
            break;
        }
    }
    if seen > BODY_BYTES_MAX {
        let shown = if seen > DRAIN_BYTES_MAX {
            format!("over {DRAIN_BYTES_MAX}")
        } else {
            seen.to_string()
        };
        let message = format!("the body is {shown} bytes; at most {BODY_BYTES_MAX} are accepted");
        return Err((413, "body_too_large", message));
    }
    Ok(Bytes::from(kept))
}
