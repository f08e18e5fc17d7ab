//! Size classes and the memory budget.
//!
//! memcrab does not cut memory into per-class slabs (see ARCHITECTURE.md, "Memory layout"):
//! items are packed into fixed-size segments that any size can use, so memory never
//! calcifies in one class and no item pays chunk rounding. The size-class ladder is kept for
//! what operators and tools read from it: `stats items` and `stats slabs` report items per
//! class exactly as memcached would group them, built from `-n` and `-f` the same way.
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
/// memcached's page size, used to present per-class numbers in its terms.
pub const PAGE_SIZE: usize = 1 << 20;
/// memcached numbers classes 1..=63.
pub const MAX_CLASSES: usize = 63;

/// memcached's size-class ladder: the first class holds a header plus `-n` bytes, each next
/// one is `-f` times larger (8-byte aligned), the last is `slab_chunk_max`.
#[derive(Debug, Clone)]
pub struct SizeClasses {
    sizes: Vec<u32>,
}

impl SizeClasses {
    pub fn new(header: usize, min_chunk: usize, factor: f64, chunk_max: usize) -> Self {
        let align = |n: f64| ((n as usize) + 7) & !7;
        let mut sizes = Vec::new();
        let mut size = align((header + min_chunk) as f64);
        while sizes.len() < MAX_CLASSES - 1 && (size as f64) <= chunk_max as f64 / factor {
            sizes.push(size as u32);
            size = align(size as f64 * factor);
        }
        sizes.push(chunk_max as u32);
        Self { sizes }
    }

    /// Number of classes; ids run from 1 to `len()`.
    pub fn len(&self) -> usize {
        self.sizes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }

    /// Chunk size of class `id` (1-based).
    pub fn chunk_size(&self, id: usize) -> usize {
        self.sizes[id - 1] as usize
    }

    /// How `items` of class `id` would lie in memcached's 1 MiB pages: (chunks per page,
    /// pages). `stats slabs` and the per-class metrics report these.
    pub fn pages(&self, id: usize, items: u64) -> (u64, u64) {
        let per_page = (PAGE_SIZE / self.chunk_size(id)).max(1) as u64;
        (per_page, items.div_ceil(per_page).max(1))
    }

    /// The class an item of `total` bytes belongs to; items above the largest chunk are
    /// counted in the last class, as memcached chains them from its largest chunks.
    pub fn class_of(&self, total: usize) -> usize {
        let i = self.sizes.partition_point(|&s| (s as usize) < total);
        i.min(self.sizes.len() - 1) + 1
    }
}

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
    fn ladder_matches_memcacheds_shape() {
        // memcached's own header (48 bytes) with -n 48 -f 1.25 starts at 96, as 1.6 shows.
        let c = SizeClasses::new(48, 48, 1.25, 512 * 1024);
        assert_eq!(c.chunk_size(1), 96);
        assert_eq!(c.chunk_size(2), 120);
        assert_eq!(c.chunk_size(7), 384);
        assert_eq!(c.chunk_size(c.len()), 512 * 1024);
        assert!(c.len() <= MAX_CLASSES);
        assert_eq!(c.class_of(1), 1);
        assert_eq!(c.class_of(96), 1);
        assert_eq!(c.class_of(97), 2);
        assert_eq!(c.class_of(10 << 20), c.len());
    }

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
