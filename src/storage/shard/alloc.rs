//! Where a new item's bytes go: the write head of the probation queue (of the main queue
//! with `-M`), a new segment from the pool while the budget allows, else room made by
//! eviction ([`super::evict`]); items too large for a segment go to [`super::large`].

use super::{Ctx, Loc, MAX_SEGMENTS, Segment, Shard, loc, split};
use crate::storage::item::NewItem;
use crate::storage::pool::{LARGE_ITEM, SEGMENT_SIZE};

impl Shard {
    /// Writes and links a new item. `Err(())` when no memory could be found in this shard.
    pub(crate) fn insert(
        &mut self,
        ctx: &Ctx<'_>,
        hash: u64,
        new: &NewItem<'_>,
    ) -> Result<Loc, ()> {
        // New items start on probation; with `-M` nothing is evicted, so there is no
        // probation and every item goes to the main queue.
        self.insert_into(ctx, hash, new, ctx.evictions)
    }

    /// [`Self::insert`] into the chosen queue: a restored item goes back to the queue it
    /// was saved from.
    pub(super) fn insert_into(
        &mut self,
        ctx: &Ctx<'_>,
        hash: u64,
        new: &NewItem<'_>,
        on_probation: bool,
    ) -> Result<Loc, ()> {
        let len = new.total_len();
        let at = if len > LARGE_ITEM {
            // Written as it is placed: a large item lies in two pieces.
            self.alloc_large(ctx, new)?
        } else {
            let at = self.alloc_in_segment(ctx, len, on_probation)?;
            let (slot, off) = split(at);
            let seg = self.segs[slot as usize].as_mut().expect("just allocated");
            new.write(&mut seg.buf[off..off + len]);
            at
        };
        self.link(ctx, hash, at);
        // A grown index may have pushed the charges past the limit: give back old segments
        // (never the head, which holds the new item).
        while ctx.evictions && ctx.pool.over_limit() && self.segments() > 1 {
            self.release_oldest(ctx);
        }
        Ok(at)
    }

    fn alloc_in_segment(
        &mut self,
        ctx: &Ctx<'_>,
        len: usize,
        on_probation: bool,
    ) -> Result<Loc, ()> {
        // Each round either places the item, adds a segment, or frees space; the bound only
        // guards against a bug turning into a spin.
        for _ in 0..self.segments() + 3 {
            let queue = if on_probation {
                &self.probation
            } else {
                &self.main
            };
            if let Some(&head) = queue.back() {
                let seg = self.segs[head as usize]
                    .as_mut()
                    .expect("queues hold live slots");
                if seg.used + len <= SEGMENT_SIZE {
                    let off = seg.used;
                    seg.used += len;
                    seg.live += len;
                    return Ok(loc(head as usize, off));
                }
            }
            let segments = self.segments();
            if ctx.pool.over_limit() && ctx.evictions && segments > 0 {
                self.release_oldest(ctx);
                continue;
            }
            if segments < MAX_SEGMENTS
                && let Some(buf) = ctx.pool.take_segment()
            {
                let slot = self.add_segment(buf);
                if on_probation {
                    self.probation.push_back(slot);
                } else {
                    self.main.push_back(slot);
                }
                continue;
            }
            if segments == 0 {
                // No segment of our own to recycle: give back large items, else ask the store.
                if ctx.evictions && self.evict_large(ctx) {
                    continue;
                }
                return Err(());
            }
            if !ctx.evictions {
                // One try: make room from dead and expired items only; the next round places
                // the item if that worked.
                if !self.reclaim_without_evicting(ctx, len) {
                    return Err(());
                }
                continue;
            }
            self.make_room(ctx);
        }
        Err(())
    }

    /// Takes a segment into a free slot; the caller queues it.
    fn add_segment(&mut self, buf: Box<[u8]>) -> u32 {
        let seg = Segment {
            buf,
            used: 0,
            live: 0,
            generation: self.next_generation(),
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.segs[slot as usize] = Some(seg);
                slot
            }
            None => {
                self.segs.push(Some(seg));
                (self.segs.len() - 1) as u32
            }
        };
        self.stats.segment_bytes += SEGMENT_SIZE as u64;
        slot
    }

    /// Returns an unqueued segment's memory to the pool and its slot to the free list.
    pub(super) fn free_segment(&mut self, ctx: &Ctx<'_>, slot: u32) {
        let seg = self.segs[slot as usize].take().expect("live segment");
        self.free_slots.push(slot);
        self.stats.segment_bytes -= SEGMENT_SIZE as u64;
        ctx.pool.give_segment(seg.buf);
    }
}
