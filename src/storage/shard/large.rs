//! Items too large for a segment (over [`LARGE_ITEM`](crate::storage::pool::LARGE_ITEM)):
//! each in allocations of its own, charged to the pool at what they really use, addressed by
//! a slot in `Shard::large`, and evicted by a CLOCK hand of their own.
//!
//! A large item is two pieces: the value's last whole pages, mapped on their own (`mmap`:
//! exactly those pages, no allocator header), and a small head from the allocator with the
//! header, the key and the value's first `value_len % 4096` bytes. In one allocation, an
//! item of a 100 KiB value (25 pages) and a 57-byte header and key took 26 pages, 4% more than
//! its bytes; in two it takes its bytes rounded to 16.

use std::ptr::NonNull;

use crate::storage::item::{FREQ_MASK, ItemMut, ItemRef, NewItem};

use super::{Ctx, LARGE_SLOT, Loc, MAX_LARGE, Shard, Unlink, Validity, loc};

const PAGE: usize = 4096;
/// The allocator's step and header for a block on its heap (the head).
const MALLOC_ALIGN: usize = 16;
const MALLOC_HEADER: usize = 8;

/// A large item: its head (header, key, the value's first bytes) and the rest of its value.
pub(super) struct Large {
    head: Box<[u8]>,
    rest: Pages,
}

impl Large {
    pub(super) fn item(&self) -> ItemRef<'_> {
        ItemRef::split(&self.head, &self.rest)
    }

    pub(super) fn item_mut(&mut self) -> ItemMut<'_> {
        ItemMut::split(&mut self.head, &mut self.rest)
    }

    /// What this item is charged: its head as the allocator rounds it, its pages.
    fn charge(&self) -> usize {
        charge(self.head.len(), self.rest.len)
    }
}

fn charge(head: usize, rest: usize) -> usize {
    (head + MALLOC_HEADER).div_ceil(MALLOC_ALIGN) * MALLOC_ALIGN + rest
}

/// How a large item of `total` bytes with a value of `value_len` is cut: (head, rest).
fn cut(total: usize, value_len: usize) -> (usize, usize) {
    let rest = value_len / PAGE * PAGE;
    (total - rest, rest)
}

/// Whole pages of anonymous memory, mapped for one item and unmapped with it.
struct Pages {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `Pages` owns its mapping as a `Box<[u8]>` owns its block; it is only reached
// through `&`/`&mut` of its owner.
unsafe impl Send for Pages {}
// SAFETY: as above; shared references only read.
unsafe impl Sync for Pages {}

impl Pages {
    /// `len` (a multiple of the page size) zeroed bytes, or `None` if the kernel refuses.
    fn new(len: usize) -> Option<Self> {
        if len == 0 {
            return Some(Pages {
                ptr: NonNull::dangling(),
                len,
            });
        }
        // SAFETY: an anonymous private mapping of a fresh range; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        NonNull::new(ptr.cast()).map(|ptr| Pages { ptr, len })
    }
}

impl std::ops::Deref for Pages {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` mapped, readable bytes (or none, at a dangling aligned pointer).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Pages {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the mapping this value made and still owns.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

impl Shard {
    /// Writes `new` as a large item: charged to the pool (giving back pooled segments,
    /// other large items or old segments until it fits), in a free slot.
    pub(super) fn alloc_large(&mut self, ctx: &Ctx<'_>, new: &NewItem<'_>) -> Result<Loc, ()> {
        let (head_len, rest_len) = cut(new.total_len(), new.value_len());
        let charge = charge(head_len, rest_len);
        loop {
            if ctx.pool.try_charge(charge) {
                break;
            }
            if ctx.pool.release_free_segment() {
                continue;
            }
            if !ctx.evictions {
                return Err(());
            }
            if !self.evict_large(ctx) && !self.release_oldest(ctx) {
                return Err(());
            }
        }
        let slot = match self.large_free.pop() {
            Some(slot) => slot as usize,
            None if self.large.len() < MAX_LARGE => {
                self.large.push(None);
                self.large.len() - 1
            }
            None => {
                ctx.pool.uncharge(charge);
                return Err(());
            }
        };
        let Some(rest) = Pages::new(rest_len) else {
            self.large_free.push(slot as u32);
            ctx.pool.uncharge(charge);
            return Err(());
        };
        let mut large = Large {
            head: vec![0u8; head_len].into_boxed_slice(),
            rest,
        };
        new.write_split(&mut large.head, &mut large.rest);
        self.large[slot] = Some(large);
        self.stats.large_bytes += charge as u64;
        Ok(loc(LARGE_SLOT as usize, slot))
    }

    /// Frees the large item in `slot` (already unlinked) and uncharges it.
    pub(super) fn free_large(&mut self, ctx: &Ctx<'_>, slot: usize) {
        let large = self.large[slot].take().expect("live large item");
        let charge = large.charge();
        self.large_free.push(slot as u32);
        self.stats.large_bytes -= charge as u64;
        ctx.pool.uncharge(charge);
    }

    /// Frees every large item without unlinking (the index is being cleared).
    pub(super) fn clear_large(&mut self, ctx: &Ctx<'_>) {
        for slot in 0..self.large.len() {
            if self.large[slot].is_some() {
                self.free_large(ctx, slot);
            }
        }
    }

    /// CLOCK over the large items: evicts the first one not read since the hand last passed.
    pub(super) fn evict_large(&mut self, ctx: &Ctx<'_>) -> bool {
        let n = self.large.len();
        if n == self.large_free.len() {
            return false;
        }
        for _ in 0..n * (FREQ_MASK as usize + 1) + 1 {
            let i = self.large_hand % n;
            self.large_hand = i + 1;
            let Some(large) = self.large[i].as_mut() else {
                continue;
            };
            let mut it = large.item_mut();
            let bits = it.as_ref().bits();
            if bits & FREQ_MASK > 0 {
                it.set_bits(bits - 1);
                continue;
            }
            let at = loc(LARGE_SLOT as usize, i);
            let hash = ctx.hash(self.item(at).key());
            let why = match ctx.validity(self.item(at)) {
                Validity::Live => Unlink::Evicted,
                _ => Unlink::Reclaimed,
            };
            self.unlink(ctx, hash, at, why);
            return true;
        }
        false
    }

    /// The reaper's pass over the large items: unlinks the expired and flushed ones.
    /// Returns the items checked.
    pub(super) fn reap_large(&mut self, ctx: &Ctx<'_>) -> usize {
        let mut checked = 0;
        for i in 0..self.large.len() {
            if self.large[i].is_none() {
                continue;
            }
            checked += 1;
            let at = loc(LARGE_SLOT as usize, i);
            if ctx.validity(self.item(at)) != Validity::Live {
                let hash = ctx.hash(self.item(at).key());
                self.unlink(ctx, hash, at, Unlink::Reaped);
            }
        }
        checked
    }
}
