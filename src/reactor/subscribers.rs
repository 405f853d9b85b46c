//! `subscribe` connections (issue 13): the bounded queue of event lines each one holds, and the
//! writing of published events. The supervisor makes and numbers the events; this only delivers
//! them, within a bound per subscriber, so that a subscriber that does not read costs a known
//! amount of memory and never holds up anyone else (each connection keeps its one send in flight;
//! a full socket only leaves lines in that connection's queue).

use std::collections::VecDeque;
use std::rc::Rc;

use crate::ipc::events::{Category, CategorySet, Event, EventBody};
use crate::supervisor::{ConnId, Now};

use super::conn::{split_conn_id, Phase};
use super::Reactor;

/// Event lines moved from the queue into the connection's send buffer at a time: the lines in
/// that chunk count as being written, the queue's as held.
pub const SUBSCRIBER_CHUNK_BYTES: usize = 64 * 1024;
/// A subscriber that got `lagged` has this long to read it before it is closed anyway.
pub const LAGGED_FLUSH_MS: u64 = 5_000;

/// One subscriber's state.
#[derive(Debug)]
pub struct Subscriber {
    /// What it asked for.
    pub categories: CategorySet,
    queue: VecDeque<Rc<[u8]>>,
    queued_bytes: usize,
    /// `daemon.subscriber_queue_max` when it subscribed.
    max: usize,
    /// When it overflowed (monotonic ms): `lagged` is its last line.
    pub lagged_at: Option<u64>,
}

/// What [`Subscriber::offer`] did with a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Not for this subscriber (another category, or it already lagged).
    Skipped,
    /// Held for writing.
    Queued,
    /// The queue was full: it was emptied and `lagged` queued in its place.
    Lagged {
        /// Lines dropped, the offered one included.
        dropped: u64,
    },
}

impl Subscriber {
    /// A subscriber to `categories` holding at most `max` lines.
    pub fn new(categories: CategorySet, max: usize) -> Subscriber {
        Subscriber {
            categories,
            queue: VecDeque::new(),
            queued_bytes: 0,
            max: max.max(1),
            lagged_at: None,
        }
    }

    /// Lines held.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Bytes held.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Takes `line` (the encoding of `event`) if this subscriber wants it. On overflow the lines
    /// held are dropped rather than the newest alone: the subscriber is closed either way, and
    /// `lagged` then reaches it after at most one chunk instead of after `max` stale lines.
    /// `lagged` carries the seq of the line that did not fit, so seq still only grows on the
    /// wire.
    pub fn offer(&mut self, event: &Event, line: &Rc<[u8]>, now_ms: u64) -> Offer {
        let wanted = event
            .body
            .category()
            .is_none_or(|c| self.categories.contains(c));
        if self.lagged_at.is_some() || !wanted {
            return Offer::Skipped;
        }
        if self.queue.len() < self.max {
            self.queued_bytes += line.len();
            self.queue.push_back(line.clone());
            return Offer::Queued;
        }
        let dropped = self.queue.len() as u64 + 1;
        self.queue.clear();
        let lagged = Event {
            seq: event.seq,
            at: event.at,
            body: EventBody::Lagged { dropped },
        };
        let lagged: Rc<[u8]> = lagged.to_line().into();
        self.queued_bytes = lagged.len();
        self.queue.push_back(lagged);
        self.lagged_at = Some(now_ms);
        Offer::Lagged { dropped }
    }

    /// Moves held lines into `out` until it holds a chunk.
    pub fn refill(&mut self, out: &mut Vec<u8>) {
        while out.len() < SUBSCRIBER_CHUNK_BYTES {
            let Some(line) = self.queue.pop_front() else {
                return;
            };
            self.queued_bytes -= line.len();
            out.extend_from_slice(&line);
        }
    }
}

impl Reactor {
    /// The `subscribe` answer was written on `conn`: events follow it.
    pub(super) fn start_subscriber(&mut self, now: Now, conn: ConnId, categories: &[Category]) {
        let max = self.env.settings.daemon.subscriber_queue_max as usize;
        let (slot, serial) = split_conn_id(conn);
        let Some(c) = self.conns.get_mut(slot).filter(|c| c.serial == serial) else {
            return;
        };
        c.sub = Some(Box::new(Subscriber::new(CategorySet::of(categories), max)));
        // Exempt from the idle timeout: a quiet stream is not an idle client.
        self.arm_conn_timer(now, slot);
    }

    /// `Effect::Publish`: one encoding, queued on every open subscriber that wants it.
    pub(super) fn publish(&mut self, now: Now, event: Event) {
        let mut line: Option<Rc<[u8]>> = None;
        let mut lagged = Vec::new();
        for (slot, c) in self.conns.iter_mut() {
            let Some(sub) = c.sub.as_mut().filter(|_| c.phase == Phase::Open) else {
                continue;
            };
            let line = line.get_or_insert_with(|| event.to_line().into());
            match sub.offer(&event, line, now.monotonic_ms) {
                Offer::Skipped => continue,
                Offer::Queued => {}
                Offer::Lagged { dropped } => {
                    c.phase = Phase::Draining;
                    lagged.push((slot, dropped));
                }
            }
            sub.refill(&mut c.out);
            self.dirty.push(slot);
        }
        for (slot, dropped) in lagged {
            eprintln!(
                "xrat: a subscriber fell {dropped} event(s) behind (daemon.subscriber_queue_max); closing it"
            );
            self.arm_conn_timer(now, slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, body: EventBody) -> (Event, Rc<[u8]>) {
        let event = Event { seq, at: 9, body };
        let line = event.to_line().into();
        (event, line)
    }

    fn config(seq: u64) -> (Event, Rc<[u8]>) {
        event(
            seq,
            EventBody::ConfigChanged {
                config_id: Some(seq as i64),
                change: "tested".into(),
            },
        )
    }

    #[test]
    fn holds_up_to_max_then_lags_once() {
        let mut sub = Subscriber::new(CategorySet::of(&[]), 3);
        for seq in 1..=3 {
            let (e, l) = config(seq);
            assert_eq!(sub.offer(&e, &l, 0), Offer::Queued);
        }
        assert_eq!(sub.queued(), 3);
        let (e, l) = config(4);
        assert_eq!(sub.offer(&e, &l, 7), Offer::Lagged { dropped: 4 });
        assert_eq!(sub.lagged_at, Some(7));
        assert_eq!(sub.queued(), 1);
        let (e, l) = config(5);
        assert_eq!(sub.offer(&e, &l, 8), Offer::Skipped);
        let mut out = Vec::new();
        sub.refill(&mut out);
        assert_eq!(sub.queued_bytes(), 0);
        let lagged: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(lagged["event"], "lagged");
        assert_eq!(lagged["dropped"], 4);
        assert_eq!(lagged["seq"], 4);
    }

    #[test]
    fn filters_by_category_but_lagged_is_for_everyone() {
        let mut sub = Subscriber::new(CategorySet::of(&[Category::Rotation]), 1);
        let (e, l) = config(1);
        assert_eq!(sub.offer(&e, &l, 0), Offer::Skipped);
        let (e, l) = event(
            2,
            EventBody::RotationStarted {
                trigger: "manual".into(),
                from: None,
            },
        );
        assert_eq!(sub.offer(&e, &l, 0), Offer::Queued);
        assert_eq!(sub.queued_bytes(), l.len());
        let (e, l) = event(3, EventBody::Lagged { dropped: 1 });
        assert_eq!(sub.offer(&e, &l, 0), Offer::Lagged { dropped: 2 });
    }

    #[test]
    fn refill_moves_about_one_chunk_in_order() {
        let mut sub = Subscriber::new(CategorySet::of(&[]), 100_000);
        let lines: Vec<_> = (1..=2_000).map(config).collect();
        for (e, l) in &lines {
            sub.offer(e, l, 0);
        }
        let total: usize = lines.iter().map(|(_, l)| l.len()).sum();
        assert_eq!(sub.queued_bytes(), total);
        let mut out = Vec::new();
        sub.refill(&mut out);
        let longest = lines.iter().map(|(_, l)| l.len()).max().unwrap();
        assert!(out.len() >= SUBSCRIBER_CHUNK_BYTES);
        assert!(out.len() < SUBSCRIBER_CHUNK_BYTES + longest);
        assert_eq!(sub.queued_bytes(), total - out.len());
        let first: Event =
            serde_json::from_slice(out.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert_eq!(first.seq, 1);
        out.clear();
        sub.refill(&mut out);
        let text = String::from_utf8(out).unwrap();
        let seqs: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<Event>(l).unwrap().seq)
            .collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    }
}
