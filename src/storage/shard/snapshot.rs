//! What a snapshot ([`crate::storage::snapshot`]) needs of a shard: its live items queue by
//! queue, oldest first, and a way to put a saved item back in the queue it came from.

use crate::storage::item::{DEAD, ItemRef, NewItem};

use super::{Ctx, Shard, Validity};

impl Shard {
    /// Visits every live item of the main queue (`main`, with the large items after it) or
    /// of the probation queue, oldest first: the order a restore writes them back in, so
    /// each queue keeps its order within a shard.
    pub(crate) fn visit_live(&self, ctx: &Ctx<'_>, main: bool, mut f: impl FnMut(ItemRef<'_>)) {
        let queue = if main { &self.main } else { &self.probation };
        for &slot in queue {
            let seg = self.seg(slot);
            let mut off = 0;
            while off < seg.used {
                let it = ItemRef::new(&seg.buf[off..]);
                off += it.total_len();
                if it.bits() & DEAD == 0 && ctx.validity(it) == Validity::Live {
                    f(it);
                }
            }
        }
        if main {
            for large in self.large.iter().flatten() {
                let it = large.item();
                if ctx.validity(it) == Validity::Live {
                    f(it);
                }
            }
        }
    }

    /// Sizes the index for the items a restore is about to write (the charge is taken now,
    /// as it would be as they came).
    pub(crate) fn reserve(&mut self, ctx: &Ctx<'_>, items: usize) {
        self.index.reserve(items);
        self.charge_index(ctx);
    }

    /// Writes back a saved item, into the main queue or on probation as it was saved (with
    /// `-M` everything is in the main queue). A restored item is not a client's write, so
    /// `total_items` does not count it. Returns whether there was memory for it.
    pub(crate) fn restore(
        &mut self,
        ctx: &Ctx<'_>,
        hash: u64,
        new: &NewItem<'_>,
        main: bool,
    ) -> bool {
        let stored = self
            .insert_into(ctx, hash, new, ctx.evictions && !main)
            .is_ok();
        if stored {
            self.stats.ops.total_items -= 1;
        }
        stored
    }
}
