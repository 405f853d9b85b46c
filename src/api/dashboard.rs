//! `--dashboard DIR`: a dashboard's static files at [`UI_PREFIX`], on the API's own origin, so
//! the page needs no CORS entry. Like mihomo's `external-ui`: a path that names no file gets
//! `index.html` (single-page apps route in the browser). Public assets: no token needed.

use std::path::{Component, Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::gate::{clash_error, App};
use super::ApiError;

/// Where the dashboard is served.
pub const UI_PREFIX: &str = "/ui";
/// Largest file served (a dashboard's biggest bundle is a few MiB).
const STATIC_FILE_BYTES_MAX: u64 = 32 * 1024 * 1024;

/// The dashboard routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route(UI_PREFIX, get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(file))
        .route("/ui/{*path}", get(file))
}

/// True for paths under [`UI_PREFIX`].
pub fn is_ui_path(path: &str) -> bool {
    path == UI_PREFIX || path.starts_with("/ui/")
}

/// `--dashboard DIR` must be a directory with an index.html.
pub fn check_dir(dir: &Path) -> Result<(), ApiError> {
    let detail = if !dir.is_dir() {
        "it is not a directory; pass the directory that holds the dashboard's index.html"
    } else if !dir.join("index.html").is_file() {
        "it has no index.html; pass the directory that holds it (for a release zip, the unpacked dist/ folder)"
    } else {
        return Ok(());
    };
    Err(ApiError::Dashboard {
        dir: dir.to_path_buf(),
        detail: detail.into(),
    })
}

/// The file for a request path under `/ui/`, or None when it would leave `dir` (`..`, an
/// absolute part) or is not valid UTF-8 after decoding.
pub fn resolve(dir: &Path, request_path: &str) -> Option<PathBuf> {
    let rest = request_path.strip_prefix("/ui/").unwrap_or("");
    let decoded = percent_decode(rest)?;
    let mut path = dir.to_path_buf();
    for component in Path::new(&decoded).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(path)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes: Vec<u8> =
        url::form_urlencoded::parse(format!("p={}", text.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned().into_bytes())?;
    String::from_utf8(bytes).ok()
}

/// The content type for a file name.
pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "webmanifest" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

async fn file(State(app): State<App>, request: Request) -> Response {
    let Some(dir) = app.dashboard.clone() else {
        let message = "no dashboard is served; start `xrat api serve --dashboard DIR`".to_owned();
        return clash_error(404, message);
    };
    let Some(wanted) = resolve(&dir, request.uri().path()) else {
        return clash_error(404, "no such file".into());
    };
    let read = tokio::task::spawn_blocking(move || {
        let path = if wanted.is_file() {
            wanted
        } else {
            dir.join("index.html")
        };
        let len = std::fs::metadata(&path)?.len();
        if len > STATIC_FILE_BYTES_MAX {
            return Err(std::io::Error::other("file too large to serve"));
        }
        std::fs::read(&path).map(|bytes| (content_type(&path), bytes))
    })
    .await;
    match read {
        Ok(Ok((kind, bytes))) => {
            let headers = [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "no-cache"),
            ];
            (StatusCode::OK, headers, bytes).into_response()
        }
        Ok(Err(e)) => clash_error(404, format!("cannot read the dashboard file: {e}")),
        Err(e) => clash_error(500, format!("cannot read the dashboard file: {e}")),
    }
}
