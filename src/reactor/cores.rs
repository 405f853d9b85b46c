//! Core processes as the executor runs them: start (render, write, spawn, watch the pidfd),
//! the readiness wait (connect checks through the probe table until every inbound accepts, or
//! the deadline), stop with a grace period (the one SIGTERM→SIGKILL path), and exits.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use crate::core::{self, CoreBinary};
use crate::ipc::protocol::Code;
use crate::store::NewSession;
use crate::supervisor::{CoreId, CoreSpec, Input, Now, Rejection, SessionInfo, StartFailure};

use super::deadlines::Due;
use super::prepare::{error_chain, free_ports, write_private, Prepared};
use super::probes::Owner;
use super::process::{self, Spawned};
use super::ring::Op;
use super::token::{Kind, Token};
use super::Reactor;

/// Pause between readiness connects of a starting core.
pub const READY_RETRY_MS: u64 = 20;
/// One readiness connect's bound (loopback answers at once; this catches a stuck backlog).
pub const READY_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Lines of a core's log quoted in errors.
pub const LOG_TAIL_LINES: usize = 8;

/// A core being started: the inbounds still to accept, one connect at a time.
struct ReadyWait {
    pending: VecDeque<SocketAddr>,
    /// Waited once every inbound accepted (mihomo accepts before it relays; see
    /// [`core::ready_grace`]).
    grace_ms: u64,
    deadline_ms: u64,
    retry_at: Option<u64>,
    probing: bool,
}

/// A watched core process.
pub struct Proc {
    pid: u32,
    pidfd: OwnedFd,
    log: PathBuf,
    /// A batch core's config, removed when it exits (it carries credentials).
    config: Option<PathBuf>,
    ready: Option<ReadyWait>,
    escalate_at: Option<u64>,
}

/// A core just spawned, before it is watched.
struct Launched {
    spawned: Spawned,
    log: PathBuf,
    /// A file to remove when it exits.
    config: Option<PathBuf>,
    session: Option<SessionInfo>,
    inbounds: Vec<(i64, SocketAddr)>,
}

/// Every core the executor watches, by the supervisor's name for it.
#[derive(Default)]
pub struct Procs {
    map: HashMap<CoreId, Proc>,
}

impl Procs {
    /// Cores watched.
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

impl Reactor {
    /// `Effect::StartCore`, once the core binary is known (or known to be unusable).
    pub(super) fn start_core_with(
        &mut self,
        now: Now,
        id: CoreId,
        spec: CoreSpec,
        ready_timeout_ms: u64,
        binary: Result<CoreBinary, Rejection>,
    ) {
        let grace_ms = binary
            .as_ref()
            .map_or(0, |b| core::ready_grace(b).as_millis() as u64);
        let started = binary.and_then(|binary| match &spec {
            CoreSpec::Session { config_id } => self.spawn_session(now, &binary, *config_id),
            CoreSpec::Batch { config_ids } => self.spawn_batch(id, &binary, config_ids),
        });
        let Launched {
            spawned,
            log,
            config,
            session,
            inbounds,
        } = match started {
            Ok(ok) => ok,
            Err(rejection) => {
                let failure = StartFailure::Refused(rejection);
                return self
                    .inputs
                    .push_back(Input::CoreFailed { core: id, failure });
            }
        };
        let pid = spawned.pid;
        self.watch(id, spawned, log, config);
        let pending: VecDeque<SocketAddr> = match &session {
            Some(s) => [s.socks_addr].into(),
            None => inbounds.iter().map(|(_, addr)| *addr).collect(),
        };
        self.inputs.push_back(Input::CoreStarted {
            core: id,
            pid,
            session,
            inbounds,
        });
        let deadline_ms = now.monotonic_ms + ready_timeout_ms;
        self.deadlines.add(deadline_ms, Due::ReadyExpired(id));
        if let Some(proc_) = self.procs.map.get_mut(&id) {
            proc_.ready = Some(ReadyWait {
                pending,
                grace_ms,
                deadline_ms,
                retry_at: None,
                probing: false,
            });
        }
        self.advance_ready(now, id);
    }

    /// Records the session and spawns its core on the user's inbounds.
    fn spawn_session(
        &mut self,
        now: Now,
        binary: &CoreBinary,
        config_id: i64,
    ) -> Result<Launched, Rejection> {
        let prepared = self.prepared_for(binary, config_id)?;
        self.env.ports_free()?;
        let internal = |e: &dyn std::error::Error| Rejection::new(Code::Internal, error_chain(e));
        let sessions_dir = self.env.paths.runtime_dir().join("sessions");
        std::fs::create_dir_all(&sessions_dir).map_err(|e| internal(&e))?;
        let inbounds = self.env.inbounds();
        let socks_addr = SocketAddr::new(inbounds.listen, inbounds.socks_port);
        let http_addr = inbounds
            .http_port
            .map(|p| SocketAddr::new(inbounds.listen, p));
        let new = NewSession {
            config_id,
            core: binary.kind.name().to_string(),
            core_path: binary.path.display().to_string(),
            config_path: String::new(),
            socks_addr: socks_addr.to_string(),
            http_addr: http_addr.map(|a| a.to_string()),
            started_at: now.unix_secs,
        };
        let store = &self.env.store;
        let session_id = store.begin_session(&new).map_err(|e| {
            if e.is_busy() {
                // The loop never waits on another process's lock: the caller retries.
                Rejection::new(
                    Code::Unavailable,
                    format!("{} is locked by another process, so the session cannot be recorded; retry in a moment (or stop whatever holds the database open for writing)", store.path().display()),
                )
            } else {
                internal(&e)
            }
        })?;
        let config_path = sessions_dir.join(format!("{session_id}.json"));
        let log = self
            .env
            .paths
            .logs_dir()
            .join(format!("core-{session_id}.log"));
        let spawned = write_private(&config_path, &prepared.rendered).and_then(|()| {
            process::spawn(&binary.path, &core::run_args(binary, &config_path), &log)
        });
        let spawned = spawned.map_err(|e| {
            let _ = store.end_session(session_id, now.unix_secs, "spawn_failed");
            let _ = std::fs::remove_file(&config_path);
            let path = binary.path.display();
            Rejection::new(
                Code::Internal,
                format!("cannot start {path} for session {session_id}: {e}"),
            )
        })?;
        // The core runs now: a failure to record its identity must not orphan it.
        let write = super::journal::Write::Process {
            session_id,
            pid: spawned.pid,
            start_time: spawned.start_time,
        };
        self.record(now, write);
        let info = SessionInfo {
            id: session_id,
            config_id,
            core: binary.kind.name().to_string(),
            pid: spawned.pid,
            socks_addr,
            http_addr,
            started_at: now.unix_secs,
        };
        Ok(Launched {
            spawned,
            log,
            config: None,
            session: Some(info),
            inbounds: Vec::new(),
        })
    }

    /// Renders and spawns a batch core: one loopback SOCKS inbound per candidate.
    fn spawn_batch(
        &mut self,
        id: CoreId,
        binary: &CoreBinary,
        config_ids: &[i64],
    ) -> Result<Launched, Rejection> {
        let refuse = |message: String| Rejection::new(Code::Internal, message);
        let mut prepared = Vec::with_capacity(config_ids.len());
        for config_id in config_ids {
            let p = self.prepared_for(binary, *config_id).map_err(|r| {
                refuse(format!(
                    "config {config_id} cannot run in the batch test: {}",
                    r.message
                ))
            })?;
            prepared.push(p);
        }
        let listen = self.env.listen();
        let ports = free_ports(listen, prepared.len())
            .map_err(|e| refuse(format!("no free ports for the batch test: {e}")))?;
        let pairs: Vec<(u16, &crate::links::Outbound)> = ports
            .iter()
            .copied()
            .zip(prepared.iter().map(|p| &p.outbound))
            .collect();
        let rendered =
            core::render_batch(binary, listen, &pairs).map_err(|e| refuse(error_chain(&e)))?;
        let path = self
            .env
            .paths
            .runtime_dir()
            .join(format!("batch-{}.json", id.0));
        let log = self.env.paths.logs_dir().join("batch.log");
        write_private(&path, &rendered)
            .map_err(|e| refuse(format!("cannot write {}: {e}", path.display())))?;
        let spawned =
            process::spawn(&binary.path, &core::run_args(binary, &path), &log).map_err(|e| {
                let _ = std::fs::remove_file(&path);
                refuse(format!(
                    "cannot start the batch test core {}: {e}",
                    binary.path.display()
                ))
            })?;
        let inbounds = config_ids
            .iter()
            .zip(&ports)
            .map(|(config_id, port)| (*config_id, SocketAddr::new(listen, *port)))
            .collect();
        Ok(Launched {
            spawned,
            log,
            config: Some(path),
            session: None,
            inbounds,
        })
    }

    /// The render the last inspect made of `config_id`, or a fresh one. (A rotation inspects its
    /// candidates once and starts them moments later; rendering twice doubled the synchronous
    /// work on the loop thread.)
    fn prepared_for(&self, binary: &CoreBinary, config_id: i64) -> Result<Prepared, Rejection> {
        match self.prepared.get(&config_id) {
            Some(p) => Ok(p.clone()),
            None => self.env.prepare(binary, config_id),
        }
    }

    /// Watches a spawned or adopted core's pidfd in the ring.
    pub(super) fn watch(
        &mut self,
        id: CoreId,
        spawned: Spawned,
        log: PathBuf,
        config: Option<PathBuf>,
    ) {
        let fd = spawned.pidfd.as_raw_fd();
        let token = Token {
            kind: Kind::Pidfd,
            generation: 0,
            slot: spawned.pid,
        };
        self.procs.map.insert(
            id,
            Proc {
                pid: spawned.pid,
                pidfd: spawned.pidfd,
                log,
                config,
                ready: None,
                escalate_at: None,
            },
        );
        // SAFETY: a poll carries no buffer; the pidfd lives in the table until its completion.
        unsafe { self.push(Op::PollIn { fd }, token.encode()) };
    }

    /// Starts the next readiness connect, or reports the core ready.
    pub(super) fn advance_ready(&mut self, now: Now, id: CoreId) {
        let Some(wait) = self.procs.map.get_mut(&id).and_then(|p| p.ready.as_mut()) else {
            return;
        };
        let Some(&addr) = wait.pending.front() else {
            if wait.grace_ms > 0 {
                let at = now.monotonic_ms + std::mem::take(&mut wait.grace_ms);
                wait.retry_at = Some(at);
                self.deadlines.add(at, Due::ReadyRetry(id));
                return;
            }
            if wait.retry_at.is_some_and(|at| now.monotonic_ms < at) {
                return;
            }
            let deadline_ms = wait.deadline_ms;
            self.procs.map.get_mut(&id).expect("looked up").ready = None;
            self.deadlines.remove(deadline_ms, Due::ReadyExpired(id));
            return self.inputs.push_back(Input::CoreReady { core: id });
        };
        if wait.probing || wait.retry_at.is_some_and(|at| now.monotonic_ms < at) {
            return;
        }
        wait.probing = true;
        wait.retry_at = None;
        self.start_probe(now, addr, false, Owner::Ready(id), READY_CONNECT_TIMEOUT_MS);
    }

    /// A readiness connect answered.
    pub(super) fn ready_answer(&mut self, now: Now, id: CoreId, accepted: bool) {
        let Some(wait) = self.procs.map.get_mut(&id).and_then(|p| p.ready.as_mut()) else {
            return;
        };
        wait.probing = false;
        if accepted {
            wait.pending.pop_front();
            return self.advance_ready(now, id);
        }
        // ECONNREFUSED (not listening yet) and friends: try again shortly.
        let at = now.monotonic_ms + READY_RETRY_MS;
        wait.retry_at = Some(at);
        self.deadlines.add(at, Due::ReadyRetry(id));
    }

    /// The readiness deadline passed.
    pub(super) fn ready_expired(&mut self, id: CoreId) {
        let Some(proc_) = self.procs.map.get_mut(&id) else {
            return;
        };
        let Some(wait) = proc_.ready.take() else {
            return;
        };
        let addr = wait
            .pending
            .front()
            .copied()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
        let log_tail = log_excerpt(&proc_.log);
        let failure = StartFailure::NotReady { addr, log_tail };
        self.inputs
            .push_back(Input::CoreFailed { core: id, failure });
    }

    /// `Effect::StopCore`.
    pub(super) fn stop_core(&mut self, now: Now, id: CoreId, grace_ms: u64) {
        let Some(proc_) = self.procs.map.get_mut(&id) else {
            return;
        };
        if grace_ms == 0 {
            process::signal_group(proc_.pid, libc::SIGKILL);
            return;
        }
        process::signal_group(proc_.pid, libc::SIGTERM);
        if proc_.escalate_at.is_none() {
            let at = now.monotonic_ms + grace_ms;
            proc_.escalate_at = Some(at);
            self.deadlines.add(at, Due::Escalate(id));
        }
    }

    /// The grace period of a stop ran out.
    pub(super) fn escalate(&mut self, id: CoreId) {
        let Some(proc_) = self.procs.map.get_mut(&id) else {
            return;
        };
        proc_.escalate_at = None;
        eprintln!(
            "xrat: core pid {} ignored SIGTERM for its grace period; sending SIGKILL",
            proc_.pid
        );
        process::signal_group(proc_.pid, libc::SIGKILL);
    }

    /// A pidfd fired: reap the core and report its exit.
    pub(super) fn on_pidfd(&mut self, now: Now, token: Token) {
        let pid = token.slot;
        if self.detect_exited(now, pid) {
            return;
        }
        let Some(id) = self
            .procs
            .map
            .iter()
            .find(|(_, p)| p.pid == pid)
            .map(|(id, _)| *id)
        else {
            return;
        };
        let proc_ = self.procs.map.remove(&id).expect("found");
        let how = process::reap(proc_.pidfd.as_raw_fd());
        if let Some(wait) = &proc_.ready {
            self.deadlines
                .remove(wait.deadline_ms, Due::ReadyExpired(id));
            if let Some(at) = wait.retry_at {
                self.deadlines.remove(at, Due::ReadyRetry(id));
            }
        }
        if let Some(at) = proc_.escalate_at {
            self.deadlines.remove(at, Due::Escalate(id));
        }
        if let Some(config) = &proc_.config {
            let _ = std::fs::remove_file(config);
        }
        let log_tail = log_excerpt(&proc_.log);
        self.inputs.push_back(Input::CoreExited {
            core: id,
            how,
            log_tail,
        });
    }
}

/// "<log> ends with:\n<last lines>", for messages.
fn log_excerpt(log: &std::path::Path) -> String {
    format!(
        "{} ends with:\n{}",
        log.display(),
        process::log_tail(log, LOG_TAIL_LINES)
    )
}
