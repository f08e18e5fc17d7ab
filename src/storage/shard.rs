//! One shard of the engine: an index from key to item location, the segments the items are
//! packed into, and the items too large for a segment. Every method here runs under the
//! shard's lock (the caller holds `&mut Shard`), so nothing in this file synchronises.
//!
//! Eviction is S3-FIFO over segments: new items go to the probation queue (`small`, about
//! [`SMALL_SHARE`] tenths of the segments); when the shard needs room and the budget is spent,
//! the oldest probation segment is compacted in place, its items read meanwhile promoted to
//! the main queue (`fifo`) and the rest evicted; once probation is small enough, the oldest
//! main segment gets a CLOCK pass instead (read items stay, one read less to their credit, up
//! to [`KEEP_MAX`] of the segment). Expired and flushed items go in every pass, and a segment
//! that is mostly garbage is only collected. See ARCHITECTURE.md for why.

use std::collections::VecDeque;

use super::expiry::is_expired;
use super::index::Index;
use super::item::{self, DEAD, FETCHED, FREQ_MASK, ItemMut, ItemRef, NewItem};
use super::slab::{LARGE_ITEM, MMAP_THRESHOLD, Pool, SEGMENT_SHIFT, SEGMENT_SIZE, SizeClasses};
use super::stats::ShardStats;

/// A location: `segment slot << SEGMENT_SHIFT | offset`, or [`LARGE_SLOT`] in the slot bits
/// and a large-item slot in the offset bits. 4 bytes per index entry.
pub(crate) type Loc = u32;

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
const SMALL_SHARE: usize = 1;
/// Large items are charged what the allocator really uses: whole pages for blocks it maps
/// on their own (at or above the mmap threshold `main` pins), 16-byte steps plus its 8-byte
/// header below.
const PAGE: usize = 4096;
const MALLOC_ALIGN: usize = 16;
/// Index groups the reaper moves per run while a growth is under way (about 7,000 entries,
/// well under a millisecond of the shard's lock).
const REAP_MOVE_GROUPS: usize = 1024;

fn loc(slot: usize, off: usize) -> Loc {
    ((slot as u32) << SEGMENT_SHIFT) | off as u32
}

fn split(loc: Loc) -> (u32, usize) {
    (loc >> SEGMENT_SHIFT, (loc & OFFSET_MASK) as usize)
}

fn large_charge(len: usize) -> usize {
    if len >= MMAP_THRESHOLD {
        (len + MALLOC_ALIGN).div_ceil(PAGE) * PAGE
    } else {
        (len + 8).div_ceil(MALLOC_ALIGN) * MALLOC_ALIGN
    }
}

/// What a shard needs from the store for one operation.
pub(crate) struct Ctx<'a> {
    pub pool: &'a Pool,
    pub classes: &'a SizeClasses,
    pub hash: &'a dyn Fn(&[u8]) -> u64,
    /// Server-relative now.
    pub now: u32,
    pub evictions: bool,
    /// Items last accessed at or before this (relative) time are flushed, once it has come.
    pub oldest_live: u32,
}

impl Ctx<'_> {
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

/// Where the reaper resumes.
#[derive(Default)]
struct Cursor {
    fifo_pos: usize,
    slot: u32,
    generation: u32,
    off: usize,
}

pub(crate) struct Shard {
    index: Index,
    segs: Vec<Option<Segment>>,
    free_slots: Vec<u32>,
    /// The main queue: segment slots, oldest first. With evictions, segments enter it only
    /// when their items have proven themselves (read while on probation); with `-M` every
    /// item is written here and the back one is the write head.
    fifo: VecDeque<u32>,
    /// The probation queue (S3-FIFO's small queue), oldest first: new items are written to
    /// the back one. Kept to about [`SMALL_SHARE`] of the shard's segments once memory is
    /// full, so an item read nowhere in that short window leaves early.
    small: VecDeque<u32>,
    large: Vec<Option<Box<[u8]>>>,
    large_free: Vec<u32>,
    large_hand: usize,
    cursor: Cursor,
    /// The last segment generation handed out.
    generations: u32,
    /// Bytes of the index charged to the pool: `-m` covers the index too.
    index_charged: usize,
    pub(crate) stats: ShardStats,
}

/// Reads an item's bytes; a free function so that it can borrow these fields while the
/// index is borrowed mutably.
fn item_buf<'a>(segs: &'a [Option<Segment>], large: &'a [Option<Box<[u8]>>], at: Loc) -> &'a [u8] {
    let (slot, off) = split(at);
    if slot == LARGE_SLOT {
        large[off]
            .as_deref()
            .expect("index points at a live large item")
    } else {
        &segs[slot as usize]
            .as_ref()
            .expect("index points at a live segment")
            .buf[off..]
    }
}

/// The hash of the key of the item at `at`, for the index to move or displace its entry.
fn hash_at(ctx: &Ctx<'_>, segs: &[Option<Segment>], large: &[Option<Box<[u8]>>], at: Loc) -> u64 {
    (ctx.hash)(ItemRef::new(item_buf(segs, large, at)).key())
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
            fifo: VecDeque::new(),
            small: VecDeque::new(),
            large: Vec::new(),
            large_free: Vec::new(),
            large_hand: 0,
            cursor: Cursor::default(),
            generations: 0,
            index_charged: 0,
            stats: ShardStats::new(classes),
        }
    }

    pub(crate) fn item(&self, at: Loc) -> ItemRef<'_> {
        ItemRef::new(item_buf(&self.segs, &self.large, at))
    }

    pub(crate) fn item_mut(&mut self, at: Loc) -> ItemMut<'_> {
        let (slot, off) = split(at);
        let buf: &mut [u8] = if slot == LARGE_SLOT {
            self.large[off].as_deref_mut().expect("live large item")
        } else {
            &mut self.segs[slot as usize].as_mut().expect("live segment").buf[off..]
        };
        ItemMut::new(buf)
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<Loc> {
        let (segs, large) = (&self.segs, &self.large);
        self.index.get(hash, |at| {
            ItemRef::new(item_buf(segs, large, at)).key() == key
        })
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
    pub(crate) fn touch_access(&mut self, at: Loc, now: u32) {
        self.bump(at, now, FETCHED);
    }

    /// Records a use that is not a read (a failed `add`, memcached's `do_item_update`):
    /// CLOCK frequency and access time; the item stays unfetched (`mg … h` still says 0).
    pub(crate) fn touch_unread(&mut self, at: Loc, now: u32) {
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
            let buf = self.large[off].take().expect("live large item");
            let charge = large_charge(buf.len());
            self.large_free.push(off as u32);
            self.stats.large_bytes -= charge as u64;
            ctx.pool.uncharge(charge);
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
        let key = ItemRef::new(item_buf(segs, large, at)).key();
        let old = match self.index.get_mut(hash, |l| {
            ItemRef::new(item_buf(segs, large, l)).key() == key
        }) {
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

    /// Writes and links a new item. `Err(())` when no memory could be found in this shard.
    pub(crate) fn insert(
        &mut self,
        ctx: &Ctx<'_>,
        hash: u64,
        new: &NewItem<'_>,
    ) -> Result<Loc, ()> {
        let len = new.total_len();
        let at = if len > LARGE_ITEM {
            self.alloc_large(ctx, len)?
        } else {
            self.alloc_small(ctx, len)?
        };
        let (slot, off) = split(at);
        let dst: &mut [u8] = if slot == LARGE_SLOT {
            self.large[off].as_deref_mut().expect("just allocated")
        } else {
            &mut self.segs[slot as usize]
                .as_mut()
                .expect("just allocated")
                .buf[off..off + len]
        };
        new.write(dst);
        self.link(ctx, hash, at);
        // A grown index may have pushed the charges past the limit: give back old segments
        // (never the head, which holds the new item).
        while ctx.evictions && ctx.pool.over_limit() && self.fifo.len() + self.small.len() > 1 {
            self.release_oldest(ctx);
        }
        Ok(at)
    }

    fn alloc_small(&mut self, ctx: &Ctx<'_>, len: usize) -> Result<Loc, ()> {
        // New items start on probation; with `-M` nothing is evicted, so there is no
        // probation and every item goes to the main queue.
        let probation = ctx.evictions;
        // Each round either places the item, adds a segment, or frees space; the bound only
        // guards against a bug turning into a spin.
        for _ in 0..self.fifo.len() + self.small.len() + 3 {
            let queue = if probation { &self.small } else { &self.fifo };
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
            let segments = self.fifo.len() + self.small.len();
            if ctx.pool.over_limit() && ctx.evictions && segments > 0 {
                self.release_oldest(ctx);
                continue;
            }
            if segments < MAX_SEGMENTS
                && let Some(buf) = ctx.pool.take_segment()
            {
                let slot = self.add_segment(buf);
                if probation {
                    self.small.push_back(slot);
                } else {
                    self.fifo.push_back(slot);
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
            self.make_room_on_probation(ctx);
        }
        Err(())
    }

    /// Memory is full and the probation queue's head has no room: S3-FIFO's eviction over
    /// segments. While the probation queue holds more than its share (or the main queue is
    /// empty), its oldest segment is compacted: the items read while on probation stay and
    /// the segment joins the main queue with them, the others leave (a segment that is
    /// mostly garbage is only collected and stays on probation, all its live items kept).
    /// Otherwise the main queue's oldest segment is compacted as a CLOCK pass (read items
    /// stay, one read less to their credit) and its survivors move to the main queue's
    /// head, until a segment is empty and becomes the probation queue's head (Segcache's
    /// merge eviction).
    fn make_room_on_probation(&mut self, ctx: &Ctx<'_>) {
        let total = self.fifo.len() + self.small.len();
        let over_share = self.small.len() * 10 > (total * SMALL_SHARE).max(10);
        if over_share || self.fifo.is_empty() {
            let Some(slot) = self.small.pop_front() else {
                return;
            };
            if self.seg(slot).live > KEEP_MAX {
                self.compact(ctx, slot, Pass::Probation);
                if !self.promote(ctx, slot) {
                    // The main queue's head had no room: the segment becomes it.
                    self.fifo.push_back(slot);
                    return;
                }
            } else {
                // Mostly garbage (overwritten, deleted): collected, every live item stays
                // on probation, and at least a quarter of the segment is free again.
                self.compact(ctx, slot, Pass::Collect);
            }
            self.small.push_back(slot);
        } else {
            let slot = self.fifo.pop_front().expect("checked non-empty");
            self.compact(ctx, slot, Pass::Clock);
            if self.fifo.is_empty() || self.promote(ctx, slot) {
                // Emptied (its survivors moved to the main queue's head), or the main
                // queue's only segment: it becomes the probation queue's head.
                self.small.push_back(slot);
            } else {
                // The survivors that did not fit stay, and the segment is the new head.
                self.fifo.push_back(slot);
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
        if let Some(&head) = self.fifo.back() {
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
                    (ctx.hash)(it.key()),
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
                relocate(&mut self.index, (ctx.hash)(it.key()), from, to);
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
    fn reclaim_without_evicting(&mut self, ctx: &Ctx<'_>, len: usize) -> bool {
        let dead = |shard: &Self, slot: u32| {
            let seg = shard.seg(slot);
            seg.used - seg.live
        };
        let best = (0..self.fifo.len()).max_by_key(|&pos| dead(self, self.fifo[pos]));
        let pos = match best {
            Some(pos) if dead(self, self.fifo[pos]) >= len => pos,
            _ => 0,
        };
        let Some(slot) = self.fifo.remove(pos) else {
            return false;
        };
        self.compact(ctx, slot, Pass::Collect);
        self.fifo.push_back(slot);
        self.seg(slot).used + len <= SEGMENT_SIZE
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

    fn alloc_large(&mut self, ctx: &Ctx<'_>, len: usize) -> Result<Loc, ()> {
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

    /// CLOCK over the large items: evicts the first one not read since the hand last passed.
    fn evict_large(&mut self, ctx: &Ctx<'_>) -> bool {
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
            let hash = (ctx.hash)(self.item(at).key());
            let why = match ctx.validity(self.item(at)) {
                Validity::Live => Unlink::Evicted,
                _ => Unlink::Reclaimed,
            };
            self.unlink(ctx, hash, at, why);
            return true;
        }
        false
    }

    /// Empties the oldest segment (of the main queue, else of the probation queue) and
    /// returns it to the pool.
    fn release_oldest(&mut self, ctx: &Ctx<'_>) -> bool {
        let Some(slot) = self.fifo.pop_front().or_else(|| self.small.pop_front()) else {
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
                let hash = (ctx.hash)(it.key());
                self.unlink(ctx, hash, loc(slot as usize, off), why);
            }
            off += len;
        }
        self.free_segment(ctx, slot);
    }

    fn free_segment(&mut self, ctx: &Ctx<'_>, slot: u32) {
        let seg = self.segs[slot as usize].take().expect("live segment");
        self.free_slots.push(slot);
        self.stats.segment_bytes -= SEGMENT_SIZE as u64;
        ctx.pool.give_segment(seg.buf);
    }

    fn next_generation(&mut self) -> u32 {
        self.generations = self.generations.wrapping_add(1);
        self.generations
    }

    fn seg(&self, slot: u32) -> &Segment {
        self.segs[slot as usize].as_ref().expect("live segment")
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
            let hash = (ctx.hash)(it.key());
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

    /// Gives every segment back (for another shard that has none to recycle). Returns
    /// whether anything was released.
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
        while let Some(slot) = self.fifo.pop_front().or_else(|| self.small.pop_front()) {
            self.free_segment(ctx, slot);
        }
        for slot in 0..self.large.len() {
            if let Some(buf) = self.large[slot].take() {
                let charge = large_charge(buf.len());
                self.stats.large_bytes -= charge as u64;
                ctx.pool.uncharge(charge);
                self.large_free.push(slot as u32);
            }
        }
        for class in &mut self.stats.classes {
            class.number = 0;
            class.bytes = 0;
        }
        self.charge_index(ctx);
    }

    /// Checks up to `budget` items for expiry, unlinking the dead ones; frees segments left
    /// with no live item. Returns the number of items checked. Also moves on a growth of the
    /// index that inserts left unfinished, so that the old table does not linger.
    pub(crate) fn reap(&mut self, ctx: &Ctx<'_>, budget: usize) -> usize {
        let (segs, large) = (&self.segs, &self.large);
        self.index
            .migrate(REAP_MOVE_GROUPS, &|l| hash_at(ctx, segs, large, l));
        self.charge_index(ctx);
        let mut checked = 0;
        while checked < budget {
            // Both queues, main then probation, as one sequence of positions.
            let Some(slot) = self.queued_at(self.cursor.fifo_pos) else {
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
                let hash = if stale { (ctx.hash)(it.key()) } else { 0 };
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
                let is_head = self.fifo.back() == Some(&slot) || self.small.back() == Some(&slot);
                if !is_head && self.seg(slot).live == 0 {
                    let pos = self.cursor.fifo_pos;
                    if pos < self.fifo.len() {
                        self.fifo.remove(pos);
                    } else {
                        self.small.remove(pos - self.fifo.len());
                    }
                    self.free_segment(ctx, slot);
                } else {
                    self.cursor.fifo_pos += 1;
                }
                self.cursor.off = 0;
            }
        }
        self.stats.ops.crawler_items_checked += checked as u64;
        checked
    }

    /// The segment at `pos` of the main queue followed by the probation queue.
    fn queued_at(&self, pos: usize) -> Option<u32> {
        match pos.checked_sub(self.fifo.len()) {
            None => Some(self.fifo[pos]),
            Some(pos) => self.small.get(pos).copied(),
        }
    }

    fn reap_large(&mut self, ctx: &Ctx<'_>) -> usize {
        let mut checked = 0;
        for i in 0..self.large.len() {
            if self.large[i].is_none() {
                continue;
            }
            checked += 1;
            let at = loc(LARGE_SLOT as usize, i);
            if ctx.validity(self.item(at)) != Validity::Live {
                let hash = (ctx.hash)(self.item(at).key());
                self.unlink(ctx, hash, at, Unlink::Reaped);
            }
        }
        checked
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
            self.fifo
                .iter()
                .chain(&self.small)
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
            if let Some(buf) = &self.large[pos.large] {
                f(ItemRef::new(buf));
            }
            pos.large += 1;
            visited += 1;
        }
        true
    }
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

/// An upper bound on an item's bytes, for the store's size checks.
pub(crate) fn item_len(key_len: usize, value_len: usize) -> usize {
    item::max_total_len(key_len, value_len)
}
