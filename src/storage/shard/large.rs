//! Items too large for a segment (over [`LARGE_ITEM`](crate::storage::pool::LARGE_ITEM)):
//! each in its own allocation, charged to the pool at what the allocator really uses,
//! addressed by a slot in `Shard::large`, and evicted by a CLOCK hand of their own.

use crate::storage::item::{FREQ_MASK, ItemMut};
use crate::storage::pool::MMAP_THRESHOLD;

use super::{Ctx, LARGE_SLOT, Loc, MAX_LARGE, Shard, Unlink, Validity, loc};

/// Large items are charged what the allocator really uses: whole pages for blocks it maps
/// on their own (at or above the mmap threshold `main` pins), 16-byte steps plus its 8-byte
/// header below.
const PAGE: usize = 4096;
const MALLOC_ALIGN: usize = 16;

fn large_charge(len: usize) -> usize {
    if len >= MMAP_THRESHOLD {
        (len + MALLOC_ALIGN).div_ceil(PAGE) * PAGE
    } else {
        (len + 8).div_ceil(MALLOC_ALIGN) * MALLOC_ALIGN
    }
}

impl Shard {
    /// Room for a large item of `len` bytes: charged to the pool (giving back pooled
    /// segments, other large items or old segments until it fits), in a free slot.
    pub(super) fn alloc_large(&mut self, ctx: &Ctx<'_>, len: usize) -> Result<Loc, ()> {
        let charge = large_charge(len);
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
        self.large[slot] = Some(vec![0u8; len].into_boxed_slice());
        self.stats.large_bytes += charge as u64;
        Ok(loc(LARGE_SLOT as usize, slot))
    }

    /// Frees the large item in `slot` (already unlinked) and uncharges it.
    pub(super) fn free_large(&mut self, ctx: &Ctx<'_>, slot: usize) {
        let buf = self.large[slot].take().expect("live large item");
        let charge = large_charge(buf.len());
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
            let Some(buf) = self.large[i].as_deref_mut() else {
                continue;
            };
            let mut it = ItemMut::new(buf);
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
