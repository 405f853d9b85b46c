//! The daemon's file descriptors: the lock, the listening socket, the signalfd and the timerfd,
//! plus the systemd readiness datagram. Everything here runs once, before the loop.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use super::listenfds::Inherited;
use super::sockgroup::SocketGroup;
use super::ReactorError;

/// Pending connections the kernel queues before accept; bursts of 1,000 clients fit.
pub const LISTEN_BACKLOG: i32 = 4096;

fn syscall(what: &'static str) -> impl FnOnce(io::Error) -> ReactorError {
    move |source| ReactorError::Syscall { what, source }
}

/// Takes the exclusive daemon lock, or explains who holds it.
pub fn lock(path: &Path, root: &Path) -> Result<File, ReactorError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| ReactorError::Lock {
            path: path.to_path_buf(),
            source,
        })?;
    // SAFETY: flock on an fd we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let source = io::Error::last_os_error();
        if source.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(ReactorError::AlreadyRunning {
                root: root.to_path_buf(),
                lock: path.to_path_buf(),
            });
        }
        return Err(ReactorError::Lock {
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(file)
}

/// Mode of the daemon socket: only its owner may connect (DESIGN §2).
pub const SOCKET_MODE: u32 = 0o600;

/// The daemon socket: the listener systemd passed for `path` (`xrat-daemon.socket`), else one
/// bound here. The flag says which: systemd owns an inherited socket's file, so the daemon must
/// not remove it at exit. Either way the socket and `runtime_dir` get the modes of `group`
/// (`daemon.socket_group`; see sockgroup.rs).
pub fn daemon_listener(
    path: &Path,
    runtime_dir: &Path,
    inherited: &mut Inherited,
    group: Option<&SocketGroup>,
) -> Result<(OwnedFd, bool), ReactorError> {
    let (fd, passed) = match inherited.take_unix(path) {
        None => (listen(path)?, false),
        Some(fd) => {
            eprintln!(
                "xrat: serving {} through the socket systemd passed",
                path.display()
            );
            // The unit xrat installs says `SocketMode=0600`; a hand-written one may not, and
            // systemd's default is 0666, which would let every local user steer the session.
            if let Some(line) = super::sockgroup::inherited_mismatch(path, group) {
                eprintln!("xrat: {line}");
            }
            (fd, true)
        }
    };
    super::sockgroup::apply(path, runtime_dir, group)?;
    Ok((fd, passed))
}

/// Binds the socket with mode 0600, replacing a stale one (the lock proves nobody serves it).
pub fn listen(path: &Path) -> Result<OwnedFd, ReactorError> {
    match std::fs::remove_file(path) {
        Ok(()) => eprintln!("xrat: removed stale socket {}", path.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ReactorError::Bind {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    // The runtime dir is already 0700, so the short window before chmod exposes nothing.
    let listener = UnixListener::bind(path).map_err(|source| ReactorError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(
        |source| ReactorError::Bind {
            path: path.to_path_buf(),
            source,
        },
    )?;
    // Non-blocking, so that the one synchronous accept (refusing a client when descriptors ran
    // out) can never wait; the ring's accepts are unaffected.
    listener
        .set_nonblocking(true)
        .map_err(syscall("fcntl(O_NONBLOCK)"))?;
    let fd = listener.into_raw_fd();
    // SAFETY: `fd` is a bound socket we own; listen again only raises std's default backlog.
    if unsafe { libc::listen(fd, LISTEN_BACKLOG) } != 0 {
        return Err(syscall("listen")(io::Error::last_os_error()));
    }
    // SAFETY: `fd` came from into_raw_fd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Blocks every signal the daemon handles (SIGTERM, SIGINT, SIGHUP, SIGUSR1 and the others that
/// would kill it) for the process and returns a signalfd that reports them.
pub fn signalfd() -> Result<OwnedFd, ReactorError> {
    // SAFETY: sigset operations on a local, zero-initialised set; the mask change applies to
    // this (the only) thread, before any child exists.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signo in super::reload::HANDLED_SIGNALS {
            libc::sigaddset(&mut set, signo);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(syscall("pthread_sigmask")(io::Error::last_os_error()));
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(syscall("signalfd")(io::Error::last_os_error()));
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// A CLOCK_MONOTONIC timerfd, disarmed.
pub fn timerfd() -> Result<OwnedFd, ReactorError> {
    // SAFETY: plain syscall; the fd is checked before being owned.
    let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) };
    if fd < 0 {
        return Err(syscall("timerfd_create")(io::Error::last_os_error()));
    }
    // SAFETY: fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Arms `fd` to fire once at `deadline_ms` on CLOCK_MONOTONIC (in the past: fires at once).
pub fn arm_timer(fd: RawFd, deadline_ms: u64) -> Result<(), ReactorError> {
    // A zero it_value would disarm; the earliest real deadline is 1 ns.
    let deadline_ns = (deadline_ms as i128 * 1_000_000).max(1);
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
        },
    };
    // SAFETY: `spec` is a valid itimerspec on the stack; old value not requested.
    let rc =
        unsafe { libc::timerfd_settime(fd, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(syscall("timerfd_settime")(io::Error::last_os_error()));
    }
    Ok(())
}

/// Milliseconds on CLOCK_MONOTONIC, the clock the timerfd uses.
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Sends `READY=1` to `$NOTIFY_SOCKET` when systemd (Type=notify) asked for it.
pub fn notify_ready() -> Result<(), ReactorError> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let target = PathBuf::from(target);
    let socket = std::os::unix::net::UnixDatagram::unbound().map_err(syscall("socket"))?;
    let bytes = target.as_os_str().as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)
            .map_err(syscall("notify address"))?;
        socket.send_to_addr(b"READY=1", &addr)
    } else {
        socket.send_to(b"READY=1", &target)
    };
    sent.map(drop).map_err(|source| ReactorError::Notify {
        path: target,
        source,
    })
}

/// Raises the soft open-file limit to the hard one: each client costs one fd, and the default
/// soft limit (often 1024) would cap `daemon.max_connections` below its own default.
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// `struct sched_attr` of sched_setattr(2), as the kernel's uapi lays it out.
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime_ns: u64,
    deadline_ns: u64,
    period_ns: u64,
    util_min: u32,
    util_max: u32,
}

/// `SCHED_FLAG_RESET_ON_FORK`: cores and helper threads start with the default slice.
const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

/// Gives the calling (loop) thread a scheduler slice of `slice_us` (`daemon.sched_slice_us`;
/// 0 = the kernel's default). On EEVDF (Linux 6.12 and later) a task with a shorter slice than
/// the running one preempts it at wake-up, so a request is served while a core that shares the
/// CPU is busy moving bulk traffic, instead of after that core's slice (1.4 ms here, more under
/// load). The CPU share is unchanged: the slice is a latency hint, not a weight. Older kernels
/// accept and ignore it. Children and threads get the default again (reset on fork), so the
/// cores keep theirs. Refusal is logged, never fatal.
pub fn set_sched_slice(slice_us: u64) {
    // SAFETY: getpriority(2) on the calling thread reads nothing we pass.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: SCHED_FLAG_RESET_ON_FORK,
        nice,
        priority: 0,
        runtime_ns: slice_us * 1000,
        deadline_ns: 0,
        period_ns: 0,
        util_min: 0,
        util_max: 0,
    };
    // SAFETY: sched_setattr(2) reads `attr`, a valid struct of the size it names, for the
    // calling thread (pid 0).
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        eprintln!(
            "xrat: daemon.sched_slice_us = {slice_us}: sched_setattr refused it ({error}); serving with the kernel's default slice. Set daemon.sched_slice_us = 0 in config.toml to silence this"
        );
    }
}
