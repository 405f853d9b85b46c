//! Reply buffers kept from closed connections for the next ones.
//!
//! A script that opens a connection per request would otherwise pay for a fresh `out` and
//! `inflight` each time, grown through several reallocations while the reply is encoded: in a
//! callgrind profile of connect + ping + close, about a ninth of the daemon's user-space
//! instructions. Only small buffers are kept, and only a few, so an idle daemon holds at most
//! [`SPARE_BYTES_MAX`] for this.

/// Buffers kept for reuse.
pub const SPARE_BUFFERS_MAX: usize = 32;
/// A buffer that grew past this (a large status or a subscriber's backlog) is freed instead.
pub const SPARE_BUFFER_BYTES_MAX: usize = 4 * 1024;
/// A new buffer starts with room for a typical reply (a ping reply is about 150 bytes).
pub const SPARE_BUFFER_BYTES_INITIAL: usize = 512;
/// The most an idle daemon keeps here.
pub const SPARE_BYTES_MAX: usize = SPARE_BUFFERS_MAX * SPARE_BUFFER_BYTES_MAX;
const _: () = assert!(SPARE_BUFFER_BYTES_INITIAL <= SPARE_BUFFER_BYTES_MAX);
// Well inside the idle RSS budget of issue 15 (8 MB).
const _: () = assert!(SPARE_BYTES_MAX <= 256 * 1024);

/// A bounded stack of empty buffers.
#[derive(Debug, Default)]
pub struct Spare {
    buffers: Vec<Vec<u8>>,
}

impl Spare {
    /// An empty buffer, reused when one is kept.
    pub fn take(&mut self) -> Vec<u8> {
        self.buffers
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(SPARE_BUFFER_BYTES_INITIAL))
    }

    /// Keeps `buffer` for a later connection, unless enough are kept or it grew large.
    pub fn give(&mut self, mut buffer: Vec<u8>) {
        let capacity = buffer.capacity();
        if capacity == 0 || capacity > SPARE_BUFFER_BYTES_MAX {
            return;
        }
        if self.buffers.len() < SPARE_BUFFERS_MAX {
            buffer.clear();
            self.buffers.push(buffer);
        }
    }

    /// How many buffers are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buffers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_only_small_ones_are_kept() {
        let mut spare = Spare::default();
        let mut first = spare.take();
        assert!(first.capacity() >= SPARE_BUFFER_BYTES_INITIAL);
        first.extend_from_slice(b"reply");
        let at = first.as_ptr();
        spare.give(first);
        let again = spare.take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), at, "the kept buffer is handed out again");
        spare.give(Vec::with_capacity(SPARE_BUFFER_BYTES_MAX + 1));
        spare.give(Vec::new());
        assert_eq!(spare.len(), 0);
    }

    #[test]
    fn at_most_the_limit_is_kept() {
        let mut spare = Spare::default();
        for _ in 0..SPARE_BUFFERS_MAX * 2 {
            spare.give(Vec::with_capacity(64));
        }
        assert_eq!(spare.len(), SPARE_BUFFERS_MAX);
    }
}
