//! `xrat api serve`: the standalone HTTP API (see `docs/API.md`).

use std::net::SocketAddr;
use std::path::PathBuf;

use argh::{ArgsInfo, FromArgs};

use super::{CliError, EXIT_OK};
use crate::api::{self, ApiError, ServeOptions, DEFAULT_LISTEN};
use crate::paths::Paths;

/// The standalone HTTP API.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "api")]
pub struct ApiCommand {
    #[argh(subcommand)]
    action: Action,
}

#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand)]
enum Action {
    Serve(ServeArgs),
}

/// Serve the HTTP JSON API in the foreground (a client of the daemon; token in <root>/api.token).
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "serve")]
struct ServeArgs {
    /// address to listen on, IP:PORT (default 127.0.0.1:8787; port 0 picks a free one)
    #[argh(option, default = "default_listen()", from_str_fn(parse_listen))]
    listen: SocketAddr,
    /// allow a --listen address that is not loopback (the API speaks plain HTTP)
    #[argh(switch)]
    allow_remote: bool,
    /// print the start and stop lines as JSON objects, one per line
    #[argh(switch)]
    json: bool,
    /// serve a Clash dashboard's static files from DIR at /ui/ on the API's own origin
    #[argh(option)]
    dashboard: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("the default address parses")
}

fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| {
        format!("--listen {value:?} is not IP:PORT; use e.g. 127.0.0.1:8787 or [::1]:8787")
    })
}

/// Runs an `api` subcommand.
pub fn run(command: ApiCommand) -> Result<i32, CliError> {
    let Action::Serve(args) = command.action;
    let paths = Paths::from_env()?;
    let options = ServeOptions {
        listen: args.listen,
        allow_remote: args.allow_remote,
        json: args.json,
        dashboard: args.dashboard,
    };
    api::serve(&paths, options).map_err(|e| match e {
        ApiError::Paths(e) => CliError::Paths(e),
        // The message names the cause and the fix; keep the OS error's text with it.
        other => CliError::Daemon(error_chain(&other)),
    })?;
    Ok(EXIT_OK)
}

/// `error` and its sources as one line (CliError::Daemon carries only a message).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(&format!(": {cause_text}"));
        }
        source = cause.source();
    }
    text
}
