//! The supervisor's vocabulary: the [`Input`]s the executor reports and the [`Effect`]s it carries
//! out. Effects are small mechanisms (start a core, stop one with a grace period, probe an
//! address, write a row); every decision that strings them together lives in the supervisor.

use std::net::SocketAddr;

use crate::ipc::protocol::{Code, ShutdownPayload, Trigger};
use crate::ipc::RawId;

/// A client connection, as named by the reactor. Never reused within one daemon run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A runtime operation (connect, disconnect, replace), for the busy rule and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// A core process the supervisor asked for (or adopted). Never reused within one daemon run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CoreId(pub u64);

/// One probe the supervisor asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProbeId(pub u64);

/// One subscription refresh run the supervisor asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RefreshId(pub u64);

/// One look at stored configs the supervisor asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InspectId(pub u64);

/// The time, as given by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Now {
    /// Milliseconds on a monotonic clock (any origin).
    pub monotonic_ms: u64,
    /// Wall clock, Unix seconds (for timestamps shown to people).
    pub unix_secs: u64,
    /// The same wall clock in Unix milliseconds (event timestamps).
    pub unix_ms: u64,
}

/// A request that could not be carried out, with its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The response code.
    pub code: Code,
    /// A sentence a person can act on.
    pub message: String,
    /// Close the connection once this reply is written (oversized frames).
    pub close: bool,
}

impl Rejection {
    /// A rejection that keeps the connection open.
    pub fn new(code: Code, message: impl Into<String>) -> Rejection {
        Rejection {
            code,
            message: message.into(),
            close: false,
        }
    }
}

/// A running core session, as the supervisor tracks it.
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
    /// SOCKS inbound.
    pub socks_addr: SocketAddr,
    /// HTTP inbound.
    pub http_addr: Option<SocketAddr>,
    /// Unix seconds.
    pub started_at: u64,
}

/// Which stored configs to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// This one, enabled or not.
    One(i64),
    /// Every enabled config.
    Enabled,
    /// Every stored config, enabled or not (`config_test` of named configs).
    All,
    /// This one first (enabled or not), then every other enabled config: a front-mode connect
    /// fills the pool with the others.
    WithEnabled(i64),
}

/// What the executor found about one stored config: it can run (the core is known and supports
/// it), or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigCheck {
    /// The config.
    pub config_id: i64,
    /// Runnable, or the reason it is not (404 unknown or disabled, 409 unsupported, 500).
    pub result: Result<(), Rejection>,
    /// What its stored test results (`config_tests`) say: the quarantine policy's input.
    pub history: TestHistory,
}

/// A config's stored test results, summarised (issue 12): given with every inspect, and kept up
/// to date by the supervisor from the results it records itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TestHistory {
    /// Unix seconds of the last test; `None` when it was never tested.
    pub last_at: Option<u64>,
    /// Whether the last test passed.
    pub last_ok: bool,
    /// Failed tests since the last passing one.
    pub failure_streak: u32,
}

/// Who ran a recorded test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestSource {
    /// A rotation's batch test.
    Rotation,
    /// A `config_test` request.
    Request,
}

/// One config's test result, for [`Effect::RecordTests`] (pure data, shared with the CLI).
pub use crate::ctest::TestOutcome as TestRecord;

/// What kind of core to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreSpec {
    /// A session core for one config on the user's inbounds, recorded in `runtime_sessions`.
    Session {
        /// The config.
        config_id: i64,
    },
    /// A batch-test core: one loopback SOCKS inbound per config, each routed to its outbound.
    Batch {
        /// The candidates, in order.
        config_ids: Vec<i64>,
    },
    /// A pool core (front mode): like a batch core, one internal loopback inbound per member
    /// (SOCKS, plus HTTP when `runtime.http_port` is set), kept running; the front relays to
    /// whichever members [`Effect::Route`] names. No session row is written until
    /// [`Effect::BeginSession`].
    Pool {
        /// The members, in order.
        config_ids: Vec<i64>,
    },
}

/// One member the front may relay new connections to, in [`Effect::Route`]'s order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTarget {
    /// The pool core serving it.
    pub core: CoreId,
    /// The member (the executor knows its internal inbounds from the start).
    pub config_id: i64,
    /// A connection whose client spoke but that has no byte from the remote this long after the
    /// opening is reported as [`RelayFailure::Stalled`] (it is left open: a long poll is legal).
    pub stall_ms: u64,
}

/// How a relayed opening failed, as the front saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayFailure {
    /// The member's internal inbound refused the connection (or the connect failed).
    Refused,
    /// The core answered the SOCKS5 request with this failure code.
    SocksReply(u8),
    /// The core answered an HTTP CONNECT with this non-2xx status.
    HttpStatus(u16),
    /// The core closed after the request and before any byte from the remote.
    ClosedEarly,
    /// No byte from the remote within the target's `stall_ms` (the connection stays open).
    Stalled,
}

impl RelayFailure {
    /// For logs and status.
    pub fn describe(self) -> String {
        match self {
            RelayFailure::Refused => "the internal inbound refused the connection".into(),
            RelayFailure::SocksReply(code) => format!("the core answered SOCKS5 reply {code}"),
            RelayFailure::HttpStatus(code) => format!("the core answered HTTP {code}"),
            RelayFailure::ClosedEarly => "the core closed before any byte from the remote".into(),
            RelayFailure::Stalled => "no byte from the remote in time".into(),
        }
    }
}

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// SOCKS5 CONNECT to the probe URL's host through `addr`, then an HTTP GET: 2xx/3xx passes.
    Http,
    /// The same toward another URL (`config_test`'s `url`).
    HttpTo(std::sync::Arc<crate::probe::ProbeTarget>),
}

/// How a start failed before the core's inbounds accepted connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFailure {
    /// Nothing was started: the config, the core, a port or the spawn refused. No
    /// [`Input::CoreExited`] follows.
    Refused(Rejection),
    /// The core still runs but its inbound did not accept within the ready timeout; it must be
    /// stopped, and [`Input::CoreExited`] follows.
    NotReady {
        /// The inbound that did not accept.
        addr: SocketAddr,
        /// The last lines of its log, indented.
        log_tail: String,
    },
}

/// A rotation as it is recorded in `rotation_events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationEvent {
    /// Unix seconds.
    pub at: u64,
    /// What started it.
    pub trigger: Trigger,
    /// The config active before.
    pub from_config_id: Option<i64>,
    /// The config active after, when a session runs.
    pub to_config_id: Option<i64>,
    /// How it ended.
    pub result: ReplaceResult,
    /// What happened, for people.
    pub detail: String,
}

/// How a rotation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaceResult {
    /// A new config runs.
    Switched,
    /// No candidate passed the batch test; the old session was not touched.
    NoWorkingCandidate,
    /// Every passing candidate failed to take over; the old config runs again.
    Restored,
    /// Nothing runs: the candidates and the restore failed.
    Failed,
}

impl ReplaceResult {
    /// The wire and database name.
    pub fn name(self) -> &'static str {
        match self {
            ReplaceResult::Switched => "switched",
            ReplaceResult::NoWorkingCandidate => "no_working_candidate",
            ReplaceResult::Restored => "restored",
            ReplaceResult::Failed => "failed",
        }
    }
}

/// The wire name of a trigger.
pub fn trigger_name(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Manual => "manual",
        Trigger::Timer => "timer",
        Trigger::HealthCheckFailed => "health_check_failed",
    }
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
        request: Result<crate::ipc::protocol::Request, Rejection>,
    },
    /// The peer closed, or the reactor dropped the connection.
    ConnectionClosed {
        /// Which one.
        conn: ConnId,
    },
    /// The answer to [`Effect::Inspect`].
    Inspected {
        /// Which look.
        inspect: InspectId,
        /// One check per config, or why none could be made (the store failed).
        configs: Result<Vec<ConfigCheck>, Rejection>,
    },
    /// A core of [`Effect::StartCore`] was spawned; [`Input::CoreReady`] or a failure follows.
    CoreStarted {
        /// Which.
        core: CoreId,
        /// Its pid.
        pid: u32,
        /// The session row, for a session core.
        session: Option<SessionInfo>,
        /// A batch core's inbound per config.
        inbounds: Vec<(i64, SocketAddr)>,
    },
    /// Every inbound of a started core accepts connections.
    CoreReady {
        /// Which.
        core: CoreId,
    },
    /// A start failed before the core was ready.
    CoreFailed {
        /// Which.
        core: CoreId,
        /// How.
        failure: StartFailure,
    },
    /// A core exited (seen through its pidfd). Reported once for every started or adopted core.
    CoreExited {
        /// Which.
        core: CoreId,
        /// How it ended, for people ("killed by signal 9").
        how: String,
        /// The last lines of its log, indented.
        log_tail: String,
    },
    /// A probe finished: latency in ms, or why it failed.
    ProbeDone {
        /// Which.
        probe: ProbeId,
        /// The verdict.
        result: Result<u64, String>,
    },
    /// The deadline given by [`super::Supervisor::poll_timeout`] passed (early calls are harmless).
    Timer,
    /// The answer to [`Effect::BeginSession`].
    SessionBegun {
        /// The pool core.
        core: CoreId,
        /// The member.
        config_id: i64,
        /// The row written, or why not (the store refused).
        session: Result<SessionInfo, Rejection>,
    },
    /// A relayed connection's opening failed on a member (front mode). After [`RelayFailure::
    /// Stalled`] the connection goes on; after the others the front tried the next target.
    RelayFailed {
        /// The pool core.
        core: CoreId,
        /// The member.
        config_id: i64,
        /// How.
        failure: RelayFailure,
    },
    /// A pool core that is no longer routed has no relayed connection left.
    CoreDrained {
        /// Which.
        core: CoreId,
    },
    /// The answer to [`Effect::SampleRelay`]: the front relay's counters now.
    RelaySampled {
        /// The counters.
        counters: crate::ipc::protocol::RelayView,
    },
    /// config.toml was read again (SIGHUP, or `daemon_reload` from `from`, answered in order).
    Reload {
        /// The request, when a client asked.
        from: Option<(ConnId, RawId)>,
        /// The new settings and what changed, or why the file was refused.
        result: Result<Reloaded, String>,
    },
    /// SIGTERM or SIGINT.
    ShutdownSignal,
    /// A refresh run of [`Effect::RefreshSubscriptions`] ended (exited, or was killed at its
    /// deadline). Reported once per run.
    RefreshDone {
        /// Which.
        refresh: RefreshId,
        /// Success, or how it failed ("exit status 1", "killed after 600 s").
        result: Result<(), String>,
    },
}

/// Something the executor must do.
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
    /// Check stored configs against the core; answer with [`Input::Inspected`].
    Inspect {
        /// Echoed in the answer.
        inspect: InspectId,
        /// Which configs.
        selection: Selection,
    },
    /// Render and spawn a core, then wait until its inbounds accept (at most `ready_timeout_ms`):
    /// [`Input::CoreStarted`], then [`Input::CoreReady`] or [`Input::CoreFailed`].
    StartCore {
        /// The name it goes by.
        core: CoreId,
        /// What it runs.
        spec: CoreSpec,
        /// How long its inbounds may take to accept.
        ready_timeout_ms: u64,
    },
    /// SIGTERM to the core's process group, SIGKILL after `grace_ms` (at once when 0). Its exit
    /// arrives as [`Input::CoreExited`].
    StopCore {
        /// Which.
        core: CoreId,
        /// How long SIGTERM has before SIGKILL.
        grace_ms: u64,
    },
    /// Probe through the SOCKS inbound at `addr`; answer with [`Input::ProbeDone`] within
    /// `timeout_ms`.
    Probe {
        /// Echoed in the answer.
        probe: ProbeId,
        /// The inbound.
        addr: SocketAddr,
        /// What to check.
        kind: ProbeKind,
        /// Whole-probe deadline.
        timeout_ms: u64,
    },
    /// Front mode: new relayed connections go to the first target; a failed opening is replayed
    /// on the next (never on one the list leaves out). An empty list refuses new connections in
    /// the client's protocol. Open connections stay where they are.
    Route {
        /// Alive members, best first.
        targets: Vec<RouteTarget>,
    },
    /// Front mode: every relayed connection on this member that has had no byte from the
    /// remote, and whose client bytes are all kept, is replayed on the first target of the
    /// current route it has not tried, as a failed opening would be (not reported back);
    /// one with no such target stays where it is. Emitted after the [`Effect::Route`] that
    /// leaves the member out, once per death of the member.
    Reroute {
        /// The pool core.
        core: CoreId,
        /// The member that died.
        config_id: i64,
    },
    /// Front mode: while the route is empty, new connections wait (accepted, unanswered, at most
    /// a bounded number) instead of being refused, until a non-empty route arrives or
    /// `until_ms` (monotonic) passes; then they are admitted under the route of that moment.
    /// A `until_ms` already past releases them now.
    HoldFront {
        /// The hold's end.
        until_ms: u64,
    },
    /// Record a pool member as the session (front mode); answer with [`Input::SessionBegun`].
    BeginSession {
        /// The pool core.
        core: CoreId,
        /// The member.
        config_id: i64,
    },
    /// Record that a session ended and remove its config file.
    EndSession {
        /// The row.
        session_id: i64,
        /// Why (`disconnected`, `rotated`, `core_exited: …`).
        reason: String,
    },
    /// Record a rotation.
    Persist(RotationEvent),
    /// Run `xrat sub update --due` as a child process, killed after `timeout_ms`; its end
    /// arrives as [`Input::RefreshDone`]. The supervisor has at most one in flight.
    RefreshSubscriptions {
        /// Echoed in the answer.
        refresh: RefreshId,
        /// How long the run may take.
        timeout_ms: u64,
    },
    /// Record test results in `config_tests` (best effort: a failed write is logged).
    RecordTests {
        /// Who ran them.
        source: TestSource,
        /// One per tested config.
        results: Vec<TestRecord>,
    },
    /// Write this event to every subscriber whose categories include it (`lagged` handling and
    /// the per-subscriber bound are the executor's).
    Publish(crate::ipc::events::Event),
    /// Report the front relay's counters with [`Input::RelaySampled`] (front mode).
    SampleRelay,
    /// One line for the daemon log.
    Log(String),
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
    /// `daemon_reload`.
    Reloaded(crate::ipc::protocol::ReloadPayload),
    /// `config_test`.
    ConfigTested(Box<crate::ipc::protocol::ConfigTestPayload>),
    /// `subscribe`: the connection streams events from now on.
    Subscribed(Box<crate::ipc::events::SubscribePayload>),
    /// Any failure.
    Error {
        /// The code.
        code: Code,
        /// What to tell the person.
        message: String,
    },
}

impl Reply {
    /// The `runtime_status` payload a reply carries: its own, or a `subscribe` snapshot's, for
    /// the executor to fill in what only it knows.
    pub fn runtime_status_mut(
        &mut self,
    ) -> Option<&mut crate::ipc::protocol::RuntimeStatusPayload> {
        match self {
            Reply::RuntimeStatus(status) => Some(&mut **status),
            Reply::Subscribed(subscribed) => Some(&mut subscribed.runtime_status),
            _ => None,
        }
    }
}

/// An error reply.
pub(crate) fn error(code: Code, message: String) -> Reply {
    Reply::Error { code, message }
}

/// A successful reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The settings the supervisor now runs with.
    pub config: SupervisorConfig,
    /// Changed keys in force now.
    pub applied: Vec<String>,
    /// Changed keys that need a restart.
    pub restart_needed: Vec<String>,
}

/// What the supervisor needs to know from settings and the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// The daemon's pid, reported by ping.
    pub pid: u32,
    /// Health tick period.
    pub health_interval_ms: u64,
    /// `health.timeout_ms`: one probe's whole deadline.
    pub probe_timeout_ms: u64,
    /// `runtime.ready_timeout_ms`.
    pub ready_timeout_ms: u64,
    /// `runtime.rotation.interval_secs`.
    pub rotation_interval_secs: u64,
    /// `runtime.rotation.health_trigger_enabled`.
    pub health_trigger_enabled: bool,
    /// `runtime.rotation.cooldown_secs`.
    pub cooldown_secs: u64,
    /// `runtime.rotation.test_concurrency`.
    pub test_concurrency: u32,
    /// `health.failure_threshold`.
    pub failure_threshold: u32,
    /// `runtime.rotation.enabled`: rotation state at start.
    pub rotation_enabled: bool,
    /// `runtime.mode = "front"`: sessions run in a pool core behind the front relay.
    pub front: bool,
    /// `runtime.rotation.pool_size`: warm members besides the active one.
    pub pool_size: u32,
    /// `runtime.rotation.drain_secs`, in ms.
    pub drain_ms: u64,
    /// `health.retry_interval_ms`.
    pub retry_interval_ms: u64,
    /// `health.passive_failures`.
    pub passive_failures: u32,
    /// `health.passive_window_ms`.
    pub passive_window_ms: u64,
    /// `health.probe_url`, as `config_test` reports it.
    pub probe_url: String,
    /// `runtime.rotation.strikes`: failed tests in a row that quarantine a config.
    pub strikes: u32,
    /// `runtime.rotation.quarantine_secs` (0: no quarantine).
    pub quarantine_secs: u64,
    /// `daemon.subscriber_queue_max`, reported in the `subscribe` answer.
    pub subscriber_queue_max: u32,
}
