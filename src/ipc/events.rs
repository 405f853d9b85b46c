//! The `subscribe` stream (issue 13): event categories, the subscribe answer, and the event lines
//! that follow it. The supervisor makes every event and numbers it (`seq`, daemon-wide); the
//! reactor only writes the lines.

use serde::{Deserialize, Serialize};

use super::protocol::{PoolMemberView, ProxyStatusPayload, RelayView, RuntimeStatusPayload};

/// What a subscriber may ask for, in wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// session_started, session_ended.
    Session,
    /// health_checked.
    Health,
    /// rotation_started, rotation_finished.
    Rotation,
    /// config_changed.
    Config,
    /// pool_changed (front mode).
    Pool,
    /// relay_counters (front mode).
    Relay,
}

/// Every category, in wire order.
pub const CATEGORIES: [Category; 6] = [
    Category::Session,
    Category::Health,
    Category::Rotation,
    Category::Config,
    Category::Pool,
    Category::Relay,
];

impl Category {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Category::Session => "session",
            Category::Health => "health",
            Category::Rotation => "rotation",
            Category::Config => "config",
            Category::Pool => "pool",
            Category::Relay => "relay",
        }
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> Option<Category> {
        CATEGORIES.into_iter().find(|c| c.name() == name)
    }

    /// This category's bit in a [`CategorySet`].
    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The valid names, for messages.
    pub fn names() -> String {
        CATEGORIES.map(Category::name).join(", ")
    }
}

/// A set of categories, as a bit mask (cheap to test for every event and subscriber).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CategorySet(u8);

impl CategorySet {
    /// What `categories` names; every category when it is empty (the protocol's rule).
    pub fn of(categories: &[Category]) -> CategorySet {
        if categories.is_empty() {
            return CategorySet(CATEGORIES.iter().fold(0, |m, c| m | c.bit()));
        }
        CategorySet(categories.iter().fold(0, |m, c| m | c.bit()))
    }

    /// True when `category` is in the set.
    pub fn contains(self, category: Category) -> bool {
        self.0 & category.bit() != 0
    }

    /// The members, in wire order.
    pub fn to_vec(self) -> Vec<Category> {
        CATEGORIES
            .into_iter()
            .filter(|c| self.contains(*c))
            .collect()
    }
}

/// Payload of the `subscribe` answer: what was subscribed and the state the events follow from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscribePayload {
    /// The categories subscribed, expanded.
    pub categories: Vec<Category>,
    /// The seq of the last event published before this snapshot (0 when none was); the first
    /// streamed event has a greater one.
    pub seq: u64,
    /// `daemon.subscriber_queue_max`: lines the daemon holds for a slow subscriber before
    /// `lagged`.
    pub queue_max: u32,
    /// What `runtime_status` answers now.
    pub runtime_status: RuntimeStatusPayload,
    /// What `proxy_status` answers now.
    pub proxy_status: ProxyStatusPayload,
}

/// One event line: the daemon-wide sequence number, the time, and what happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Strictly increasing daemon-wide, from 1.
    pub seq: u64,
    /// Unix time in milliseconds.
    pub at: u64,
    /// The event's name and fields.
    #[serde(flatten)]
    pub body: EventBody,
}

/// What happened. Absent values are null, never omitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventBody {
    /// A session began.
    SessionStarted {
        /// Its row.
        session_id: i64,
        /// The config it runs.
        config_id: i64,
        /// Which core.
        core: String,
        /// The core's pid.
        pid: u32,
        /// SOCKS inbound, host:port.
        socks_addr: String,
        /// HTTP inbound, host:port.
        http_addr: Option<String>,
    },
    /// A session ended.
    SessionEnded {
        /// Its row.
        session_id: i64,
        /// The config it ran.
        config_id: i64,
        /// Why (replaced, rotated, disconnected, core_exited: …, shutdown).
        reason: String,
    },
    /// The active session was probed.
    HealthChecked {
        /// The session.
        session_id: i64,
        /// Its config.
        config_id: i64,
        /// Whether the probe passed.
        ok: bool,
        /// Its latency, when it passed.
        latency_ms: Option<u64>,
        /// What failed, when it did not.
        error: Option<String>,
        /// Failed probes in a row now.
        consecutive_failures: u32,
    },
    /// A rotation began.
    RotationStarted {
        /// manual, timer or health_check_failed.
        trigger: String,
        /// The config active before.
        from: Option<i64>,
    },
    /// A rotation ended (one follows every rotation_started).
    RotationFinished {
        /// manual, timer or health_check_failed.
        trigger: String,
        /// The config active before.
        from: Option<i64>,
        /// The config in force after; null when nothing runs.
        to: Option<i64>,
        /// switched, no_working_candidate, restored or failed.
        result: String,
        /// Candidates probed.
        tested: u32,
        /// From rotation_started to here.
        elapsed_ms: u64,
        /// What happened, in words.
        detail: String,
    },
    /// Stored configs changed.
    ConfigChanged {
        /// The config; null when many changed.
        config_id: Option<i64>,
        /// quarantined, released, tested, refreshed or reloaded.
        change: String,
    },
    /// The pool's members or their state changed (front mode).
    PoolChanged {
        /// As `runtime_status.pool`.
        members: Vec<PoolMemberView>,
    },
    /// The relay's counters, at most once a second while they change (front mode).
    RelayCounters(RelayView),
    /// The subscriber was too slow; the daemon closes it after this line.
    Lagged {
        /// Events not delivered.
        dropped: u64,
    },
}

impl EventBody {
    /// The category a subscriber asks for to get it; None for `lagged`, which everyone gets.
    pub fn category(&self) -> Option<Category> {
        Some(match self {
            EventBody::SessionStarted { .. } | EventBody::SessionEnded { .. } => Category::Session,
            EventBody::HealthChecked { .. } => Category::Health,
            EventBody::RotationStarted { .. } | EventBody::RotationFinished { .. } => {
                Category::Rotation
            }
            EventBody::ConfigChanged { .. } => Category::Config,
            EventBody::PoolChanged { .. } => Category::Pool,
            EventBody::RelayCounters(_) => Category::Relay,
            EventBody::Lagged { .. } => return None,
        })
    }

    /// The wire name.
    pub fn name(&self) -> &'static str {
        match self {
            EventBody::SessionStarted { .. } => "session_started",
            EventBody::SessionEnded { .. } => "session_ended",
            EventBody::HealthChecked { .. } => "health_checked",
            EventBody::RotationStarted { .. } => "rotation_started",
            EventBody::RotationFinished { .. } => "rotation_finished",
            EventBody::ConfigChanged { .. } => "config_changed",
            EventBody::PoolChanged { .. } => "pool_changed",
            EventBody::RelayCounters(_) => "relay_counters",
            EventBody::Lagged { .. } => "lagged",
        }
    }
}

impl Event {
    /// The line as the daemon writes it, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("an event serializes");
        line.push(b'\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_name_seq_at_and_nulls() {
        let event = Event {
            seq: 7,
            at: 1_700_000_000_123,
            body: EventBody::ConfigChanged {
                config_id: None,
                change: "reloaded".into(),
            },
        };
        let line = event.to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["event"], "config_changed");
        assert_eq!(value["seq"], 7);
        assert_eq!(value["at"], 1_700_000_000_123u64);
        assert!(value.as_object().unwrap().contains_key("config_id"));
        assert!(value["config_id"].is_null());
        let back: Event = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, event);
        let relay = Event {
            seq: 8,
            at: 1,
            body: EventBody::RelayCounters(RelayView {
                bytes_up: 5,
                ..RelayView::default()
            }),
        };
        let value: serde_json::Value = serde_json::from_slice(&relay.to_line()).unwrap();
        assert_eq!(value["event"], "relay_counters");
        assert_eq!(value["bytes_up"], 5);
    }

    #[test]
    fn empty_means_every_category() {
        assert_eq!(CategorySet::of(&[]).to_vec(), CATEGORIES.to_vec());
        let set = CategorySet::of(&[Category::Relay, Category::Session]);
        assert_eq!(set.to_vec(), vec![Category::Session, Category::Relay]);
        assert!(!set.contains(Category::Health));
        for c in CATEGORIES {
            assert_eq!(Category::from_name(c.name()), Some(c));
        }
        assert_eq!(Category::from_name("sessions"), None);
    }
}
