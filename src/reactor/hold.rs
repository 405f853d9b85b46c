//! Front mode: connections held while no pool core is up ([`Effect::HoldFront`], which the
//! supervisor emits while a dead pool core's replacement starts). A held client is accepted and
//! left unanswered: its opening waits in its socket's receive buffer, so it sees delay instead
//! of a refusal. Held clients are admitted (under the route of that moment) as soon as a
//! non-empty route arrives or the hold's deadline passes; at most [`HELD_MAX`] wait, and the
//! rest are refused as before.
//!
//! [`Effect::HoldFront`]: crate::supervisor::Effect::HoldFront

use std::os::fd::OwnedFd;

use crate::supervisor::Now;

use super::deadlines::Due;
use super::retry::FrontPort;
use super::Reactor;

/// Clients held at once; beyond this they are refused as with no hold.
pub const HELD_MAX: usize = 256;

/// The hold in force, and the clients it holds.
#[derive(Default)]
pub struct Hold {
    until_ms: Option<u64>,
    clients: Vec<(FrontPort, OwnedFd)>,
}

impl Reactor {
    /// `Effect::HoldFront`.
    pub(super) fn hold_front(&mut self, now: Now, until_ms: u64) {
        if let Some(old) = self.hold.until_ms.take() {
            self.deadlines.remove(old, Due::HoldEnd);
        }
        // Emitted before the route it holds for is emptied: the hold applies only while the
        // route is empty (see `hold_client`), and a non-empty route ends it.
        if until_ms <= now.monotonic_ms {
            return self.release_held(now);
        }
        self.hold.until_ms = Some(until_ms);
        self.deadlines.add(until_ms, Due::HoldEnd);
    }

    /// A client came in on a front port: held (None) while a hold is in force, the route is
    /// empty and there is room; given back otherwise.
    pub(super) fn hold_client(&mut self, port: FrontPort, client: OwnedFd) -> Option<OwnedFd> {
        let holding = self.hold.until_ms.is_some() && self.route.is_empty();
        let room = self.hold.clients.len() < HELD_MAX;
        let limit = self.front.counters.connections_open + self.hold.clients.len() as u64;
        if !holding || !room || limit >= self.front_connections_max() {
            return Some(client);
        }
        self.hold.clients.push((port, client));
        None
    }

    /// The route changed: a non-empty one ends the hold.
    pub(super) fn route_changed(&mut self, now: Now) {
        if !self.route.is_empty() {
            if let Some(old) = self.hold.until_ms.take() {
                self.deadlines.remove(old, Due::HoldEnd);
            }
            self.release_held(now);
            self.wake_route_waiters();
        }
    }

    /// The hold's deadline passed.
    pub(super) fn hold_expired(&mut self, now: Now) {
        self.hold.until_ms = None;
        self.release_held(now);
    }

    /// Admits every held client under the current route (refused when it is still empty).
    fn release_held(&mut self, now: Now) {
        self.hold.until_ms = None;
        for (port, client) in std::mem::take(&mut self.hold.clients) {
            self.admit_front(now, port, client);
        }
    }
}
