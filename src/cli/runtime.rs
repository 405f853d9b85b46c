//! `xrat connect <ID>`, `xrat disconnect`, `xrat status`: the session commands.

use std::time::Duration;

use argh::{ArgsInfo, FromArgs};
use serde::Serialize;

use super::output::{aligned, human_duration, print_json};
use super::rpc::{call, payload};
use super::{CliError, EXIT_OK};
use crate::ipc::client::READ_TIMEOUT_DEFAULT;
use crate::ipc::protocol::{ConnectPayload, DisconnectPayload, Request, RuntimeStatusPayload};
use crate::paths::Paths;

/// A connect may stop the old core (grace 3 s) and wait for the new one (ready_timeout_ms).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Start a session for a stored config (replacing the running one).
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "connect")]
pub struct ConnectCommand {
    /// the stored config's id (see `xrat config list`)
    #[argh(positional, arg_name = "ID")]
    id: i64,
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// Stop the running session.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "disconnect")]
pub struct DisconnectCommand {
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// Show the running session: config, core, pid, addresses, uptime, health.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "status")]
pub struct StatusCommand {
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
    /// keep running and redraw on each daemon event (`xrat events`), until Ctrl-C; with
    /// --json, one status object per line
    #[argh(switch)]
    watch: bool,
}

/// The stored name of a config, when the database can tell.
fn config_name(paths: &Paths, id: i64) -> Option<String> {
    let store = crate::store::Store::open(&paths.database()).ok()?;
    store.config_name(id).ok().flatten()
}

#[derive(Serialize)]
struct ConnectView {
    #[serde(flatten)]
    payload: ConnectPayload,
    config_name: Option<String>,
}

/// `xrat connect <ID>`.
pub fn connect(command: ConnectCommand) -> Result<i32, CliError> {
    let paths = Paths::from_env()?;
    let request = Request::RuntimeConnect {
        config_id: command.id,
    };
    let payload: ConnectPayload = payload(call(&paths, request, CONNECT_TIMEOUT)?)?;
    let view = ConnectView {
        config_name: config_name(&paths, payload.config_id),
        payload,
    };
    if command.json {
        print_json(&view);
        return Ok(EXIT_OK);
    }
    let p = &view.payload;
    let name = view.config_name.as_deref().unwrap_or("?");
    if p.already_active {
        println!(
            "Config #{} ({name}) is already active (session {}, pid {}).",
            p.config_id, p.session_id, p.pid
        );
    } else {
        println!(
            "Connected config #{} ({name}): session {}, pid {}.",
            p.config_id, p.session_id, p.pid
        );
        if let Some(old) = p.replaced_session_id {
            println!("Replaced session {old}.");
        }
    }
    Ok(EXIT_OK)
}

/// `xrat disconnect`.
pub fn disconnect(command: DisconnectCommand) -> Result<i32, CliError> {
    let paths = Paths::from_env()?;
    let payload: DisconnectPayload =
        payload(call(&paths, Request::RuntimeDisconnect, CONNECT_TIMEOUT)?)?;
    if command.json {
        print_json(&payload);
    } else {
        println!("Disconnected session {}.", payload.stopped_session);
    }
    Ok(EXIT_OK)
}

#[derive(Serialize)]
pub(super) struct StatusView {
    #[serde(flatten)]
    payload: RuntimeStatusPayload,
    config_name: Option<String>,
    uptime_secs: Option<u64>,
}

/// `xrat status`.
pub fn status(command: StatusCommand) -> Result<i32, CliError> {
    if command.watch {
        return super::events::watch_status(command.json);
    }
    let paths = Paths::from_env()?;
    let payload: RuntimeStatusPayload =
        payload(call(&paths, Request::RuntimeStatus, READ_TIMEOUT_DEFAULT)?)?;
    let view = status_view(&paths, payload);
    if command.json {
        print_json(&view);
        return Ok(EXIT_OK);
    }
    print_status(&view);
    Ok(EXIT_OK)
}

/// The status as shown, from the daemon's payload.
pub(super) fn status_view(paths: &Paths, payload: RuntimeStatusPayload) -> StatusView {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    StatusView {
        // The daemon's answer names it; an older daemon's, or one whose database could not
        // tell, does not, and only then is the database opened here.
        config_name: payload.active_config_name.clone().or_else(|| {
            payload
                .active_config_id
                .and_then(|id| config_name(paths, id))
        }),
        uptime_secs: payload.started_at.map(|t| now.saturating_sub(t)),
        payload,
    }
}

pub(super) fn print_status(view: &StatusView) {
    // One write for the whole block (`print!` of one string): scripts run this per call, and
    // stdout is line-buffered, so each formatted piece with a newline would be a write.
    const HEADER: &str = "Runtime Status\n--------------\n";
    let p = &view.payload;
    let Some(config_id) = p.active_config_id else {
        let state = aligned(&[("State", p.runtime_status.clone())]);
        let text =
            format!("{HEADER}{state}No session is running; start one with `xrat connect <ID>`.\n");
        print!("{text}");
        return;
    };
    let dash = || "-".to_string();
    let name = view.config_name.clone().unwrap_or_else(|| "?".into());
    let pid = p.pid.map_or_else(dash, |pid| {
        format!("{pid}{}", if p.pid_running { "" } else { " (exited)" })
    });
    let health = match (&p.health.last_error, p.health.last_latency_ms) {
        (Some(e), _) => format!("{} failure(s); last: {e}", p.health.consecutive_failures),
        (None, Some(ms)) => format!("ok ({ms} ms)"),
        (None, None) => "not checked yet".into(),
    };
    // In front mode the user's ports are the front's; the session's are internal.
    let (socks, http) = match &p.front_socks_addr {
        Some(front) => (front.clone(), p.front_http_addr.clone()),
        None => (
            p.socks_addr.clone().unwrap_or_else(dash),
            p.http_addr.clone(),
        ),
    };
    let mut lines = vec![
        ("State", p.runtime_status.clone()),
        ("Mode", p.mode.clone()),
        ("Config", format!("#{config_id} {name}")),
        ("Session", p.session_id.map_or_else(dash, |s| s.to_string())),
        ("Core", p.core.clone().unwrap_or_else(dash)),
        ("PID", pid),
        ("SOCKS", socks),
        ("HTTP", http.unwrap_or_else(dash)),
        ("Uptime", view.uptime_secs.map_or_else(dash, human_duration)),
        ("Health", health),
    ];
    if !p.pool.is_empty() {
        lines.push(("Pool", pool_line(&p.pool)));
    }
    if let Some(r) = &p.relay {
        lines.push((
            "Relay",
            format!(
                "{} open, {} total, {} retried ({} rerouted), {} failed openings",
                r.connections_open, r.connections_total, r.retries, r.rerouted, r.failures
            ),
        ));
    }
    let text = HEADER.to_string() + &aligned(&lines);
    print!("{text}");
}

/// `#1 active 12 ms, #2 8 ms, #3 down` — one line for the pool's members.
pub(super) fn pool_line(pool: &[crate::ipc::protocol::PoolMemberView]) -> String {
    pool.iter()
        .map(|m| {
            let state = match (m.alive, m.latency_ms) {
                (false, _) => "down".to_string(),
                (true, Some(ms)) => format!("{ms} ms"),
                (true, None) => "untested".to_string(),
            };
            let active = if m.active { " active" } else { "" };
            format!("#{}{active} {state}", m.config_id)
        })
        .collect::<Vec<_>>()
        .join(", ")
}
