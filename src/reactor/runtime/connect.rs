//! Connect and disconnect jobs, readiness checks, and core exits: the `Reactor` side of the
//! runtime executor.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::ipc::protocol::Code;
use crate::supervisor::{Input, Now, OpId, OperationOutput, Plan, Rejection, SessionInfo};

use super::super::process::{self, Spawned};
use super::super::ring::Op;
use super::super::token::{Kind, Token};
use super::super::Reactor;
use super::{
    reject, sockaddr, ConnectStep, Job, Prepared, Probe, LOG_TAIL_LINES, READY_PROBE_INTERVAL_MS,
    STOP_GRACE_MS,
};

impl Reactor {
    /// Begins carrying out a supervisor operation.
    pub(crate) fn start_plan(&mut self, now: Now, op: OpId, plan: Plan) {
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
    pub(crate) fn advance_job(&mut self, now: Now) {
        self.report_failed_probes(now);
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
    pub(crate) fn on_probe(&mut self, now: Now, token: Token, c: &super::super::ring::Completion) {
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

    pub(crate) fn start_probe(&mut self, addr: &str) {
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

    pub(crate) fn watch_core(&mut self, session_id: i64, spawned: Spawned) {
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
    pub(crate) fn watch_adopted(&mut self, session_id: i64, pid: u32, pidfd: OwnedFd) {
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
    pub(crate) fn on_pidfd(&mut self, now: Now, token: Token) {
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

impl Reactor {
    /// Probes the active session (a health tick asked for it).
    pub(crate) fn probe_session(&mut self, now: Now, session_id: i64, socks_addr: &str) {
        let purpose = super::super::probes::Purpose::Health { session_id };
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
    pub(crate) fn probe_finished(
        &mut self,
        now: Now,
        purpose: super::super::probes::Purpose,
        result: Result<u64, String>,
    ) {
        match purpose {
            super::super::probes::Purpose::Health { session_id } => {
                self.sup
                    .handle(now, Input::ProbeDone { session_id, result });
            }
            other => self.replace_probe_done(now, other, result),
        }
    }
}
