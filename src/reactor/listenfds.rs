//! Listening sockets handed over by systemd (socket activation, `xrat-daemon.socket`), with the
//! semantics of sd_listen_fds(3): the descriptors start at 3, they are ours only when
//! `LISTEN_PID` is our pid, and the variables are removed afterwards so that the proxy cores we
//! spawn never take them for their own.
//!
//! Each descriptor is identified by what it is bound to (`getsockname`), not by its name or its
//! position: the daemon asks for "the listener at this path" or "at this address" and binds one
//! itself when nobody handed it over. So the daemon works the same with and without the socket
//! unit, and a socket unit that no longer matches config.toml degrades to a log line.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The first inherited descriptor (`SD_LISTEN_FDS_START`): 0-2 are stdio.
pub const LISTEN_FDS_START: RawFd = 3;
/// More than the daemon could ever use (one IPC socket, two front ports), low enough that a
/// runaway `LISTEN_FDS` cannot make us adopt half the descriptor table.
pub const LISTEN_FDS_MAX: usize = 64;
/// The name systemd gives a descriptor when `LISTEN_FDNAMES` is unset.
const UNNAMED: &str = "unknown";
/// The variables of the protocol, removed from our environment once read.
const VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];
/// What every message about a bad hand-over tells the user to check.
const UNIT_HINT: &str = "xrat-daemon.socket may only hold ListenStream= lines (the daemon socket path and the front ports) with Accept=no; reinstall it with `xrat daemon install`";

/// A hand-over the daemon cannot use; each message names the variable or descriptor and the fix.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ListenFdsError {
    /// A variable does not parse.
    #[error("{var}={value:?} is not {expected}; it is systemd's socket activation variable: let xrat-daemon.socket set it, or unset it when starting xrat by hand")]
    BadVariable {
        /// Which variable.
        var: &'static str,
        /// Its value (lossy when not UTF-8).
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// `LISTEN_FDNAMES` and `LISTEN_FDS` disagree.
    #[error("LISTEN_FDNAMES={value:?} names {names} descriptor(s) but LISTEN_FDS={fds}; they come from the same .socket unit and must agree: let xrat-daemon.socket set both, or unset both")]
    NamesMismatch {
        /// `LISTEN_FDS`.
        fds: usize,
        /// How many names `LISTEN_FDNAMES` holds.
        names: usize,
        /// `LISTEN_FDNAMES` itself.
        value: String,
    },
    /// An announced descriptor is not a listening stream socket.
    #[error("inherited fd {fd} ({name}) {problem}; {UNIT_HINT}")]
    Unusable {
        /// The descriptor.
        fd: RawFd,
        /// Its `LISTEN_FDNAMES` entry.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// What an inherited listener is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// A Unix socket with a path.
    Unix(PathBuf),
    /// A Unix socket in the abstract namespace or unnamed (never one of ours).
    OtherUnix(String),
    /// A TCP socket (IPv4 or IPv6).
    Tcp(SocketAddr),
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Unix(path) => write!(f, "{}", path.display()),
            Bound::OtherUnix(what) => f.write_str(what),
            Bound::Tcp(addr) => write!(f, "tcp {addr}"),
        }
    }
}

/// One inherited listener.
#[derive(Debug)]
struct Listener {
    fd: OwnedFd,
    name: String,
    bound: Bound,
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (fd, name, bound) = (self.fd.as_raw_fd(), &self.name, &self.bound);
        write!(f, "fd {fd} ({name}, {bound})")
    }
}

/// The listeners systemd handed over, until each is taken by what serves it. What nobody took
/// is closed, with a log line, by [`Inherited::close_unclaimed`] (or when this is dropped).
#[derive(Debug, Default)]
pub struct Inherited {
    listeners: Vec<Listener>,
}

impl Inherited {
    /// Reads and removes `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`, and adopts the
    /// descriptors they announce for this process (close-on-exec, non-blocking, identified).
    ///
    /// Must run before this process opens any descriptor it means to keep: the announced range
    /// starts at 3, and adopting means owning whatever is open there.
    pub fn from_env() -> Result<Inherited, ListenFdsError> {
        let [pid, fds, names] = VARIABLES.map(std::env::var_os);
        // Removed whatever they say (sd_listen_fds with unset_environment): a core must never
        // see a LISTEN_PID that names a process it is not. Still one thread at this point.
        for var in VARIABLES {
            std::env::remove_var(var);
        }
        let announced = parse(
            pid.as_deref().map(lossy).as_deref(),
            fds.as_deref().map(lossy).as_deref(),
            names.as_deref().map(lossy).as_deref(),
            std::process::id(),
        )?;
        let mut inherited = Inherited::default();
        for (index, name) in announced.unwrap_or_default().into_iter().enumerate() {
            let fd = LISTEN_FDS_START + index as RawFd;
            inherited.listeners.push(adopt(fd, name)?);
        }
        Ok(inherited)
    }

    /// True when nothing (more) was handed over.
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    /// Each listener still held, as `fd N (name, address)`.
    pub fn describe(&self) -> Vec<String> {
        self.listeners.iter().map(Listener::to_string).collect()
    }

    /// The Unix listener bound to `path` (the same file, however the path is spelled).
    pub fn take_unix(&mut self, path: &Path) -> Option<OwnedFd> {
        let wanted = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
        let same_file = |bound: &Path| {
            let found = std::fs::metadata(bound).ok().map(|m| (m.dev(), m.ino()));
            wanted.is_some() && found == wanted
        };
        let index = self.listeners.iter().position(|l| match &l.bound {
            Bound::Unix(bound) => bound == path || same_file(bound),
            _ => false,
        })?;
        Some(self.listeners.remove(index).fd)
    }

    /// The TCP listener bound to exactly `addr`.
    pub fn take_tcp(&mut self, addr: SocketAddr) -> Option<OwnedFd> {
        let index = self
            .listeners
            .iter()
            .position(|l| l.bound == Bound::Tcp(addr))?;
        Some(self.listeners.remove(index).fd)
    }

    /// Closes every listener nobody took, naming each: they are what the socket unit lists
    /// and config.toml does not (a changed port, a front port in direct mode).
    pub fn close_unclaimed(&mut self) {
        for listener in self.listeners.drain(..) {
            eprintln!(
                "xrat: closing inherited {listener}: nothing in config.toml listens there; reinstall the units (`xrat daemon install`) after changing runtime.mode, runtime.listen or the ports"
            );
        }
    }
}

impl Drop for Inherited {
    fn drop(&mut self) {
        self.close_unclaimed();
    }
}

/// The listener at `addr`: the inherited one when systemd handed it over, else `bind(addr)`.
/// The front calls this for each of the user's ports, before the daemon reports ready.
pub fn inherited_or_bind(
    inherited: &mut Inherited,
    addr: SocketAddr,
    bind: impl FnOnce(SocketAddr) -> io::Result<OwnedFd>,
) -> io::Result<OwnedFd> {
    match inherited.take_tcp(addr) {
        Some(fd) => {
            eprintln!("xrat: listening on {addr} through the socket systemd passed");
            Ok(fd)
        }
        None => bind(addr),
    }
}

fn lossy(value: &std::ffi::OsStr) -> String {
    value.to_string_lossy().into_owned()
}

/// The names of the descriptors announced for `our_pid` (descriptor `3 + i` is named
/// `names[i]`), or `None` when nothing was announced for us. Follows sd_listen_fds: no
/// `LISTEN_PID`, another process's pid, or no `LISTEN_FDS` means nothing is ours.
pub fn parse(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    our_pid: u32,
) -> Result<Option<Vec<String>>, ListenFdsError> {
    let Some(pid) = pid else {
        return Ok(None);
    };
    let bad = |var, value: &str, expected| ListenFdsError::BadVariable {
        var,
        value: value.to_string(),
        expected,
    };
    let parsed = pid.parse::<u32>().ok().filter(|p| *p > 0);
    let Some(announced_pid) = parsed else {
        return Err(bad("LISTEN_PID", pid, "a process id"));
    };
    if announced_pid != our_pid {
        return Ok(None);
    }
    let Some(fds) = fds else {
        return Ok(None);
    };
    let count = fds
        .parse::<usize>()
        .ok()
        .filter(|n| *n <= LISTEN_FDS_MAX)
        .ok_or_else(|| bad("LISTEN_FDS", fds, "a descriptor count of at most 64"))?;
    let names: Vec<String> = match names {
        None => vec![UNNAMED.to_string(); count],
        Some(_) if count == 0 => Vec::new(),
        Some(value) => value.split(':').map(str::to_string).collect(),
    };
    if names.len() != count {
        let value = names.join(":");
        let names = names.len();
        return Err(ListenFdsError::NamesMismatch {
            fds: count,
            names,
            value,
        });
    }
    Ok(Some(names))
}

/// Owns `fd` and checks it is a listening stream socket we can serve on.
fn adopt(fd: RawFd, name: String) -> Result<Listener, ListenFdsError> {
    let unusable = |problem: String| ListenFdsError::Unusable {
        fd,
        name: name.clone(),
        problem,
    };
    // SAFETY: F_GETFD only reads the descriptor's flags; a closed fd gives EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(unusable("is not open".into()));
    }
    // SAFETY: `fd` is open and was announced to this process by LISTEN_FDS; nothing else in
    // it owns descriptors of that range (from_env runs before the daemon opens any it keeps).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: setting descriptor flags on the fd we now own. Close-on-exec: the cores we spawn
    // must not hold the user's ports or the daemon socket open after we are gone.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } != 0 {
        return Err(unusable(format!(
            "refused close-on-exec ({})",
            io::Error::last_os_error()
        )));
    }
    check_listening_stream(fd).map_err(&unusable)?;
    let bound = identify(owned.try_clone(), fd).map_err(&unusable)?;
    // Non-blocking like the daemon's own listeners, so that its one synchronous accept (the
    // refusal when descriptors run out) never waits. systemd's copy already is.
    let status = fcntl_status(fd).map_err(&unusable)?;
    if status & libc::O_NONBLOCK == 0 {
        set_status(fd, status | libc::O_NONBLOCK).map_err(&unusable)?;
    }
    Ok(Listener {
        fd: owned,
        name,
        bound,
    })
}

/// Reads an int socket option.
fn sockopt(fd: RawFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`, a local int.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    match rc {
        0 => Ok(value),
        _ => Err(io::Error::last_os_error()),
    }
}

fn check_listening_stream(fd: RawFd) -> Result<(), String> {
    let kind = match sockopt(fd, libc::SO_TYPE) {
        Ok(kind) => kind,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => return Err(
            "is not a socket (a FIFO or a file: ListenFIFO= and ListenSpecial= cannot serve xrat)"
                .into(),
        ),
        Err(e) => return Err(format!("cannot be inspected ({e})")),
    };
    if kind != libc::SOCK_STREAM {
        let what = match kind {
            libc::SOCK_DGRAM => "a datagram socket (ListenDatagram=)",
            libc::SOCK_SEQPACKET => "a sequential-packet socket (ListenSequentialPacket=)",
            _ => "a socket of another type",
        };
        return Err(format!("is {what}, not a stream socket (ListenStream=)"));
    }
    match sockopt(fd, libc::SO_ACCEPTCONN) {
        Ok(0) => Err("is a stream socket that is not listening (Accept=yes hands over single connections; xrat needs Accept=no)".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("cannot be inspected ({e})")),
    }
}

/// What `fd` is bound to. `probe` is a duplicate used through std's `local_addr`, which does the
/// `getsockname` and the address parsing.
fn identify(probe: io::Result<OwnedFd>, fd: RawFd) -> Result<Bound, String> {
    let probe = probe.map_err(|e| format!("cannot be duplicated ({e})"))?;
    let failed = |e: io::Error| format!("has no readable address ({e})");
    match sockopt(fd, libc::SO_DOMAIN).map_err(failed)? {
        libc::AF_UNIX => {
            let addr = UnixListener::from(probe).local_addr().map_err(failed)?;
            Ok(match (addr.as_pathname(), addr.as_abstract_name()) {
                (Some(path), _) => Bound::Unix(path.to_path_buf()),
                (None, Some(name)) => Bound::OtherUnix(format!(
                    "abstract Unix socket @{}",
                    String::from_utf8_lossy(name)
                )),
                (None, None) => Bound::OtherUnix("unnamed Unix socket".into()),
            })
        }
        libc::AF_INET | libc::AF_INET6 => {
            let addr = TcpListener::from(probe).local_addr().map_err(failed)?;
            Ok(Bound::Tcp(addr))
        }
        family => Err(format!(
            "is a socket of address family {family}; xrat serves on Unix and IPv4/IPv6 sockets only"
        )),
    }
}

fn fcntl_status(fd: RawFd) -> Result<libc::c_int, String> {
    // SAFETY: F_GETFL only reads the open file description's status flags.
    let status = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    match status {
        s if s < 0 => Err(format!("refused F_GETFL ({})", io::Error::last_os_error())),
        s => Ok(s),
    }
}

fn set_status(fd: RawFd, status: libc::c_int) -> Result<(), String> {
    // SAFETY: F_SETFL only changes status flags of a descriptor we own.
    match unsafe { libc::fcntl(fd, libc::F_SETFL, status) } {
        0 => Ok(()),
        _ => Err(format!(
            "refused O_NONBLOCK ({})",
            io::Error::last_os_error()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    const ME: u32 = 4242;

    fn names(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn nothing_is_ours_without_our_pid() {
        assert_eq!(parse(None, Some("2"), None, ME), Ok(None));
        assert_eq!(parse(Some("4243"), Some("2"), None, ME), Ok(None));
        assert_eq!(parse(Some("4242"), None, None, ME), Ok(None));
    }

    #[test]
    fn counts_and_names_are_read() {
        assert_eq!(parse(Some("4242"), Some("0"), None, ME), Ok(names(&[])));
        let unnamed = parse(Some("4242"), Some("2"), None, ME);
        assert_eq!(unnamed, Ok(names(&["unknown", "unknown"])));
        let named = parse(
            Some("4242"),
            Some("2"),
            Some("xrat-daemon.socket:front"),
            ME,
        );
        assert_eq!(named, Ok(names(&["xrat-daemon.socket", "front"])));
        // An empty name is still a name (FileDescriptorName= may be empty).
        assert_eq!(
            parse(Some("4242"), Some("1"), Some(""), ME),
            Ok(names(&[""]))
        );
        assert_eq!(parse(Some("4242"), Some("0"), Some(""), ME), Ok(names(&[])));
    }

    #[test]
    fn malformed_variables_name_themselves() {
        for pid in ["", "0", "-1", "12a", " 4242"] {
            let err = parse(Some(pid), Some("1"), None, ME).unwrap_err();
            assert!(
                matches!(
                    err,
                    ListenFdsError::BadVariable {
                        var: "LISTEN_PID",
                        ..
                    }
                ),
                "{pid}"
            );
        }
        for fds in ["", "x", "-1", "65", "1 "] {
            let err = parse(Some("4242"), Some(fds), None, ME).unwrap_err();
            assert!(
                matches!(
                    err,
                    ListenFdsError::BadVariable {
                        var: "LISTEN_FDS",
                        ..
                    }
                ),
                "{fds}"
            );
        }
        let err = parse(Some("4242"), Some("x"), None, ME).unwrap_err();
        assert_eq!(
            err.to_string(),
            "LISTEN_FDS=\"x\" is not a descriptor count of at most 64; it is systemd's socket activation variable: let xrat-daemon.socket set it, or unset it when starting xrat by hand"
        );
        let err = parse(Some("4242"), Some("1"), Some("a:b"), ME).unwrap_err();
        assert_eq!(
            err,
            ListenFdsError::NamesMismatch {
                fds: 1,
                names: 2,
                value: "a:b".into()
            }
        );
        assert!(err
            .to_string()
            .starts_with("LISTEN_FDNAMES=\"a:b\" names 2 descriptor(s) but LISTEN_FDS=1;"));
    }

    #[test]
    fn listening_stream_sockets_are_identified_and_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        let unix = UnixListener::bind(&path).unwrap().into_raw_fd();
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let unix = adopt(unix, "xrat-daemon.socket".into()).unwrap();
        let tcp = adopt(tcp.into_raw_fd(), "front".into()).unwrap();
        assert_eq!(unix.bound, Bound::Unix(path.clone()));
        assert_eq!(tcp.bound, Bound::Tcp(addr));
        for l in [&unix, &tcp] {
            let fd = l.fd.as_raw_fd();
            // SAFETY: reading the flags of descriptors the listeners own.
            let (fd_flags, status) = unsafe {
                (
                    libc::fcntl(fd, libc::F_GETFD),
                    libc::fcntl(fd, libc::F_GETFL),
                )
            };
            assert_ne!(fd_flags & libc::FD_CLOEXEC, 0);
            assert_ne!(status & libc::O_NONBLOCK, 0);
        }
        let mut inherited = Inherited {
            listeners: vec![unix, tcp],
        };
        let other_port = SocketAddr::new(addr.ip(), addr.port().wrapping_add(1));
        assert!(inherited.take_tcp(other_port).is_none());
        assert!(inherited
            .take_unix(&dir.path().join("other.sock"))
            .is_none());
        // The same file spelled another way is still ours.
        let spelled = dir.path().join(".").join("d.sock");
        assert!(inherited.take_unix(&spelled).is_some());
        assert!(inherited.take_unix(&path).is_none(), "taken once");
        let bound = inherited_or_bind(&mut inherited, addr, |_| panic!("must not bind"));
        assert!(bound.is_ok());
        assert!(inherited.is_empty());
        let mut bound_here = false;
        let fresh = inherited_or_bind(&mut inherited, addr, |a| {
            bound_here = true;
            Ok(OwnedFd::from(TcpListener::bind(SocketAddr::new(
                a.ip(),
                0,
            ))?))
        });
        assert!(fresh.is_ok() && bound_here);
    }

    #[test]
    fn anything_but_a_listening_stream_socket_is_refused() {
        let problem = |fd: RawFd| match adopt(fd, "n".into()) {
            Err(ListenFdsError::Unusable { problem, .. }) => problem,
            other => panic!("adopted: {other:?}"),
        };
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(problem(udp.into_raw_fd()).contains("datagram socket (ListenDatagram=)"));
        let stream = socket(libc::SOCK_STREAM);
        assert!(problem(stream).contains("not listening"));
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(problem(file.into_raw_fd()).starts_with("is not a socket"));
        // Far above anything open (descriptors are allocated lowest first), so no other test's.
        assert_eq!(problem(999_999), "is not open");
        let err = ListenFdsError::Unusable {
            fd: 4,
            name: "xrat-daemon.socket".into(),
            problem: "is not open".into(),
        };
        assert_eq!(
            err.to_string(),
            format!("inherited fd 4 (xrat-daemon.socket) is not open; {UNIT_HINT}")
        );
    }

    /// A fresh, unbound AF_INET socket of `kind`.
    fn socket(kind: libc::c_int) -> RawFd {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, kind, 0) };
        assert!(fd >= 0);
        fd
    }
}
