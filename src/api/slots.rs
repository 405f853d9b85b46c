//! The connection table: at most [`CONNECTIONS_MAX`] connections, each in a phase, so the
//! accept loop can evict and each connection's watcher can enforce its deadline.
//!
//! A full house: a new connection evicts the connection that has waited longest for a request
//! (it is told 503 and closed); only when every slot is answering a request that arrived whole
//! is the new connection answered 503 at once. So clients that trickle bytes delay no one: each
//! holds its slot only until someone else needs it, and never past the header deadline.
//!
//! A connection whose whole request head already waits in its socket is not "waiting for a
//! request" and is not evicted: it is about to be busy. Without that, a burst of reconnecting
//! slow clients (each eviction lets one come back) replaced all 64 slots within the few ms
//! between a legitimate client's accept and hyper reading its head, and evicted it too (seen
//! once in CI, `tests/api.rs` `slow_clients_cannot_starve_a_legitimate_request`).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

/// Most connections held at once. At the limit a new connection evicts the oldest one waiting
/// for a request; when none is, it is answered 503 and closed at once.
pub const CONNECTIONS_MAX: usize = 64;

/// What a connection is doing, for choosing whom to evict and which deadline applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for its first request head since the accept (deadline: the header timeout,
    /// answered 408).
    Head(Instant),
    /// Between requests since a response was made (deadline: [`super::IDLE_TIMEOUT`], closed
    /// without an answer; it also bounds writing a response to a client that does not read).
    Idle(Instant),
    /// A request arrived whole and is being answered: never evicted, no deadline.
    Busy,
}

/// One held connection: its phase, a duplicate of its socket (to answer and shut it down from
/// outside hyper) and the watcher to wake when the phase changes.
struct Held {
    phase: Phase,
    socket: OwnedFd,
    wake: Arc<Notify>,
}

/// The table, keyed by a never-reused id.
#[derive(Default)]
pub struct Slots {
    next_id: u64,
    held: HashMap<u64, Held>,
}

/// The table behind a lock, shared by the accept loop and every connection.
#[derive(Default)]
pub struct Table(Mutex<Slots>);

impl Table {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        // Every update is one map operation, so a panic cannot leave it half-updated.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection accepted at `now`, evicting one when full. None: the house is full
    /// of busy connections and the newcomer must be refused.
    pub fn admit(&self, socket: OwnedFd, now: Instant) -> Option<(u64, Arc<Notify>)> {
        let mut slots = self.lock();
        if slots.held.len() >= CONNECTIONS_MAX {
            let waiting = slots
                .held
                .iter()
                .filter(|(_, h)| !request_queued(&h.socket))
                .map(|(&id, h)| (id, h.phase));
            let victim = pick_victim(waiting)?;
            if let Some(held) = slots.held.remove(&victim) {
                let message = format!(
                    "the API was full ({CONNECTIONS_MAX} connections) and this connection had waited longest for its request; retry"
                );
                send_raw(&held.socket, &raw_error(503, "unavailable", &message, true));
                shut_down(&held.socket);
            }
        }
        slots.next_id += 1;
        let id = slots.next_id;
        let wake = Arc::new(Notify::new());
        let held = Held {
            phase: Phase::Head(now),
            socket,
            wake: wake.clone(),
        };
        slots.held.insert(id, held);
        Some((id, wake))
    }

    /// Sets the phase of `id` and wakes its watcher; a no-op once it was evicted.
    pub fn set(&self, id: u64, phase: Phase) {
        if let Some(held) = self.lock().held.get_mut(&id) {
            held.phase = phase;
            held.wake.notify_one();
        }
    }

    /// The phase of `id`; None once it was evicted or ended.
    pub fn phase(&self, id: u64) -> Option<Phase> {
        self.lock().held.get(&id).map(|h| h.phase)
    }

    /// Answers `bytes` on `id`'s socket (when given) and shuts it down, which ends hyper's
    /// connection with an EOF; the entry stays until the connection's task removes it.
    pub fn close(&self, id: u64, bytes: Option<&[u8]>) {
        if let Some(held) = self.lock().held.get(&id) {
            if let Some(bytes) = bytes {
                send_raw(&held.socket, bytes);
            }
            shut_down(&held.socket);
        }
    }

    /// Forgets `id` (its task ended).
    pub fn remove(&self, id: u64) {
        self.lock().held.remove(&id);
    }

    /// Connections held.
    pub fn len(&self) -> usize {
        self.lock().held.len()
    }
}

/// Whom a new connection evicts: the one that has waited longest for a request (first heads
/// and idle keep-alive alike); None when every connection is busy. Ties go to the older id.
pub fn pick_victim(entries: impl Iterator<Item = (u64, Phase)>) -> Option<u64> {
    entries
        .filter_map(|(id, phase)| match phase {
            Phase::Head(since) | Phase::Idle(since) => Some((since, id)),
            Phase::Busy => None,
        })
        .min()
        .map(|(_, id)| id)
}

/// Bytes looked at for a queued request head; a client that queued this many is not trickling.
const PEEK_BYTES: usize = 4096;

/// Whether a whole request head (or [`PEEK_BYTES`] of one) waits unread in `socket`.
pub fn request_queued(socket: &OwnedFd) -> bool {
    let mut buf = [0u8; PEEK_BYTES];
    // SAFETY: recv(2) into a live stack buffer of its length; MSG_PEEK leaves the bytes for
    // hyper, MSG_DONTWAIT keeps the accept loop from blocking.
    let n = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n <= 0 {
        return false;
    }
    let queued = &buf[..n as usize];
    queued.len() == PEEK_BYTES || queued.windows(4).any(|w| w == b"\r\n\r\n")
}

/// Writes without blocking (MSG_DONTWAIT: the socket is shared with tokio's nonblocking
/// handle anyway); a short error answer fits any socket buffer, and if not, it is dropped.
pub fn send_raw(socket: &OwnedFd, bytes: &[u8]) {
    // SAFETY: send(2) of a live buffer on a socket this handle owns.
    unsafe {
        libc::send(
            socket.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        );
    }
}

/// Shuts both directions: the connection's reads see EOF and it ends without writing more.
fn shut_down(socket: &OwnedFd) {
    // SAFETY: shutdown(2) on a socket this handle owns.
    unsafe { libc::shutdown(socket.as_raw_fd(), libc::SHUT_RDWR) };
}

/// A whole HTTP/1.1 error response with the `/v1` envelope body (it has a `message`, which is
/// what Clash clients read), for answers written outside hyper: eviction, refusal, 408.
pub fn raw_error(status: u16, meaning: &str, message: &str, retry: bool) -> Vec<u8> {
    let body = super::gate::envelope_error_body(status, meaning, message);
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let retry = if retry { "Retry-After: 1\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n{retry}Connection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}
