//! One direction of a relayed connection: its buffer, what of it is still to be written, and
//! its end. A direction starts with a small buffer ([`RELAY_BUFFER_BYTES`]); one whose receive
//! filled it after the opening is a bulk transfer and gets a large one
//! ([`RELAY_BULK_BUFFER_BYTES`]) while fewer than [`RELAY_BULK_BUFFERS_MAX`] are in use: a
//! bulk relay then costs one receive and one send per 256 KiB instead of per 32 KiB, and idle or
//! interactive connections keep the small buffer. Memory stays bounded by
//! 2 × `RELAY_BUFFER_BYTES` per connection plus `RELAY_BULK_BUFFERS_MAX` ×
//! `RELAY_BULK_BUFFER_BYTES` in all.

/// Bytes of each direction's buffer while it is not a bulk transfer. Two per connection: at
/// the default 4,096 connections at most 256 MiB, allocated only while a connection is open.
pub const RELAY_BUFFER_BYTES: usize = 32 * 1024;
/// Bytes of a bulk direction's buffer (one that a receive filled after the opening).
pub const RELAY_BULK_BUFFER_BYTES: usize = 256 * 1024;
/// Bulk buffers in use at once over every relay (64 MiB); past it a bulk direction keeps its
/// small buffer.
pub const RELAY_BULK_BUFFERS_MAX: usize = 256;
const _: () = assert!(RELAY_BULK_BUFFER_BYTES >= RELAY_BUFFER_BYTES);
// A receive's length is a u32 in the SQE and its result an i32 in the CQE.
const _: () = assert!(RELAY_BULK_BUFFER_BYTES <= i32::MAX as usize);
const _: () = assert!(RELAY_BULK_BUFFERS_MAX * RELAY_BULK_BUFFER_BYTES <= 64 * 1024 * 1024);

/// One direction's buffer: `buf[start..len]` is received and not yet written on.
pub struct Pipe {
    pub buf: Box<[u8]>,
    pub start: usize,
    pub len: usize,
    /// The reading side ended (EOF).
    pub eof: bool,
    /// `shutdown(SHUT_WR)` was passed on to the writing side.
    pub shut: bool,
    /// `buf` is a bulk buffer (counted in [`Relays::bulk_buffers`](super::relay::Relays)).
    pub bulk: bool,
    /// The direction moves through a kernel pipe instead of `buf` (splice.rs).
    pub spliced: Option<Box<super::splice::Spliced>>,
}

impl Pipe {
    pub fn new(bytes: usize) -> Pipe {
        Pipe {
            buf: vec![0; bytes].into_boxed_slice(),
            start: 0,
            len: 0,
            eof: false,
            shut: false,
            bulk: false,
            spliced: None,
        }
    }

    /// Nothing received is still to be written on: neither in `buf` nor in the kernel pipe.
    pub fn is_empty(&self) -> bool {
        self.start == self.len && self.spliced.as_ref().is_none_or(|s| s.held == 0)
    }

    /// Forgets what is held (a failed member's bytes).
    pub fn reset(&mut self) {
        self.start = 0;
        self.len = 0;
        self.eof = false;
        self.shut = false;
    }

    /// Swaps in a bulk buffer if this one is empty, small, and `in_use` (bulk buffers over
    /// every relay) is under the limit. The caller has no op in flight on the buffer: an empty
    /// pipe has none (a send's bytes stay counted until its completion).
    pub fn grow(&mut self, in_use: &mut usize) {
        if self.bulk || !self.is_empty() || *in_use >= RELAY_BULK_BUFFERS_MAX {
            return;
        }
        self.buf = vec![0; RELAY_BULK_BUFFER_BYTES].into_boxed_slice();
        self.start = 0;
        self.len = 0;
        self.bulk = true;
        *in_use += 1;
    }
}

/// What an op on `bytes` counts against the relays' per-turn budget: one per
/// [`RELAY_BUFFER_BYTES`] (at least one), so a turn copies as much with bulk buffers as without.
pub fn cost(bytes: usize) -> usize {
    bytes.div_ceil(RELAY_BUFFER_BYTES).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_grows_once_when_empty_and_under_the_limit() {
        let mut in_use = 0;
        let mut p = Pipe::new(RELAY_BUFFER_BYTES);
        p.len = 10;
        p.grow(&mut in_use);
        assert_eq!(p.buf.len(), RELAY_BUFFER_BYTES, "holding bytes: not now");
        p.start = 10;
        p.grow(&mut in_use);
        assert_eq!(p.buf.len(), RELAY_BULK_BUFFER_BYTES);
        assert_eq!((p.start, p.len, in_use), (0, 0, 1));
        p.grow(&mut in_use);
        assert_eq!(in_use, 1, "once");
        let mut full = RELAY_BULK_BUFFERS_MAX;
        let mut q = Pipe::new(RELAY_BUFFER_BYTES);
        q.grow(&mut full);
        assert!(!q.bulk);
        assert_eq!(q.buf.len(), RELAY_BUFFER_BYTES, "at the limit: kept small");
        assert_eq!(full, RELAY_BULK_BUFFERS_MAX);
    }

    #[test]
    fn cost_counts_small_buffers() {
        assert_eq!(cost(1), 1);
        assert_eq!(cost(RELAY_BUFFER_BYTES), 1);
        assert_eq!(cost(RELAY_BUFFER_BYTES + 1), 2);
        assert_eq!(cost(RELAY_BULK_BUFFER_BYTES), 8);
    }
}
