//! Events for `subscribe` (issue 13). The supervisor makes them, because it is where things
//! happen and because numbering them here keeps `seq` deterministic: the seeded simulation checks
//! that seq grows by exactly 1, that a rotation_finished follows every rotation_started, and that
//! session_started and session_ended pair up. The executor only writes the lines.
//!
//! Most events are read off transitions the supervisor already makes, at one place each: a
//! session row ending ([`Effect::EndSession`], seen in `emit`), a new session in force (looked
//! at after every input), an operation that is a rotation beginning and ending (`launch`,
//! `finish_op`). The relay counters live in the executor; the supervisor owns their cadence (once
//! a second while a relay subscriber exists) and asks for them with [`Effect::SampleRelay`], so
//! their seq comes from the same counter as every other event.

use std::collections::BTreeMap;

use crate::ipc::events::{Category, CategorySet, Event, EventBody, SubscribePayload};
use crate::ipc::protocol::{Code, PoolMemberView, RelayView, Trigger};

use super::{error, trigger_name, ConnId, Effect, Now, Reply, Supervisor};

/// The relay counters are published at most this often.
pub const RELAY_SAMPLE_MS: u64 = 1_000;

/// The rotation between its rotation_started and its rotation_finished.
#[derive(Debug, Clone, Copy)]
struct OpenRotation {
    trigger: Trigger,
    from: Option<i64>,
    started_ms: u64,
}

/// What the supervisor keeps for its events.
#[derive(Debug, Default)]
pub(super) struct Events {
    /// The last seq given (0: none yet).
    pub seq: u64,
    /// The time of the input being handled (events carry its wall clock).
    pub now: Now,
    /// Sessions announced by session_started and not yet ended: id → config id.
    open_sessions: BTreeMap<i64, i64>,
    /// The highest session id announced (rows only grow, so a lower one is an old session).
    announced_max: i64,
    rotation: Option<OpenRotation>,
    /// Connections that subscribed, with what they asked for.
    subscribers: BTreeMap<ConnId, CategorySet>,
    /// The pool as last published (or shown in a snapshot); None while nobody subscribes.
    last_pool: Option<Vec<PoolMemberView>>,
    /// When the relay counters are next sampled; None while no relay subscriber exists.
    next_relay_ms: Option<u64>,
    last_relay: Option<RelayView>,
}

impl Events {
    /// Nothing published yet, at `now`.
    pub fn new(now: Now) -> Events {
        Events {
            now,
            ..Events::default()
        }
    }
}

impl Supervisor {
    /// Numbers and emits one event.
    pub(super) fn publish(&mut self, body: EventBody) {
        self.events.seq += 1;
        let event = Event {
            seq: self.events.seq,
            at: self.events.now.unix_ms,
            body,
        };
        self.effects.push_back(Effect::Publish(event));
    }

    /// The last seq given.
    pub fn last_seq(&self) -> u64 {
        self.events.seq
    }

    /// `subscribe` on `conn`: the snapshot, and `conn` hears every event from now on.
    pub(super) fn subscribe(&mut self, now: Now, conn: ConnId, events: &[Category]) -> Reply {
        if self.op.as_ref().is_some_and(|op| op.conn == Some(conn)) {
            return error(
                Code::Conflict,
                "this connection waits for a runtime operation; send subscribe on a connection of its own".into(),
            );
        }
        let set = CategorySet::of(events);
        self.events.subscribers.insert(conn, set);
        if set.contains(Category::Relay) && self.config.front && self.events.next_relay_ms.is_none()
        {
            self.events.next_relay_ms = Some(now.monotonic_ms + RELAY_SAMPLE_MS);
        }
        let pool = self.pool_view();
        self.events.last_pool = Some(pool);
        Reply::Subscribed(Box::new(SubscribePayload {
            categories: set.to_vec(),
            seq: self.events.seq,
            queue_max: self.config.subscriber_queue_max,
            runtime_status: self.runtime_status(),
            proxy_status: self.proxy_status(now),
        }))
    }

    /// A connection closed: it no longer subscribes.
    pub(super) fn unsubscribe(&mut self, conn: ConnId) {
        if self.events.subscribers.remove(&conn).is_none() {
            return;
        }
        if self.events.subscribers.is_empty() {
            self.events.last_pool = None;
        }
        if !self
            .events
            .subscribers
            .values()
            .any(|s| s.contains(Category::Relay))
        {
            self.events.next_relay_ms = None;
        }
    }

    /// When the relay counters are next due.
    pub(super) fn relay_deadline(&self) -> Option<u64> {
        self.events.next_relay_ms
    }

    /// The timer: ask for the relay counters when they are due.
    pub(super) fn relay_timer(&mut self, now: Now) {
        let Some(due) = self.events.next_relay_ms.filter(|d| now.monotonic_ms >= *d) else {
            return;
        };
        // From the moment it was due: a late timer does not shift the cadence, but one that
        // is a whole period late does not fire twice either.
        self.events.next_relay_ms = Some((due + RELAY_SAMPLE_MS).max(now.monotonic_ms + 1));
        self.effects.push_back(Effect::SampleRelay);
    }

    /// The counters asked for: published when they changed.
    pub(super) fn on_relay_sampled(&mut self, counters: RelayView) {
        if self.events.next_relay_ms.is_none() || self.events.last_relay.as_ref() == Some(&counters)
        {
            return;
        }
        self.events.last_relay = Some(counters.clone());
        self.publish(EventBody::RelayCounters(counters));
    }

    /// A session row ended: session_ended, when it was announced.
    pub(super) fn note_session_ended(&mut self, session_id: i64, reason: &str) {
        if let Some(config_id) = self.events.open_sessions.remove(&session_id) {
            self.publish(EventBody::SessionEnded {
                session_id,
                config_id,
                reason: reason.to_string(),
            });
        }
    }

    /// After every input: a new session in force is announced, and a changed pool is published
    /// while someone subscribes.
    pub(super) fn publish_changes(&mut self) {
        if let Some(info) = self
            .session
            .as_ref()
            .map(|s| &s.info)
            .filter(|info| info.id > self.events.announced_max)
        {
            let body = EventBody::SessionStarted {
                session_id: info.id,
                config_id: info.config_id,
                core: info.core.clone(),
                pid: info.pid,
                socks_addr: info.socks_addr.to_string(),
                http_addr: info.http_addr.map(|a| a.to_string()),
            };
            self.events.announced_max = info.id;
            self.events.open_sessions.insert(info.id, info.config_id);
            self.publish(body);
        }
        if self.events.last_pool.is_some() && self.config.front {
            let pool = self.pool_view();
            if self.events.last_pool.as_ref() != Some(&pool) {
                self.events.last_pool = Some(pool.clone());
                self.publish(EventBody::PoolChanged { members: pool });
            }
        }
    }

    /// A probe of the active session was taken into its health.
    pub(super) fn publish_health(&mut self) {
        let Some(s) = self.session.as_ref() else {
            return;
        };
        let ok = s.health.consecutive_failures == 0;
        let body = EventBody::HealthChecked {
            session_id: s.info.id,
            config_id: s.info.config_id,
            ok,
            latency_ms: if ok { s.health.last_latency_ms } else { None },
            error: s.health.last_error.clone(),
            consecutive_failures: s.health.consecutive_failures,
        };
        self.publish(body);
    }

    /// An operation begins; rotation_started when it is a rotation.
    pub(super) fn rotation_began(&mut self, now: Now, trigger: Trigger, from: Option<i64>) {
        debug_assert!(self.events.rotation.is_none(), "two rotations open");
        self.events.rotation = Some(OpenRotation {
            trigger,
            from,
            started_ms: now.monotonic_ms,
        });
        self.publish(EventBody::RotationStarted {
            trigger: trigger_name(trigger).to_string(),
            from,
        });
    }

    /// An operation ended with `reply`; rotation_finished when it was a rotation.
    pub(super) fn rotation_ended(&mut self, now: Now, reply: &Reply) {
        let Some(open) = self.events.rotation.take() else {
            return;
        };
        // The session the rotation put in force is announced before the rotation's end.
        self.publish_changes();
        let (to, result, tested, detail) = match reply {
            Reply::Replaced(p) => {
                let to = (p.result != "failed").then_some(p.new_config_id).flatten();
                (to, p.result.clone(), p.tested_candidates, p.detail.clone())
            }
            Reply::Error { message, .. } => (None, "failed".to_string(), 0, message.clone()),
            other => (None, "failed".to_string(), 0, format!("{other:?}")),
        };
        self.publish(EventBody::RotationFinished {
            trigger: trigger_name(open.trigger).to_string(),
            from: open.from,
            to,
            result,
            tested,
            elapsed_ms: now.monotonic_ms.saturating_sub(open.started_ms),
            detail,
        });
    }

    /// A config changed in the store (or all of them: `config_id` None).
    pub(super) fn publish_config(&mut self, config_id: Option<i64>, change: &str) {
        self.publish(EventBody::ConfigChanged {
            config_id,
            change: change.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{at, config, connect, feed, only_reply, request, session};
    use super::*;
    use crate::ipc::protocol::Request;
    use crate::supervisor::{Input, SupervisorConfig};

    fn events(effects: &[Effect]) -> Vec<&Event> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Publish(event) => Some(event),
                _ => None,
            })
            .collect()
    }

    fn subscribe(
        s: &mut Supervisor,
        ms: u64,
        conn: u64,
        events: Vec<Category>,
    ) -> SubscribePayload {
        match only_reply(&request(s, ms, conn, 1, Request::Subscribe { events })) {
            Reply::Subscribed(p) => (**p).clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_connect_is_announced_after_the_snapshot_seq() {
        let mut s = Supervisor::new(config(), at(0), None);
        let snapshot = subscribe(&mut s, 10, 1, vec![]);
        assert_eq!(snapshot.seq, 0);
        assert_eq!(snapshot.categories.len(), 6);
        assert_eq!(snapshot.runtime_status.runtime_status, "idle");
        connect(&mut s, 100, 3, 9);
        // The connect's effects were drained by the helper: session_started was seq 1.
        assert_eq!(s.last_seq(), 1);
        let later = subscribe(&mut s, 200, 2, vec![Category::Session]);
        assert_eq!(later.seq, 1);
        assert_eq!(later.runtime_status.session_id, Some(9));
    }

    #[test]
    fn an_adopted_session_is_announced_once_and_ends_once() {
        let mut s = Supervisor::new(config(), at(0), Some(session(4, 2)));
        let first = feed(&mut s, 5, Input::Timer);
        let first = events(&first);
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(first[0].seq, 1);
        assert_eq!(first[0].at, at(5).unix_ms);
        assert!(matches!(
            first[0].body,
            EventBody::SessionStarted {
                session_id: 4,
                config_id: 2,
                ..
            }
        ));
        assert!(events(&feed(&mut s, 6, Input::Timer)).is_empty());
        s.note_session_ended(4, "disconnected");
        s.note_session_ended(4, "disconnected");
        let ended = events(&super::super::tests::drain(&mut s)).len();
        assert_eq!(ended, 1, "one session_ended for two row ends");
    }

    #[test]
    fn relay_counters_are_sampled_each_second_only_for_relay_subscribers() {
        let cfg = SupervisorConfig {
            front: true,
            ..config()
        };
        let mut s = Supervisor::new(cfg, at(0), None);
        subscribe(&mut s, 0, 1, vec![Category::Session]);
        assert_eq!(s.relay_deadline(), None, "no relay subscriber");
        subscribe(&mut s, 0, 2, vec![Category::Relay]);
        assert_eq!(s.relay_deadline(), Some(RELAY_SAMPLE_MS));
        let asks = |effects: &[Effect]| {
            effects
                .iter()
                .filter(|e| **e == Effect::SampleRelay)
                .count()
        };
        assert_eq!(asks(&feed(&mut s, 999, Input::Timer)), 0);
        assert_eq!(asks(&feed(&mut s, 1_000, Input::Timer)), 1);
        let counters = RelayView {
            bytes_up: 10,
            ..RelayView::default()
        };
        let sampled = |c: &RelayView| Input::RelaySampled {
            counters: c.clone(),
        };
        assert_eq!(events(&feed(&mut s, 1_001, sampled(&counters))).len(), 1);
        // Unchanged counters are not published again.
        assert_eq!(asks(&feed(&mut s, 2_000, Input::Timer)), 1);
        assert!(events(&feed(&mut s, 2_001, sampled(&counters))).is_empty());
        // The relay subscriber leaves: no more sampling.
        feed(&mut s, 2_500, Input::ConnectionClosed { conn: ConnId(2) });
        assert_eq!(s.relay_deadline(), None);
        assert_eq!(asks(&feed(&mut s, 3_000, Input::Timer)), 0);
    }
}
