//! Core processes: spawning into their own process group, pidfds, identity checks through
//! `/proc`, signals and reaping. Everything here is a short synchronous syscall.

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A started core: its pid, a pidfd for the ring, and its identity for reattaching later.
#[derive(Debug)]
pub struct Spawned {
    /// Process id (also its process group id).
    pub pid: u32,
    /// Becomes readable when the process exits.
    pub pidfd: OwnedFd,
    /// `/proc/<pid>/stat` field 22, in clock ticks since boot.
    pub start_time: u64,
}

/// Spawns `program args` in its own process group with stdio to `log`, and opens its pidfd.
pub fn spawn(program: &Path, args: &[std::ffi::OsString], log: &Path) -> io::Result<Spawned> {
    let out = crate::paths::open_log(log)?;
    spawn_to(program, args, out)
}

/// [`spawn`] with stdout and stderr to `out` (a log file, or a memfd that captures a version
/// output).
pub fn spawn_to(program: &Path, args: &[std::ffi::OsString], out: File) -> io::Result<Spawned> {
    spawn_command(Command::new(program), args, out)
}

/// The daemon's own executable as a child (`xrat ARGS`), through `/proc/self/exe`: the image
/// that is running, even after its file was replaced or removed (an upgrade, a rebuild). Its
/// path would then name nothing, or a newer xrat that could migrate the database under this
/// daemon; the child must be the daemon's own version.
pub fn spawn_self(args: &[std::ffi::OsString], out: File) -> io::Result<Spawned> {
    let mut command = Command::new(SELF_EXE);
    command.arg0("xrat");
    spawn_command(command, args, out)
}

/// The running executable, whatever became of its file.
pub const SELF_EXE: &str = "/proc/self/exe";

fn spawn_command(
    mut command: Command,
    args: &[std::ffi::OsString],
    out: File,
) -> io::Result<Spawned> {
    let err = out.try_clone()?;
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own group: a daemon crash or `KillMode=process` leaves the user's proxy running,
        // and stopping the core reaches any helper processes it started.
        .process_group(0);
    // SAFETY: only async-signal-safe calls (sigprocmask) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            // The daemon blocks SIGTERM/SIGINT for its signalfd; the mask is inherited, and a
            // core that cannot be stopped with SIGTERM would be a bad neighbour.
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = command.spawn()?;
    let pid = child.id();
    // The Child handle is dropped without waiting: the pidfd watches and waitid reaps.
    drop(child);
    let pidfd = pidfd_open(pid)?;
    let start_time = start_time(pid).unwrap_or(0);
    Ok(Spawned {
        pid,
        pidfd,
        start_time,
    })
}

/// `pidfd_open(2)`: works for non-children too, which is what makes reattaching possible.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The process start time (`/proc/<pid>/stat` field 22); `None` when the process is gone.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2 is "(comm)" and may contain spaces: count fields after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The executable of a running process.
pub fn exe(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// True when `pid` is alive, started at `start_time`, and runs `expected_exe` — the same
/// process that was recorded, not a stranger that reused the pid.
pub fn is_same_process(pid: u32, recorded_start: u64, expected_exe: &Path) -> bool {
    let same_start = start_time(pid) == Some(recorded_start);
    let expected = std::fs::canonicalize(expected_exe).unwrap_or_else(|_| expected_exe.into());
    let same_exe = exe(pid).is_some_and(|exe| exe == expected);
    same_start && same_exe
}

/// Sends `signal` to the process group led by `pid`.
pub fn signal_group(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a negative pid addresses the group; no memory involved.
    unsafe { libc::kill(-(pid as libc::pid_t), signal) };
}

/// Reaps an exited child through its pidfd and describes how it ended. A process that is not
/// our child (adopted after a daemon restart) cannot be reaped; its end is still described.
pub fn reap(pidfd: RawFd) -> String {
    // SAFETY: zeroed siginfo is valid for waitid to fill.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our pidfd with WNOHANG writes only into `info`.
    let rc = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    if rc != 0 {
        return "exited".into();
    }
    // SAFETY: after a successful waitid with WEXITED the status field is initialised.
    let status = unsafe { info.si_status() };
    match info.si_code {
        libc::CLD_EXITED => format!("exited with status {status}"),
        libc::CLD_KILLED | libc::CLD_DUMPED => format!("killed by signal {status}"),
        _ => "exited".into(),
    }
}

/// An anonymous in-memory file for a child's output.
pub fn memfd(name: &std::ffi::CStr) -> io::Result<File> {
    // SAFETY: memfd_create with a valid C string; the fd is checked before being owned.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The last `lines` lines of a log file, indented for an error message.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if all.is_empty() {
        return "  (the log is empty)".into();
    }
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_of_this_process() {
        let pid = std::process::id();
        let start = start_time(pid).expect("our own stat");
        let exe = exe(pid).unwrap();
        assert!(is_same_process(pid, start, &exe));
        assert!(!is_same_process(pid, start + 1, &exe));
        assert!(!is_same_process(pid, start, Path::new("/bin/true")));
    }

    #[test]
    fn spawned_children_are_reaped_with_their_status() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let spawned = spawn(
            Path::new("/bin/sh"),
            &["-c".into(), "echo hi; exit 3".into()],
            &log,
        )
        .unwrap();
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&spawned.pidfd),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polling one valid pollfd for at most 5 s.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 5_000) }, 1);
        assert_eq!(reap(pfd.fd), "exited with status 3");
        assert_eq!(log_tail(&log, 5), "  hi");
    }
}
