//! Carries out the supervisor's runtime operations: starting a core for a stored config, waiting
//! until its inbound accepts (probed through the ring), stopping cores, and watching their pidfds.
//! The synchronous steps (database, rendering, writing the config, fork/exec) are short; every
//! wait is a ring operation or a deadline checked from the timer.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use crate::core::{self, CoreBinary, Inbounds};
use crate::ipc::protocol::Code;
use crate::paths::Paths;
use crate::settings::Settings;
use crate::store::{NewSession, Store};
use crate::supervisor::{Now, OpId, Rejection, SessionInfo};

use super::process::{self, Spawned};
mod connect;

/// Pause between readiness probes of a starting core.
pub const READY_PROBE_INTERVAL_MS: u64 = 20;
/// How long a core may take to exit after SIGTERM before it gets SIGKILL.
pub const STOP_GRACE_MS: u64 = 3_000;
/// Lines of a core's log quoted in errors.
const LOG_TAIL_LINES: usize = 8;

/// A core process the reactor watches.
pub(super) struct Proc {
    session_id: i64,
    pid: u32,
    pidfd: OwnedFd,
    /// Set once its pidfd fired: how it ended.
    exited: Option<String>,
}

/// A readiness probe in flight. The address lives here until the connect completes.
struct Probe {
    serial: u32,
    /// Held so the socket stays open until the connect completes (dropping closes it).
    _socket: OwnedFd,
    addr: Box<libc::sockaddr_storage>,
}

/// What a connect is waiting for.
enum ConnectStep {
    /// The replaced session's core must exit first.
    StoppingOld { deadline_ms: u64, killed: bool },
    /// The new core runs; its inbound must accept before the deadline.
    Starting {
        session: SessionInfo,
        deadline_ms: u64,
        next_probe_ms: u64,
    },
}

enum Job {
    Connect {
        op: OpId,
        replacing: Option<i64>,
        prepared: Box<Prepared>,
        step: ConnectStep,
    },
    Disconnect {
        op: OpId,
        session_id: i64,
        deadline_ms: u64,
        killed: bool,
    },
}

/// Everything checked and rendered before any process is touched.
#[derive(Clone)]
pub(super) struct Prepared {
    pub config_id: i64,
    pub core: CoreBinary,
    pub outbound: crate::links::Outbound,
    pub rendered: String,
}

/// Executor state, owned by the reactor.
pub(super) struct Runtime {
    paths: Paths,
    settings: Settings,
    store: Store,
    core: Option<CoreBinary>,
    procs: Vec<Proc>,
    job: Option<Job>,
    probe: Option<Probe>,
    next_probe: u32,
    /// The rotation in progress.
    pub(super) replace: Option<Box<super::replace::ReplaceJob>>,
}

fn reject(code: Code, message: String) -> Rejection {
    Rejection {
        code,
        message,
        close: false,
    }
}

impl Runtime {
    /// The executor, with the store already open.
    pub fn new(paths: Paths, settings: Settings, store: Store) -> Runtime {
        Runtime {
            paths,
            settings,
            store,
            core: None,
            procs: Vec::new(),
            job: None,
            probe: None,
            next_probe: 0,
            replace: None,
        }
    }

    /// A readiness connect is in flight.
    pub fn ready_probe_busy(&self) -> bool {
        self.probe.is_some()
    }

    /// Where files live.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// `runtime.ready_timeout_ms`.
    pub fn ready_timeout_ms(&self) -> u64 {
        self.settings.runtime.ready_timeout_ms
    }

    /// `runtime.rotation.test_concurrency`.
    pub fn test_concurrency(&self) -> usize {
        self.settings.runtime.rotation.test_concurrency as usize
    }

    /// `runtime.listen`.
    pub fn listen_addr(&self) -> IpAddr {
        self.listen()
    }

    /// How the core of `session_id` ended, once its pidfd fired.
    pub fn exited(&self, session_id: i64) -> Option<String> {
        self.proc_of(session_id).and_then(|p| p.exited.clone())
    }

    /// How process `pid` ended, once its pidfd fired.
    pub fn exited_pid(&self, pid: u32) -> Option<String> {
        self.procs
            .iter()
            .find(|p| p.pid == pid)
            .and_then(|p| p.exited.clone())
    }

    /// True while a core of `session_id` is watched.
    pub fn is_tracked(&self, session_id: i64) -> bool {
        self.proc_of(session_id).is_some()
    }

    /// Drops exited entries of `session_id` (the batch core's, before a new batch).
    pub fn forget_exited(&mut self, session_id: i64) {
        self.procs
            .retain(|p| p.session_id != session_id || p.exited.is_none());
    }

    /// The store, for reattaching at startup.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Starts watching an adopted or spawned core.
    pub fn track(&mut self, session_id: i64, pid: u32, pidfd: OwnedFd) {
        self.procs.push(Proc {
            session_id,
            pid,
            pidfd,
            exited: None,
        });
    }

    /// The earliest deadline the executor waits for.
    pub fn next_deadline(&self) -> Option<u64> {
        if let Some(replace) = &self.replace {
            return Some(replace.next_deadline());
        }
        match self.job.as_ref()? {
            Job::Connect { step, .. } => match step {
                ConnectStep::StoppingOld { deadline_ms, .. } => Some(*deadline_ms),
                ConnectStep::Starting {
                    deadline_ms,
                    next_probe_ms,
                    ..
                } => Some(if self.probe.is_some() {
                    *deadline_ms
                } else {
                    (*deadline_ms).min(*next_probe_ms)
                }),
            },
            Job::Disconnect { deadline_ms, .. } => Some(*deadline_ms),
        }
    }

    fn core(&mut self) -> Result<CoreBinary, Rejection> {
        if self.core.is_none() {
            let found = core::detect(&self.settings.runtime, &self.paths.settings_file())
                .map_err(|e| reject(Code::Internal, error_chain(&e)))?;
            self.core = Some(found);
        }
        Ok(self.core.clone().expect("just detected"))
    }

    fn listen(&self) -> IpAddr {
        self.settings
            .runtime
            .listen
            .parse()
            .expect("validated in settings")
    }

    fn inbounds(&self) -> Inbounds {
        let r = &self.settings.runtime;
        Inbounds {
            listen: self.listen(),
            socks_port: r.socks_port,
            http_port: (r.http_port != 0).then_some(r.http_port),
        }
    }

    /// Checks the config and the core and renders the session config; nothing is touched yet.
    pub(super) fn prepare(&mut self, config_id: i64) -> Result<Prepared, Rejection> {
        let config = self
            .store
            .config(config_id)
            .map_err(|e| reject(Code::Internal, error_chain(&e)))?
            .ok_or_else(|| {
                reject(
                    Code::NotFound,
                    format!(
                        "config {config_id} not found; list stored configs with `xrat config list`"
                    ),
                )
            })?;
        if !config.enabled {
            return Err(reject(
                Code::NotFound,
                format!("config {config_id} is disabled; enable it with `xrat config enable {config_id}`"),
            ));
        }
        let core = self.core()?;
        core::check_support(&core, &config.outbound)
            .map_err(|e| reject(Code::Conflict, error_chain(&e)))?;
        let rendered = core::render_session(&core, &self.inbounds(), &config.outbound)
            .map_err(|e| reject(Code::Internal, error_chain(&e)))?;
        Ok(Prepared {
            config_id,
            core,
            outbound: config.outbound,
            rendered,
        })
    }

    /// Refuses to start when another process holds an inbound port: the readiness probe would
    /// otherwise be answered by that process and a dead core would look ready.
    fn ports_free(&self) -> Result<(), Rejection> {
        let inbounds = self.inbounds();
        let ports = [
            ("runtime.socks_port", Some(inbounds.socks_port)),
            ("runtime.http_port", inbounds.http_port),
        ];
        for (key, port) in ports {
            let Some(port) = port else { continue };
            let addr = SocketAddr::new(inbounds.listen, port);
            if let Err(e) = std::net::TcpListener::bind(addr) {
                return Err(reject(
                    Code::Timeout,
                    format!("the core cannot become ready: {addr} ({key}) is already in use ({e}); stop the process holding it or choose another port in {}", self.paths.settings_file().display()),
                ));
            }
        }
        Ok(())
    }

    /// Writes the config, records the session and spawns the core.
    pub(super) fn launch(
        &mut self,
        prepared: &Prepared,
        now: Now,
    ) -> Result<(SessionInfo, Spawned), Rejection> {
        self.ports_free()?;
        let internal = |e: &dyn std::error::Error| reject(Code::Internal, error_chain(e));
        let sessions_dir = self.paths.runtime_dir().join("sessions");
        std::fs::create_dir_all(&sessions_dir).map_err(|e| internal(&e))?;
        let inbounds = self.inbounds();
        let socks_addr = SocketAddr::new(inbounds.listen, inbounds.socks_port).to_string();
        let http_addr = inbounds
            .http_port
            .map(|p| SocketAddr::new(inbounds.listen, p).to_string());
        let new = NewSession {
            config_id: prepared.config_id,
            core: prepared.core.kind.name().to_string(),
            core_path: prepared.core.path.display().to_string(),
            config_path: String::new(),
            socks_addr: socks_addr.clone(),
            http_addr: http_addr.clone(),
            started_at: now.unix_secs,
        };
        let session_id = self.store.begin_session(&new).map_err(|e| internal(&e))?;
        let config_path = sessions_dir.join(format!("{session_id}.json"));
        let log = self.paths.logs_dir().join(format!("core-{session_id}.log"));
        let spawned = write_private(&config_path, &prepared.rendered).and_then(|()| {
            process::spawn(
                &prepared.core.path,
                &core::run_args(&prepared.core, &config_path),
                &log,
            )
        });
        let spawned = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                let _ = self
                    .store
                    .end_session(session_id, now.unix_secs, "spawn_failed");
                return Err(reject(
                    Code::Internal,
                    format!(
                        "cannot start {} for session {session_id}: {e}",
                        prepared.core.path.display()
                    ),
                ));
            }
        };
        self.store
            .set_session_process(session_id, spawned.pid, spawned.start_time)
            .map_err(|e| internal(&e))?;
        let info = SessionInfo {
            id: session_id,
            config_id: prepared.config_id,
            core: prepared.core.kind.name().to_string(),
            pid: spawned.pid,
            socks_addr,
            http_addr,
            started_at: now.unix_secs,
        };
        Ok((info, spawned))
    }

    fn proc_of(&self, session_id: i64) -> Option<&Proc> {
        self.procs.iter().find(|p| p.session_id == session_id)
    }

    /// Signals a session's core; true when it had already exited.
    pub(super) fn stop(&self, session_id: i64, signal: i32) -> bool {
        match self.proc_of(session_id) {
            Some(p) if p.exited.is_none() => {
                process::signal_group(p.pid, signal);
                false
            }
            _ => true,
        }
    }

    /// Ends a session's row and removes its config (it holds credentials).
    pub(super) fn finish_session(&mut self, session_id: i64, now: Now, reason: &str) {
        let _ = self.store.end_session(session_id, now.unix_secs, reason);
        let path = self
            .paths
            .runtime_dir()
            .join("sessions")
            .join(format!("{session_id}.json"));
        let _ = std::fs::remove_file(path);
        self.procs
            .retain(|p| p.session_id != session_id || p.exited.is_none());
    }

    fn core_log(&self, session_id: i64) -> PathBuf {
        self.paths.logs_dir().join(format!("core-{session_id}.log"))
    }
}

/// Writes a file readable only by its owner (session configs carry credentials).
pub(super) fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// "outer: inner: innermost", for messages that travel over the socket.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A socket address in the form connect(2) takes.
pub(super) fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed sockaddr_storage is valid; we write a sockaddr_in/in6 into its prefix.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}
