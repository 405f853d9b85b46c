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

use crate::ipc::protocol::{
    Code, HealthView, ProxyStatusPayload, Request, RuntimeStatusPayload, ShutdownPayload,
};
use crate::ipc::RawId;

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

/// What a successful runtime operation returns (grows with the sessions issue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationOutput {}

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
        /// The request (connect, replace or disconnect).
        request: Request,
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
    RuntimeStatus(Box<RuntimeStatusPayload>),
    /// `proxy_status`.
    ProxyStatus(Box<ProxyStatusPayload>),
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
}

/// The one in-flight runtime operation and the replies held behind it.
#[derive(Debug)]
struct Pending {
    op: OpId,
    conn: ConnId,
    id: RawId,
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
    next_op: u64,
    next_health_ms: u64,
    health_ticks: u64,
    effects: VecDeque<Effect>,
}

impl Supervisor {
    /// A supervisor starting at `now`.
    pub fn new(config: SupervisorConfig, now: Now) -> Supervisor {
        Supervisor {
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
            Input::OperationDone { op, outcome } => self.on_operation_done(op, outcome),
            Input::Timer => self.on_timer(now),
            Input::ShutdownSignal => self.shutting_down = true,
        }
        // Shutdown is announced after every reply it follows, and only once no operation is in
        // flight, so that the operation's reply still goes out.
        if self.shutting_down && !self.shutdown_announced && self.pending.is_none() {
            self.shutdown_announced = true;
            self.effects.push_back(Effect::Shutdown);
        }
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
            Some(self.next_health_ms)
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
                match self.start_operation(conn, id, request) {
                    Some(busy) => (busy, false),
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
                    runtime_disconnected: false,
                })
            }
            Request::RuntimeStatus => Reply::RuntimeStatus(Box::new(self.runtime_status())),
            Request::ProxyStatus => Reply::ProxyStatus(Box::new(self.proxy_status())),
            Request::ProxyStart | Request::ProxyStop => not_implemented(request),
            Request::RuntimeConnect { .. }
            | Request::RuntimeReplace { .. }
            | Request::RuntimeDisconnect => {
                unreachable!("runtime operations are started, not answered")
            }
        }
    }

    /// Starts a runtime operation, or returns the 423 reply when one is already in flight.
    fn start_operation(&mut self, conn: ConnId, id: RawId, request: Request) -> Option<Reply> {
        if let Some(pending) = &self.pending {
            return Some(error(
                Code::Busy,
                format!(
                    "another runtime operation is in flight (op {}); retry {} when it finishes",
                    pending.op.0,
                    request.name()
                ),
            ));
        }
        let op = OpId(self.next_op);
        self.next_op += 1;
        self.pending = Some(Pending {
            op,
            conn,
            id,
            conn_open: true,
            held: VecDeque::new(),
        });
        self.effects.push_back(Effect::Operation { op, request });
        None
    }

    fn on_operation_done(&mut self, op: OpId, outcome: Result<OperationOutput, Rejection>) {
        let Some(pending) = self.pending.take_if(|p| p.op == op) else {
            // A completion for an operation we no longer track is a reactor bug; ignoring it
            // keeps the invariants (one reply per request) intact.
            return;
        };
        if pending.conn_open {
            let reply = match outcome {
                Ok(output) => match output {},
                Err(rejection) => error(rejection.code, rejection.message),
            };
            self.push_reply(pending.conn, pending.id, reply, false);
            for (id, reply, close_after) in pending.held {
                self.push_reply(pending.conn, id, reply, close_after);
            }
        }
    }

    fn on_closed(&mut self, conn: ConnId) {
        if let Some(pending) = self.pending.as_mut().filter(|p| p.conn == conn) {
            pending.conn_open = false;
            pending.held.clear();
        }
    }

    fn on_timer(&mut self, now: Now) {
        if self.shutting_down {
            return;
        }
        while now.monotonic_ms >= self.next_health_ms {
            // Nothing to probe until sessions exist; the tick is counted so that it is observable.
            self.health_ticks += 1;
            self.next_health_ms += self.config.health_interval_ms;
        }
    }

    fn reply(&mut self, conn: ConnId, id: RawId, reply: Reply, close_after: bool) {
        if let Some(pending) = self.pending.as_mut().filter(|p| p.conn == conn) {
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

    fn runtime_status(&self) -> RuntimeStatusPayload {
        RuntimeStatusPayload {
            runtime_status: "idle".into(),
            session_id: None,
            active_config_id: None,
            pid: None,
            pid_running: false,
            core: None,
            socks_addr: None,
            http_addr: None,
            started_at: None,
            health: HealthView::default(),
        }
    }

    fn proxy_status(&self) -> ProxyStatusPayload {
        let c = &self.config;
        ProxyStatusPayload {
            // Rotation is not built yet, so it is reported off whatever the settings say.
            rotation_enabled: false,
            interval_secs: c.rotation_interval_secs,
            health_trigger_enabled: c.health_trigger_enabled,
            cooldown_secs: c.cooldown_secs,
            cooldown_active: false,
            active_config_id: None,
            last_trigger: None,
            last_result: None,
            last_rotation_at: None,
            next_rotation_at: None,
            last_candidate_config_id: None,
            health_failure_threshold: c.failure_threshold,
            consecutive_health_failures: 0,
            last_health_error: None,
        }
    }
}

fn error(code: Code, message: String) -> Reply {
    Reply::Error { code, message }
}

fn not_implemented(request: Request) -> Reply {
    error(
        Code::NotImplemented,
        format!(
            "{} is part of protocol v1 but not implemented in xrat {} yet",
            request.name(),
            env!("CARGO_PKG_VERSION")
        ),
    )
}

/// The 501 rejection the reactor gives runtime operations until the sessions issue lands.
pub fn operation_not_implemented(request: Request) -> Rejection {
    let Reply::Error { code, message } = not_implemented(request) else {
        unreachable!()
    };
    Rejection {
        code,
        message,
        close: false,
    }
}
