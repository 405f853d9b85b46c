//! `xrat events [--json] [--category X ...]`: the daemon's event stream (`subscribe`), and
//! `xrat status --watch`, which redraws the status on each event.

use std::io::{IsTerminal, Write};

use argh::{ArgsInfo, FromArgs};

use super::rpc::payload;
use super::{CliError, EXIT_ERROR, EXIT_UNREACHABLE};
use crate::ipc::client::{Client, READ_TIMEOUT_DEFAULT};
use crate::ipc::events::{Category, Event, EventBody, SubscribePayload};
use crate::paths::Paths;

/// Width of the event-name column (the longest name, `rotation_finished`).
const NAME_WIDTH: usize = 17;
/// Milliseconds in a day, for the time-of-day column.
const DAY_MS: u64 = 86_400_000;

/// Stream the daemon's events (sessions, health, rotations, configs, pool, relay) until Ctrl-C.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(
    subcommand,
    name = "events",
    note = "Exits 1 when the daemon closed the stream because this client fell behind (lagged), 3 when the daemon is unreachable or went away."
)]
pub struct EventsCommand {
    /// print each event line as the daemon sent it (one JSON object per line)
    #[argh(switch)]
    json: bool,
    /// only this category (session, health, rotation, config, pool, relay); repeat for more;
    /// default all
    #[argh(option, from_str_fn(parse_category))]
    category: Vec<Category>,
}

fn parse_category(name: &str) -> Result<Category, String> {
    Category::from_name(name).ok_or_else(|| {
        format!(
            "unknown category {name:?}; use one of {}",
            Category::names()
        )
    })
}

/// Subscribes on a fresh connection: the client and the snapshot.
fn subscribe(
    paths: &Paths,
    categories: Vec<Category>,
) -> Result<(Client, SubscribePayload), CliError> {
    let socket = paths.checked_socket()?;
    let mut client = Client::connect(&socket, &paths.daemon_log(), READ_TIMEOUT_DEFAULT)?;
    let answer = client.subscribe(categories)?;
    Ok((client, payload(answer)?))
}

/// How a stream ended.
fn stream_ended(lagged: bool) -> Result<i32, CliError> {
    if lagged {
        eprintln!("error: the daemon closed the stream: this client fell behind (daemon.subscriber_queue_max); subscribe again, and read faster or raise the limit");
        return Ok(EXIT_ERROR);
    }
    eprintln!("error: the daemon closed the event stream; it may have stopped: check `xrat daemon status`");
    Ok(EXIT_UNREACHABLE)
}

/// `xrat events`.
pub fn run(command: EventsCommand) -> Result<i32, CliError> {
    let paths = Paths::from_env()?;
    let (mut client, _) = subscribe(&paths, command.category)?;
    let mut stdout = std::io::stdout().lock();
    let mut lagged = false;
    while let Some(line) = client.next_line()? {
        let event = serde_json::from_str::<Event>(&line).ok();
        lagged |= matches!(&event, Some(e) if matches!(e.body, EventBody::Lagged { .. }));
        let text = match (&event, command.json) {
            (Some(event), false) => text_line(event),
            // A newer daemon's event this CLI does not know is shown as sent.
            _ => line,
        };
        // A closed stdout (`| head`) ends the command quietly.
        if writeln!(stdout, "{text}")
            .and_then(|_| stdout.flush())
            .is_err()
        {
            return Ok(super::EXIT_OK);
        }
    }
    stream_ended(lagged)
}

/// One aligned line: UTC time of day, seq, name, what happened.
fn text_line(event: &Event) -> String {
    format!(
        "{}  {:>7}  {:<NAME_WIDTH$}  {}",
        time_of_day(event.at),
        event.seq,
        event.body.name(),
        detail(&event.body)
    )
}

/// `HH:MM:SS.mmm` (UTC) of a Unix time in ms.
fn time_of_day(at_ms: u64) -> String {
    let ms = at_ms % DAY_MS;
    let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03}", ms % 1000)
}

fn config(id: Option<i64>) -> String {
    id.map_or_else(|| "none".to_string(), |id| format!("#{id}"))
}

/// What happened, in words.
fn detail(body: &EventBody) -> String {
    match body {
        EventBody::SessionStarted {
            session_id,
            config_id,
            core,
            pid,
            socks_addr,
            http_addr,
        } => {
            let http = http_addr
                .as_ref()
                .map_or(String::new(), |a| format!(" http {a}"));
            format!("session {session_id} config #{config_id} {core} pid {pid} socks {socks_addr}{http}")
        }
        EventBody::SessionEnded {
            session_id,
            config_id,
            reason,
        } => format!("session {session_id} config #{config_id}: {reason}"),
        EventBody::HealthChecked {
            session_id,
            config_id,
            ok,
            latency_ms,
            error,
            consecutive_failures,
        } => {
            let verdict = match (ok, latency_ms) {
                (true, Some(ms)) => format!("ok {ms} ms"),
                (true, None) => "ok".to_string(),
                (false, _) => format!(
                    "failed ({consecutive_failures} in a row): {}",
                    error.as_deref().unwrap_or("?")
                ),
            };
            format!("session {session_id} config #{config_id} {verdict}")
        }
        EventBody::RotationStarted { trigger, from } => format!("{trigger} from {}", config(*from)),
        EventBody::RotationFinished {
            trigger,
            from,
            to,
            result,
            tested,
            elapsed_ms,
            detail,
        } => format!(
            "{trigger} {} -> {} {result}, {tested} tested, {elapsed_ms} ms: {detail}",
            config(*from),
            config(*to)
        ),
        EventBody::ConfigChanged { config_id, change } => match config_id {
            Some(id) => format!("#{id} {change}"),
            None => format!("all {change}"),
        },
        EventBody::PoolChanged { members } => super::runtime::pool_line(members),
        EventBody::RelayCounters(r) => format!(
            "{} open, {} total, up {} B, down {} B, {} retried, {} failed, {} refused at limit, {} spliced, {} rerouted",
            r.connections_open,
            r.connections_total,
            r.bytes_up,
            r.bytes_down,
            r.retries,
            r.failures,
            r.refused_at_limit,
            r.spliced,
            r.rerouted
        ),
        EventBody::Lagged { dropped } => {
            format!("{dropped} event(s) dropped; the daemon closes this stream")
        }
    }
}

/// `xrat status --watch`: the status from the subscribe snapshot, then again after each event
/// (a burst is drawn once, at its end). On a terminal the screen is redrawn; otherwise each
/// status follows the last (with `--json`, one compact object per line).
pub fn watch_status(json: bool) -> Result<i32, CliError> {
    let paths = Paths::from_env()?;
    let (mut client, snapshot) = subscribe(&paths, Vec::new())?;
    let tty = std::io::stdout().is_terminal();
    let draw = |paths: &Paths, status| {
        let view = super::runtime::status_view(paths, status);
        if json {
            println!("{}", serde_json::to_string(&view).expect("views serialize"));
            return;
        }
        if tty {
            // Home and clear: the status is redrawn in place.
            print!("\x1b[H\x1b[2J");
        } else {
            println!();
        }
        super::runtime::print_status(&view);
        let _ = std::io::stdout().flush();
    };
    draw(&paths, snapshot.runtime_status);
    let mut lagged = false;
    while let Some(line) = client.next_line()? {
        lagged |= line.contains("\"event\":\"lagged\"");
        if client.line_buffered() || lagged {
            continue;
        }
        let status = payload(super::rpc::call(
            &paths,
            crate::ipc::protocol::Request::RuntimeStatus,
            READ_TIMEOUT_DEFAULT,
        )?)?;
        draw(&paths, status);
    }
    stream_ended(lagged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_align_and_say_what_happened() {
        let event = Event {
            seq: 42,
            at: 1_764_612_345_678,
            body: EventBody::RotationFinished {
                trigger: "manual".into(),
                from: Some(1),
                to: Some(2),
                result: "switched".into(),
                tested: 3,
                elapsed_ms: 812,
                detail: "switched from config 1 to config 2".into(),
            },
        };
        let line = text_line(&event);
        assert_eq!(
            line,
            "18:05:45.678       42  rotation_finished  manual #1 -> #2 switched, 3 tested, 812 ms: switched from config 1 to config 2"
        );
        let short = text_line(&Event {
            seq: 43,
            at: 1_764_612_345_679,
            body: EventBody::ConfigChanged {
                config_id: None,
                change: "reloaded".into(),
            },
        });
        // The detail column starts at the same place whatever the name's length.
        assert_eq!(short.find("all reloaded"), line.find("manual #1"));
    }

    #[test]
    fn categories_parse_or_name_the_valid_ones() {
        assert_eq!(parse_category("pool"), Ok(Category::Pool));
        let err = parse_category("pools").unwrap_err();
        assert!(
            err.contains("session, health, rotation, config, pool, relay"),
            "{err}"
        );
    }
}
