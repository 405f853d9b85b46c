//! The Clash WebSocket streams: `/traffic`, `/memory`, `/connections` (one frame a second) and
//! `/logs` (a frame per event). They are fed by the daemon's `subscribe` stream; against a
//! daemon without it (or when it ends) they poll `runtime_status` once a second, and `/logs`
//! tails the daemon's log file instead.

use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{interval, MissedTickBehavior};

use super::daemon::{self, Subscription, CATEGORIES};
use super::frames::{self, Meter};
use super::gate::{clash_error, json_response, App};
use super::WEBSOCKETS_MAX;
use crate::ipc::protocol::Request as DaemonRequest;

/// One frame a second, as Clash sends them.
const FRAME_PERIOD: Duration = Duration::from_secs(1);
/// A frame the client does not take within this ends its stream.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Status polls must answer within this (they run every second).
const POLL_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest message accepted from a client (Clash clients send none).
const CLIENT_MESSAGE_BYTES_MAX: usize = 4096;
/// Most bytes of the daemon log read per tick when tailing it.
const LOG_TAIL_BYTES_MAX: usize = 64 * 1024;

/// The stream routes. `GET /connections` without an upgrade answers one snapshot.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/traffic", get(|s, r| upgrade(s, r, Kind::Traffic)))
        .route("/memory", get(|s, r| upgrade(s, r, Kind::Memory)))
        .route("/connections", get(|s, r| upgrade(s, r, Kind::Connections)))
        .route("/logs", get(logs))
}

/// Which stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Traffic,
    Memory,
    Connections,
    Logs { level: usize },
}

#[derive(Deserialize)]
struct LogsQuery {
    level: Option<String>,
}

async fn logs(state: State<App>, query: Query<LogsQuery>, request: Request) -> Response {
    let level = query.level.as_deref().unwrap_or("info");
    let Some(level) = frames::level_index(level) else {
        let message = format!(
            "unknown log level {level:?}; use one of {}",
            frames::LEVELS.join(", ")
        );
        return clash_error(400, message);
    };
    upgrade(state, request, Kind::Logs { level }).await
}

async fn upgrade(State(app): State<App>, request: Request, kind: Kind) -> Response {
    let (mut parts, _) = request.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(_) if kind == Kind::Connections => return connections_snapshot(&app).await,
        Err(_) => {
            let path = parts.uri.path();
            let message = format!(
                "{path} is a WebSocket stream; connect with ws:// (and ?token= from a browser)"
            );
            return clash_error(400, message);
        }
    };
    let Ok(permit) = app.streams.clone().try_acquire_owned() else {
        let message = format!("at most {WEBSOCKETS_MAX} streams are open at once; retry shortly");
        return clash_error(503, message);
    };
    ws.max_message_size(CLIENT_MESSAGE_BYTES_MAX)
        .on_upgrade(move |socket| run(app, socket, kind, permit))
}

/// Serves one stream until the client leaves, a send times out, or the server stops.
async fn run(app: App, mut socket: WebSocket, kind: Kind, _permit: OwnedSemaphorePermit) {
    let mut stop = app.stop.clone();
    let (mut source, mut events) = Source::open(&app, kind).await;
    let mut ticks = interval(FRAME_PERIOD);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let frames = tokio::select! {
            _ = stop.changed() => break,
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => continue,
            },
            _ = ticks.tick() => source.tick(&app, kind, events.is_some()).await,
            event = next_event(&mut events) => source.on_event(event, kind, &mut events),
        };
        for frame in frames {
            let text = Message::Text(frame.to_string().into());
            match tokio::time::timeout(SEND_TIMEOUT, socket.send(text)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

/// The next event, or never when there is no event stream.
async fn next_event(events: &mut Option<Subscription>) -> Option<Value> {
    match events {
        Some(sub) => sub.next().await,
        None => std::future::pending().await,
    }
}

/// What a stream remembers between frames.
struct Source {
    meter: Meter,
    /// The daemon's pid, for its RSS.
    daemon_pid: Option<u32>,
    /// Tailing the daemon log (the /logs fallback): the offset read up to.
    log_offset: Option<u64>,
    /// While events feed /logs: the log's length at the last tick.
    log_end: Option<u64>,
}

impl Source {
    /// The stream's state, and the daemon's event stream when it has one.
    async fn open(app: &App, kind: Kind) -> (Source, Option<Subscription>) {
        let categories: &[&str] = match kind {
            Kind::Traffic | Kind::Connections => &["relay"],
            Kind::Logs { .. } => &CATEGORIES,
            Kind::Memory => &[],
        };
        let mut events = None;
        let mut source = Source {
            meter: Meter::default(),
            daemon_pid: None,
            log_offset: None,
            log_end: None,
        };
        if !categories.is_empty() {
            if let Ok(sub) = daemon::subscribe(&app.paths, categories).await {
                if let Some(c) = frames::counters(&sub.snapshot["runtime_status"]) {
                    source.meter.update(c);
                }
                events = Some(sub);
            }
        }
        if matches!(kind, Kind::Logs { .. }) && events.is_none() {
            source.start_tail(app);
        }
        (source, events)
    }

    /// Tails the daemon log from its current end (the /logs fallback).
    fn start_tail(&mut self, app: &App) {
        let len = std::fs::metadata(app.paths.daemon_log()).map_or(0, |m| m.len());
        self.log_offset = Some(len);
    }

    fn on_event(
        &mut self,
        event: Option<Value>,
        kind: Kind,
        events: &mut Option<Subscription>,
    ) -> Vec<Value> {
        let Some(event) = event else {
            // The daemon closed the stream (lagged, or it stopped): poll or tail from now on.
            *events = None;
            if matches!(kind, Kind::Logs { .. }) {
                // Not start_tail: no app here; the log from its start would repeat old lines.
                self.log_offset = self.log_end;
            }
            return Vec::new();
        };
        match kind {
            Kind::Logs { level } => match frames::event_log(&event) {
                Some((l, line)) if passes(l, level) => vec![frames::log_frame(l, line)],
                _ => Vec::new(),
            },
            _ => {
                if event["event"] == "relay_counters" {
                    if let Some(c) = frames::counters(&event) {
                        self.meter.update(c);
                    }
                }
                Vec::new()
            }
        }
    }

    async fn tick(&mut self, app: &App, kind: Kind, has_events: bool) -> Vec<Value> {
        match kind {
            Kind::Traffic => {
                self.poll_counters(app, has_events).await;
                let delta = self.meter.tick();
                vec![frames::traffic_frame(delta, self.meter.totals())]
            }
            Kind::Memory => {
                let inuse = self.rss(app).await;
                vec![serde_json::json!({"inuse": inuse, "oslimit": 0})]
            }
            Kind::Connections => {
                self.poll_counters(app, has_events).await;
                let memory = self.rss(app).await;
                vec![frames::connections_frame(self.meter.totals(), memory)]
            }
            Kind::Logs { level } => {
                if has_events {
                    // Remember where the log ends, to tail from there if the events stop.
                    self.log_end = std::fs::metadata(app.paths.daemon_log())
                        .ok()
                        .map(|m| m.len());
                    return Vec::new();
                }
                self.tail_log(app, level)
            }
        }
    }

    /// Without an event stream, the counters come from `runtime_status`.
    async fn poll_counters(&mut self, app: &App, has_events: bool) {
        if has_events {
            return;
        }
        let status = daemon::payload(&app.paths, DaemonRequest::RuntimeStatus, POLL_TIMEOUT).await;
        if let Some(c) = status.ok().as_ref().and_then(frames::counters) {
            self.meter.update(c);
        }
    }

    /// The daemon's resident memory in bytes; 0 while it is unknown.
    async fn rss(&mut self, app: &App) -> u64 {
        if self.daemon_pid.is_none() {
            let ping = daemon::payload(&app.paths, DaemonRequest::DaemonPing, POLL_TIMEOUT).await;
            let pid = ping.ok().and_then(|p| p["pid"].as_u64());
            self.daemon_pid = pid.and_then(|p| u32::try_from(p).ok());
        }
        let Some(pid) = self.daemon_pid else {
            return 0;
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
        match status.ok().as_deref().and_then(frames::vm_rss_bytes) {
            Some(bytes) => bytes,
            None => {
                // Gone (restarted?): ask for the pid again next time.
                self.daemon_pid = None;
                0
            }
        }
    }

    /// New whole lines of the daemon log since the last tick, as info lines.
    fn tail_log(&mut self, app: &App, level: usize) -> Vec<Value> {
        let Some(offset) = self.log_offset else {
            return Vec::new();
        };
        let Ok(mut file) = std::fs::File::open(app.paths.daemon_log()) else {
            return Vec::new();
        };
        let len = file.metadata().map_or(0, |m| m.len());
        // Rotated or truncated: start over at its beginning.
        let from = if len < offset { 0 } else { offset };
        let mut chunk = Vec::new();
        let read = file.seek(SeekFrom::Start(from)).and_then(|_| {
            (&mut file)
                .take(LOG_TAIL_BYTES_MAX as u64)
                .read_to_end(&mut chunk)
        });
        if read.is_err() {
            return Vec::new();
        }
        let whole = chunk.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        self.log_offset = Some(from + whole as u64);
        if !passes("info", level) {
            return Vec::new();
        }
        String::from_utf8_lossy(&chunk[..whole])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| frames::log_frame("info", l.to_owned()))
            .collect()
    }
}

/// Whether a line at `line_level` is sent to a stream asking for `wanted` and above.
fn passes(line_level: &str, wanted: usize) -> bool {
    frames::level_index(line_level)
        .is_some_and(|l| l >= wanted && wanted < frames::LEVELS.len() - 1)
}

/// `GET /connections` without an upgrade: one snapshot of the totals.
async fn connections_snapshot(app: &App) -> Response {
    let (mut source, _) = Source::open(app, Kind::Memory).await;
    let status = daemon::payload(&app.paths, DaemonRequest::RuntimeStatus, POLL_TIMEOUT).await;
    let totals = status
        .ok()
        .as_ref()
        .and_then(frames::counters)
        .unwrap_or((0, 0));
    let memory = source.rss(app).await;
    let body = frames::connections_frame(totals, memory)
        .to_string()
        .into_bytes();
    json_response(200, body)
}
