//! The WebSocket frames, as pure functions: daemon events rendered as Clash log lines, relay
//! counters turned into per-second traffic, the daemon's RSS from `/proc/<pid>/status`.

use serde_json::{json, Value};

/// Clash log levels, least severe first; `silent` sends nothing.
pub const LEVELS: [&str; 5] = ["debug", "info", "warning", "error", "silent"];

/// The index of a `?level=` value in [`LEVELS`]; None for an unknown one (answered 400, as
/// mihomo does).
pub fn level_index(level: &str) -> Option<usize> {
    LEVELS.iter().position(|l| *l == level)
}

/// A log frame `{"type": level, "payload": text}`.
pub fn log_frame(level: &str, payload: String) -> Value {
    json!({"type": level, "payload": payload})
}

fn field(event: &Value, key: &str) -> String {
    match &event[key] {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One daemon event (the `subscribe` wire format) as a log line `(level, payload)`; None for
/// events that are not worth a line (relay counters, which feed /traffic instead).
pub fn event_log(event: &Value) -> Option<(&'static str, String)> {
    let f = |key| field(event, key);
    let name = event["event"].as_str()?;
    Some(match name {
        "session_started" => (
            "info",
            format!(
                "[session] session {} started: config {} on {} (pid {}, socks {})",
                f("session_id"),
                f("config_id"),
                f("core"),
                f("pid"),
                f("socks_addr")
            ),
        ),
        "session_ended" => {
            let level = if event["reason"] == "crashed" {
                "warning"
            } else {
                "info"
            };
            let line = format!(
                "[session] session {} ended: config {}, {}",
                f("session_id"),
                f("config_id"),
                f("reason")
            );
            (level, line)
        }
        "health_checked" if event["ok"] == true => (
            "debug",
            format!(
                "[health] config {} answered in {} ms",
                f("config_id"),
                f("latency_ms")
            ),
        ),
        "health_checked" => (
            "warning",
            format!(
                "[health] config {} failed: {} ({} in a row)",
                f("config_id"),
                f("error"),
                f("consecutive_failures")
            ),
        ),
        "rotation_started" => (
            "info",
            format!(
                "[rotation] {} rotation started from config {}",
                f("trigger"),
                f("from")
            ),
        ),
        "rotation_finished" => {
            let ok = matches!(event["result"].as_str(), Some("switched" | "restored"));
            let line = format!(
                "[rotation] {} rotation {}: config {} -> {}, {} tested in {} ms; {}",
                f("trigger"),
                f("result"),
                f("from"),
                f("to"),
                f("tested"),
                f("elapsed_ms"),
                f("detail")
            );
            (if ok { "info" } else { "warning" }, line)
        }
        "config_changed" => (
            "info",
            format!("[config] config {}: {}", f("config_id"), f("change")),
        ),
        "pool_changed" => {
            let members = event["members"].as_array().map_or(0, Vec::len);
            ("debug", format!("[pool] {members} member(s)"))
        }
        "lagged" => (
            "warning",
            format!(
                "[events] {} event(s) dropped: this log stream fell behind",
                f("dropped")
            ),
        ),
        "relay_counters" => return None,
        other => ("info", format!("[{other}] {event}")),
    })
}

/// Cumulative relay byte counters `(up, down)` from an event or a `runtime_status` payload
/// (`relay` there; the event carries the fields itself). None in direct mode.
pub fn counters(value: &Value) -> Option<(u64, u64)> {
    let relay = if value.get("relay").is_some_and(Value::is_object) {
        &value["relay"]
    } else {
        value
    };
    Some((relay["bytes_up"].as_u64()?, relay["bytes_down"].as_u64()?))
}

/// Turns cumulative counters into per-second deltas: fed the latest counters whenever they are
/// known, asked for a frame once a second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meter {
    latest: Option<(u64, u64)>,
    sent: Option<(u64, u64)>,
}

impl Meter {
    /// Records the latest cumulative counters.
    pub fn update(&mut self, counters: (u64, u64)) {
        self.latest = Some(counters);
    }

    /// The totals last recorded, `(up, down)`.
    pub fn totals(&self) -> (u64, u64) {
        self.latest.unwrap_or((0, 0))
    }

    /// Bytes since the last tick `(up, down)`. The first tick, and a tick after the counters
    /// went backwards (the daemon restarted), report 0 and start over from there.
    pub fn tick(&mut self) -> (u64, u64) {
        let delta = match (self.sent, self.latest) {
            (Some((su, sd)), Some((lu, ld))) if lu >= su && ld >= sd => (lu - su, ld - sd),
            _ => (0, 0),
        };
        self.sent = self.latest;
        delta
    }
}

/// The `/traffic` frame.
pub fn traffic_frame(delta: (u64, u64), totals: (u64, u64)) -> Value {
    json!({"up": delta.0, "down": delta.1, "upTotal": totals.0, "downTotal": totals.1})
}

/// The `/connections` frame: totals only; xrat keeps no per-connection table.
pub fn connections_frame(totals: (u64, u64), memory: u64) -> Value {
    json!({
        "downloadTotal": totals.1,
        "uploadTotal": totals.0,
        "connections": [],
        "memory": memory,
    })
}

/// `VmRSS` of a `/proc/<pid>/status` text, in bytes.
pub fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}
