//! Playing systemd for socket activation: listeners the test bound become descriptors 3, 4, …
//! of `xrat daemon run-server`, with `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID`, and the
//! test keeps its own copies open, as systemd does, across a daemon that dies.

use std::io::Read;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{xrat_bin, Root};

/// How long a daemon gets to start, answer or exit.
pub const DAEMON_LIMIT: Duration = Duration::from_secs(10);
/// Where the temporary copies of the passed descriptors go in the child before they are moved
/// to 3, 4, …: above anything the child could have open at those numbers.
const SCRATCH_FD_MIN: RawFd = 100;

/// Starts the daemon in `root` the way systemd starts a socket-activated service: `fds` become
/// descriptors 3, 4, … (without close-on-exec), with `LISTEN_FDS=listen_fds` and
/// `LISTEN_FDNAMES=names`, and `LISTEN_PID` set by the shell to its own pid, which `exec` keeps.
pub fn activated(root: &Root, fds: &[RawFd], listen_fds: &str, names: &str) -> Child {
    let mut command = Command::new("/bin/sh");
    command
        .args([
            "-c",
            r#"LISTEN_PID=$$ exec "$0" daemon run-server"#,
            xrat_bin(),
        ])
        .env("XRAT_ROOT", root.path())
        .env("LISTEN_FDS", listen_fds)
        .env("LISTEN_FDNAMES", names)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let fds = fds.to_vec();
    // SAFETY: the closure only makes fcntl/dup2/close calls on the child's own descriptors and
    // reads a vector allocated before the fork; nothing allocates or takes a lock.
    unsafe { command.pre_exec(move || place_fds(&fds)) };
    command.spawn().unwrap()
}

/// Moves `fds` to 3, 4, … in the child. Each is first copied above [`SCRATCH_FD_MIN`], so that
/// placing one never overwrites another still to be placed; `dup2` onto a different number
/// clears close-on-exec, which std sets on every descriptor it opens.
fn place_fds(fds: &[RawFd]) -> std::io::Result<()> {
    let mut scratch = [0 as RawFd; 8];
    if fds.len() > scratch.len() {
        return Err(std::io::Error::other("too many descriptors to pass"));
    }
    for (slot, fd) in scratch.iter_mut().zip(fds) {
        // SAFETY: duplicating a descriptor the child inherited; the result is checked.
        *slot = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, SCRATCH_FD_MIN) };
        if *slot < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    for (index, copy) in scratch[..fds.len()].iter().enumerate() {
        // SAFETY: dup2 onto 3 + index, replacing whatever the child had there.
        if unsafe { libc::dup2(*copy, 3 + index as RawFd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Waits at most `limit` for `child` to exit.
pub fn exited(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "pid {} did not exit", child.id());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM, then its exit status and everything it wrote on stderr.
pub fn stop(mut child: Child) -> (ExitStatus, String) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = exited(&mut child, DAEMON_LIMIT);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}
