//! The daemon's brain, sans-IO (in the style of quinn-proto): [`Supervisor::handle`] takes the time
//! and one [`Input`], and the resulting [`Effect`]s are drained with [`Supervisor::poll_effect`].
//! Timers are data: [`Supervisor::poll_timeout`] says when the next [`Input::Timer`] is due.
//!
//! It never reads the clock, touches a file descriptor or opens the database, so unit tests and
//! the seeded simulation (`sim.rs`) drive it without a ring.
//!
//! It owns two protocol rules. Replies on one connection leave in request order: while a runtime
//! operation of connection C is in flight, C's later replies are held behind it. And at most one
//! runtime operation (connect, replace, disconnect) is in flight; another one gets 423 busy.

use std::collections::VecDeque;

use crate::ipc::protocol::{Code, Request, ShutdownPayload, Trigger};
use crate::ipc::RawId;

mod rotation;
#[cfg(test)]
mod rotation_tests;
mod runtime;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

/// A client connection, as named by the reactor. Never reused within one daemon run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A runtime operation handed to the reactor for execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpId(pub u64);

/// The time, as given by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Now {
    /// Milliseconds on a monotonic clock (any origin).
    pub monotonic_ms: u64,
    /// Wall clock, Unix seconds (for timestamps shown to people).
    pub unix_secs: u64,
}

/// A request that could not be decoded, with its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 400, 413 or 426.
    pub code: Code,
    /// A sentence a person can act on.
    pub message: String,
    /// Close the connection once this reply is written (oversized frames).
    pub close: bool,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A request line arrived (decoded or not).
    Request {
        /// On which connection.
        conn: ConnId,
        /// Its id, echoed in the reply.
        id: RawId,
        /// The request, or why it was rejected.
        request: Result<Request, Rejection>,
    },
    /// The peer closed, or the reactor dropped the connection.
    ConnectionClosed {
        /// Which one.
        conn: ConnId,
    },
    /// The core of the active session exited (seen through its pidfd).
    CoreExited {
        /// Which session.
        session_id: i64,
        /// How it ended, for people ("killed by signal 9").
        description: String,
    },
    /// A health probe of the session finished: latency in ms, or why it failed.
    ProbeDone {
        /// The session probed.
        session_id: i64,
        /// The verdict.
        result: Result<u64, String>,
    },
    /// An operation stopped a session on its way (a connect replacing the old session).
    SessionEnded {
        /// Which.
        session_id: i64,
    },
    /// A runtime operation finished.
    OperationDone {
        /// Which one.
        op: OpId,
        /// Its answer.
        outcome: Result<OperationOutput, Rejection>,
    },
    /// The deadline given by [`Supervisor::poll_timeout`] passed (early calls are harmless).
    Timer,
    /// SIGTERM or SIGINT.
    ShutdownSignal,
}

/// A running (or just-exited) core session, as the supervisor tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Row id in `runtime_sessions`.
    pub id: i64,
    /// The stored config it runs.
    pub config_id: i64,
    /// Which core ("v2ray", "sing-box", "xray").
    pub core: String,
    /// The core's pid.
    pub pid: u32,
    /// SOCKS inbound, host:port.
    pub socks_addr: String,
    /// HTTP inbound, host:port.
    pub http_addr: Option<String>,
    /// Unix seconds.
    pub started_at: u64,
}

/// What the reactor must carry out for a runtime operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Start a session for `config_id`, first stopping session `replacing` if set.
    Connect {
        /// The stored config.
        config_id: i64,
        /// The session to stop first.
        replacing: Option<i64>,
    },
    /// Stop session `session_id`.
    Disconnect {
        /// The session.
        session_id: i64,
    },
    /// Batch-test candidates and switch the session to the best one (DESIGN §7).
    Replace {
        /// Why.
        trigger: Trigger,
        /// Only this candidate, when set.
        candidate_id: Option<i64>,
        /// The session being replaced.
        session_id: i64,
        /// Its config (excluded from candidates, restored if nothing else works).
        config_id: i64,
    },
}

/// How a replace ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaceOutcome {
    /// A new session runs a new config.
    pub replaced: bool,
    /// The session that was running before.
    pub old_session_id: i64,
    /// The session running now (new config, or the restored old one), if any.
    pub session: Option<SessionInfo>,
    /// Candidates the batch test probed.
    pub tested_candidates: u32,
    /// The candidate chosen (or last tried).
    pub candidate: Option<i64>,
    /// `switched`, `no_working_candidate`, `restored` or `failed`.
    pub result: &'static str,
    /// What happened, for people and for the rotation event.
    pub detail: String,
}

/// What a successful runtime operation returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationOutput {
    /// A session started (and `replaced` was stopped first).
    Connected {
        /// The new session.
        session: SessionInfo,
        /// The session it replaced.
        replaced: Option<i64>,
    },
    /// The session was stopped.
    Disconnected {
        /// Which.
        session_id: i64,
    },
    /// A replace finished (successfully or not: see `replaced`).
    Replaced(Box<ReplaceOutcome>),
}

/// Something the reactor must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write a reply on a connection.
    Reply {
        /// Where.
        conn: ConnId,
        /// The request id to echo.
        id: RawId,
        /// What.
        reply: Reply,
        /// Close the connection after writing it.
        close_after: bool,
    },
    /// Carry out a runtime operation and report back with [`Input::OperationDone`].
    Operation {
        /// Its id.
        op: OpId,
        /// What to do.
        plan: Plan,
    },
    /// Probe the session's SOCKS inbound; report with [`Input::ProbeDone`].
    Probe {
        /// The session.
        session_id: i64,
        /// Its SOCKS inbound.
        socks_addr: String,
    },
    /// Stop accepting, flush every reply, remove the socket and exit.
    Shutdown,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `daemon_ping`.
    Ping {
        /// Daemon pid.
        pid: u32,
        /// Whole seconds since start.
        uptime_secs: u64,
    },
    /// `daemon_shutdown`.
    Shutdown(ShutdownPayload),
    /// `runtime_status`.
    RuntimeStatus(Box<crate::ipc::protocol::RuntimeStatusPayload>),
    /// `runtime_connect`.
    Connected(crate::ipc::protocol::ConnectPayload),
    /// `runtime_disconnect`.
    Disconnected(crate::ipc::protocol::DisconnectPayload),
    /// `runtime_replace`.
    Replaced(Box<crate::ipc::protocol::ReplacePayload>),
    /// `proxy_start` / `proxy_stop`.
    Rotation(crate::ipc::protocol::RotationPayload),
    /// `proxy_status`.
    ProxyStatus(Box<crate::ipc::protocol::ProxyStatusPayload>),
    /// Any failure.
    Error {
        /// The code.
        code: Code,
        /// What to tell the person.
        message: String,
    },
}

/// What the supervisor needs to know from settings and the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// The daemon's pid, reported by ping.
    pub pid: u32,
    /// Health tick period.
    pub health_interval_ms: u64,
    /// `runtime.rotation.interval_secs`.
    pub rotation_interval_secs: u64,
    /// `runtime.rotation.health_trigger_enabled`.
    pub health_trigger_enabled: bool,
    /// `runtime.rotation.cooldown_secs`.
    pub cooldown_secs: u64,
    /// `health.failure_threshold`.
    pub failure_threshold: u32,
    /// `runtime.rotation.enabled`: rotation state at start.
    pub rotation_enabled: bool,
}

/// The one in-flight runtime operation and the replies held behind it.
#[derive(Debug)]
struct Pending {
    op: OpId,
    /// None for operations the daemon starts itself (reconnect on start, shutdown).
    conn: Option<ConnId>,
    id: RawId,
    plan: Plan,
    /// False once the connection closed: the outcome is then dropped, not sent.
    conn_open: bool,
    held: VecDeque<(RawId, Reply, bool)>,
}

/// The sans-IO state machine.
#[derive(Debug)]
pub struct Supervisor {
    config: SupervisorConfig,
    started_ms: u64,
    shutting_down: bool,
    shutdown_announced: bool,
    pending: Option<Pending>,
    session: Option<runtime::Session>,
    rotation: rotation::Rotation,
    next_op: u64,
    next_health_ms: u64,
    health_ticks: u64,
    effects: VecDeque<Effect>,
}

impl Supervisor {
    /// A supervisor starting at `now`, with a session adopted from a previous daemon if any.
    pub fn new(config: SupervisorConfig, now: Now, adopted: Option<SessionInfo>) -> Supervisor {
        Supervisor {
            session: adopted.map(runtime::Session::new),
            rotation: rotation::Rotation::new(&config, now),
            next_health_ms: now.monotonic_ms + config.health_interval_ms,
            config,
            started_ms: now.monotonic_ms,
            shutting_down: false,
            shutdown_announced: false,
            pending: None,
            next_op: 1,
            health_ticks: 0,
            effects: VecDeque::new(),
        }
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Now, input: Input) {
        match input {
            Input::Request { conn, id, request } => self.on_request(now, conn, id, request),
            Input::ConnectionClosed { conn } => self.on_closed(conn),
            Input::OperationDone { op, outcome } => self.on_operation_done(now, op, outcome),
            Input::SessionEnded { session_id } => {
                self.session.take_if(|s| s.info.id == session_id);
            }
            Input::ProbeDone { session_id, result } => self.on_probe_done(now, session_id, result),
            Input::CoreExited {
                session_id,
                description,
            } => {
                self.on_core_exited(session_id, description);
                self.on_core_exit_rotation(now);
            }
            Input::Timer => self.on_timer(now),
            Input::ShutdownSignal => self.shutting_down = true,
        }
        self.advance_shutdown();
    }

    /// Shutdown waits for the operation in flight, then stops the session, then is announced
    /// (after every reply it follows).
    fn advance_shutdown(&mut self) {
        if !self.shutting_down || self.shutdown_announced || self.pending.is_some() {
            return;
        }
        if let Some(session_id) = self.session.as_ref().map(|s| s.info.id) {
            self.launch(None, RawId::NONE, Plan::Disconnect { session_id });
            return;
        }
        self.shutdown_announced = true;
        self.effects.push_back(Effect::Shutdown);
    }

    /// The next effect, if any.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// When [`Input::Timer`] is next due (monotonic ms).
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.shutting_down {
            None
        } else {
            Some(
                self.rotation_deadline()
                    .map_or(self.next_health_ms, |d| d.min(self.next_health_ms)),
            )
        }
    }

    /// Health ticks counted so far.
    pub fn health_ticks(&self) -> u64 {
        self.health_ticks
    }

    /// True while a runtime operation is in flight.
    pub fn is_busy(&self) -> bool {
        self.pending.is_some()
    }

    /// True once shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    fn on_request(
        &mut self,
        now: Now,
        conn: ConnId,
        id: RawId,
        request: Result<Request, Rejection>,
    ) {
        let (reply, close_after) = match request {
            Err(rejection) => (error(rejection.code, rejection.message), rejection.close),
            Ok(_) if self.shutting_down => (
                error(
                    Code::Unavailable,
                    "the daemon is shutting down; start it again with `xrat daemon start`".into(),
                ),
                false,
            ),
            Ok(request) if request.is_runtime_operation() => {
                match self.start_runtime_request(conn, id, request) {
                    Some(reply) => (reply, false),
                    None => return,
                }
            }
            Ok(request) => (self.answer(now, request), false),
        };
        self.reply(conn, id, reply, close_after);
    }

    /// Answers the requests that need no operation.
    fn answer(&mut self, now: Now, request: Request) -> Reply {
        match request {
            Request::DaemonPing => Reply::Ping {
                pid: self.config.pid,
                uptime_secs: now.monotonic_ms.saturating_sub(self.started_ms) / 1000,
            },
            Request::DaemonShutdown => {
                self.shutting_down = true;
                Reply::Shutdown(ShutdownPayload {
                    daemon_ready: false,
                    runtime_disconnected: self.session.is_some(),
                })
            }
            Request::RuntimeStatus => Reply::RuntimeStatus(Box::new(self.runtime_status())),
            Request::ProxyStatus => Reply::ProxyStatus(Box::new(self.proxy_status(now))),
            Request::ProxyStart => self.set_rotation(now, true),
            Request::ProxyStop => self.set_rotation(now, false),
            Request::RuntimeConnect { .. }
            | Request::RuntimeReplace { .. }
            | Request::RuntimeDisconnect => {
                unreachable!("runtime operations are started, not answered")
            }
        }
    }

    /// Queues an operation; `conn` is None for the daemon's own operations.
    fn launch(&mut self, conn: Option<ConnId>, id: RawId, plan: Plan) {
        let op = OpId(self.next_op);
        self.next_op += 1;
        self.pending = Some(Pending {
            op,
            conn,
            id,
            plan: plan.clone(),
            conn_open: conn.is_some(),
            held: VecDeque::new(),
        });
        self.effects.push_back(Effect::Operation { op, plan });
    }

    fn on_operation_done(
        &mut self,
        now: Now,
        op: OpId,
        outcome: Result<OperationOutput, Rejection>,
    ) {
        let Some(pending) = self.pending.take_if(|p| p.op == op) else {
            // A completion for an operation we no longer track is a reactor bug; ignoring it
            // keeps the invariants (one reply per request) intact.
            return;
        };
        let reply = self.apply_outcome(now, &pending.plan, outcome);
        if let (Some(conn), true) = (pending.conn, pending.conn_open) {
            self.push_reply(conn, pending.id, reply, false);
            for (id, reply, close_after) in pending.held {
                self.push_reply(conn, id, reply, close_after);
            }
        }
    }

    fn on_closed(&mut self, conn: ConnId) {
        if let Some(pending) = self.pending.as_mut().filter(|p| p.conn == Some(conn)) {
            pending.conn_open = false;
            pending.held.clear();
        }
    }

    fn on_timer(&mut self, now: Now) {
        if self.shutting_down {
            return;
        }
        let mut tick = false;
        while now.monotonic_ms >= self.next_health_ms {
            self.health_ticks += 1;
            self.next_health_ms += self.config.health_interval_ms;
            tick = true;
        }
        if tick {
            self.start_health_probe();
        }
        self.rotation_timers(now);
    }

    fn reply(&mut self, conn: ConnId, id: RawId, reply: Reply, close_after: bool) {
        if let Some(pending) = self.pending.as_mut().filter(|p| p.conn == Some(conn)) {
            if pending.conn_open {
                pending.held.push_back((id, reply, close_after));
            }
            return;
        }
        self.push_reply(conn, id, reply, close_after);
    }

    fn push_reply(&mut self, conn: ConnId, id: RawId, reply: Reply, close_after: bool) {
        self.effects.push_back(Effect::Reply {
            conn,
            id,
            reply,
            close_after,
        });
    }
}

pub(crate) fn error(code: Code, message: String) -> Reply {
    Reply::Error { code, message }
}
