//! `xrat api serve`: the standalone HTTP API (see `docs/API.md`).
//!
//! The API runs in its own binary, `xrat-api`, installed beside `xrat`: `xrat api ...` checks
//! its arguments and then becomes `xrat-api` (exec, same pid). The HTTP and WebSocket stack
//! (axum, hyper, tokio) is a million bytes of code that neither the CLI nor the daemon runs,
//! and linked into `xrat` it cost every process: 1 MB more text to lay the used code among,
//! 0.9 MB more idle RSS in the daemon (8.8 -> 7.9 MB with a pool session) and 2,900 more
//! relocations at each start (docs/BENCHMARKS.md "Start-up").

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use argh::{ArgsInfo, FromArgs};

use super::{CliError, EXIT_OK};
use crate::api::{self, ApiError, ServeOptions, DEFAULT_LISTEN};
use crate::paths::Paths;

/// The API's binary, looked for beside the running `xrat`.
pub const API_EXE: &str = "xrat-api";

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

/// Runs an `api` subcommand in `xrat`: the arguments were checked, so `xrat-api` is given the
/// same ones (`rest`, after `api`) and replaces this process.
pub fn run(command: ApiCommand, rest: &[&str]) -> Result<i32, CliError> {
    // Checked here, so that a usage error is xrat's (exit 2) before anything is started.
    let Action::Serve(_) = command.action;
    let exe = std::env::current_exe().map_err(|e| {
        CliError::Daemon(format!(
            "cannot find the running xrat binary to look for {API_EXE} beside it: {e}"
        ))
    })?;
    let api = exe.with_file_name(API_EXE);
    if !api.is_file() {
        return Err(CliError::Daemon(format!(
            "the HTTP API is the separate binary {API_EXE}, and {} does not exist; \
             `cargo install --locked --path .` installs it beside xrat, or copy it there from target/release/",
            api.display()
        )));
    }
    let error = std::process::Command::new(&api)
        .arg0(API_EXE)
        .args(rest)
        .exec();
    Err(CliError::Daemon(format!(
        "cannot run {}: {error}; check that it is executable",
        api.display()
    )))
}

/// `xrat-api`: the standalone HTTP API, started by `xrat api` (or directly).
#[derive(FromArgs, ArgsInfo, Debug)]
struct ApiMain {
    #[argh(subcommand)]
    action: Action,
}

/// `xrat-api`'s whole run: `args` is argv including the program name; the exit code.
pub fn api_main(args: &[String]) -> i32 {
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let command = match ApiMain::from_args(&["xrat api"], &rest) {
        Ok(command) => command,
        Err(early) => return super::early_exit(&early, "Run `xrat api serve --help` for usage."),
    };
    super::finish(serve(command.action))
}

fn serve(action: Action) -> Result<i32, CliError> {
    let Action::Serve(args) = action;
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
