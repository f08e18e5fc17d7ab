//! The memory pool: the `-m` budget and the segments it hands out.
//!
//! [`Pool`] owns the `-m` budget. Segments and large items are charged to it before memory
//! is touched, so the bytes holding items never exceed the limit.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes in one segment. Small enough that a shard holds many (eviction is fine-grained even
/// at `-m 1`), large enough that an item rarely wastes the tail of one.
pub const SEGMENT_SIZE: usize = 1 << SEGMENT_SHIFT;
pub const SEGMENT_SHIFT: u32 = 18;
/// Items above this go into their own allocation: at most 1/8 of a segment can be lost to
/// a tail that the next item does not fit.
pub const LARGE_ITEM: usize = SEGMENT_SIZE / 8;
/// Blocks at least this large get their own mapping from the allocator (`main` pins glibc's
/// threshold here): every large item then lives in whole pages that go back to the OS when
/// it is freed, instead of fragmenting the heap's arenas.
pub const MMAP_THRESHOLD: usize = LARGE_ITEM;

/// The `-m` budget, shared by all shards. Lock order: a shard lock may be held while taking
/// `free` (a leaf lock); never the other way round.
#[derive(Debug)]
pub struct Pool {
    limit: AtomicUsize,
    /// Bytes charged: every segment allocated (in use or on the free list) and large items.
    used: AtomicUsize,
    /// Segments handed back and kept for reuse; their bytes stay charged. Plain mutex:
    /// held for a push or pop, nothing awaits under it.
    free: Mutex<Vec<Box<[u8]>>>,
}

impl Pool {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
            free: Mutex::new(Vec::new()),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
        // Give back free segments that no longer fit.
        while self.used() > limit {
            let Some(seg) = self.free.lock().pop() else {
                break;
            };
            drop(seg);
            self.used.fetch_sub(SEGMENT_SIZE, Ordering::Relaxed);
        }
    }

    /// Bytes charged against the limit.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether the charges exceed the limit (after `cache_memlimit` lowered it).
    pub fn over_limit(&self) -> bool {
        self.used() > self.limit()
    }

    /// Whether `bytes` more would fit under the limit.
    pub fn has_room(&self, bytes: usize) -> bool {
        self.used().saturating_add(bytes) <= self.limit()
    }

    /// Charges `bytes` if they fit under the limit.
    pub fn try_charge(&self, bytes: usize) -> bool {
        let limit = self.limit();
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&n| n <= limit)
            })
            .is_ok()
    }

    /// Charges `bytes` even past the limit (the index has grown); writers then give segments
    /// back until the charges fit again.
    pub fn force_charge(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn uncharge(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// A zeroed-or-reused segment, if the budget allows one.
    pub fn take_segment(&self) -> Option<Box<[u8]>> {
        if let Some(seg) = self.free.lock().pop() {
            return Some(seg);
        }
        if self.try_charge(SEGMENT_SIZE) {
            // Zeroed allocation: the OS maps pages lazily, so an unused tail costs no RSS.
            return Some(vec![0u8; SEGMENT_SIZE].into_boxed_slice());
        }
        None
    }

    /// Returns a segment to the pool, or frees it if the limit has shrunk.
    pub fn give_segment(&self, seg: Box<[u8]>) {
        if self.over_limit() {
            drop(seg);
            self.uncharge(SEGMENT_SIZE);
        } else {
            self.free.lock().push(seg);
        }
    }

    /// Frees one pooled segment to make room for a large item; false if none is pooled.
    pub fn release_free_segment(&self) -> bool {
        let seg = self.free.lock().pop();
        match seg {
            Some(seg) => {
                drop(seg);
                self.uncharge(SEGMENT_SIZE);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_charges_up_to_the_limit() {
        let pool = Pool::new(2 * SEGMENT_SIZE);
        let a = pool.take_segment().expect("first fits");
        let _b = pool.take_segment().expect("second fits");
        assert!(pool.take_segment().is_none());
        pool.give_segment(a);
        assert!(pool.take_segment().is_some(), "reused from the free list");
        assert!(!pool.try_charge(1));
        pool.set_limit(SEGMENT_SIZE);
        assert!(pool.over_limit());
    }
}
