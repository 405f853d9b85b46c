//! The Clash REST routes: `/version`, `/configs`, `/proxies` (stored configs and the `GLOBAL`
//! selector), selection through `runtime_connect`, delay tests through `config_test`,
//! `/providers/proxies` (subscriptions), and empty answers where a dashboard needs a 2xx.
//! Everything else gets the documented 404 (see `docs/API.md`).

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::daemon;
use super::gate::{clash_error, json_response, App};
use super::v1::RUNTIME_OP_TIMEOUT;
use super::views::{self, Catalog, ProviderInfo, GLOBAL, HISTORY_POINTS};
use crate::ipc::client::READ_TIMEOUT_DEFAULT;
use crate::ipc::protocol::Request as DaemonRequest;

/// How long a delay test may take: the daemon starts a batch core, then probes.
const DELAY_TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The daemon's bounds of `config_test.timeout_ms`; a dashboard's value is clamped into them.
const PROBE_TIMEOUT_MS_MIN: u64 = 100;
/// See [`PROBE_TIMEOUT_MS_MIN`].
const PROBE_TIMEOUT_MS_MAX: u64 = 60_000;

/// The Clash REST routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/", get(hello))
        .route("/version", get(version))
        .route("/configs", get(configs).patch(patch_configs))
        .route("/proxies", get(proxies))
        .route("/proxies/{name}", get(proxy).put(select).delete(unfix))
        .route("/proxies/{name}/delay", get(delay))
        .route("/group", get(groups))
        .route("/group/{name}", get(group))
        .route("/group/{name}/delay", get(group_delay))
        .route("/providers/proxies", get(providers))
        .route("/providers/proxies/", get(providers))
        .route("/providers/proxies/{name}", get(provider))
        // Dashboards fetch these with the proxies and break on a 404: xrat has no rules.
        .route("/rules", get(|| async { ok_json(json!({"rules": []})) }))
        .route(
            "/providers/rules",
            get(|| async { ok_json(json!({"providers": {}})) }),
        )
}

fn ok_json(value: Value) -> Response {
    json_response(200, value.to_string().into_bytes())
}

fn not_found() -> Response {
    clash_error(404, "Resource not found".into())
}

async fn hello() -> Response {
    ok_json(json!({"hello": "xrat"}))
}

async fn version() -> Response {
    // `meta: true`: dashboards then speak mihomo's dialect (the one these routes follow).
    ok_json(json!({"version": format!("xrat {}", env!("CARGO_PKG_VERSION")), "meta": true}))
}

/// The stored configs as proxies, read fresh for every request.
async fn catalog(app: &App) -> Result<Catalog, Response> {
    let read = daemon::store(&app.paths, |store| {
        let rows = store.configs()?;
        let history = store.test_history(HISTORY_POINTS)?;
        let mut provider_of = HashMap::new();
        for sub in store.subscriptions()? {
            for id in store.subscription_members(sub.id)? {
                provider_of.insert(id, sub.name.clone());
            }
        }
        Ok((rows, history, provider_of))
    });
    let (rows, history, provider_of) = read.await.map_err(|e| clash_error(500, e))?;
    Ok(Catalog::build(rows, history, &provider_of))
}

/// The active config, or None without a session or a daemon.
async fn active_config(app: &App) -> Option<i64> {
    let status = daemon::payload(
        &app.paths,
        DaemonRequest::RuntimeStatus,
        READ_TIMEOUT_DEFAULT,
    );
    status.await.ok()?["active_config_id"].as_i64()
}

async fn proxies(State(app): State<App>) -> Response {
    match catalog(&app).await {
        Ok(catalog) => ok_json(views::proxies_json(&catalog, active_config(&app).await)),
        Err(r) => r,
    }
}

async fn proxy(State(app): State<App>, Path(name): Path<String>) -> Response {
    let catalog = match catalog(&app).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if name == GLOBAL {
        return ok_json(views::global_json(&catalog, active_config(&app).await));
    }
    catalog
        .find(&name)
        .map_or_else(not_found, |n| ok_json(views::proxy_json(n)))
}

async fn groups(State(app): State<App>) -> Response {
    match catalog(&app).await {
        Ok(c) => ok_json(json!({"proxies": [views::global_json(&c, active_config(&app).await)]})),
        Err(r) => r,
    }
}

async fn group(State(app): State<App>, Path(name): Path<String>) -> Response {
    if name != GLOBAL {
        return not_found();
    }
    match catalog(&app).await {
        Ok(c) => ok_json(views::global_json(&c, active_config(&app).await)),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct SelectBody {
    name: String,
}

/// `PUT /proxies/GLOBAL {"name": …}`: connects that config (in front mode a warm pool member
/// switches without a new process). 204 as in Clash.
async fn select(State(app): State<App>, Path(group): Path<String>, body: Bytes) -> Response {
    let catalog = match catalog(&app).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if group != GLOBAL {
        return match catalog.find(&group) {
            Some(_) => clash_error(400, "Must be a Selector".into()),
            None => not_found(),
        };
    }
    let Ok(SelectBody { name }) = serde_json::from_slice(&body) else {
        return clash_error(400, "Selector update error: proxy not exist".into());
    };
    let Some(node) = catalog.find(&name) else {
        return clash_error(400, "Selector update error: proxy not exist".into());
    };
    let request = DaemonRequest::RuntimeConnect { config_id: node.id };
    match daemon::payload(&app.paths, request, RUNTIME_OP_TIMEOUT).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err((status, message)) => clash_error(status, message),
    }
}

/// `DELETE /proxies/:name` clears a url-test pin in mihomo; `GLOBAL` is a plain selector.
async fn unfix(Path(group): Path<String>) -> Response {
    if group == GLOBAL {
        clash_error(
            400,
            "GLOBAL is a Selector: nothing is fixed to clear".into(),
        )
    } else {
        not_found()
    }
}

#[derive(Deserialize)]
struct DelayQuery {
    url: Option<String>,
    timeout: Option<String>,
}

/// The `config_test` fields for a dashboard's `?url=&timeout=`: the daemon probes plain
/// http:// only, so any other URL (the usual `https://…/generate_204`) falls back to
/// `health.probe_url`; the timeout is clamped into the daemon's bounds. None: no valid timeout.
fn probe_params(query: &DelayQuery) -> Option<(Option<String>, u64)> {
    let timeout: u64 = query.timeout.as_deref()?.trim().parse().ok()?;
    let url = query.url.clone().filter(|u| u.starts_with("http://"));
    Some((
        url,
        timeout.clamp(PROBE_TIMEOUT_MS_MIN, PROBE_TIMEOUT_MS_MAX),
    ))
}

/// Runs the daemon's batch test on `ids`; each result by config id.
async fn batch_test(
    app: &App,
    ids: Vec<i64>,
    (url, timeout_ms): (Option<String>, u64),
) -> Result<HashMap<i64, Value>, Response> {
    let request = DaemonRequest::ConfigTest {
        config_ids: ids,
        url,
        timeout_ms: Some(timeout_ms),
        concurrency: None,
    };
    let payload = daemon::payload(&app.paths, request, DELAY_TEST_TIMEOUT).await;
    let payload = payload.map_err(|(status, message)| clash_error(status, message))?;
    let results = payload["results"].as_array().cloned().unwrap_or_default();
    Ok(results
        .into_iter()
        .filter_map(|r| Some((r["config_id"].as_i64()?, r)))
        .collect())
}

/// One result as Clash answers a delay test.
pub fn delay_answer(result: Option<&Value>) -> (u16, Value) {
    match result {
        Some(r) if r["ok"] == true => (200, json!({"delay": r["latency_ms"]})),
        Some(r) if r["error_kind"] == "timeout" => (504, json!({"message": "Timeout"})),
        Some(r) => {
            let why = r["error"].as_str().unwrap_or("failed");
            let message = format!("An error occurred in the delay test: {why}");
            (503, json!({ "message": message }))
        }
        None => (
            503,
            json!({"message": "An error occurred in the delay test"}),
        ),
    }
}

async fn delay(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(query): Query<DelayQuery>,
) -> Response {
    let catalog = match catalog(&app).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(node) = catalog.find(&name) else {
        return not_found();
    };
    let Some(params) = probe_params(&query) else {
        return clash_error(400, "Body invalid".into());
    };
    match batch_test(&app, vec![node.id], params).await {
        Ok(results) => {
            let (status, body) = delay_answer(results.get(&node.id));
            json_response(status, body.to_string().into_bytes())
        }
        Err(r) => r,
    }
}

async fn group_delay(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(query): Query<DelayQuery>,
) -> Response {
    if name != GLOBAL {
        return not_found();
    }
    let Some(params) = probe_params(&query) else {
        return clash_error(400, "Body invalid".into());
    };
    let catalog = match catalog(&app).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let ids = catalog.nodes.iter().map(|n| n.id).collect();
    let results = match batch_test(&app, ids, params).await {
        Ok(results) => results,
        Err(r) => return r,
    };
    let delays: serde_json::Map<String, Value> = catalog
        .nodes
        .iter()
        .filter_map(|n| {
            let r = results.get(&n.id).filter(|r| r["ok"] == true)?;
            Some((n.name.clone(), r["latency_ms"].clone()))
        })
        .collect();
    if delays.is_empty() {
        return clash_error(504, "get delay: all proxies timeout".into());
    }
    ok_json(Value::Object(delays))
}

/// Every subscription as a provider (`{"providers": {}}` without any: dashboards need 2xx).
async fn provider_map(app: &App) -> Result<serde_json::Map<String, Value>, Response> {
    let catalog = catalog(app).await?;
    let subs = daemon::store(&app.paths, |store| store.subscriptions());
    let subs = subs.await.map_err(|e| clash_error(500, e))?;
    let test_url = &app.settings.health.probe_url;
    Ok(subs
        .into_iter()
        .map(|s| {
            let info = ProviderInfo {
                name: s.name.clone(),
                updated_at: s.last_success_at,
                upload: s.userinfo.upload,
                download: s.userinfo.download,
                total: s.userinfo.total,
                expire: s.userinfo.expire,
            };
            (s.name, views::provider_json(&info, &catalog, test_url))
        })
        .collect())
}

async fn providers(State(app): State<App>) -> Response {
    match provider_map(&app).await {
        Ok(map) => ok_json(json!({ "providers": map })),
        Err(r) => r,
    }
}

async fn provider(State(app): State<App>, Path(name): Path<String>) -> Response {
    match provider_map(&app).await {
        Ok(mut map) => map.remove(&name).map_or_else(not_found, ok_json),
        Err(r) => r,
    }
}

/// `GET /configs`: the fields that have an xrat meaning; the rest as a plain mihomo would
/// report them off. xrat has one active config, so the only mode is `global`.
async fn configs(State(app): State<App>) -> Response {
    ok_json(configs_json(&app.settings))
}

/// See [`configs`].
pub fn configs_json(settings: &crate::settings::Settings) -> Value {
    let r = &settings.runtime;
    json!({
        "port": r.http_port,
        "socks-port": r.socks_port,
        "mixed-port": 0,
        "redir-port": 0,
        "tproxy-port": 0,
        "allow-lan": false,
        "bind-address": r.listen,
        "mode": "global",
        "mode-list": ["global"],
        "modes": ["global"],
        "log-level": "info",
        "ipv6": false,
        "tun": {"enable": false},
    })
}

/// `PATCH /configs`: `mode: "global"` is accepted (it is already so); any other field is 400
/// naming it, because xrat's settings live in config.toml.
async fn patch_configs(body: Bytes) -> Response {
    match patch_verdict(&body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(message) => clash_error(400, message),
    }
}

/// See [`patch_configs`].
pub fn patch_verdict(body: &[u8]) -> Result<(), String> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Err("Body invalid: send a JSON object such as {\"mode\": \"global\"}".into());
    };
    for (key, value) in fields {
        match (key.as_str(), value.as_str()) {
            ("mode", Some(mode)) if mode.eq_ignore_ascii_case("global") => {}
            ("mode", _) => {
                return Err(format!(
                    "mode {value} is not available: xrat routes everything through the active config, so the only mode is \"global\""
                ))
            }
            _ => {
                return Err(format!(
                    "{key} cannot be changed through the Clash API; xrat reads it from config.toml (see docs/SETTINGS.md)"
                ))
            }
        }
    }
    Ok(())
}
