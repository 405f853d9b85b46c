//! The provided-buffer ring that multishot receives fill (kernel >= 5.19). The kernel picks a
//! buffer per completion; the reactor hands it back once the bytes are framed.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// Buffers in the ring; a power of two, as the kernel requires.
pub const RECV_BUFFERS: u16 = 1024;
/// Bytes per receive buffer.
pub const RECV_BUFFER_BYTES: u32 = 4096;
const _: () = assert!(RECV_BUFFERS.is_power_of_two());
const _: () = assert!(
    (RECV_BUFFERS as usize) <= 32768,
    "kernel limit for a buffer ring"
);

const PAGE_BYTES: usize = 4096;

/// Entry array (page aligned, shared with the kernel) plus the buffers it points to.
pub struct BufRing {
    entries: *mut BufRingEntry,
    entries_layout: Layout,
    buffers: Box<[u8]>,
    /// Next tail to publish; the kernel sees it after [`BufRing::publish`].
    tail: u16,
}

impl BufRing {
    /// Allocates the ring with every buffer provided.
    pub fn new() -> BufRing {
        let entries_layout = Layout::from_size_align(
            RECV_BUFFERS as usize * std::mem::size_of::<BufRingEntry>(),
            PAGE_BYTES,
        )
        .expect("valid layout");
        // SAFETY: the layout has non-zero size; zeroed memory is a valid BufRingEntry array.
        let entries = unsafe { alloc_zeroed(entries_layout) } as *mut BufRingEntry;
        if entries.is_null() {
            std::alloc::handle_alloc_error(entries_layout);
        }
        let buffers =
            vec![0u8; RECV_BUFFERS as usize * RECV_BUFFER_BYTES as usize].into_boxed_slice();
        let mut ring = BufRing {
            entries,
            entries_layout,
            buffers,
            tail: 0,
        };
        for bid in 0..RECV_BUFFERS {
            ring.recycle(bid);
        }
        ring.publish();
        ring
    }

    /// Address of the entry array, for registration.
    pub fn entries_addr(&self) -> u64 {
        self.entries as u64
    }

    /// Number of entries, for registration.
    pub fn entry_count(&self) -> u16 {
        RECV_BUFFERS
    }

    /// The first `len` bytes of buffer `bid`, as filled by the kernel.
    pub fn filled(&self, bid: u16, len: usize) -> &[u8] {
        let start = bid as usize * RECV_BUFFER_BYTES as usize;
        &self.buffers[start..start + len.min(RECV_BUFFER_BYTES as usize)]
    }

    /// Queues buffer `bid` to be handed back to the kernel at the next [`BufRing::publish`].
    pub fn recycle(&mut self, bid: u16) {
        assert!(bid < RECV_BUFFERS, "buffer id {bid} out of range");
        let index = (self.tail & (RECV_BUFFERS - 1)) as usize;
        let addr = self.buffers.as_ptr() as u64 + bid as u64 * RECV_BUFFER_BYTES as u64;
        // SAFETY: index < RECV_BUFFERS, inside the allocation; the kernel only reads entries
        // between its head and the published tail, and this one is past the published tail.
        let entry = unsafe { &mut *self.entries.add(index) };
        entry.set_addr(addr);
        entry.set_len(RECV_BUFFER_BYTES);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every recycled buffer visible to the kernel.
    pub fn publish(&self) {
        // SAFETY: `entries` is the base of the initialized entry array, so `tail` yields the
        // address of the ring's shared tail field, which is only written here and read by the
        // kernel; the release store orders the entry writes before it.
        unsafe {
            let tail = BufRingEntry::tail(self.entries) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the ring that used it is already gone.
        unsafe { dealloc(self.entries as *mut u8, self.entries_layout) }
    }
}
