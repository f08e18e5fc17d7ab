//! The walks over a shard's items: the reaper's (a bounded step at a time, resuming from a
//! cursor kept in the shard) and the dumps' (a bounded slice at a time, resuming from a
//! [`DumpPos`] the caller keeps), so that no walk holds the shard's lock for long.

use crate::storage::item::{DEAD, ItemRef};

use super::{Ctx, Shard, Unlink, Validity, hash_at, loc};

/// Index groups one step of an unfinished growth moves, in one hold of the shard's lock
/// (about 900 entries: tens of microseconds; the reaper takes several steps per run, each
/// under its own hold, see [`crate::storage::Store::reap`]).
const GROW_STEP_GROUPS: usize = 128;

/// Where the reaper resumes.
#[derive(Default)]
pub(super) struct Cursor {
    /// Position in the main queue followed by the probation queue.
    queue_pos: usize,
    slot: u32,
    generation: u32,
    off: usize,
}

/// Where a sliced walk of one shard's items stands ([`Shard::visit_slice`]).
#[derive(Debug, Default)]
pub(crate) struct DumpPos {
    /// The shard's segments and their generations when the walk began.
    segs: Option<Vec<(u32, u32)>>,
    seg: usize,
    off: usize,
    large: usize,
}

impl Shard {
    /// Moves an unfinished growth of the index on by one step; whether one remains.
    pub(crate) fn grow_step(&mut self, ctx: &Ctx<'_>) -> bool {
        if !self.index.expanding() {
            return false;
        }
        let (segs, large) = (&self.segs, &self.large);
        self.index
            .migrate(GROW_STEP_GROUPS, &|l| hash_at(ctx, segs, large, l));
        self.charge_index(ctx);
        self.index.expanding()
    }

    /// Checks up to `budget` items for expiry, unlinking the dead ones; frees segments left
    /// with no live item. Returns the number of items checked.
    pub(crate) fn reap(&mut self, ctx: &Ctx<'_>, budget: usize) -> usize {
        let mut checked = 0;
        while checked < budget {
            // Both queues, main then probation, as one sequence of positions.
            let Some(slot) = self.queued_at(self.cursor.queue_pos) else {
                checked += self.reap_large(ctx);
                self.cursor = Cursor::default();
                break;
            };
            let generation = self.seg(slot).generation;
            if self.cursor.slot != slot || self.cursor.generation != generation {
                self.cursor.slot = slot;
                self.cursor.generation = generation;
                self.cursor.off = 0;
            }
            let used = self.seg(slot).used;
            while self.cursor.off < used && checked < budget {
                let off = self.cursor.off;
                let it = ItemRef::new(&self.seg(slot).buf[off..]);
                let (len, dead) = (it.total_len(), it.bits() & DEAD != 0);
                let stale = !dead && ctx.validity(it) != Validity::Live;
                let hash = if stale { ctx.hash(it.key()) } else { 0 };
                self.cursor.off += len;
                if dead {
                    continue;
                }
                checked += 1;
                if stale {
                    self.unlink(ctx, hash, loc(slot as usize, off), Unlink::Reaped);
                }
            }
            if self.cursor.off >= used {
                let is_head =
                    self.main.back() == Some(&slot) || self.probation.back() == Some(&slot);
                if !is_head && self.seg(slot).live == 0 {
                    let pos = self.cursor.queue_pos;
                    if pos < self.main.len() {
                        self.main.remove(pos);
                    } else {
                        self.probation.remove(pos - self.main.len());
                    }
                    self.free_segment(ctx, slot);
                } else {
                    self.cursor.queue_pos += 1;
                }
                self.cursor.off = 0;
            }
        }
        self.stats.ops.crawler_items_checked += checked as u64;
        checked
    }

    /// The segment at `pos` of the main queue followed by the probation queue.
    fn queued_at(&self, pos: usize) -> Option<u32> {
        match pos.checked_sub(self.main.len()) {
            None => Some(self.main[pos]),
            Some(pos) => self.probation.get(pos).copied(),
        }
    }

    /// Visits up to `budget` items (dead ones included in the count, not in the visit) from
    /// `pos` on, for a dump that runs in slices between which the lock is released. Returns
    /// whether the shard is done. The segments are those queued when the walk began; one
    /// whose bytes moved since (compacted, recycled) is walked again from its start, so an
    /// item that moves during a dump may be listed twice or (written to a newer segment)
    /// not at all, as with memcached's crawler; every item that stays put is listed once.
    pub(crate) fn visit_slice(
        &self,
        pos: &mut DumpPos,
        budget: usize,
        mut f: impl FnMut(ItemRef<'_>),
    ) -> bool {
        let segs = pos.segs.get_or_insert_with(|| {
            self.main
                .iter()
                .chain(&self.probation)
                .map(|&slot| (slot, self.seg(slot).generation))
                .collect()
        });
        let mut visited = 0;
        while let Some(&(slot, generation)) = segs.get(pos.seg) {
            let Some(seg) = self.segs.get(slot as usize).and_then(Option::as_ref) else {
                pos.seg += 1;
                pos.off = 0;
                continue;
            };
            if seg.generation != generation {
                segs[pos.seg].1 = seg.generation;
                pos.off = 0;
            }
            while pos.off < seg.used {
                if visited >= budget {
                    return false;
                }
                let it = ItemRef::new(&seg.buf[pos.off..]);
                pos.off += it.total_len();
                visited += 1;
                if it.bits() & DEAD == 0 {
                    f(it);
                }
            }
            pos.seg += 1;
            pos.off = 0;
        }
        while pos.large < self.large.len() {
            if visited >= budget {
                return false;
            }
            if let Some(large) = &self.large[pos.large] {
                f(large.item());
            }
            pos.large += 1;
            visited += 1;
        }
        true
    }
}
