//! The daemon's brain, sans-IO (in the style of quinn-proto): [`Supervisor::handle`] takes the time
//! and one [`Input`], and the resulting [`Effect`]s are drained with [`Supervisor::poll_effect`].
//! Timers are data: [`Supervisor::poll_timeout`] says when the next [`Input::Timer`] is due.
//!
//! It never reads the clock, touches a file descriptor or opens the database, so unit tests and
//! the seeded simulation (`sim.rs`) drive it without a ring. Every decision of DESIGN §5 and §7 is
//! made here: which candidates a rotation tests, how they rank, when the batch is decided, the
//! switch sequence with its fallback and restore, which core exits matter, the cooldown, and what
//! is recorded. The executor (the reactor) only starts and stops cores, probes addresses and
//! writes rows.
//!
//! It owns two protocol rules. Replies on one connection leave in request order: while a runtime
//! operation of connection C is in flight, C's later replies are held behind it. And at most one
//! runtime operation (connect, replace, disconnect) is in flight; another one gets 423 busy.

use std::collections::{BTreeMap, VecDeque};

use crate::ipc::protocol::{Code, HealthView, Request, ShutdownPayload, Trigger};
use crate::ipc::RawId;

mod events;
mod io;
mod ops;
mod pool;
mod pool_ops;
mod pool_replace;
mod pool_respawn;
mod pool_switch;
pub mod quarantine;
mod rank;
mod refresh;
mod replace;
mod rotation;
mod runtime;
mod switch;
mod test_batch;

#[cfg(test)]
mod pool_tests;
#[cfg(test)]
mod respawn_tests;
#[cfg(test)]
mod rotation_tests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_check;
#[cfg(test)]
mod sim_events;
#[cfg(test)]
mod sim_exec;
#[cfg(test)]
mod sim_front;
#[cfg(test)]
mod sim_front_check;
#[cfg(test)]
mod sim_quarantine;
#[cfg(test)]
mod sim_refresh;
#[cfg(test)]
mod sim_respawn;
#[cfg(test)]
mod sim_world;
#[cfg(test)]
mod tests;

pub use events::RELAY_SAMPLE_MS;
pub use io::*;
pub use pool_respawn::RESPAWN_HOLD_MS;
pub use refresh::RefreshConfig;

/// How long a core may take to exit after SIGTERM before it gets SIGKILL.
pub const STOP_GRACE_MS: u64 = 3_000;
/// [`STOP_GRACE_MS`] as a duration.
pub const STOP_GRACE_MS_DURATION: std::time::Duration =
    std::time::Duration::from_millis(STOP_GRACE_MS);
/// A candidate that failed a test is passed over for this long while others remain.
pub const FAILED_CANDIDATE_HOLD_MS: u64 = 60_000;

/// What a core the supervisor started is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CoreRole {
    /// Runs a session on the user's inbounds.
    Session,
    /// Tests candidates.
    Batch,
    /// Holds the session's config and warm members behind the front (front mode).
    Pool,
}

/// The active session and what is known of its health.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    info: SessionInfo,
    core: CoreId,
    pid_running: bool,
    health: HealthView,
}

impl Session {
    fn new(info: SessionInfo, core: CoreId) -> Session {
        Session {
            info,
            core,
            pid_running: true,
            health: HealthView::default(),
        }
    }
}

/// The sans-IO state machine.
#[derive(Debug)]
pub struct Supervisor {
    config: SupervisorConfig,
    started_ms: u64,
    shutting_down: bool,
    shutdown_announced: bool,
    op: Option<ops::Operation>,
    session: Option<Session>,
    /// Cores started (or adopted) and not yet seen to exit.
    cores: BTreeMap<CoreId, CoreRole>,
    rotation: rotation::Rotation,
    /// The health probe of the active session in flight.
    health_probe: Option<ProbeId>,
    /// Configs that failed a test, and when (monotonic ms).
    failed_at: BTreeMap<i64, u64>,
    /// Stored test results per config, from the last inspect and the results recorded since.
    histories: BTreeMap<i64, TestHistory>,
    next_id: u64,
    next_health_ms: u64,
    health_ticks: u64,
    effects: VecDeque<Effect>,
    /// Front mode: the routed pool core.
    pool: Option<pool::Pool>,
    /// Front mode: replaced pool cores, unrouted, and when their drain time ends.
    draining: BTreeMap<CoreId, u64>,
    /// Front mode: the route last emitted.
    route: Vec<RouteTarget>,
    /// When the routed pool core was last started again after its exit.
    last_respawn_ms: Option<u64>,
    /// Timed subscription refreshes, once enabled.
    refresh: Option<refresh::Refresh>,
    /// Event numbering and what the events are read off (see `events.rs`).
    events: events::Events,
}

impl Supervisor {
    /// A supervisor starting at `now`, with a session adopted from a previous daemon if any; the
    /// adopted core is named by [`Supervisor::adopted_core`].
    pub fn new(config: SupervisorConfig, now: Now, adopted: Option<SessionInfo>) -> Supervisor {
        let mut sup = Supervisor {
            session: None,
            cores: BTreeMap::new(),
            rotation: rotation::Rotation::new(&config, now),
            next_health_ms: now.monotonic_ms + config.health_interval_ms,
            config,
            started_ms: now.monotonic_ms,
            shutting_down: false,
            shutdown_announced: false,
            op: None,
            health_probe: None,
            failed_at: BTreeMap::new(),
            histories: BTreeMap::new(),
            next_id: 1,
            health_ticks: 0,
            effects: VecDeque::new(),
            pool: None,
            draining: BTreeMap::new(),
            route: Vec::new(),
            last_respawn_ms: None,
            refresh: None,
            events: events::Events::new(now),
        };
        if let Some(info) = adopted {
            let core = CoreId(sup.fresh());
            sup.cores.insert(core, CoreRole::Session);
            sup.session = Some(Session::new(info, core));
        }
        sup
    }

    /// Front mode: the adopted session runs on a pool core with these members (from the
    /// previous daemon's records). They are probed at once; until then only the active member
    /// is routed.
    pub fn adopt_pool(&mut self, now: Now, members: Vec<(i64, std::net::SocketAddr)>) {
        let Some(core) = self.adopted_core().filter(|_| self.config.front) else {
            return;
        };
        self.cores.insert(core, CoreRole::Pool);
        let interval = self.config.health_interval_ms;
        let pool = pool::Pool::new(core, &members, now.monotonic_ms, None, interval);
        self.install_pool(now, pool);
        self.sync_route();
        self.check_invariants();
    }

    /// The core id of the adopted session, for the executor to watch.
    pub fn adopted_core(&self) -> Option<CoreId> {
        self.session.as_ref().map(|s| s.core)
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Now, input: Input) {
        self.events.now = now;
        match input {
            Input::Request { conn, id, request } => self.on_request(now, conn, id, request),
            Input::ConnectionClosed { conn } => self.on_closed(conn),
            Input::Timer => self.on_timer(now),
            Input::Reload { from, result } => self.on_reload(now, from, result),
            Input::ShutdownSignal => self.shutting_down = true,
            Input::RelayFailed {
                core,
                config_id,
                failure,
            } => self.on_relay_failed(now, core, config_id, failure),
            Input::CoreDrained { core } => self.on_core_drained(core),
            Input::RefreshDone { refresh, result } => self.on_refresh_done(now, refresh, result),
            Input::RelaySampled { counters } => self.on_relay_sampled(counters),
            other => self.on_completion(now, other),
        }
        self.advance_shutdown(now);
        self.failover_pending(now);
        self.sync_route();
        self.publish_changes();
        self.check_invariants();
    }

    /// The next effect, if any.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// When [`Input::Timer`] is next due (monotonic ms): the health tick, a rotation deadline,
    /// or the moment a batch test is decided.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.shutting_down {
            return self.op.as_ref().and_then(|op| op.deadline());
        }
        [
            Some(self.next_health_ms),
            self.rotation_deadline(),
            self.op.as_ref().and_then(|op| op.deadline()),
            self.pool_deadline(),
            self.refresh_deadline(),
            self.relay_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Health ticks counted so far.
    pub fn health_ticks(&self) -> u64 {
        self.health_ticks
    }

    /// True while a runtime operation is in flight.
    pub fn is_busy(&self) -> bool {
        self.op.is_some()
    }

    /// True once shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// The active session, if any.
    pub fn session(&self) -> Option<&SessionInfo> {
        self.session.as_ref().map(|s| &s.info)
    }

    /// Cores started and not yet exited: (session cores, batch cores, pool cores).
    pub fn live_cores(&self) -> (usize, usize, usize) {
        let count = |role: CoreRole| self.cores.values().filter(|r| **r == role).count();
        (
            count(CoreRole::Session),
            count(CoreRole::Batch),
            count(CoreRole::Pool),
        )
    }

    /// Front mode: the route last emitted.
    pub fn route(&self) -> &[RouteTarget] {
        &self.route
    }

    /// Front mode: pool cores draining, with their deadlines.
    pub fn draining(&self) -> &BTreeMap<CoreId, u64> {
        &self.draining
    }

    fn fresh(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id - 1
    }

    fn emit(&mut self, effect: Effect) {
        let ended = match &effect {
            Effect::EndSession { session_id, reason } => Some((*session_id, reason.clone())),
            _ => None,
        };
        self.effects.push_back(effect);
        if let Some((session_id, reason)) = ended {
            self.note_session_ended(session_id, &reason);
        }
    }

    fn log(&mut self, line: String) {
        self.emit(Effect::Log(line));
    }

    /// Shutdown waits for the operation in flight, then stops the session, then is announced
    /// (after every reply it follows).
    fn advance_shutdown(&mut self, now: Now) {
        if !self.shutting_down || self.shutdown_announced || self.op.is_some() {
            return;
        }
        let draining: Vec<CoreId> = self.draining.keys().copied().collect();
        for core in draining {
            self.retire_now(core);
        }
        if self.session.is_some() {
            self.launch(now, None, RawId::NONE, ops::Job::disconnect());
            // A session whose core already exited ends at once: nothing else would come to
            // announce the shutdown.
            if self.op.is_some() {
                return;
            }
        }
        if !self.cores.is_empty() {
            // Drained pool cores were stopped above; their exits come before the announcement,
            // so that none outlives the daemon before its SIGKILL.
            return;
        }
        self.shutdown_announced = true;
        self.emit(Effect::Shutdown);
    }

    /// The rules every transition keeps (checked in debug builds and by the simulation).
    fn check_invariants(&self) {
        let (sessions, batches, pools) = self.live_cores();
        debug_assert!(sessions <= 1, "{sessions} session cores alive");
        debug_assert!(batches <= 1, "{batches} batch cores alive");
        // Stopped pool cores count until they exited; those still draining are bounded.
        debug_assert!(
            self.draining.len() <= pool::DRAINING_MAX,
            "{} pool cores draining",
            self.draining.len()
        );
        debug_assert!(
            self.config.front || pools == 0,
            "a pool core in direct mode"
        );
        debug_assert!(
            self.session.as_ref().is_none_or(|s| !s.pid_running
                || matches!(
                    self.cores.get(&s.core),
                    Some(CoreRole::Session | CoreRole::Pool)
                )),
            "the session's core is not tracked"
        );
        debug_assert!(
            self.pool
                .as_ref()
                .is_none_or(|p| !self.draining.contains_key(&p.core)),
            "the routed pool core drains"
        );
        debug_assert!(
            !self.shutdown_announced || (self.session.is_none() && self.op.is_none()),
            "shutdown with a session or an operation"
        );
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
            Ok(crate::ipc::protocol::Request::Subscribe { events }) => {
                // The reactor reads nothing more on a connection that sent subscribe: a refusal
                // closes it, and the client subscribes again on a fresh one.
                let reply = self.subscribe(now, conn, &events);
                let refused = !matches!(reply, Reply::Subscribed(_));
                (reply, refused)
            }
            Ok(request) if request.is_runtime_operation() => {
                match self.start_runtime_request(now, conn, id, request) {
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
            // The executor reads the file and sends `Input::Reload` in the request's place.
            Request::DaemonReload => error(
                Code::Internal,
                "daemon_reload reached the supervisor without its settings; this is a bug".into(),
            ),
            Request::RuntimeConnect { .. }
            | Request::RuntimeReplace { .. }
            | Request::RuntimeDisconnect
            | Request::ConfigTest { .. } => {
                unreachable!("runtime operations are started, not answered")
            }
            Request::Subscribe { .. } => unreachable!("subscribe is answered with its connection"),
        }
    }

    fn on_timer(&mut self, now: Now) {
        self.step_op(now, &Input::Timer);
        if self.shutting_down {
            return;
        }
        let mut tick = false;
        while now.monotonic_ms >= self.next_health_ms {
            self.health_ticks += 1;
            self.next_health_ms += self.config.health_interval_ms;
            tick = true;
        }
        if tick && !self.config.front {
            // In front mode the pool's member probes watch the active member too.
            self.start_health_probe();
        }
        self.pool_timers(now);
        self.rotation_timers(now);
        self.refresh_timer(now);
        self.relay_timer(now);
    }

    /// A completion from the executor: the operation in flight hears it first; what it does not
    /// claim concerns the session (an exit, a health probe) or nobody (a late probe of a batch
    /// that was already decided).
    fn on_completion(&mut self, now: Now, input: Input) {
        if let Input::Inspected {
            configs: Ok(checks),
            ..
        } = &input
        {
            for check in checks {
                self.histories.insert(check.config_id, check.history);
            }
        }
        let mut lost = None;
        match &input {
            Input::CoreExited { core, .. } => {
                self.cores.remove(core);
                self.draining.remove(core);
                if self.pool.as_ref().is_some_and(|p| p.core == *core) {
                    // Nothing is left to route to; the session's exit handling rebuilds.
                    lost = self.pool.take();
                    self.abort_pool_switch(now, *core);
                }
            }
            Input::CoreFailed {
                core,
                failure: StartFailure::Refused(_),
            } => {
                self.cores.remove(core);
            }
            _ => {}
        }
        if self.step_op(now, &input) {
            return;
        }
        match input {
            Input::CoreExited { core, how, .. } => {
                self.on_session_core_exited(now, core, how, lost)
            }
            Input::ProbeDone { probe, result } if self.health_probe == Some(probe) => {
                self.health_probe = None;
                self.on_health_probe_done(now, result);
            }
            Input::ProbeDone { probe, result } => {
                self.on_member_probe(now, probe, &result);
            }
            // A row written for an operation that ended meanwhile (its core exited): nothing
            // runs on it.
            Input::SessionBegun {
                session: Ok(info), ..
            } if self.session.as_ref().is_none_or(|s| s.info.id != info.id) => {
                self.emit(Effect::EndSession {
                    session_id: info.id,
                    reason: "failed".into(),
                });
            }
            _ => {}
        }
    }

    fn reply(&mut self, conn: ConnId, id: RawId, reply: Reply, close_after: bool) {
        if let Some(op) = self.op.as_mut().filter(|op| op.conn == Some(conn)) {
            if op.conn_open {
                op.held.push_back((id, reply, close_after));
            }
            return;
        }
        self.push_reply(conn, id, reply, close_after);
    }

    fn push_reply(&mut self, conn: ConnId, id: RawId, reply: Reply, close_after: bool) {
        self.emit(Effect::Reply {
            conn,
            id,
            reply,
            close_after,
        });
    }

    /// Records a failed test of `config_id`.
    fn mark_failed(&mut self, now: Now, config_id: i64) {
        self.failed_at.insert(config_id, now.monotonic_ms);
    }

    /// Records test results: in the supervisor's histories at once, in the store by the executor.
    fn record_tests(&mut self, source: TestSource, results: Vec<TestRecord>) {
        if results.is_empty() {
            return;
        }
        let now = self.events.now;
        for r in &results {
            let was = self.quarantined(now, r.config_id);
            let history = self.histories.entry(r.config_id).or_default();
            quarantine::record(history, r.at, r.ok);
            let change = match (was, self.quarantined(now, r.config_id)) {
                (false, true) => "quarantined",
                (true, false) => "released",
                _ => "tested",
            };
            self.publish_config(Some(r.config_id), change);
        }
        self.emit(Effect::RecordTests { source, results });
    }

    /// True while `config_id` is quarantined (see [`quarantine`]).
    fn quarantined(&self, now: Now, config_id: i64) -> bool {
        self.histories.get(&config_id).is_some_and(|h| {
            quarantine::is_quarantined(
                h,
                self.config.strikes,
                self.config.quarantine_secs,
                now.unix_secs,
            )
        })
    }

    /// Why a rotation of `trigger` passes over `config_id`, if it does.
    fn skip_reason(&self, now: Now, trigger: Trigger, config_id: i64) -> Option<String> {
        let history = self.histories.get(&config_id)?;
        quarantine::skip_reason(
            trigger,
            history,
            self.config.strikes,
            self.config.quarantine_secs,
            now.unix_secs,
        )
    }

    /// True when `config_id` failed a test within [`FAILED_CANDIDATE_HOLD_MS`].
    fn failed_recently(&self, now: Now, config_id: i64) -> bool {
        self.failed_at
            .get(&config_id)
            .is_some_and(|at| now.monotonic_ms.saturating_sub(*at) < FAILED_CANDIDATE_HOLD_MS)
    }
}
