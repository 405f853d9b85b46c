//! `xrat logs [-f] [-n N] [--core] [--json]`: the daemon log (`logs/daemon.log`) or the newest
//! core log (`logs/core-<session>.log` or, in front mode, `logs/pool-<core>.log`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use argh::{ArgsInfo, FromArgs};
use serde::Serialize;
use thiserror::Error;

use super::output::print_json;
use super::{CliError, EXIT_OK};
use crate::paths::logs::{core_logs, tail_lines};
use crate::paths::Paths;

/// Lines shown when `-n` is not given.
pub const LINES_DEFAULT: usize = 50;
/// Most lines `-n` may ask for.
pub const LINES_MAX: usize = 1_000_000;
/// How often `-f` looks for new bytes.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// Bytes `-f` reads at most per step.
const FOLLOW_CHUNK_BYTES: usize = 64 * 1024;

/// Show the daemon log, or the newest core log (--core).
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "logs")]
pub struct LogsCommand {
    /// keep printing lines as they are written, until Ctrl-C or the file is removed
    #[argh(switch, short = 'f')]
    follow: bool,
    /// how many of the last lines to show (default 50, at most 1000000)
    #[argh(option, short = 'n', default = "LINES_DEFAULT")]
    lines: usize,
    /// the newest core log instead of the daemon log
    #[argh(switch)]
    core: bool,
    /// print {"file", "lines"}; with -f, one {"file", "line"} object per line
    #[argh(switch)]
    json: bool,
}

/// Why the logs cannot be shown.
#[derive(Debug, Error)]
pub enum LogsError {
    /// `-n` is too large.
    #[error("-n {0} is more than {LINES_MAX} lines; ask for fewer")]
    TooManyLines(usize),
    /// The daemon has not written its log yet.
    #[error("no daemon log at {}; it is written once the daemon runs detached (`xrat daemon start`; under systemd see `journalctl --user -u xrat-daemon`)", .0.display())]
    NoDaemonLog(PathBuf),
    /// No session has run yet.
    #[error("no core log in {}; one is written when a session starts (`xrat connect ID`)", .0.display())]
    NoCoreLog(PathBuf),
    /// Reading failed.
    #[error("cannot read log {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

#[derive(Serialize)]
struct LogsView<'a> {
    file: &'a Path,
    lines: Vec<String>,
}

#[derive(Serialize)]
struct LineView<'a> {
    file: &'a Path,
    line: &'a str,
}

/// Runs `xrat logs`.
pub fn run(command: LogsCommand) -> Result<i32, CliError> {
    if command.lines > LINES_MAX {
        return Err(LogsError::TooManyLines(command.lines).into());
    }
    let paths = Paths::from_env()?;
    let path = chosen(&paths, command.core)?;
    let read_failed = |source| LogsError::Read {
        path: path.clone(),
        source,
    };
    let mut file = File::open(&path).map_err(read_failed)?;
    let (lines, end) = tail_lines(&mut file, command.lines).map_err(read_failed)?;
    if command.json && !command.follow {
        print_json(&LogsView { file: &path, lines });
        return Ok(EXIT_OK);
    }
    for line in &lines {
        print_line(&path, line, command.json);
    }
    if command.follow {
        follow(&path, file, end, command.json).map_err(read_failed)?;
    }
    Ok(EXIT_OK)
}

/// The daemon log, or the newest core log.
fn chosen(paths: &Paths, core: bool) -> Result<PathBuf, LogsError> {
    if !core {
        let log = paths.daemon_log();
        return if log.is_file() {
            Ok(log)
        } else {
            Err(LogsError::NoDaemonLog(log))
        };
    }
    let dir = paths.logs_dir();
    let logs = core_logs(&dir).map_err(|source| LogsError::Read {
        path: dir.clone(),
        source,
    })?;
    logs.into_iter().next().ok_or(LogsError::NoCoreLog(dir))
}

fn print_line(file: &Path, line: &str, json: bool) {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`xrat logs -f | head`) ends the output, not with a panic.
    let _ = if json {
        let view = LineView { file, line };
        writeln!(
            out,
            "{}",
            serde_json::to_string(&view).expect("views serialize")
        )
    } else {
        writeln!(out, "{line}")
    };
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Prints what is appended to `path` from `offset` on, until SIGINT/SIGTERM, a removed or
/// replaced file, or a closed stdout. A truncated file is read again from its start.
fn follow(path: &Path, mut file: File, mut offset: u64, json: bool) -> std::io::Result<()> {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    let inode = file.metadata()?.ino();
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0; FOLLOW_CHUNK_BYTES];
    while !INTERRUPTED.load(Ordering::SeqCst) {
        match std::fs::metadata(path) {
            Ok(meta) if meta.ino() == inode => {}
            _ => {
                eprintln!(
                    "{} was removed or replaced; stopped following",
                    path.display()
                );
                break;
            }
        }
        let len = file.metadata()?.len();
        if len < offset {
            offset = 0;
            pending.clear();
        }
        file.seek(SeekFrom::Start(offset))?;
        let n = file.read(&mut chunk)?;
        if n == 0 {
            std::thread::sleep(FOLLOW_POLL);
            continue;
        }
        offset += n as u64;
        pending.extend_from_slice(&chunk[..n]);
        while let Some(at) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=at).collect();
            let text = String::from_utf8_lossy(&line[..at]);
            print_line(path, text.strip_suffix('\r').unwrap_or(&text), json);
        }
    }
    Ok(())
}
