//! Core processes as the executor runs them: start (render, write, spawn, watch the pidfd),
//! the readiness wait (connect checks through the probe table until every inbound accepts, or
//! the deadline), stop with a grace period (the one SIGTERM→SIGKILL path), and exits.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use crate::core::CoreBinary;
use crate::supervisor::{CoreId, CoreSpec, Input, Now, Rejection, StartFailure};

use super::deadlines::Due;
use super::launch::Launched;
use super::probes::Owner;
use super::process::{self, Spawned};
use super::ring::Op;
use super::token::{Kind, Token};
use super::Reactor;

/// Pause between readiness connects in a core's first [`READY_FAST_MS`]: a loopback connect
/// is refused at once and costs a socket, so a tight poll is cheap, and the route (a killed
/// pool core's replacement, a switch) waits on it.
pub const READY_RETRY_FAST_MS: u64 = 2;
/// How long readiness is polled at the fast pace (cores start in tens of ms).
pub const READY_FAST_MS: u64 = 1_000;
/// Pause between readiness connects after that, up to the ready timeout.
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
    started_ms: u64,
    deadline_ms: u64,
    retry_at: Option<u64>,
    probing: bool,
}

/// One process of a core.
struct Member {
    pid: u32,
    pidfd: OwnedFd,
    /// How it ended, once its pidfd fired.
    how: Option<String>,
}

/// A watched core: one process, or one per core family for a batch.
pub struct Proc {
    members: Vec<Member>,
    log: PathBuf,
    /// Batch configs, removed when it exits (they carry credentials).
    configs: Vec<PathBuf>,
    ready: Option<ReadyWait>,
    escalate_at: Option<u64>,
}

impl Proc {
    fn signal(&self, signo: i32) {
        for m in self.members.iter().filter(|m| m.how.is_none()) {
            process::signal_group(m.pid, signo);
        }
    }
}

/// Every core the executor watches, by the supervisor's name for it.
#[derive(Default)]
pub struct Procs {
    map: HashMap<CoreId, Proc>,
    /// Killed processes of a refused start, reaped when their pidfds fire.
    zombies: Vec<(u32, OwnedFd)>,
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
        installed: Result<Vec<CoreBinary>, Rejection>,
    ) {
        let started = installed.and_then(|installed| match &spec {
            CoreSpec::Session { config_id } => self.spawn_session(now, &installed, *config_id),
            CoreSpec::Batch { config_ids } => self.spawn_batch(id, &installed, config_ids),
            CoreSpec::Pool { config_ids } => self.spawn_pool(now, id, &installed, config_ids),
        });
        let Launched {
            grace_ms,
            spawned,
            log,
            configs,
            session,
            inbounds,
            also_ready,
        } = match started {
            Ok(ok) => ok,
            Err(rejection) => {
                let failure = StartFailure::Refused(rejection);
                return self
                    .inputs
                    .push_back(Input::CoreFailed { core: id, failure });
            }
        };
        let pid = spawned.first().map_or(0, |s| s.pid);
        self.watch(id, spawned, log, configs);
        let pending: VecDeque<SocketAddr> = match &session {
            Some(s) => [s.socks_addr].into(),
            None => inbounds
                .iter()
                .map(|(_, addr)| *addr)
                .chain(also_ready)
                .collect(),
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
                started_ms: now.monotonic_ms,
                deadline_ms,
                retry_at: None,
                probing: false,
            });
        }
        self.advance_ready(now, id);
    }

    /// Watches a spawned or adopted core's pidfds in the ring.
    pub(super) fn watch(
        &mut self,
        id: CoreId,
        spawned: Vec<Spawned>,
        log: PathBuf,
        configs: Vec<PathBuf>,
    ) {
        let mut members = Vec::with_capacity(spawned.len());
        for s in spawned {
            self.poll_pidfd(s.pid, &s.pidfd);
            members.push(Member {
                pid: s.pid,
                pidfd: s.pidfd,
                how: None,
            });
        }
        let proc_ = Proc {
            members,
            log,
            configs,
            ready: None,
            escalate_at: None,
        };
        self.procs.map.insert(id, proc_);
    }

    fn poll_pidfd(&mut self, pid: u32, pidfd: &OwnedFd) {
        let token = Token {
            kind: Kind::Pidfd,
            generation: 0,
            slot: pid,
        };
        // SAFETY: a poll carries no buffer; the pidfd lives in the table (or the zombies)
        // until its completion.
        unsafe {
            self.push(
                Op::PollIn {
                    fd: pidfd.as_raw_fd(),
                },
                token.encode(),
            )
        };
    }

    /// Reaps a killed process of a refused start once it is gone.
    pub(super) fn bury(&mut self, spawned: Spawned) {
        self.poll_pidfd(spawned.pid, &spawned.pidfd);
        self.procs.zombies.push((spawned.pid, spawned.pidfd));
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
        self.start_probe(now, addr, None, Owner::Ready(id), READY_CONNECT_TIMEOUT_MS);
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
        let fast = now.monotonic_ms < wait.started_ms + READY_FAST_MS;
        let at = now.monotonic_ms
            + if fast {
                READY_RETRY_FAST_MS
            } else {
                READY_RETRY_MS
            };
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
            proc_.signal(libc::SIGKILL);
            return;
        }
        proc_.signal(libc::SIGTERM);
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
        let pids: Vec<u32> = proc_.members.iter().map(|m| m.pid).collect();
        eprintln!("xrat: core pid {pids:?} ignored SIGTERM for its grace period; sending SIGKILL");
        proc_.signal(libc::SIGKILL);
    }

    /// A pidfd fired: reap the core and report its exit.
    pub(super) fn on_pidfd(&mut self, now: Now, token: Token) {
        let pid = token.slot;
        if self.detect_exited(now, pid) || self.refresh_exited(pid) {
            return;
        }
        if let Some(i) = self.procs.zombies.iter().position(|(p, _)| *p == pid) {
            let (_, pidfd) = self.procs.zombies.swap_remove(i);
            process::reap(pidfd.as_raw_fd());
            return;
        }
        let found = self.procs.map.iter_mut().find_map(|(id, p)| {
            let m = p
                .members
                .iter_mut()
                .find(|m| m.pid == pid && m.how.is_none())?;
            m.how = Some(process::reap(m.pidfd.as_raw_fd()));
            Some((*id, p.members.iter().all(|m| m.how.is_some())))
        });
        let Some((id, all_gone)) = found else {
            return;
        };
        if !all_gone {
            return; // a batch core is gone when its last process is
        }
        let proc_ = self.procs.map.remove(&id).expect("found");
        let how = proc_
            .members
            .iter()
            .find_map(|m| m.how.clone())
            .unwrap_or_else(|| "exited".into());
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
        for config in &proc_.configs {
            let _ = std::fs::remove_file(config);
        }
        // A pool core's relayed connections have nothing left to talk to.
        self.front_core_exited(id);
        self.pool_core_exited(now, id);
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
