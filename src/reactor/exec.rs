//! The executor's front door: the one place the supervisor is fed ([`Reactor::pump`]), and the
//! mapping of each [`Effect`] onto a mechanism. Completions never call the supervisor directly;
//! they queue an [`Input`], so an effect that finishes at once (an inspect, a refused start) is
//! heard after the effects before it, never from inside them.

use crate::store::NewRotationEvent;
use crate::supervisor::{trigger_name, Effect, InspectId, Now, Selection};

use super::deadlines::Due;
use super::detect::Parked;
use super::probes::Owner;
use super::Reactor;

/// Rounds of inputs → effects → inputs in one pump. Each round is driven by effects that finish
/// synchronously, which the supervisor issues a handful at a time; this only catches a loop.
pub const PUMP_ROUNDS_MAX: usize = 1_024;

impl Reactor {
    /// Feeds every queued input to the supervisor and carries out what it asks, until both
    /// queues are empty (or the round limit: the rest waits for the next batch).
    pub(super) fn pump(&mut self, now: Now) {
        let ticks = self.sup.health_ticks();
        self.pump_rounds(now);
        // Before the turn's replies leave: a reply means its writes are recorded.
        self.commit_batch(now);
        if self.log_debug && self.sup.health_ticks() != ticks {
            eprintln!("xrat: health tick {}", self.sup.health_ticks());
        }
    }

    fn pump_rounds(&mut self, now: Now) {
        for _ in 0..PUMP_ROUNDS_MAX {
            while let Some(input) = self.inputs.pop_front() {
                self.sup.handle(now, input);
            }
            while let Some(effect) = self.sup.poll_effect() {
                self.execute(now, effect);
            }
            if self.inputs.is_empty() {
                return;
            }
        }
        eprintln!("xrat: {PUMP_ROUNDS_MAX} rounds of effects in one batch; the rest waits for the next one");
    }

    fn execute(&mut self, now: Now, effect: Effect) {
        match effect {
            Effect::Reply {
                conn,
                id,
                reply,
                close_after,
            } => {
                // Every write before the reply is committed first, so that the reply can say
                // whether it was recorded (its bytes leave after the pump in any case).
                self.commit_batch(now);
                let mut reply = reply;
                let message = self.annotate(&mut reply);
                self.annotate_front(&mut reply);
                self.annotate_name(now, &mut reply);
                self.write_reply(conn, &id, &reply, message.as_deref(), close_after);
                if let crate::supervisor::Reply::Subscribed(subscribed) = &reply {
                    self.start_subscriber(now, conn, &subscribed.categories);
                }
            }
            // Not a commit point: what it writes to subscribers leaves after the pump's commit.
            Effect::Publish(event) => self.publish(now, event),
            Effect::SampleRelay => {
                let counters = self.front.counters.clone();
                self.inputs
                    .push_back(crate::supervisor::Input::RelaySampled { counters });
            }
            Effect::Inspect { inspect, selection } => self.inspect(now, inspect, selection),
            Effect::StartCore {
                core,
                spec,
                ready_timeout_ms,
            } => self.with_cores(now, Parked::Start(core, spec, ready_timeout_ms)),
            Effect::StopCore { core, grace_ms } => self.stop_core(now, core, grace_ms),
            Effect::Probe {
                probe,
                addr,
                kind,
                timeout_ms,
            } => {
                let target = match kind {
                    crate::supervisor::ProbeKind::Http => self.probes.target().clone(),
                    crate::supervisor::ProbeKind::HttpTo(target) => (*target).clone(),
                };
                let owner = Owner::Supervisor(probe);
                self.start_probe(now, addr, Some(target), owner, timeout_ms)
            }
            Effect::EndSession { session_id, reason } => self.end_session(now, session_id, reason),
            Effect::Persist(event) => {
                let row = NewRotationEvent {
                    at: event.at,
                    trigger: trigger_name(event.trigger).to_string(),
                    from_config_id: event.from_config_id,
                    to_config_id: event.to_config_id,
                    result: event.result.name().to_string(),
                    detail: event.detail,
                };
                self.record(now, super::journal::Write::Event(row));
            }
            Effect::RecordTests { source, results } => {
                let source = match source {
                    crate::supervisor::TestSource::Rotation => "rotation",
                    crate::supervisor::TestSource::Request => "daemon",
                };
                let rows = results.iter().map(|r| r.record(source)).collect();
                self.record(now, super::journal::Write::Tests(rows));
            }
            Effect::Route { targets } => {
                self.set_route(now, targets);
                self.route_changed(now);
            }
            Effect::Reroute { core, config_id } => self.reroute(core, config_id),
            Effect::HoldFront { until_ms } => self.hold_front(now, until_ms),
            Effect::BeginSession { core, config_id } => {
                self.begin_pool_session(now, core, config_id)
            }
            Effect::RefreshSubscriptions {
                refresh,
                timeout_ms,
            } => self.start_refresh(now, refresh, timeout_ms),
            Effect::Log(line) => log_line(&line),
            Effect::Shutdown => {
                self.begin_shutdown(now);
                // Held clients are closed: nothing will serve them.
                self.hold_expired(now);
            }
        }
    }

    /// `Effect::Inspect`: configs that cannot be found are answered without the core; the rest
    /// wait for it.
    fn inspect(&mut self, now: Now, inspect: InspectId, selection: Selection) {
        let needs_core = match self.env.select(selection) {
            Ok(selected) => selected.iter().any(|(_, outbound)| outbound.is_ok()),
            Err(_) => false,
        };
        if needs_core {
            self.with_cores(now, Parked::Inspect(inspect, selection));
        } else {
            let unused = Err(crate::supervisor::Rejection::new(
                crate::ipc::protocol::Code::Internal,
                "no core needed",
            ));
            self.inspect_with(inspect, selection, &unused);
        }
    }

    /// Answers an inspect once the core is known.
    pub(super) fn inspect_with(
        &mut self,
        inspect: InspectId,
        selection: Selection,
        core: &super::detect::Installed,
    ) {
        self.prepared.clear();
        let configs = self.env.select(selection).map(|selected| {
            let (checks, renders) = self.env.checks(selected, core);
            self.prepared.extend(renders);
            checks
        });
        self.inputs
            .push_back(crate::supervisor::Input::Inspected { inspect, configs });
    }

    /// Ends a session's row and removes its config (it holds credentials).
    fn end_session(&mut self, now: Now, session_id: i64, reason: String) {
        let write = super::journal::Write::EndSession {
            session_id,
            at: now.unix_secs,
            reason,
        };
        self.record(now, write);
        // Only a session core's own file, named by the session: a pool session's row names its
        // pool core's config, which the other members still use; it goes when that core exits.
        let path = self
            .env
            .paths
            .runtime_dir()
            .join("sessions")
            .join(format!("{session_id}.json"));
        let _ = std::fs::remove_file(path);
    }

    /// Carries out whatever fell due in the deadline table.
    pub(super) fn run_deadlines(&mut self, now: Now) {
        for due in self.deadlines.take_due(now.monotonic_ms) {
            match due {
                Due::Probe(index, serial) => self.expire_probe(index, serial),
                Due::ReadyRetry(core) => self.advance_ready(now, core),
                Due::ReadyExpired(core) => self.ready_expired(core),
                Due::Escalate(core) => self.escalate(core),
                Due::Detect(serial) => self.detect_expired(now, serial),
                Due::Refresh(refresh) => self.refresh_expired(refresh),
                Due::Conn(slot, serial) => self.conn_timer(now, slot, serial),
                Due::RejectDrain(index, serial) => self.reject_drained(index, serial),
                Due::AcceptResume => {
                    self.resume_accept();
                    self.front_resume_accept();
                }
                Due::Relay(slot, serial) => self.relay_timer_due(slot, serial),
                Due::StoreRetry => self.retry_writes(now),
                Due::HoldEnd => self.hold_expired(now),
            }
        }
    }
}

/// Writes `line` to the log (stderr) in one `write`: `eprintln!` makes one per piece of its
/// format, and a line in one write is never split by another process writing to the same file.
fn log_line(line: &str) {
    use std::io::Write as _;
    let mut text = String::with_capacity(line.len() + 7);
    text.push_str("xrat: ");
    text.push_str(line);
    text.push('\n');
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
