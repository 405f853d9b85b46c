//! `xrat proxy start|stop|status|rotate`: automatic rotation and manual rotation.

use std::time::{Duration, Instant};

use argh::{ArgsInfo, FromArgs};
use serde::Serialize;

use super::output::{human_duration, print_aligned, print_json};
use super::rpc::{call, payload};
use super::{CliError, EXIT_ERROR, EXIT_OK};
use crate::ipc::client::READ_TIMEOUT_DEFAULT;
use crate::ipc::protocol::{ProxyStatusPayload, ReplacePayload, Request, RotationPayload, Trigger};
use crate::paths::Paths;

/// A rotation tests every candidate and may try several; it is bounded by the daemon's deadlines.
const ROTATE_TIMEOUT: Duration = Duration::from_secs(300);

/// Automatic and manual rotation of the session's config.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "proxy")]
pub struct ProxyCommand {
    #[argh(subcommand)]
    action: Action,
}

#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand)]
enum Action {
    Start(StartArgs),
    Stop(StopArgs),
    Status(StatusArgs),
    Rotate(RotateArgs),
}

/// Enable automatic rotation (timer and failed health checks).
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "start")]
struct StartArgs {
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// Disable automatic rotation.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "stop")]
struct StopArgs {
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// Show rotation: whether it is on, its settings, the last rotation and the next timer one.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "status")]
struct StatusArgs {
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// Rotate now: to the best warm pool member (front mode), else test candidates and switch to
/// the best (or to --config-id).
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "rotate")]
struct RotateArgs {
    /// rotate to this stored config (it is still tested first)
    #[argh(option)]
    config_id: Option<i64>,
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// Runs a `proxy` subcommand.
pub fn run(command: ProxyCommand) -> Result<i32, CliError> {
    let paths = Paths::from_env()?;
    match command.action {
        Action::Start(a) => toggle(&paths, Request::ProxyStart, a.json),
        Action::Stop(a) => toggle(&paths, Request::ProxyStop, a.json),
        Action::Status(a) => status(&paths, a.json),
        Action::Rotate(a) => rotate(&paths, a.config_id, a.json),
    }
}

fn toggle(paths: &Paths, request: Request, json: bool) -> Result<i32, CliError> {
    let view: RotationPayload = payload(call(paths, request, READ_TIMEOUT_DEFAULT)?)?;
    if json {
        print_json(&view);
    } else if view.rotation_enabled {
        println!("Automatic rotation enabled.");
    } else {
        println!("Automatic rotation disabled.");
    }
    Ok(EXIT_OK)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// "in 4m 2s" / "3m ago".
fn relative(at: Option<u64>) -> String {
    let Some(at) = at else { return "-".into() };
    let now = unix_now();
    if at > now {
        format!("in {}", human_duration(at - now))
    } else {
        format!("{} ago", human_duration(now - at))
    }
}

fn status(paths: &Paths, json: bool) -> Result<i32, CliError> {
    let p: ProxyStatusPayload = payload(call(paths, Request::ProxyStatus, READ_TIMEOUT_DEFAULT)?)?;
    if json {
        print_json(&p);
        return Ok(EXIT_OK);
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    let dash = || "-".to_string();
    println!("Rotation Status");
    println!("---------------");
    print_aligned(&[
        ("Enabled", yes_no(p.rotation_enabled)),
        ("Interval", human_duration(p.interval_secs)),
        (
            "Next rotation",
            if p.rotation_enabled {
                relative(p.next_rotation_at)
            } else {
                dash()
            },
        ),
        (
            "Health trigger",
            format!(
                "{} (after {} failures)",
                yes_no(p.health_trigger_enabled),
                p.health_failure_threshold
            ),
        ),
        (
            "Cooldown",
            format!(
                "{}{}",
                human_duration(p.cooldown_secs),
                if p.cooldown_active { " (active)" } else { "" }
            ),
        ),
        (
            "Active config",
            p.active_config_id.map_or_else(dash, |id| format!("#{id}")),
        ),
        ("Last rotation", relative(p.last_rotation_at)),
        ("Last trigger", p.last_trigger.clone().unwrap_or_else(dash)),
        ("Last result", p.last_result.clone().unwrap_or_else(dash)),
        (
            "Last candidate",
            p.last_candidate_config_id
                .map_or_else(dash, |id| format!("#{id}")),
        ),
        ("Health failures", p.consecutive_health_failures.to_string()),
        (
            "Last health error",
            p.last_health_error.clone().unwrap_or_else(dash),
        ),
    ]);
    Ok(EXIT_OK)
}

#[derive(Serialize)]
struct RotateView {
    #[serde(flatten)]
    payload: ReplacePayload,
    old_config_id: Option<i64>,
    elapsed_ms: u64,
}

fn rotate(paths: &Paths, config_id: Option<i64>, json: bool) -> Result<i32, CliError> {
    let before: ProxyStatusPayload =
        payload(call(paths, Request::ProxyStatus, READ_TIMEOUT_DEFAULT)?)?;
    let started = Instant::now();
    let request = Request::RuntimeReplace {
        trigger: Trigger::Manual,
        candidate_id: config_id,
    };
    let p: ReplacePayload = payload(call(paths, request, ROTATE_TIMEOUT)?)?;
    let view = RotateView {
        old_config_id: before.active_config_id,
        elapsed_ms: started.elapsed().as_millis() as u64,
        payload: p,
    };
    let code = if view.payload.replaced {
        EXIT_OK
    } else {
        EXIT_ERROR
    };
    if json {
        print_json(&view);
        return Ok(code);
    }
    let p = &view.payload;
    let config = |id: Option<i64>| id.map_or_else(|| "-".to_string(), |id| format!("#{id}"));
    print_aligned(&[
        (
            "Result",
            if p.replaced {
                "rotated".to_string()
            } else {
                format!("not rotated ({})", p.result)
            },
        ),
        ("Old config", config(view.old_config_id)),
        ("New config", config(p.new_config_id)),
        ("Trigger", "manual".into()),
        ("Tested", format!("{} candidate(s)", p.tested_candidates)),
        ("Took", format!("{} ms", view.elapsed_ms)),
        ("Detail", p.detail.clone()),
    ]);
    Ok(code)
}
