//! `xrat daemon start|status|stop` and the hidden `run-server`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use argh::{ArgsInfo, FromArgs};
use serde::Serialize;

use super::output::{human_duration, print_json};
use super::rpc::{call, payload};
use super::{CliError, EXIT_OK, EXIT_UNREACHABLE};
use crate::ipc::client::{Client, ClientError, READ_TIMEOUT_DEFAULT};
use crate::ipc::protocol::{PingPayload, Request};
use crate::paths::Paths;
use crate::settings::Settings;

/// How long `daemon start` waits for the new daemon to answer a ping.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `daemon stop` waits for the process to exit and the socket to go.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll period while waiting on the daemon.
const WAIT_STEP: Duration = Duration::from_millis(10);
/// The rule under `Daemon Status`: the seed's, 33 box-drawing characters.
const STATUS_RULE: &str = "\u{2500}";
/// Width of [`STATUS_RULE`] in characters.
const STATUS_RULE_WIDTH: usize = 33;
/// Lines of the daemon log quoted when it fails to start.
const LOG_TAIL_LINES: usize = 15;

/// Manage the xrat daemon.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "daemon")]
pub struct DaemonCommand {
    #[argh(subcommand)]
    action: Action,
}

#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand)]
enum Action {
    Start(StartArgs),
    Status(StatusArgs),
    Stop(StopArgs),
    Reload(ReloadArgs),
    Install(super::install::InstallArgs),
    Uninstall(super::install::UninstallArgs),
}

/// Start the daemon in the background and wait until it answers.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "start")]
struct StartArgs {
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// Show whether the daemon answers on its socket, with its pid, version and uptime.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "status")]
struct StatusArgs {
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// Stop the daemon (and its session) and wait until it is gone.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "stop")]
struct StopArgs {
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// Re-read config.toml in the running daemon (the same as SIGHUP).
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "reload")]
struct ReloadArgs {
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// Runs a `daemon` subcommand.
pub fn run(command: DaemonCommand) -> Result<i32, CliError> {
    let paths = Paths::from_env()?;
    match command.action {
        Action::Start(args) => start(&paths, args.json),
        Action::Status(args) => status(&paths, args.json),
        Action::Stop(args) => stop(&paths, args.json),
        Action::Reload(args) => reload(&paths, args.json),
        Action::Install(args) => super::install::install(args),
        Action::Uninstall(args) => super::install::uninstall(args),
    }
}

/// `xrat daemon run-server`: the daemon itself, in the foreground.
pub fn run_server(extra: &[String]) -> Result<i32, CliError> {
    if let Some(arg) = extra.first() {
        return Err(CliError::Daemon(format!(
            "unexpected argument {arg:?}; `xrat daemon run-server` takes no arguments (settings live in config.toml)"
        )));
    }
    let paths = Paths::from_env()?;
    let settings = Settings::load(&paths.settings_file())?;
    crate::reactor::run_server(&paths, &settings)?;
    Ok(EXIT_OK)
}

/// `xrat daemon reload`: what changed, and what needs a restart.
fn reload(paths: &Paths, json: bool) -> Result<i32, CliError> {
    let view: crate::ipc::protocol::ReloadPayload =
        payload(call(paths, Request::DaemonReload, READ_TIMEOUT_DEFAULT)?)?;
    if json {
        print_json(&view);
        return Ok(EXIT_OK);
    }
    let list = |keys: &[String]| {
        if keys.is_empty() {
            "none".to_string()
        } else {
            keys.join(", ")
        }
    };
    println!("Settings reloaded.");
    println!("Applied:        {}", list(&view.applied));
    println!("Needs restart:  {}", list(&view.restart_needed));
    Ok(EXIT_OK)
}

fn ping(paths: &Paths) -> Result<PingPayload, CliError> {
    payload(call(paths, Request::DaemonPing, READ_TIMEOUT_DEFAULT)?)
}

#[derive(Serialize)]
struct StartView {
    started: bool,
    already_running: bool,
    pid: u32,
    socket: PathBuf,
    log: PathBuf,
}

fn start(paths: &Paths, json: bool) -> Result<i32, CliError> {
    let socket = paths.checked_socket()?;
    let (already_running, pid) = match ping(paths) {
        Ok(ping) => (true, ping.pid),
        Err(CliError::Client(e)) if e.is_unreachable() => (false, spawn_and_wait(paths)?),
        Err(e) => return Err(e),
    };
    let view = StartView {
        started: !already_running,
        already_running,
        pid,
        socket,
        log: paths.daemon_log(),
    };
    if json {
        print_json(&view);
    } else if already_running {
        println!("Daemon already running (pid {pid}).");
    } else {
        println!("Daemon started (pid {pid}).");
    }
    Ok(EXIT_OK)
}

/// Spawns `run-server` detached (own session, stdio to the log) and waits for its ping.
fn spawn_and_wait(paths: &Paths) -> Result<u32, CliError> {
    paths.create_dirs()?;
    let exe = std::env::current_exe().map_err(|e| {
        CliError::Daemon(format!(
            "cannot find the xrat executable to start the daemon: {e}"
        ))
    })?;
    let log_path = paths.daemon_log();
    let log = crate::paths::open_log(&log_path).map_err(|e| {
        CliError::Daemon(format!(
            "cannot open the daemon log {}: {e}",
            log_path.display()
        ))
    })?;
    let log_err = log.try_clone().map_err(|e| {
        CliError::Daemon(format!(
            "cannot open the daemon log {}: {e}",
            log_path.display()
        ))
    })?;
    let start_len = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut command = Command::new(&exe);
    command
        .args(["daemon", "run-server"])
        .env("XRAT_ROOT", &paths.root)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| CliError::Daemon(format!("cannot start {}: {e}", exe.display())))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(CliError::Daemon(format!(
                "the daemon exited during startup ({status}); its log {} says:\n{}",
                log_path.display(),
                log_tail(&log_path, start_len)
            )));
        }
        match ping(paths) {
            Ok(ping) => return Ok(ping.pid),
            Err(CliError::Client(e)) if e.is_unreachable() => {}
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Err(CliError::Daemon(format!(
                "the daemon (pid {}) did not answer within {} s; see {}:\n{}",
                child.id(),
                START_TIMEOUT.as_secs(),
                log_path.display(),
                log_tail(&log_path, start_len)
            )));
        }
        std::thread::sleep(WAIT_STEP);
    }
}

/// The last lines the daemon wrote to its log since `from` (this start's output).
fn log_tail(path: &Path, from: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text[(from as usize).min(text.len())..]).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n  ");
    format!("  {tail}")
}

#[derive(Serialize)]
struct StatusView {
    socket: PathBuf,
    reachable: bool,
    protocol: Option<u64>,
    pid: Option<u32>,
    version: Option<String>,
    uptime_secs: Option<u64>,
    /// The daemon's event loop: `io_uring` or `epoll`.
    backend: Option<String>,
    error: Option<String>,
}

fn status(paths: &Paths, json: bool) -> Result<i32, CliError> {
    let socket = paths.checked_socket()?;
    let outcome = ping(paths);
    let unreachable = matches!(&outcome, Err(CliError::Client(e)) if e.is_unreachable());
    if !json {
        // The seed's block (its lines and order, which scripts parse), then what the ping adds.
        // One write for the block (`print!` of one string): scripts run this per call, and stdout
        // is line-buffered, so each formatted piece with a newline would be a write.
        let ping = outcome?;
        let text = format!(
            "Daemon Status\n{}\nSocket: {}\nReachable: yes\nProtocol: v1\nPid: {}\nVersion: {}\nUptime: {}\nBackend: {}\n",
            STATUS_RULE.repeat(STATUS_RULE_WIDTH),
            socket.display(),
            ping.pid,
            ping.version,
            human_duration(ping.uptime_secs),
            ping.backend.as_deref().unwrap_or("unknown"),
        );
        print!("{text}");
        return Ok(EXIT_OK);
    }
    let view = match outcome {
        Ok(ping) => StatusView {
            socket,
            reachable: true,
            protocol: Some(crate::ipc::PROTOCOL_VERSION),
            pid: Some(ping.pid),
            version: Some(ping.version),
            uptime_secs: Some(ping.uptime_secs),
            backend: ping.backend,
            error: None,
        },
        Err(e) if unreachable => StatusView {
            socket,
            reachable: false,
            protocol: None,
            pid: None,
            version: None,
            uptime_secs: None,
            backend: None,
            error: Some(e.to_string()),
        },
        Err(e) => return Err(e),
    };
    print_json(&view);
    Ok(if view.reachable {
        EXIT_OK
    } else {
        EXIT_UNREACHABLE
    })
}

#[derive(Serialize)]
struct StopView {
    stopped: bool,
    pid: u32,
    runtime_disconnected: bool,
    socket: PathBuf,
}

fn stop(paths: &Paths, json: bool) -> Result<i32, CliError> {
    let socket = paths.checked_socket()?;
    let pid = match ping(paths) {
        Ok(ping) => ping.pid,
        Err(CliError::Client(ClientError::NotRunning { path, .. })) => {
            return Err(CliError::NothingToStop(path))
        }
        Err(e) => return Err(e),
    };
    let mut client = Client::connect(&socket, &paths.daemon_log(), READ_TIMEOUT_DEFAULT)?;
    let reply: crate::ipc::protocol::ShutdownPayload =
        payload(client.call(Request::DaemonShutdown)?)?;
    wait_gone(pid, &socket)?;
    let view = StopView {
        stopped: true,
        pid,
        runtime_disconnected: reply.runtime_disconnected,
        socket,
    };
    if json {
        print_json(&view);
    } else {
        println!("Daemon stopped (pid {pid}).");
    }
    Ok(EXIT_OK)
}

/// Waits until the process is gone and its socket removed.
fn wait_gone(pid: u32, socket: &Path) -> Result<(), CliError> {
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let alive = is_alive(pid);
        if !alive && !socket.exists() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CliError::Daemon(format!(
                "the daemon (pid {pid}) accepted shutdown but is still {} after {} s; check `xrat daemon status` or stop it with `kill {pid}`",
                if alive { "running" } else { "holding its socket" },
                STOP_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(WAIT_STEP);
    }
}

/// True while `pid` runs; a zombie counts as gone (its parent may never reap it).
fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
