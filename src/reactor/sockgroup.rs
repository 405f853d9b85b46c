//! Who can reach the daemon socket (issue 13, docs/SETTINGS.md `daemon.socket_group`). Without a
//! group the socket is 0600 in a 0700 `runtime/`: only the daemon's user (and root) connect.
//! With one, the socket is 0660 and `runtime/` 0710, both owned by that group: its members can
//! pass through the directory to the socket (no listing: the lock file stays theirs to guess,
//! not to open) and connect, and the reactor makes them read-only (`ipc::access`). The same modes
//! are applied to a socket systemd passed, whatever its unit said.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::paths::{PRIVATE_DIR_MODE, SHARED_RUNTIME_DIR_MODE};

/// Socket mode without `daemon.socket_group`: only its owner may connect (DESIGN §2).
pub const PRIVATE_SOCKET_MODE: u32 = super::setup::SOCKET_MODE;
/// Socket mode with `daemon.socket_group`: the group may connect too.
pub const SHARED_SOCKET_MODE: u32 = 0o660;
/// Ancestors of `runtime/` looked at for group access; deeper paths are reported as they are.
const ANCESTORS_CHECKED_MAX: usize = 64;

/// Socket group failures.
#[derive(Debug, Error)]
pub enum SocketGroupError {
    /// The group was removed after config.toml was read.
    #[error("daemon.socket_group = {group:?} names no group on this system; create it (`groupadd {group}`) or set daemon.socket_group = \"\" in config.toml")]
    Unknown {
        /// The group as configured.
        group: String,
    },
    /// chown or chmod was refused.
    #[error("cannot give {} to group `{group}` with mode {mode:04o} (daemon.socket_group): the daemon's user must be a member of the group (`usermod -aG {group} <user>`, then start the daemon from a new login) or the daemon must run as root; or set daemon.socket_group = \"\" in config.toml", path.display())]
    Apply {
        /// The socket or the runtime directory.
        path: PathBuf,
        /// The group.
        group: String,
        /// The mode wanted.
        mode: u32,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// chmod of the private socket or directory was refused.
    #[error("cannot make {} mode {mode:04o}; check that the daemon's user owns it", path.display())]
    Private {
        /// The socket or the runtime directory.
        path: PathBuf,
        /// The mode wanted.
        mode: u32,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
}

/// `daemon.socket_group`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketGroup {
    /// As configured.
    pub name: String,
    /// Its gid.
    pub gid: u32,
}

/// The group named by `daemon.socket_group` (`""`: none).
pub fn resolve(name: &str) -> Result<Option<SocketGroup>, SocketGroupError> {
    if name.is_empty() {
        return Ok(None);
    }
    let gid = crate::ipc::access::group_id(name).ok_or_else(|| SocketGroupError::Unknown {
        group: name.to_string(),
    })?;
    Ok(Some(SocketGroup {
        name: name.to_string(),
        gid,
    }))
}

/// The socket's mode for `group`.
pub fn socket_mode(group: Option<&SocketGroup>) -> u32 {
    match group {
        Some(_) => SHARED_SOCKET_MODE,
        None => PRIVATE_SOCKET_MODE,
    }
}

/// Gives the socket and `runtime_dir` their modes (and group). The group is set before the
/// mode is widened, so the group bits never apply to the wrong group.
pub fn apply(
    socket: &Path,
    runtime_dir: &Path,
    group: Option<&SocketGroup>,
) -> Result<(), SocketGroupError> {
    let (dir_mode, sock_mode) = match group {
        Some(_) => (SHARED_RUNTIME_DIR_MODE, SHARED_SOCKET_MODE),
        None => (PRIVATE_DIR_MODE, PRIVATE_SOCKET_MODE),
    };
    for (path, mode) in [(runtime_dir, dir_mode), (socket, sock_mode)] {
        let result = group
            .map_or(Ok(()), |g| {
                std::os::unix::fs::chown(path, None, Some(g.gid))
            })
            .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)));
        result.map_err(|source| match group {
            Some(g) => SocketGroupError::Apply {
                path: path.to_path_buf(),
                group: g.name.clone(),
                mode,
                source,
            },
            None => SocketGroupError::Private {
                path: path.to_path_buf(),
                mode,
                source,
            },
        })?;
    }
    if let Some(g) = group {
        warn_unreachable(runtime_dir, g);
    }
    Ok(())
}

/// What an inherited socket must change to match `group`, for the log line: its mode and
/// group now, when they differ from what [`apply`] will set.
pub fn inherited_mismatch(socket: &Path, group: Option<&SocketGroup>) -> Option<String> {
    let meta = std::fs::metadata(socket).ok()?;
    let mode = meta.permissions().mode() & 0o777;
    let wanted = socket_mode(group);
    let group_wrong = group.is_some_and(|g| meta.gid() != g.gid);
    if mode == wanted && !group_wrong {
        return None;
    }
    let unit = match group {
        Some(g) => format!("SocketMode={wanted:04o} and SocketGroup={}", g.name),
        None => format!("SocketMode={wanted:04o}"),
    };
    Some(format!(
        "the socket systemd passed had mode {mode:04o} (gid {}); made it {wanted:04o} (set {unit} in its .socket unit)",
        meta.gid()
    ))
}

/// Members of the group reach the socket only if they can search every directory above it.
/// The daemon changes only `runtime/`; the root and its parents are the user's, so a missing
/// search bit is reported once at start with the fix, not changed.
fn warn_unreachable(runtime_dir: &Path, group: &SocketGroup) {
    let blocked: Vec<String> = runtime_dir
        .ancestors()
        .skip(1)
        .take(ANCESTORS_CHECKED_MAX)
        .filter_map(|dir| {
            let meta = std::fs::metadata(dir).ok()?;
            let mode = meta.permissions().mode() & 0o777;
            let searchable = mode & 0o001 != 0 || (meta.gid() == group.gid && mode & 0o010 != 0);
            (!searchable)
                .then(|| format!("{} (mode {mode:04o}, gid {})", dir.display(), meta.gid()))
        })
        .collect();
    if !blocked.is_empty() {
        eprintln!(
            "xrat: members of socket group `{}` cannot reach the socket: they may not pass through {}; run `chgrp {} DIR && chmod g+x DIR` on each (or `chmod o+x DIR`), or set XRAT_ROOT to a directory they can reach",
            group.name,
            blocked.join(", "),
            group.name
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn no_group_means_private_modes_even_after_a_shared_run() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("runtime");
        std::fs::create_dir(&runtime).unwrap();
        let socket = runtime.join("daemon.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o710)).unwrap();
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).unwrap();
        assert!(inherited_mismatch(&socket, None).is_some());
        apply(&socket, &runtime, None).unwrap();
        assert_eq!(mode(&runtime), 0o700);
        assert_eq!(mode(&socket), 0o600);
        assert_eq!(inherited_mismatch(&socket, None), None);
    }

    #[test]
    fn a_group_of_this_process_gets_the_shared_modes() {
        // SAFETY: getegid touches no memory.
        let gid = unsafe { libc::getegid() };
        let group = SocketGroup {
            name: "own".into(),
            gid,
        };
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("runtime");
        std::fs::create_dir(&runtime).unwrap();
        let socket = runtime.join("daemon.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
        let said = inherited_mismatch(&socket, Some(&group)).unwrap();
        assert!(
            said.contains("SocketMode=0660 and SocketGroup=own"),
            "{said}"
        );
        apply(&socket, &runtime, Some(&group)).unwrap();
        assert_eq!(mode(&runtime), 0o710);
        assert_eq!(mode(&socket), 0o660);
        assert_eq!(std::fs::metadata(&socket).unwrap().gid(), gid);
        assert_eq!(inherited_mismatch(&socket, Some(&group)), None);
    }

    #[test]
    fn unknown_groups_name_the_fix() {
        assert_eq!(resolve("").unwrap(), None);
        assert_eq!(resolve("root").unwrap().unwrap().gid, 0);
        let err = resolve("no-such-group-xrat").unwrap_err().to_string();
        assert!(err.contains("groupadd no-such-group-xrat"), "{err}");
        assert!(err.contains("daemon.socket_group = \"\""), "{err}");
    }
}
