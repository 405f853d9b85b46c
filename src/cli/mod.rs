//! The command line. Each command builds one Serialize view: `--json` prints it as JSON, text
//! mode prints aligned lines. Exit codes: 0 ok, 1 error, 2 usage, 3 daemon unreachable.

mod api;

pub use api::{api_main, API_EXE};
mod argv;
mod completions;
mod config;
mod config_list;
mod config_test;
mod daemon;
mod events;
mod install;
mod logs;
mod output;
mod proxy;
mod rpc;
mod runtime;
mod sub;
mod sub_fetch;

use argh::{ArgsInfo, FromArgs};
use thiserror::Error;

use crate::ipc::client::ClientError;
use crate::paths::PathsError;
use crate::reactor::ReactorError;
use crate::settings::SettingsError;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: the command failed.
pub const EXIT_ERROR: i32 = 1;
/// Exit code: the command line was wrong.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: the daemon could not be reached.
pub const EXIT_UNREACHABLE: i32 = 3;

/// xrat keeps one proxy session alive and lets scripts steer it fast.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(
    note = "`xrat --version` prints the version; `-h` is `--help`. Settings: <root>/config.toml, every key in docs/SETTINGS.md.",
    error_code(1, "the command failed"),
    error_code(2, "the command line is wrong"),
    error_code(3, "the daemon could not be reached")
)]
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand)]
enum Command {
    Api(api::ApiCommand),
    Completions(completions::CompletionsCommand),
    Config(config::ConfigCommand),
    Connect(runtime::ConnectCommand),
    Daemon(daemon::DaemonCommand),
    Disconnect(runtime::DisconnectCommand),
    Events(events::EventsCommand),
    Logs(logs::LogsCommand),
    Proxy(proxy::ProxyCommand),
    Status(runtime::StatusCommand),
    Sub(sub::SubCommand),
}

/// Every failure a command can report.
#[derive(Debug, Error)]
pub enum CliError {
    /// Talking to the daemon failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The root could not be resolved.
    #[error(transparent)]
    Paths(#[from] PathsError),
    /// config.toml is wrong.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A subscription fetch or its content failed.
    #[error(transparent)]
    Subs(#[from] crate::subs::SubsError),
    /// The server failed.
    #[error(transparent)]
    Reactor(#[from] ReactorError),
    /// A daemon-lifecycle command failed; the message says what to do.
    #[error("{0}")]
    Daemon(String),
    /// `daemon stop` found no daemon.
    #[error("no daemon is running at {}; nothing to stop", .0.display())]
    NothingToStop(std::path::PathBuf),
    /// `xrat logs` failed.
    #[error(transparent)]
    Logs(#[from] logs::LogsError),
    /// The daemon answered with an error.
    #[error("the daemon answered {code}: {message}")]
    Refused {
        /// Response code.
        code: u16,
        /// Its message.
        message: String,
    },
}

impl CliError {
    /// The exit code this failure maps to.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Client(e) if e.is_unreachable() => EXIT_UNREACHABLE,
            CliError::NothingToStop(_) => EXIT_UNREACHABLE,
            _ => EXIT_ERROR,
        }
    }
}

/// Parses `args` (argv including the program name), runs the command and returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    // run-server is for `daemon start` and systemd, not for people, so it stays out of --help.
    if args.get(1).map(String::as_str) == Some("daemon")
        && args.get(2).map(String::as_str) == Some("run-server")
    {
        return finish(daemon::run_server(&args[3..]));
    }
    let name = args
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .unwrap_or("xrat");
    if let Some(code) = argv::version(args.get(1..).unwrap_or_default()) {
        return code;
    }
    let rest = argv::normalize(args.get(1..).unwrap_or_default());
    let cli = match Cli::from_args(&[name], &rest) {
        Ok(cli) => cli,
        Err(early) => {
            return early_exit(
                &early,
                "Run `xrat help` or `xrat <command> --help` for usage.",
            )
        }
    };
    finish(match cli.command {
        Command::Api(command) => api::run(command, &rest[1..]),
        Command::Completions(command) => completions::run::<Cli>(command),
        Command::Config(command) => config::run(command),
        Command::Connect(command) => runtime::connect(command),
        Command::Daemon(command) => daemon::run(command),
        Command::Disconnect(command) => runtime::disconnect(command),
        Command::Events(command) => events::run(command),
        Command::Logs(command) => logs::run(command),
        Command::Proxy(command) => proxy::run(command),
        Command::Status(command) => runtime::status(command),
        Command::Sub(command) => sub::run(command),
    })
}

/// What argh ended early with: `--help` text (exit 0) or a usage error and `hint` (exit 2).
fn early_exit(early: &argh::EarlyExit, hint: &str) -> i32 {
    match early.status {
        Ok(()) => {
            println!("{}", early.output);
            EXIT_OK
        }
        Err(()) => {
            eprintln!("{}", early.output.trim_end());
            eprintln!("{hint}");
            EXIT_USAGE
        }
    }
}

fn finish(result: Result<i32, CliError>) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) => {
            output::print_error(&e);
            e.exit_code()
        }
    }
}
