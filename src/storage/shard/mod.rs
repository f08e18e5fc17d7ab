//! One shard of the engine: an index from key to item location, the segments the items are
//! packed into, and the items too large for a segment. Every method runs under the shard's
//! lock (the caller holds `&mut Shard`), so nothing here synchronises.
//!
//! - `mod.rs`: the `Shard` and its locations, finding, linking and unlinking items;
//! - [`ops`]: the operations the store calls (write, read, delete, arithmetic), whole
//!   under one lock hold;
//! - [`alloc`]: where a new item's bytes go (the write heads, new segments);
//! - [`evict`]: making room: S3-FIFO over segments, compaction, releasing segments;
//! - [`large`]: items too large for a segment, in their own allocations;
//! - [`walk`]: the reaper's walk and the sliced walks of the dumps.
//!
//! Eviction is S3-FIFO over segments: new items go to the probation queue (about
//! [`PROBATION_SHARE`] tenths of the segments); when the shard needs room and the budget is
//! spent, the oldest probation segment is compacted in place, its items read meanwhile
//! promoted to the main queue and the rest evicted; once probation is small enough, the oldest
//! main segment gets a CLOCK pass instead (read items stay, one read less to their credit, up
//! to [`KEEP_MAX`] of the segment). Expired and flushed items go in every pass, and a segment
//! that is mostly garbage is only collected. See ARCHITECTURE.md for why.

mod alloc;
mod evict;
mod large;
use large::Large;
mod ops;
mod snapshot;
mod walk;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::DefaultHashBuilder;

use super::classes::SizeClasses;
use super::expiry::{Timebase, is_expired};
use super::index::{Index, Loc};
use super::item::{self, DEAD, FETCHED, FREQ_MASK, ItemMut, ItemRef};
use super::pool::{Pool, SEGMENT_SHIFT, SEGMENT_SIZE};
use super::stats::ShardStats;

pub(crate) use walk::DumpPos;

/// Slot bits that mark a large item.
const LARGE_SLOT: u32 = (1 << (32 - SEGMENT_SHIFT)) - 1;
/// Segment slots a shard can address; the store sizes shards so that this is never reached.
pub(crate) const MAX_SEGMENTS: usize = LARGE_SLOT as usize;
const MAX_LARGE: usize = 1 << SEGMENT_SHIFT;
const OFFSET_MASK: u32 = (1 << SEGMENT_SHIFT) - 1;
/// At most this much of a segment survives its eviction pass, so every pass frees at least
/// a quarter of a segment.
const KEEP_MAX: usize = SEGMENT_SIZE / 4 * 3;
/// The probation queue's share of a full shard's segments, in tenths (S3-FIFO's 10%).
const PROBATION_SHARE: usize = 1;

fn loc(slot: usize, off: usize) -> Loc {
    ((slot as u32) << SEGMENT_SHIFT) | off as u32
}

fn split(loc: Loc) -> (u32, usize) {
    (loc >> SEGMENT_SHIFT, (loc & OFFSET_MASK) as usize)
}

/// What every shard reads of the store for one operation: the store-wide parts (the memory
/// pool, the class ladder, the hasher, the clock, the CAS counter, the settings) and the
/// time the operation runs at. Built once per operation, before the shard lock is taken.
pub(crate) struct Ctx<'a> {
    pub pool: &'a Pool,
    pub classes: &'a SizeClasses,
    pub hasher: &'a DefaultHashBuilder,
    pub time: &'a Timebase,
    pub next_cas: &'a AtomicU64,
    /// Server-relative now.
    pub now: u32,
    pub evictions: bool,
    pub cas_enabled: bool,
    /// `-I`: the largest item.
    pub item_size_max: usize,
    /// Items last accessed at or before this (relative) time are flushed, once it has come.
    pub oldest_live: u32,
}

impl Ctx<'_> {
    /// The key's hash: the shard choice, the index groups and the tag all come from it.
    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    /// The next CAS value.
    pub(crate) fn new_cas(&self) -> u64 {
        self.next_cas.fetch_add(1, Ordering::Relaxed)
    }

    /// A CAS value as clients see it: 0 when `-C` turned CAS off.
    pub(crate) fn visible_cas(&self, cas: u64) -> u64 {
        if self.cas_enabled { cas } else { 0 }
    }

    /// Whether an item of this key and value length can ever be stored (`-I`).
    pub(crate) fn fits(&self, key_len: usize, value_len: usize) -> bool {
        item::limit_len(key_len, value_len) <= self.item_size_max
    }

    /// Whether a linked item is still visible.
    pub(crate) fn validity(&self, item: ItemRef<'_>) -> Validity {
        if is_expired(item.exptime(), self.now) {
            Validity::Expired
        } else if self.oldest_live != 0
            && self.oldest_live <= self.now
            && item.atime() <= self.oldest_live
        {
            Validity::Flushed
        } else {
            Validity::Live
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validity {
    Live,
    Expired,
    Flushed,
}

/// Why an item leaves the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unlink {
    /// Deleted, replaced or overwritten by a client.
    Removed,
    /// Found expired or flushed by a request.
    Lazy,
    /// Found expired or flushed by the reaper.
    Reaped,
    /// Expired or flushed, dropped while recycling its segment.
    Reclaimed,
    /// Live, dropped to make room.
    Evicted,
}

struct Segment {
    buf: Box<[u8]>,
    /// Bytes written from the start.
    used: usize,
    /// Bytes of linked items.
    live: usize,
    /// Changed whenever items move, and unique per shard (a recycled slot gets a new one), so
    /// a cursor that stopped inside a segment can tell it still holds the same bytes.
    generation: u32,
}

pub(crate) struct Shard {
    index: Index,
    segs: Vec<Option<Segment>>,
    free_slots: Vec<u32>,
    /// The main queue: segment slots, oldest first. With evictions, segments enter it only
    /// when their items have proven themselves (read while on probation); with `-M` every
    /// item is written here and the back one is the write head.
    main: VecDeque<u32>,
    /// The probation queue (S3-FIFO's small queue), oldest first: new items are written to
    /// the back one. Kept to about [`PROBATION_SHARE`] of the shard's segments once memory is
    /// full, so an item read nowhere in that short window leaves early.
    probation: VecDeque<u32>,
    /// Items too large for a segment, each in its own allocation ([`large`]).
    large: Vec<Option<Large>>,
    large_free: Vec<u32>,
    large_hand: usize,
    /// Where the reaper resumes ([`walk`]).
    cursor: walk::Cursor,
    /// The last segment generation handed out.
    generations: u32,
    /// Bytes of the index charged to the pool: `-m` covers the index too.
    index_charged: usize,
    pub(crate) stats: ShardStats,
}

/// Reads an item; a free function so that it can borrow these fields while the index is
/// borrowed mutably.
fn item_at<'a>(segs: &'a [Option<Segment>], large: &'a [Option<Large>], at: Loc) -> ItemRef<'a> {
    let (slot, off) = split(at);
    if slot == LARGE_SLOT {
        large[off]
            .as_ref()
            .expect("index points at a live large item")
            .item()
    } else {
        ItemRef::new(
            &segs[slot as usize]
                .as_ref()
                .expect("index points at a live segment")
                .buf[off..],
        )
    }
}

/// The hash of the key of the item at `at`, for the index to move or displace its entry.
fn hash_at(ctx: &Ctx<'_>, segs: &[Option<Segment>], large: &[Option<Large>], at: Loc) -> u64 {
    ctx.hash(item_at(segs, large, at).key())
}

/// Points the index entry of an item that moved from `from` to `to`.
fn relocate(index: &mut Index, hash: u64, from: Loc, to: Loc) {
    if let Some(l) = index.get_mut(hash, |l| l == from) {
        *l = to;
    }
}

impl Shard {
    pub(crate) fn new(classes: usize) -> Self {
        Self {
            index: Index::new(),
            segs: Vec::new(),
            free_slots: Vec::new(),
            main: VecDeque::new(),
            probation: VecDeque::new(),
            large: Vec::new(),
            large_free: Vec::new(),
            large_hand: 0,
            cursor: walk::Cursor::default(),
            generations: 0,
            index_charged: 0,
            stats: ShardStats::new(classes),
        }
    }

    pub(crate) fn item(&self, at: Loc) -> ItemRef<'_> {
        item_at(&self.segs, &self.large, at)
    }

    pub(crate) fn item_mut(&mut self, at: Loc) -> ItemMut<'_> {
        let (slot, off) = split(at);
        if slot == LARGE_SLOT {
            self.large[off]
                .as_mut()
                .expect("live large item")
                .item_mut()
        } else {
            ItemMut::new(&mut self.segs[slot as usize].as_mut().expect("live segment").buf[off..])
        }
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<Loc> {
        let (segs, large) = (&self.segs, &self.large);
        self.index
            .get(hash, |at| item_at(segs, large, at).key() == key)
    }

    /// Finds a visible item; an expired or flushed one is unlinked and reported as such.
    pub(crate) fn lookup(&mut self, ctx: &Ctx<'_>, hash: u64, key: &[u8]) -> Result<Loc, Validity> {
        let at = self.find(hash, key).ok_or(Validity::Live)?;
        match ctx.validity(self.item(at)) {
            Validity::Live => Ok(at),
            v => {
                self.unlink(ctx, hash, at, Unlink::Lazy);
                Err(v)
            }
        }
    }

    /// Records a read: CLOCK frequency, fetched bit, access time.
    fn touch_access(&mut self, at: Loc, now: u32) {
        self.bump(at, now, FETCHED);
    }

    /// Records a use that is not a read (a failed `add`, memcached's `do_item_update`):
    /// CLOCK frequency and access time; the item stays unfetched (`mg … h` still says 0).
    fn touch_unread(&mut self, at: Loc, now: u32) {
        self.bump(at, now, 0);
    }

    fn bump(&mut self, at: Loc, now: u32, extra_bits: u8) {
        let mut it = self.item_mut(at);
        let bits = it.as_ref().bits();
        let freq = (bits & FREQ_MASK).saturating_add(1).min(FREQ_MASK);
        it.set_bits((bits & !FREQ_MASK) | freq | extra_bits);
        it.set_atime(now);
    }

    /// Removes a linked item from the index and accounts for it.
    pub(crate) fn unlink(&mut self, ctx: &Ctx<'_>, hash: u64, at: Loc, why: Unlink) {
        self.index.remove(hash, |l| l == at);
        self.forget(ctx, at, why);
    }

    /// Bookkeeping for an item that is no longer indexed: stats, live bytes, memory.
    fn forget(&mut self, ctx: &Ctx<'_>, at: Loc, why: Unlink) {
        let it = self.item(at);
        let (len, bits, exptime, atime) = (it.total_len(), it.bits(), it.exptime(), it.atime());
        let class = &mut self.stats.classes[ctx.classes.class_of(len)];
        class.number -= 1;
        class.bytes -= len as u64;
        let fetched = bits & FETCHED != 0;
        match why {
            Unlink::Removed => {}
            Unlink::Lazy | Unlink::Reaped | Unlink::Reclaimed => {
                if !fetched {
                    class.expired_unfetched += 1;
                }
                match why {
                    Unlink::Reaped => class.crawler_reclaimed += 1,
                    Unlink::Reclaimed => class.reclaimed += 1,
                    _ => {}
                }
            }
            Unlink::Evicted => {
                class.evicted += 1;
                class.evicted_time = u64::from(ctx.now.saturating_sub(atime));
                if exptime != 0 {
                    class.evicted_nonzero += 1;
                }
                if !fetched {
                    class.evicted_unfetched += 1;
                }
                if bits & FREQ_MASK != 0 {
                    class.evicted_active += 1;
                }
            }
        }
        let (slot, off) = split(at);
        if slot == LARGE_SLOT {
            self.free_large(ctx, off);
        } else {
            let seg = self.segs[slot as usize].as_mut().expect("live segment");
            seg.live -= len;
            seg.buf[off + 1] |= DEAD;
        }
    }

    /// Links a freshly written item, replacing the current item of that key if any.
    fn link(&mut self, ctx: &Ctx<'_>, hash: u64, at: Loc) {
        let it = self.item(at);
        let len = it.total_len();
        let class = &mut self.stats.classes[ctx.classes.class_of(len)];
        class.number += 1;
        class.bytes += len as u64;
        self.stats.ops.total_items += 1;
        let (segs, large) = (&self.segs, &self.large);
        let key = item_at(segs, large, at).key();
        let old = match self
            .index
            .get_mut(hash, |l| item_at(segs, large, l).key() == key)
        {
            Some(slot) => Some(std::mem::replace(slot, at)),
            None => {
                self.index
                    .insert(hash, at, &|l| hash_at(ctx, segs, large, l));
                None
            }
        };
        if let Some(old) = old {
            self.forget(ctx, old, Unlink::Removed);
        }
        self.charge_index(ctx);
    }

    /// Brings the index's charge in line with its size after it grew or shrank.
    fn charge_index(&mut self, ctx: &Ctx<'_>) {
        let now = self.index_bytes();
        if now > self.index_charged {
            ctx.pool.force_charge(now - self.index_charged);
        } else if now < self.index_charged {
            ctx.pool.uncharge(self.index_charged - now);
        }
        self.index_charged = now;
    }

    fn next_generation(&mut self) -> u32 {
        self.generations = self.generations.wrapping_add(1);
        self.generations
    }

    fn seg(&self, slot: u32) -> &Segment {
        self.segs[slot as usize].as_ref().expect("live segment")
    }

    /// Segments in both queues.
    fn segments(&self) -> usize {
        self.main.len() + self.probation.len()
    }

    /// Bytes the index uses (slots and tags).
    pub(crate) fn index_bytes(&self) -> usize {
        self.index.bytes()
    }

    pub(crate) fn index_buckets(&self) -> usize {
        self.index.capacity()
    }

    pub(crate) fn index_expanding(&self) -> bool {
        self.index.expanding()
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }
}
