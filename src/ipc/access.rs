//! Who may do what on the daemon socket (issue 13, docs/PROTOCOL.md "Access"). The reactor reads
//! each accepted peer's uid with `SO_PEERCRED`; [`Policy`] turns it into an [`Access`] and
//! answers, as a pure function, whether a request may pass. The daemon's own user and root are
//! read-write; anyone else who can reach the socket (the members of `daemon.socket_group`) is
//! read-only and may send only [`READ_ONLY_REQUESTS`](super::protocol::READ_ONLY_REQUESTS).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::RawFd;

use super::protocol::{Request, READ_ONLY_REQUESTS};

/// Scratch for one `getgrnam_r`/`getpwuid_r` answer. Large groups list every member in it, so
/// it grows on ERANGE up to [`NSS_BUFFER_BYTES_MAX`].
const NSS_BUFFER_BYTES_START: usize = 4096;
/// Largest scratch tried for one user or group entry (a group of many thousand members).
const NSS_BUFFER_BYTES_MAX: usize = 1 << 20;

/// What a connected peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The daemon's user or root: every request.
    ReadWrite,
    /// Anyone else: only the requests that look.
    ReadOnly {
        /// The peer's uid, for the refusal's message; `None` when it could not be read.
        uid: Option<u32>,
    },
}

/// The daemon's access rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The daemon's effective uid.
    pub daemon_uid: u32,
    /// Its user name, or `uid N` when the system has none, for messages.
    pub owner: String,
    /// `daemon.socket_group`, when set.
    pub group: Option<String>,
}

impl Policy {
    /// The rule of this process: its effective uid and `daemon.socket_group` (empty: none).
    pub fn of_this_process(socket_group: &str) -> Policy {
        // SAFETY: geteuid cannot fail and touches no memory.
        let daemon_uid = unsafe { libc::geteuid() };
        Policy {
            daemon_uid,
            owner: user_name(daemon_uid).unwrap_or_else(|| format!("uid {daemon_uid}")),
            group: Some(socket_group.to_string()).filter(|g| !g.is_empty()),
        }
    }

    /// The access of a peer with `uid`; `None` (its credentials could not be read) is read-only,
    /// so that a failure never grants more.
    pub fn access(&self, uid: Option<u32>) -> Access {
        match uid {
            Some(uid) if uid == self.daemon_uid || uid == 0 => Access::ReadWrite,
            uid => Access::ReadOnly { uid },
        }
    }

    /// `Ok` when a peer with `access` may send `request`; else the 403 message, which names
    /// what is read-only and how to get read-write access.
    pub fn check(&self, access: Access, request: &Request) -> Result<(), String> {
        let Access::ReadOnly { uid } = access else {
            return Ok(());
        };
        if request.is_read_only() {
            return Ok(());
        }
        let who = match (&self.group, uid) {
            (Some(group), _) => format!("socket group `{group}` is read-only"),
            (None, Some(uid)) => format!("uid {uid} is read-only on this socket"),
            (None, None) => "a peer whose credentials cannot be read is read-only".to_string(),
        };
        Err(format!(
            "`{}` changes the daemon and {who}; run the command as {} or root (read-only peers may send {})",
            request.name(),
            self.owner_words(),
            READ_ONLY_REQUESTS.join(", "),
        ))
    }

    fn owner_words(&self) -> String {
        if self.owner.starts_with("uid ") {
            self.owner.clone()
        } else {
            format!("user `{}`", self.owner)
        }
    }
}

/// The uid of the process at the other end of a connected Unix socket (`SO_PEERCRED`: the
/// credentials it had when it called connect). One non-blocking getsockopt.
pub fn peer_uid(fd: RawFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes passed.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// The gid of group `name` (through NSS: /etc/group or what nsswitch.conf names), or `None`
/// when there is no such group or the lookup failed.
pub fn group_id(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    let mut size = NSS_BUFFER_BYTES_START;
    while size <= NSS_BUFFER_BYTES_MAX {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: a zeroed group is a valid out-parameter; getgrnam_r fills it from `buf`.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and `buf.len()` is its true size.
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                &mut group,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE {
            size *= 2;
            continue;
        }
        return (rc == 0 && !found.is_null()).then_some(group.gr_gid);
    }
    None
}

/// The name of the user with `uid`, when the system knows one.
pub fn user_name(uid: u32) -> Option<String> {
    let mut size = NSS_BUFFER_BYTES_START;
    while size <= NSS_BUFFER_BYTES_MAX {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: a zeroed passwd is a valid out-parameter; getpwuid_r fills it from `buf`.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and `buf.len()` is its true size.
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
        if rc == libc::ERANGE {
            size *= 2;
            continue;
        }
        if rc != 0 || found.is_null() || entry.pw_name.is_null() {
            return None;
        }
        // SAFETY: pw_name points into `buf`, NUL-terminated, alive until the end of this scope.
        let name = unsafe { CStr::from_ptr(entry.pw_name) };
        return Some(name.to_string_lossy().into_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn policy(group: Option<&str>) -> Policy {
        Policy {
            daemon_uid: 1000,
            owner: "alice".into(),
            group: group.map(String::from),
        }
    }

    #[test]
    fn the_owner_and_root_write_and_everyone_else_reads() {
        let p = policy(Some("xrat"));
        assert_eq!(p.access(Some(1000)), Access::ReadWrite);
        assert_eq!(p.access(Some(0)), Access::ReadWrite);
        assert_eq!(p.access(Some(1001)), Access::ReadOnly { uid: Some(1001) });
        // Unreadable credentials never grant more than reading.
        assert_eq!(p.access(None), Access::ReadOnly { uid: None });
    }

    #[test]
    fn read_only_peers_may_look_but_not_change() {
        let p = policy(Some("xrat"));
        let reader = p.access(Some(1001));
        for look in [
            Request::DaemonPing,
            Request::RuntimeStatus,
            Request::ProxyStatus,
        ] {
            assert_eq!(p.check(reader, &look), Ok(()), "{look:?}");
        }
        let message = p
            .check(reader, &Request::RuntimeConnect { config_id: 3 })
            .unwrap_err();
        assert!(message.contains("`runtime_connect`"), "{message}");
        assert!(
            message.contains("socket group `xrat` is read-only"),
            "{message}"
        );
        assert!(message.contains("user `alice` or root"), "{message}");
        for change in [
            Request::DaemonShutdown,
            Request::DaemonReload,
            Request::ProxyStart,
            Request::RuntimeDisconnect,
        ] {
            assert!(p.check(reader, &change).is_err(), "{change:?}");
            assert_eq!(p.check(Access::ReadWrite, &change), Ok(()), "{change:?}");
        }
    }

    #[test]
    fn without_a_group_the_message_names_the_uid() {
        let p = Policy {
            owner: "uid 1000".into(),
            ..policy(None)
        };
        let message = p
            .check(p.access(Some(42)), &Request::ProxyStop)
            .unwrap_err();
        assert!(message.contains("uid 42 is read-only"), "{message}");
        assert!(
            message.contains("run the command as uid 1000 or root"),
            "{message}"
        );
    }

    #[test]
    fn peer_uid_reads_the_connecting_process() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        // SAFETY: geteuid touches no memory.
        assert_eq!(peer_uid(a.as_raw_fd()).unwrap(), unsafe { libc::geteuid() });
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(peer_uid(file.as_raw_fd()).is_err());
    }

    #[test]
    fn groups_and_users_are_looked_up() {
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-xrat-test"), None);
        assert_eq!(group_id("nul\0inside"), None);
        assert_eq!(user_name(0).as_deref(), Some("root"));
    }
}
