//! The executor's one deadline table (DESIGN §3a rule 9): whole-probe deadlines, readiness
//! retries and expiries, SIGTERM→SIGKILL escalations and version-detection timeouts. The timerfd
//! is armed for the earliest of these and the supervisor's own `poll_timeout`; expired entries are
//! taken after every batch.

use std::collections::BTreeSet;

use crate::supervisor::CoreId;

/// What falls due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Due {
    /// A probe's whole deadline: cancel its in-flight op. Slot index and serial.
    Probe(usize, u32),
    /// Try the next readiness connect of a starting core.
    ReadyRetry(CoreId),
    /// A starting core's inbounds did not accept in time.
    ReadyExpired(CoreId),
    /// A core ignored SIGTERM for its grace period: SIGKILL.
    Escalate(CoreId),
    /// A `<core> version` run took too long. Its serial.
    Detect(u64),
    /// A subscription refresh run took too long. Its refresh id.
    Refresh(u64),
    /// A client connection's frame or idle deadline. Slot and serial.
    Conn(usize, u32),
    /// A refused connection has drained long enough. Slot and serial.
    RejectDrain(usize, u32),
    /// Accepting resumes after running out of descriptors.
    AcceptResume,
    /// A hold of new front connections ends (see `hold.rs`).
    HoldEnd,
    /// Failed store writes are tried again.
    StoreRetry,
    /// A relayed connection's one timer: its stall deadline, or how long a refused client has
    /// to send its opening. Slot and serial.
    Relay(usize, u32),
}

/// Deadlines in monotonic ms, earliest first.
#[derive(Debug, Default)]
pub struct Deadlines {
    set: BTreeSet<(u64, Due)>,
}

impl Deadlines {
    /// Adds `due` at `at_ms`.
    pub fn add(&mut self, at_ms: u64, due: Due) {
        self.set.insert((at_ms, due));
    }

    /// Removes an entry added with the same time (completions that came first).
    pub fn remove(&mut self, at_ms: u64, due: Due) {
        self.set.remove(&(at_ms, due));
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<u64> {
        self.set.first().map(|(at, _)| *at)
    }

    /// Takes every entry due at `now_ms`.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<Due> {
        let mut due = Vec::new();
        while let Some(&(at, what)) = self.set.first() {
            if at > now_ms {
                break;
            }
            self.set.pop_first();
            due.push(what);
        }
        due
    }

    /// Entries held (bounded by the probes, cores and detections in flight).
    pub fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_what_is_due_in_order_and_forgets_removed_entries() {
        let mut d = Deadlines::default();
        d.add(30, Due::Escalate(CoreId(1)));
        d.add(10, Due::Probe(0, 7));
        d.add(20, Due::ReadyRetry(CoreId(2)));
        d.remove(20, Due::ReadyRetry(CoreId(2)));
        assert_eq!(d.next(), Some(10));
        assert_eq!(d.take_due(29), [Due::Probe(0, 7)]);
        assert_eq!(d.take_due(30), [Due::Escalate(CoreId(1))]);
        assert_eq!(d.len(), 0);
    }
}
