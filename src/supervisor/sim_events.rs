//! The simulation's model of the `subscribe` events (issue 13): what the supervisor publishes
//! must be numbered 1, 2, 3, … stamped with the time of the input, and must pair up (every
//! rotation_started has its rotation_finished before the next one starts; every session_started
//! has one session_ended, after that row's `EndSession`, and none ends unannounced). Random
//! clients subscribe; relay samples are answered with counters that sometimes change.

use std::collections::{BTreeMap, BTreeSet};

use crate::ipc::events::{Category, Event, EventBody, CATEGORIES};
use crate::ipc::protocol::{RelayView, Request};

use super::sim_world::World;
use super::Input;

/// What the model remembers of the events seen.
#[derive(Debug, Default)]
pub(super) struct EventModel {
    pub last_seq: u64,
    /// The open rotation: (trigger, from).
    rotation: Option<(String, Option<i64>)>,
    /// Announced sessions not yet ended: id → config id.
    open_sessions: BTreeMap<i64, i64>,
    announced: BTreeSet<i64>,
    /// The supervisor asked for the relay counters in this step.
    pub relay_asked: bool,
    relay: RelayView,
    last_relay_ms: Option<u64>,
    pub published: u64,
}

/// A random `subscribe` request.
pub(super) fn random_subscribe(rng: &mut super::sim::Rng) -> Request {
    let events = CATEGORIES
        .into_iter()
        .filter(|_| rng.below(3) == 0)
        .collect::<Vec<Category>>();
    Request::Subscribe { events }
}

impl World {
    /// One `Effect::Publish`.
    pub(super) fn observe_event(&mut self, event: Event) {
        self.ev.published += 1;
        let seq = self.ev.last_seq;
        self.check(event.seq == seq + 1, || {
            format!("event seq {} after {seq}: {event:?}", event.seq)
        });
        self.ev.last_seq = event.seq;
        self.check(event.at == self.now.unix_ms, || {
            format!(
                "event at {} while the input came at {}",
                event.at, self.now.unix_ms
            )
        });
        match event.body {
            EventBody::RotationStarted { trigger, from } => {
                self.check(self.ev.rotation.is_none(), || {
                    format!("rotation_started while {:?} is open", self.ev.rotation)
                });
                self.ev.rotation = Some((trigger, from));
            }
            EventBody::RotationFinished {
                trigger, from, to, ..
            } => {
                let open = self.ev.rotation.take();
                self.check(open == Some((trigger.clone(), from)), || {
                    format!(
                        "rotation_finished ({trigger}, from {from:?}, to {to:?}) after {open:?}"
                    )
                });
            }
            EventBody::SessionStarted {
                session_id,
                config_id,
                ..
            } => self.session_started(session_id, config_id),
            EventBody::SessionEnded {
                session_id,
                config_id,
                ..
            } => {
                let open = self.ev.open_sessions.remove(&session_id);
                self.check(open == Some(config_id), || {
                    format!("session_ended {session_id} (config {config_id}) was {open:?}")
                });
                self.check(self.ended_sessions.contains_key(&session_id), || {
                    format!("session_ended {session_id} before its row ended")
                });
            }
            EventBody::RelayCounters(counters) => {
                let now = self.now.monotonic_ms;
                let last = self.ev.last_relay_ms.replace(now);
                self.check(self.cfg.front, || "relay_counters in direct mode".into());
                self.check(
                    last.is_none_or(|t| now >= t + super::RELAY_SAMPLE_MS),
                    || format!("relay_counters at {now} ms after {last:?}"),
                );
                self.check(counters == self.ev.relay, || {
                    "relay_counters changed".into()
                });
            }
            EventBody::PoolChanged { .. } => {
                self.check(self.cfg.front, || "pool_changed in direct mode".into());
            }
            EventBody::Lagged { .. } => self.fail("the supervisor published lagged"),
            EventBody::HealthChecked { .. } | EventBody::ConfigChanged { .. } => {}
        }
    }

    fn session_started(&mut self, session_id: i64, config_id: i64) {
        let first = self.ev.announced.insert(session_id);
        self.check(first, || format!("session_started {session_id} twice"));
        let current = self.sup.session().map(|s| (s.id, s.config_id));
        self.check(current == Some((session_id, config_id)), || {
            format!("session_started {session_id} while the session is {current:?}")
        });
        self.check(!self.ended_sessions.contains_key(&session_id), || {
            format!("session_started {session_id} after its row ended")
        });
        self.ev.open_sessions.insert(session_id, config_id);
    }

    /// After every step: the session in force was announced, and a rotation is open only while
    /// an operation runs.
    pub(super) fn check_events_step(&mut self) {
        if let Some(s) = self.sup.session() {
            let id = s.id;
            self.check(self.ev.announced.contains(&id), || {
                format!("session {id} runs without session_started")
            });
        }
        self.check(self.ev.rotation.is_none() || self.sup.is_busy(), || {
            format!("rotation {:?} open with no operation", self.ev.rotation)
        });
        self.check(self.sup.last_seq() == self.ev.last_seq, || {
            "the supervisor's seq disagrees with the events seen".into()
        });
    }

    /// At `Effect::Shutdown`: everything announced has ended.
    pub(super) fn check_events_at_shutdown(&mut self) {
        self.check(self.ev.rotation.is_none(), || {
            format!("shutdown with rotation {:?} open", self.ev.rotation)
        });
        self.check(self.ev.open_sessions.is_empty(), || {
            format!(
                "shutdown with sessions {:?} never ended",
                self.ev.open_sessions
            )
        });
    }

    /// Answers `Effect::SampleRelay` (after the effects of the step that asked).
    pub(super) fn answer_relay_sample(&mut self) {
        if !std::mem::take(&mut self.ev.relay_asked) {
            return;
        }
        if self.rng.below(3) != 0 {
            self.ev.relay.bytes_up += 1 + self.rng.below(10_000);
            self.ev.relay.connections_total += self.rng.below(2);
        }
        let counters = self.ev.relay.clone();
        self.deliver(Input::RelaySampled { counters });
    }
}
