//! Carries out the supervisor's runtime operations: starting a core for a stored config, waiting
//! until its inbound accepts (probed through the ring), stopping cores, and watching their pidfds.
//! The synchronous steps (database, rendering, writing the config, fork/exec) are short; every
//! wait is a ring operation or a deadline checked from the timer.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use crate::core::{self, CoreBinary, Inbounds};
use crate::ipc::protocol::Code;
use crate::paths::Paths;
use crate::settings::Settings;
use crate::store::{NewSession, Store};
use crate::supervisor::{Input, Now, OpId, OperationOutput, Plan, Rejection, SessionInfo};

use super::process::{self, Spawned};
use super::ring::Op;
use super::token::{Kind, Token};
use super::Reactor;

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

impl Reactor {
    /// Begins carrying out a supervisor operation.
    pub(super) fn start_plan(&mut self, now: Now, op: OpId, plan: Plan) {
        match plan {
            Plan::Connect {
                config_id,
                replacing,
            } => match self.runtime.prepare(config_id) {
                Err(rejection) => self.finish_op(now, op, Err(rejection)),
                Ok(prepared) => {
                    let prepared = Box::new(prepared);
                    let step = ConnectStep::StoppingOld {
                        deadline_ms: now.monotonic_ms + STOP_GRACE_MS,
                        killed: false,
                    };
                    self.runtime.job = Some(Job::Connect {
                        op,
                        replacing,
                        prepared,
                        step,
                    });
                    if let Some(old) = replacing {
                        self.runtime.stop(old, libc::SIGTERM);
                    }
                    self.advance_job(now);
                }
            },
            Plan::Replace {
                trigger,
                candidate_id,
                session_id,
                config_id,
            } => self.start_replace(now, op, trigger, candidate_id, (session_id, config_id)),
            Plan::Disconnect { session_id } => {
                self.runtime.stop(session_id, libc::SIGTERM);
                self.runtime.job = Some(Job::Disconnect {
                    op,
                    session_id,
                    deadline_ms: now.monotonic_ms + STOP_GRACE_MS,
                    killed: false,
                });
                self.advance_job(now);
            }
        }
    }

    fn finish_op(&mut self, now: Now, op: OpId, outcome: Result<OperationOutput, Rejection>) {
        self.runtime.job = None;
        self.sup.handle(now, Input::OperationDone { op, outcome });
    }

    /// Moves the current job forward after any event: an exit, a probe result, or time.
    pub(super) fn advance_job(&mut self, now: Now) {
        self.advance_replace(now);
        match self.runtime.job.take() {
            None => {}
            Some(Job::Disconnect {
                op,
                session_id,
                deadline_ms,
                killed,
            }) => {
                let gone = self
                    .runtime
                    .proc_of(session_id)
                    .is_none_or(|p| p.exited.is_some());
                if gone {
                    self.runtime.finish_session(session_id, now, "disconnected");
                    self.finish_op(now, op, Ok(OperationOutput::Disconnected { session_id }));
                    return;
                }
                let killed = killed || self.escalate(session_id, now, deadline_ms);
                self.runtime.job = Some(Job::Disconnect {
                    op,
                    session_id,
                    deadline_ms: if killed {
                        deadline_ms.max(now.monotonic_ms + STOP_GRACE_MS)
                    } else {
                        deadline_ms
                    },
                    killed,
                });
            }
            Some(Job::Connect {
                op,
                replacing,
                prepared,
                step,
            }) => self.advance_connect(now, op, replacing, prepared, step),
        }
    }

    /// Sends SIGKILL once the grace period is over; true when it did.
    fn escalate(&mut self, session_id: i64, now: Now, deadline_ms: u64) -> bool {
        if now.monotonic_ms < deadline_ms {
            return false;
        }
        eprintln!("xrat: session {session_id}'s core ignored SIGTERM for {STOP_GRACE_MS} ms; sending SIGKILL");
        self.runtime.stop(session_id, libc::SIGKILL);
        true
    }

    fn advance_connect(
        &mut self,
        now: Now,
        op: OpId,
        replacing: Option<i64>,
        prepared: Box<Prepared>,
        step: ConnectStep,
    ) {
        match step {
            ConnectStep::StoppingOld {
                deadline_ms,
                killed,
            } => {
                let old_gone = replacing
                    .is_none_or(|old| self.runtime.proc_of(old).is_none_or(|p| p.exited.is_some()));
                if !old_gone {
                    let killed = killed
                        || self.escalate(replacing.expect("waiting on it"), now, deadline_ms);
                    let step = ConnectStep::StoppingOld {
                        deadline_ms: if killed {
                            deadline_ms.max(now.monotonic_ms + STOP_GRACE_MS)
                        } else {
                            deadline_ms
                        },
                        killed,
                    };
                    self.runtime.job = Some(Job::Connect {
                        op,
                        replacing,
                        prepared,
                        step,
                    });
                    return;
                }
                if let Some(old) = replacing {
                    self.runtime.finish_session(old, now, "replaced");
                    self.sup
                        .handle(now, Input::SessionEnded { session_id: old });
                }
                match self.runtime.launch(&prepared, now) {
                    Err(rejection) => self.finish_op(now, op, Err(rejection)),
                    Ok((session, spawned)) => {
                        self.watch_core(session.id, spawned);
                        let step = ConnectStep::Starting {
                            session,
                            deadline_ms: now.monotonic_ms
                                + self.runtime.settings.runtime.ready_timeout_ms,
                            next_probe_ms: now.monotonic_ms,
                        };
                        self.runtime.job = Some(Job::Connect {
                            op,
                            replacing,
                            prepared,
                            step,
                        });
                        self.advance_job(now);
                    }
                }
            }
            ConnectStep::Starting {
                session,
                deadline_ms,
                next_probe_ms,
            } => self.advance_starting(
                now,
                op,
                replacing,
                prepared,
                session,
                deadline_ms,
                next_probe_ms,
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn advance_starting(
        &mut self,
        now: Now,
        op: OpId,
        replacing: Option<i64>,
        prepared: Box<Prepared>,
        session: SessionInfo,
        deadline_ms: u64,
        next_probe_ms: u64,
    ) {
        let log = self.runtime.core_log(session.id);
        if let Some(how) = self
            .runtime
            .proc_of(session.id)
            .and_then(|p| p.exited.clone())
        {
            self.runtime.finish_session(session.id, now, "failed");
            let message = format!(
                "the core ({}) {how} before its inbound {} accepted connections; {} ends with:\n{}",
                session.core,
                session.socks_addr,
                log.display(),
                process::log_tail(&log, LOG_TAIL_LINES)
            );
            return self.finish_op(now, op, Err(reject(Code::Timeout, message)));
        }
        if now.monotonic_ms >= deadline_ms {
            // Kill it now; its pidfd completion reaps it, so no orphan is left behind.
            self.runtime.stop(session.id, libc::SIGKILL);
            self.runtime.finish_session(session.id, now, "not_ready");
            let message = format!(
                "the core ({}) did not accept connections on {} within {} ms (runtime.ready_timeout_ms) and was stopped; {} ends with:\n{}",
                session.core,
                session.socks_addr,
                self.runtime.settings.runtime.ready_timeout_ms,
                log.display(),
                process::log_tail(&log, LOG_TAIL_LINES)
            );
            return self.finish_op(now, op, Err(reject(Code::Timeout, message)));
        }
        if self.runtime.probe.is_none() && now.monotonic_ms >= next_probe_ms {
            self.start_probe(&session.socks_addr);
        }
        let step = ConnectStep::Starting {
            session,
            deadline_ms,
            next_probe_ms,
        };
        self.runtime.job = Some(Job::Connect {
            op,
            replacing,
            prepared,
            step,
        });
    }

    /// Called when the current probe's connect completed.
    pub(super) fn on_probe(&mut self, now: Now, token: Token, c: &super::ring::Completion) {
        let Some(probe) = self.runtime.probe.take_if(|p| p.serial == token.slot) else {
            return;
        };
        drop(probe);
        if self.runtime.replace.is_some() {
            return self.replace_ready(now, c.result == 0);
        }
        let Some(Job::Connect {
            step: ConnectStep::Starting { next_probe_ms, .. },
            ..
        }) = self.runtime.job.as_mut()
        else {
            return;
        };
        if c.result != 0 {
            // ECONNREFUSED (not listening yet) and friends: try again shortly.
            *next_probe_ms = now.monotonic_ms + READY_PROBE_INTERVAL_MS;
            return;
        }
        let Some(Job::Connect {
            op,
            replacing,
            step: ConnectStep::Starting { session, .. },
            ..
        }) = self.runtime.job.take()
        else {
            unreachable!("matched above")
        };
        let replaced = replacing;
        self.finish_op(
            now,
            op,
            Ok(OperationOutput::Connected { session, replaced }),
        );
    }

    pub(super) fn start_probe(&mut self, addr: &str) {
        let Ok(addr) = addr.parse::<SocketAddr>() else {
            return;
        };
        let (storage, len) = sockaddr(addr);
        let family = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain socket(2); checked before being owned.
        let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return;
        }
        self.runtime.next_probe = self.runtime.next_probe.wrapping_add(1);
        let probe = Probe {
            serial: self.runtime.next_probe,
            // SAFETY: a fresh socket owned by nobody else.
            _socket: unsafe { OwnedFd::from_raw_fd(fd) },
            addr: Box::new(storage),
        };
        let op = Op::Connect {
            fd,
            addr: (&*probe.addr as *const libc::sockaddr_storage).cast(),
            len,
        };
        let token = Token {
            kind: Kind::Probe,
            generation: 0,
            slot: probe.serial,
        }
        .encode();
        self.runtime.probe = Some(probe);
        self.push(op, token);
    }

    pub(super) fn watch_core(&mut self, session_id: i64, spawned: Spawned) {
        let fd = spawned.pidfd.as_raw_fd();
        self.runtime.track(session_id, spawned.pid, spawned.pidfd);
        let token = Token {
            kind: Kind::Pidfd,
            generation: 0,
            slot: spawned.pid,
        }
        .encode();
        self.push(Op::PollIn { fd }, token);
    }

    /// Starts watching an adopted core (reattach).
    pub(super) fn watch_adopted(&mut self, session_id: i64, pid: u32, pidfd: OwnedFd) {
        self.watch_core(
            session_id,
            Spawned {
                pid,
                pidfd,
                start_time: 0,
            },
        );
    }

    /// A core's pidfd fired: it exited. Reap it and tell whoever cares.
    pub(super) fn on_pidfd(&mut self, now: Now, token: Token) {
        let pid = token.slot;
        let Some(proc_) = self
            .runtime
            .procs
            .iter_mut()
            .find(|p| p.pid == pid && p.exited.is_none())
        else {
            return;
        };
        let how = process::reap(proc_.pidfd.as_raw_fd());
        proc_.exited = Some(how.clone());
        let session_id = proc_.session_id;
        let in_job = match &self.runtime.job {
            Some(Job::Disconnect { session_id: s, .. }) => *s == session_id,
            Some(Job::Connect {
                replacing, step, ..
            }) => {
                *replacing == Some(session_id)
                    || matches!(step, ConnectStep::Starting { session, .. } if session.id == session_id)
            }
            None => self
                .runtime
                .replace
                .as_ref()
                .is_some_and(|r| r.involves(session_id)),
        };
        if !in_job {
            eprintln!("xrat: session {session_id}'s core (pid {pid}) {how}");
            if self.sup.session().is_some_and(|s| s.id == session_id) {
                self.runtime
                    .finish_session(session_id, now, &format!("core_exited: {how}"));
                let description = format!("core {how}");
                self.sup.handle(
                    now,
                    Input::CoreExited {
                        session_id,
                        description,
                    },
                );
            } else {
                // Killed after a failed start: reaped, nothing else to do.
                self.runtime.procs.retain(|p| p.pid != pid);
            }
        }
        self.advance_job(now);
    }
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

impl Reactor {
    /// Probes the active session (a health tick asked for it).
    pub(super) fn probe_session(&mut self, now: Now, session_id: i64, socks_addr: &str) {
        let purpose = super::probes::Purpose::Health { session_id };
        match socks_addr.parse() {
            Ok(addr) => self.start_health_probe(now, addr, purpose),
            Err(_) => self.probe_finished(
                now,
                purpose,
                Err(format!("bad SOCKS address {socks_addr:?}")),
            ),
        }
    }

    /// Routes a finished probe to whoever asked for it.
    pub(super) fn probe_finished(
        &mut self,
        now: Now,
        purpose: super::probes::Purpose,
        result: Result<u64, String>,
    ) {
        match purpose {
            super::probes::Purpose::Health { session_id } => {
                self.sup
                    .handle(now, Input::ProbeDone { session_id, result });
            }
            other => self.replace_probe_done(now, other, result),
        }
    }
}
