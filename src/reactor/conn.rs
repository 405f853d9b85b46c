//! One client connection: framing state, the reply buffers, and which ops are in flight.

use std::os::fd::RawFd;

use crate::ipc::access::Access;
use crate::ipc::FrameDecoder;
use crate::supervisor::ConnId;

use super::token::{Kind, Token, GENERATION_MASK};

/// Replies buffered for one connection before the reactor stops reading its requests. A client
/// that pipelines without reading is slowed to the pace it reads, never buffered without bound.
pub const OUTPUT_BYTES_HIGH: usize = 1024 * 1024;
/// Reading resumes once the backlog of replies falls under this.
pub const OUTPUT_BYTES_LOW: usize = OUTPUT_BYTES_HIGH / 4;
const _: () = assert!(OUTPUT_BYTES_LOW < OUTPUT_BYTES_HIGH);
/// Requests read from one connection and not yet answered before the reactor stops reading it.
/// Replies held behind an operation in flight count here: at a few hundred bytes each, this
/// many stay within about [`OUTPUT_BYTES_HIGH`].
pub const AWAITING_MAX: u32 = 4_096;
/// Reading resumes once the unanswered requests fall under this.
pub const AWAITING_LOW: u32 = AWAITING_MAX / 4;
const _: () = assert!(AWAITING_LOW < AWAITING_MAX);
const _: () = assert!(AWAITING_MAX as usize * 256 <= OUTPUT_BYTES_HIGH);

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading requests and writing replies.
    Open,
    /// No more requests are read; close once every reply is written.
    Draining,
    /// Cancelling its ops; freed once the last completion arrived.
    Closing,
}

/// Per-connection state, stored in the reactor's slab.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub fd: RawFd,
    /// Unique for the daemon's life; its low 24 bits are the token generation.
    pub serial: u32,
    /// Request framing.
    pub decoder: FrameDecoder,
    /// Replies not yet handed to the kernel.
    pub out: Vec<u8>,
    /// Replies handed to the kernel; untouched until the send completes.
    pub inflight: Vec<u8>,
    /// How much of `inflight` the kernel has taken.
    pub inflight_sent: usize,
    /// A send is in flight.
    pub send_armed: bool,
    /// The multishot receive is armed.
    pub recv_armed: bool,
    /// Reading stopped for backpressure; resumes below [`OUTPUT_BYTES_LOW`].
    pub recv_paused: bool,
    /// Requests handed to the supervisor and not yet answered.
    pub awaiting: u32,
    /// Life cycle.
    pub phase: Phase,
    /// When the client last sent bytes (monotonic ms).
    pub last_active_ms: u64,
    /// Since when a request line has been partial.
    pub partial_since_ms: Option<u64>,
    /// The connection's entry in the deadline table.
    pub timer_at: Option<u64>,
    /// Closed to make room for a new client.
    pub evicted: bool,
    /// What the peer may do, from its `SO_PEERCRED`; read at its first request that changes
    /// something (read-only requests need no credentials, and the kernel keeps the ones of
    /// connect time), so a `daemon_ping` per connection costs no getsockopt.
    pub access: Option<Access>,
    /// A refused (403) request was logged: one line per connection, however many follow.
    pub denial_logged: bool,
    /// A `subscribe` line was read: nothing more is read as a request.
    pub subscribing: bool,
    /// Bytes read with `MSG_PEEK` and not yet consumed (see `first_read`).
    pub peeked: usize,
    /// Once the `subscribe` answer is written: the stream's categories and queue.
    pub sub: Option<Box<super::subscribers::Subscriber>>,
}

impl Conn {
    /// A fresh, open connection.
    pub fn new(fd: RawFd, serial: u32, now_ms: u64) -> Conn {
        Conn {
            fd,
            serial,
            decoder: FrameDecoder::default(),
            out: Vec::new(),
            inflight: Vec::new(),
            inflight_sent: 0,
            send_armed: false,
            recv_armed: false,
            recv_paused: false,
            awaiting: 0,
            phase: Phase::Open,
            last_active_ms: now_ms,
            partial_since_ms: None,
            timer_at: None,
            evicted: false,
            access: None,
            denial_logged: false,
            subscribing: false,
            peeked: 0,
            sub: None,
        }
    }

    /// The token for an op of `kind` on this connection in `slot`.
    pub fn token(&self, kind: Kind, slot: usize) -> u64 {
        Token {
            kind,
            generation: self.serial & GENERATION_MASK,
            slot: slot as u32,
        }
        .encode()
    }

    /// True when `token` was issued for this connection.
    pub fn owns(&self, token: &Token) -> bool {
        token.generation == self.serial & GENERATION_MASK
    }

    /// The id the supervisor knows this connection by.
    pub fn conn_id(&self, slot: usize) -> ConnId {
        ConnId((self.serial as u64) << 32 | slot as u64)
    }

    /// Bytes of reply not yet taken by the kernel.
    pub fn backlog(&self) -> usize {
        let queued = self.sub.as_ref().map_or(0, |s| s.queued_bytes());
        self.out.len() + self.inflight.len() - self.inflight_sent + queued
    }

    /// Everything written and nothing more owed.
    pub fn is_flushed(&self) -> bool {
        self.awaiting == 0 && self.backlog() == 0
    }

    /// No completion is outstanding, so the fd may be closed and the slot freed.
    pub fn is_quiet(&self) -> bool {
        !self.send_armed && !self.recv_armed
    }

    /// Moves queued replies into the in-flight buffer when no send is running. Returns the
    /// bytes to send, if any.
    pub fn next_send(&mut self) -> Option<(*const u8, u32)> {
        if self.send_armed || self.phase == Phase::Closing {
            return None;
        }
        if self.inflight_sent == self.inflight.len() {
            if self.out.is_empty() {
                return None;
            }
            self.inflight.clear();
            self.inflight_sent = 0;
            std::mem::swap(&mut self.out, &mut self.inflight);
        }
        let rest = &self.inflight[self.inflight_sent..];
        let len = rest.len().min(u32::MAX as usize) as u32;
        Some((rest.as_ptr(), len))
    }
}

/// Splits a supervisor `ConnId` into (slot, serial).
pub fn split_conn_id(id: ConnId) -> (usize, u32) {
    ((id.0 & u32::MAX as u64) as usize, (id.0 >> 32) as u32)
}
