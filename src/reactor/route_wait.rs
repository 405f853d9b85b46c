//! Front mode: a relayed connection whose member's inbound refused it waits for a route to
//! another pool core, instead of failing over to a sibling member of the same core or failing.
//!
//! On loopback a refused connect means the listener is closed, and a pool core closes its
//! listeners only when it exits. Every member lives in that one process, so a sibling refuses
//! too. The kernel closes a killed core's sockets before its pidfd reports the exit; on a loaded
//! machine that gap lasts tens of ms, and without this wait each connection made in it failed.
//! So the core that refused is skipped for the connection, and when no other core is routed the
//! connection waits (its kept opening is replayed later, as on any retry) until the route
//! changes to another core: the respawn that the exit starts, or a rotation. The wait is
//! bounded by [`REFUSED_WAIT_MS`] and happens once per connection; then the client gets the
//! protocol's own answer, as before.

use crate::supervisor::{RelayFailure, RESPAWN_HOLD_MS};

use super::deadlines::Due;
use super::relay::Mode;
use super::Reactor;

/// How long a refused connection waits for a route to another core: as long as the front holds
/// new clients while a dead pool core's replacement starts, so both kinds wait alike.
pub const REFUSED_WAIT_MS: u64 = 2_000;
const _: () = assert!(REFUSED_WAIT_MS == RESPAWN_HOLD_MS);

/// Where a relay is with its one wait for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteWait {
    #[default]
    Unused,
    Waiting,
    /// It waited (and was routed again, or its time ran out): no second wait.
    Used,
}

impl Reactor {
    /// No route target is left for the relay: true when it waits for a route instead of
    /// giving up (its member's inbound refused it, and it has not waited before).
    pub(super) fn relay_wait_for_route(&mut self, slot: usize) -> bool {
        let r = &mut self.relays.slab[slot];
        match r.route_wait {
            RouteWait::Waiting => {}
            RouteWait::Used => return false,
            RouteWait::Unused if r.last_failure != Some(RelayFailure::Refused) => return false,
            RouteWait::Unused => {
                r.route_wait = RouteWait::Waiting;
                self.relay_timer(super::now(), slot, REFUSED_WAIT_MS);
            }
        }
        // Switching with no member socket: woken by a route change or by its timer.
        self.relays.slab[slot].mode = Mode::Switching;
        true
    }

    /// The waiting relay has a target again: its wait is over (and its timer with it).
    pub(super) fn relay_wait_over(&mut self, slot: usize) {
        let r = &mut self.relays.slab[slot];
        if r.route_wait != RouteWait::Waiting {
            return;
        }
        r.route_wait = RouteWait::Used;
        if let Some(at) = r.timer_at.take() {
            self.deadlines.remove(at, Due::Relay(slot, r.serial));
        }
    }

    /// The route changed: every waiting relay looks at it again.
    pub(super) fn wake_route_waiters(&mut self) {
        let waiting: Vec<usize> = self
            .relays
            .slab
            .iter()
            .filter(|(_, r)| r.route_wait == RouteWait::Waiting)
            .map(|(slot, _)| slot)
            .collect();
        for slot in waiting {
            self.relay_wake(slot);
        }
    }

    /// A waiting relay's time ran out: it gives up at its next look.
    pub(super) fn route_wait_expired(&mut self, slot: usize) {
        self.relays.slab[slot].route_wait = RouteWait::Used;
        self.relay_wake(slot);
    }
}
