//! Making room: S3-FIFO over segments ([`Shard::make_room`]), compaction in place,
//! promotion from probation to the main queue, and giving whole segments back to the pool
//! (to a lowered `-m`, to another shard, or on `flush_all`).

use crate::storage::item::{DEAD, FREQ_MASK, ItemMut, ItemRef};
use crate::storage::pool::SEGMENT_SIZE;

use super::{Ctx, KEEP_MAX, PROBATION_SHARE, Shard, Unlink, Validity, loc, relocate};

/// What a compaction pass keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Every live item (`-M`): only dead and expired bytes go.
    Collect,
    /// The items read since they were written (or last passed); the rest are evicted.
    Probation,
    /// A CLOCK pass over a main segment: as `Probation` when the segment is mostly live,
    /// as `Collect` when it is mostly garbage.
    Clock,
}

impl Shard {
    /// Memory is full and the probation queue's head has no room: S3-FIFO's eviction over
    /// segments. While the probation queue holds more than its share (or the main queue is
    /// empty), its oldest segment is compacted: the items read while on probation stay and
    /// the segment joins the main queue with them, the others leave (a segment that is
    /// mostly garbage is only collected and stays on probation, all its live items kept).
    /// Otherwise the main queue's oldest segment is compacted as a CLOCK pass (read items
    /// stay, one read less to their credit) and its survivors move to the main queue's
    /// head, until a segment is empty and becomes the probation queue's head (Segcache's
    /// merge eviction).
    pub(super) fn make_room(&mut self, ctx: &Ctx<'_>) {
        let total = self.segments();
        let over_share = self.probation.len() * 10 > (total * PROBATION_SHARE).max(10);
        if over_share || self.main.is_empty() {
            let Some(slot) = self.probation.pop_front() else {
                return;
            };
            if self.seg(slot).live > KEEP_MAX {
                self.compact(ctx, slot, Pass::Probation);
                if !self.promote(ctx, slot) {
                    // The main queue's head had no room: the segment becomes it.
                    self.main.push_back(slot);
                    return;
                }
            } else {
                // Mostly garbage (overwritten, deleted): collected, every live item stays
                // on probation, and at least a quarter of the segment is free again.
                self.compact(ctx, slot, Pass::Collect);
            }
            self.probation.push_back(slot);
        } else {
            let slot = self.main.pop_front().expect("checked non-empty");
            self.compact(ctx, slot, Pass::Clock);
            if self.main.is_empty() || self.promote(ctx, slot) {
                // Emptied (its survivors moved to the main queue's head), or the main
                // queue's only segment: it becomes the probation queue's head.
                self.probation.push_back(slot);
            } else {
                // The survivors that did not fit stay, and the segment is the new head.
                self.main.push_back(slot);
            }
        }
    }

    /// Moves the items at the front of a compacted probation segment to the free tail of the
    /// main queue's head, as many as fit, so that main segments stay dense. Returns whether
    /// all moved; if not, the rest are moved to the front of `slot` (which the caller then
    /// makes the main queue's head).
    fn promote(&mut self, ctx: &Ctx<'_>, slot: u32) -> bool {
        let used = self.seg(slot).used;
        let mut src = self.segs[slot as usize].take().expect("live segment");
        let mut off = 0;
        if let Some(&head) = self.main.back() {
            let dst = self.segs[head as usize].as_mut().expect("live segment");
            while off < used {
                let it = ItemRef::new(&src.buf[off..]);
                let len = it.total_len();
                if dst.used + len > SEGMENT_SIZE {
                    break;
                }
                let to = dst.used;
                dst.buf[to..to + len].copy_from_slice(&src.buf[off..off + len]);
                dst.used += len;
                dst.live += len;
                let from = loc(slot as usize, off);
                relocate(
                    &mut self.index,
                    ctx.hash(it.key()),
                    from,
                    loc(head as usize, to),
                );
                off += len;
            }
        }
        let rest = used - off;
        if off > 0 && rest > 0 {
            src.buf.copy_within(off..used, 0);
            let mut at = 0;
            while at < rest {
                let it = ItemRef::new(&src.buf[at..]);
                let (from, to) = (loc(slot as usize, off + at), loc(slot as usize, at));
                relocate(&mut self.index, ctx.hash(it.key()), from, to);
                at += it.total_len();
            }
        }
        src.used = rest;
        src.live = rest;
        src.generation = self.next_generation();
        self.segs[slot as usize] = Some(src);
        rest == 0
    }

    /// With `-M`: compacts the segment with the most dead bytes (or, if none has room for
    /// `len`, the oldest, whose expired items also go) and makes it the write head. Live
    /// items all stay. Returns whether the head now has room.
    pub(super) fn reclaim_without_evicting(&mut self, ctx: &Ctx<'_>, len: usize) -> bool {
        let dead = |shard: &Self, slot: u32| {
            let seg = shard.seg(slot);
            seg.used - seg.live
        };
        let best = (0..self.main.len()).max_by_key(|&pos| dead(self, self.main[pos]));
        let pos = match best {
            Some(pos) if dead(self, self.main[pos]) >= len => pos,
            _ => 0,
        };
        let Some(slot) = self.main.remove(pos) else {
            return false;
        };
        self.compact(ctx, slot, Pass::Collect);
        self.main.push_back(slot);
        self.seg(slot).used + len <= SEGMENT_SIZE
    }

    /// Empties the oldest segment (of the main queue, else of the probation queue) and
    /// returns it to the pool.
    pub(super) fn release_oldest(&mut self, ctx: &Ctx<'_>) -> bool {
        let Some(slot) = self.main.pop_front().or_else(|| self.probation.pop_front()) else {
            return false;
        };
        self.drain_segment(ctx, slot);
        true
    }

    fn drain_segment(&mut self, ctx: &Ctx<'_>, slot: u32) {
        let mut off = 0;
        while off < self.seg(slot).used {
            let it = ItemRef::new(&self.seg(slot).buf[off..]);
            let len = it.total_len();
            if it.bits() & DEAD == 0 {
                let why = match ctx.validity(it) {
                    Validity::Live => Unlink::Evicted,
                    _ => Unlink::Reclaimed,
                };
                let hash = ctx.hash(it.key());
                self.unlink(ctx, hash, loc(slot as usize, off), why);
            }
            off += len;
        }
        self.free_segment(ctx, slot);
    }

    /// Moves the items worth keeping to the front of the segment and unlinks the rest.
    fn compact(&mut self, ctx: &Ctx<'_>, slot: u32, pass: Pass) {
        let used = self.seg(slot).used;
        let evict = match pass {
            Pass::Collect => false,
            Pass::Probation => true,
            // A main segment that is mostly garbage (overwritten, deleted) is only
            // collected: every live item stays. Items are evicted only from segments that
            // are mostly live.
            Pass::Clock => self.seg(slot).live > KEEP_MAX,
        };
        let (mut src, mut dst) = (0, 0);
        while src < used {
            let seg = self.segs[slot as usize].as_mut().expect("live segment");
            let it = ItemRef::new(&seg.buf[src..]);
            let (len, bits) = (it.total_len(), it.bits());
            let at = loc(slot as usize, src);
            if bits & DEAD != 0 {
                src += len;
                continue;
            }
            let hash = ctx.hash(it.key());
            let validity = ctx.validity(it);
            let keep = validity == Validity::Live
                && (!evict || (bits & FREQ_MASK > 0 && dst + len <= KEEP_MAX));
            if !keep {
                let why = if validity == Validity::Live {
                    Unlink::Evicted
                } else {
                    Unlink::Reclaimed
                };
                self.unlink(ctx, hash, at, why);
                src += len;
                continue;
            }
            if bits & FREQ_MASK > 0 {
                // The hand passes: one read less to its credit.
                ItemMut::new(&mut seg.buf[src..]).set_bits(bits - 1);
            }
            if src != dst {
                seg.buf.copy_within(src..src + len, dst);
                relocate(&mut self.index, hash, at, loc(slot as usize, dst));
            }
            src += len;
            dst += len;
        }
        let generation = self.next_generation();
        let seg = self.segs[slot as usize].as_mut().expect("live segment");
        seg.used = dst;
        seg.live = dst;
        seg.generation = generation;
    }

    /// Gives one segment (else one large item) back to the pool, for another shard that has
    /// none to recycle. Returns whether anything was released.
    pub(crate) fn release_for_other(&mut self, ctx: &Ctx<'_>) -> bool {
        if !ctx.evictions {
            return false;
        }
        self.release_oldest(ctx) || self.evict_large(ctx)
    }

    /// Drops every item (flush_all without delay) and returns the memory to the pool.
    pub(crate) fn clear(&mut self, ctx: &Ctx<'_>) {
        self.stats.ops.flushed_items += self.index.len() as u64;
        self.index.clear();
        while let Some(slot) = self.main.pop_front().or_else(|| self.probation.pop_front()) {
            self.free_segment(ctx, slot);
        }
        self.clear_large(ctx);
        for class in &mut self.stats.classes {
            class.number = 0;
            class.bytes = 0;
        }
        self.charge_index(ctx);
    }
}
