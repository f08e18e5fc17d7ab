//! The engine: a sharded hash table of items under a memory budget. Synchronous; it knows
//! nothing of sockets, wire formats, tokio or metrics.
//!
//! [`Store`] hashes the key once, picks a shard from bits 32.. of the hash (the index takes
//! its groups from the low 32 bits and a mix of all 64, and its tag from the top 8, so
//! neither loses entropy inside a shard), takes that shard's `parking_lot::Mutex` and calls
//! a `Shard` method. One shard lock at a time, never held across an `.await` (there are
//! none here); the pool's free list
//! is the only lock taken under it. See docs/locking.md.

pub mod expiry;
mod index;
pub mod item;
mod meta;
mod shard;
pub mod slab;
pub mod stats;

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hashbrown::DefaultHashBuilder;
use parking_lot::Mutex;

pub use expiry::{Clock, ManualClock, SystemClock, Timebase};
pub use item::ItemRef;
use item::{KEY_BINARY, NewItem, STALE, WIN_SENT};
pub use meta::{DebugInfo, Delete, DeleteResult, Delta, DeltaOutcome, Read, ReadView};
use shard::{Ctx, MAX_SEGMENTS, Shard, Validity};
pub use slab::SizeClasses;
use slab::{Pool, SEGMENT_SIZE};
pub use stats::{ClassStats, StoreStats};

/// The first CAS value, as memcached 1.6.45 gives it.
const FIRST_CAS: u64 = 2;

/// Where a dump stands between its slices ([`Store::dump_slice`]).
#[derive(Debug, Default)]
pub struct DumpCursor {
    shard: usize,
    pos: shard::DumpPos,
}

/// Longest key memcached accepts.
pub const MAX_KEY_LEN: usize = 250;

/// Engine settings (from `-m -M -C -n -f -I -t` and `-o slab_chunk_max`).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `-m` in bytes.
    pub limit_bytes: usize,
    /// Worker threads; the shard count derives from it.
    pub threads: usize,
    /// `-M` turns these off: a full store refuses writes instead.
    pub evictions: bool,
    /// `-C` turns these off: CAS values read as 0.
    pub cas_enabled: bool,
    /// `-I`: the largest item (header, key and value).
    pub item_size_max: usize,
    /// `-n` and `-f`, for the size-class ladder in stats.
    pub min_chunk: usize,
    pub growth_factor: f64,
    pub slab_chunk_max: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            limit_bytes: 64 << 20,
            threads: 4,
            evictions: true,
            cas_enabled: true,
            item_size_max: 1 << 20,
            min_chunk: 48,
            growth_factor: 1.25,
            slab_chunk_max: 512 << 10,
        }
    }
}

/// Shards per worker thread: enough that threads rarely meet on a lock (a shard lock is held
/// for one hash lookup and one copy, a small part of a request that also makes two system
/// calls), few enough that the partly filled write heads of each shard (probation and main,
/// half a segment each on average) stay a small part of `-m`. One per thread keeps 1% more
/// items than two on the zipf cache-aside run (BENCHMARKS.md).
const SHARDS_PER_THREAD: usize = 1;
/// Every shard should own at least this many segments, so FIFO eviction stays fine-grained.
const MIN_SEGMENTS_PER_SHARD: usize = 8;

impl StoreConfig {
    /// A power of two from the thread count, lowered so that small `-m` values still give
    /// each shard several segments, and raised so that no shard needs more segment slots
    /// than a location can address.
    pub fn shard_count(&self) -> usize {
        let segments = (self.limit_bytes / SEGMENT_SIZE).max(1);
        let wanted = (self.threads.max(1) * SHARDS_PER_THREAD).next_power_of_two();
        let most = (segments / MIN_SEGMENTS_PER_SHARD).max(1);
        let most = if most.is_power_of_two() {
            most
        } else {
            most.next_power_of_two() / 2
        };
        let least = segments.div_ceil(MAX_SEGMENTS / 2).next_power_of_two();
        wanted.min(most).max(least)
    }
}

/// A write with all its options. `Mode::Cas` is the classic command; meta sets give the
/// CAS to compare in `compare_cas` with any mode.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    pub mode: Mode,
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub flags: u32,
    /// The client's exptime.
    pub exptime: i64,
    /// Store only if the item's CAS equals this (set/replace: missing is `NotFound`).
    pub compare_cas: Option<u64>,
    /// The CAS to give the new item instead of the next from the counter (meta `E`).
    pub new_cas: Option<u64>,
    /// With `compare_cas`: an older CAS still stores, marking the item stale (meta `I`).
    pub invalidate: bool,
    /// Append/prepend to a missing key creates it with this exptime (meta `N`).
    pub vivify: Option<i64>,
    /// The key was sent in base64 and is returned that way (meta `b`).
    pub key_binary: bool,
}

impl Default for Write<'_> {
    fn default() -> Self {
        Self {
            mode: Mode::Set,
            key: b"",
            value: b"",
            flags: 0,
            exptime: 0,
            compare_cas: None,
            new_cas: None,
            invalidate: false,
            vivify: None,
            key_binary: false,
        }
    }
}

/// How a write treats an existing item (memcached's storage commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    /// Store only if the item's CAS equals this.
    Cas(u64),
}

/// The outcome of a write, named after its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreResult {
    Stored,
    NotStored,
    Exists,
    NotFound,
}

/// The outcome of incr/decr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaResult {
    Value(u64),
    NonNumeric,
    NotFound,
    /// The CAS given to compare did not match (meta `C`).
    Exists,
}

/// Why a write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    TooLarge,
    NoMemory,
}

/// A stored item as a reader sees it, valid while the shard lock is held.
#[derive(Clone, Copy)]
pub struct ItemView<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub flags: u32,
    /// 0 when CAS is disabled.
    pub cas: u64,
}

pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    shard_mask: u64,
    hasher: DefaultHashBuilder,
    pool: Pool,
    classes: SizeClasses,
    time: Timebase,
    next_cas: AtomicU64,
    /// Relative time before which items count as flushed once it has passed; 0 = none.
    oldest_live: AtomicU32,
    config: StoreConfig,
}

impl Store {
    pub fn new(config: StoreConfig, clock: Arc<dyn Clock>) -> Self {
        let n = config.shard_count();
        let classes = SizeClasses::new(
            item::MAX_HEADER_LEN,
            config.min_chunk,
            config.growth_factor,
            config.slab_chunk_max,
        );
        Self {
            shards: (0..n)
                .map(|_| Mutex::new(Shard::new(classes.len())))
                .collect(),
            shard_mask: n as u64 - 1,
            hasher: DefaultHashBuilder::default(),
            pool: Pool::new(config.limit_bytes),
            classes,
            time: Timebase::new(clock),
            // memcached 1.6.45 hands out 2 first (1.6.18: 1).
            next_cas: AtomicU64::new(FIRST_CAS),
            oldest_live: AtomicU32::new(0),
            config,
        }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn time(&self) -> &Timebase {
        &self.time
    }

    pub fn classes(&self) -> &SizeClasses {
        &self.classes
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        &self.shards[((hash >> 32) & self.shard_mask) as usize]
    }

    fn ctx<'a>(&'a self, hash: &'a dyn Fn(&[u8]) -> u64) -> Ctx<'a> {
        Ctx {
            pool: &self.pool,
            classes: &self.classes,
            hash,
            now: self.time.now(),
            evictions: self.config.evictions,
            oldest_live: self.oldest_live.load(Ordering::Relaxed),
        }
    }

    fn new_cas(&self) -> u64 {
        self.next_cas.fetch_add(1, Ordering::Relaxed)
    }

    fn visible_cas(&self, cas: u64) -> u64 {
        if self.config.cas_enabled { cas } else { 0 }
    }

    /// Whether an item of this key and value length can ever be stored (`-I`).
    pub fn fits(&self, key_len: usize, value_len: usize) -> bool {
        shard::item_len(key_len, value_len) <= self.config.item_size_max
    }

    /// The largest value storable under `key_len` bytes of key.
    pub fn max_value_len(&self, key_len: usize) -> usize {
        self.config
            .item_size_max
            .saturating_sub(shard::item_len(key_len, 0))
    }

    /// Reads one item; `touch` (a client exptime) also resets its TTL, as gat does. Calls
    /// `f` under the shard lock on a hit and returns whether there was one.
    pub fn get<R>(
        &self,
        key: &[u8],
        touch: Option<i64>,
        f: impl FnOnce(ItemView<'_>) -> R,
    ) -> Option<R> {
        let opts = Read {
            is_get: true,
            touch,
            ..Read::default()
        };
        self.read(key, &opts, |v| {
            f(ItemView {
                key: v.key,
                value: v.value,
                flags: v.flags,
                cas: v.cas,
            })
        })
    }

    /// Writes an item (set/add/replace/append/prepend/cas). `exptime` is the client's.
    pub fn store(
        &self,
        mode: Mode,
        key: &[u8],
        value: &[u8],
        flags: u32,
        exptime: i64,
    ) -> Result<(StoreResult, u64), StoreError> {
        let (mode, compare_cas) = match mode {
            Mode::Cas(cas) => (Mode::Set, Some(cas)),
            other => (other, None),
        };
        self.write(&Write {
            mode,
            key,
            value,
            flags,
            exptime,
            compare_cas,
            ..Write::default()
        })
    }

    /// A write with every option the storage commands have (see [`Write`]).
    pub fn write(&self, w: &Write<'_>) -> Result<(StoreResult, u64), StoreError> {
        if !self.fits(w.key.len(), w.value.len()) {
            return Err(StoreError::TooLarge);
        }
        let hash = self.hash(w.key);
        for attempt in 0..2 {
            match self.try_write(hash, w) {
                Err(StoreError::NoMemory) if attempt == 0 && self.steal_memory(hash) => continue,
                other => return other,
            }
        }
        Err(StoreError::NoMemory)
    }

    fn try_write(&self, hash: u64, w: &Write<'_>) -> Result<(StoreResult, u64), StoreError> {
        let h = |k: &[u8]| self.hash(k);
        let ctx = self.ctx(&h);
        let mut shard = self.shard(hash).lock();
        // Every storage command that gets this far counts in cmd_set, whatever its outcome,
        // in the class of the data it brought (memcached counts it when the data is read).
        let set_class = self
            .classes
            .class_of(shard::item_len(w.key.len(), w.value.len()));
        shard.stats.classes[set_class].cmd_set += 1;
        let current = shard.lookup(&ctx, hash, w.key).ok();
        let mut scratch = Vec::new();
        let mut bits = if w.key_binary { KEY_BINARY } else { 0 };
        let is_cas = w.compare_cas.is_some() && matches!(w.mode, Mode::Set | Mode::Replace);
        let (flags, deadline, value) = match (w.mode, current) {
            (Mode::Add, Some(at)) => {
                // memcached bumps the existing item on a failed add, without marking it
                // fetched.
                shard.touch_unread(at, ctx.now);
                return Ok((StoreResult::NotStored, 0));
            }
            (_, None) if is_cas => {
                shard.stats.ops.cas_misses += 1;
                return Ok((StoreResult::NotFound, 0));
            }
            (Mode::Append | Mode::Prepend, None) if w.vivify.is_some() => {
                let ttl = w.vivify.expect("checked");
                (w.flags, self.time.deadline(ttl), [w.value, &[][..]])
            }
            (Mode::Replace | Mode::Append | Mode::Prepend, None) => {
                return Ok((StoreResult::NotStored, 0));
            }
            (_, Some(at)) if is_cas => {
                let it = shard.item(at);
                let class = self.classes.class_of(it.total_len());
                let (current_cas, cas) = (it.cas(), w.compare_cas.expect("checked"));
                let mut deadline = self.time.deadline(w.exptime);
                if current_cas != cas {
                    // Meta `I`: an older version (never 0) is still stored, marked stale,
                    // with the current item's deadline and recache token.
                    if !(w.invalidate && cas != 0 && cas < current_cas) {
                        shard.stats.classes[class].cas_badval += 1;
                        return Ok((StoreResult::Exists, 0));
                    }
                    bits |= STALE | (it.bits() & WIN_SENT);
                    deadline = it.exptime();
                }
                shard.stats.classes[class].cas_hits += 1;
                (w.flags, deadline, [w.value, &[][..]])
            }
            (Mode::Append | Mode::Prepend, Some(at)) => {
                let it = shard.item(at);
                // memcached checks an append's CAS only when it is not 0.
                if w.compare_cas.is_some_and(|cas| cas != 0 && cas != it.cas()) {
                    return Ok((StoreResult::Exists, 0));
                }
                if !self.fits(w.key.len(), it.value_len() + w.value.len()) {
                    return Ok((StoreResult::NotStored, 0));
                }
                scratch.extend_from_slice(it.value());
                let parts = if w.mode == Mode::Append {
                    [&scratch[..], w.value]
                } else {
                    [w.value, &scratch[..]]
                };
                bits |= it.bits() & KEY_BINARY;
                (it.flags(), it.exptime(), parts)
            }
            (Mode::Set | Mode::Add | Mode::Replace | Mode::Cas(_), _) => {
                (w.flags, self.time.deadline(w.exptime), [w.value, &[][..]])
            }
        };
        let cas = w.new_cas.unwrap_or_else(|| self.new_cas());
        let new = NewItem {
            key: w.key,
            value,
            flags,
            exptime: deadline,
            atime: ctx.now,
            cas,
            bits,
        };
        match shard.insert(&ctx, hash, &new) {
            Ok(_) => Ok((StoreResult::Stored, self.visible_cas(cas))),
            Err(()) => {
                // Refused for memory: memcached never reads such data, nor counts it.
                shard.stats.classes[set_class].cmd_set -= 1;
                shard.stats.ops.store_no_memory += 1;
                let class = self.classes.class_of(new.total_len());
                shard.stats.classes[class].outofmemory += 1;
                Err(StoreError::NoMemory)
            }
        }
    }

    /// Another shard holds the memory: ask the others, one lock at a time, to give some
    /// back. Returns whether any did.
    fn steal_memory(&self, hash: u64) -> bool {
        if !self.config.evictions {
            return false;
        }
        let h = |k: &[u8]| self.hash(k);
        let ctx = self.ctx(&h);
        let mine = ((hash >> 32) & self.shard_mask) as usize;
        let n = self.shards.len();
        let mut released = false;
        for i in 1..n {
            let victim = (mine + i) % n;
            let mut shard = self.shards[victim].lock();
            // One segment each, or as many as it takes to make room for a new segment under a
            // lowered limit (or after the index grew).
            while shard.release_for_other(&ctx) {
                released = true;
                if self.pool.has_room(SEGMENT_SIZE) {
                    break;
                }
            }
        }
        released
    }

    /// Counts a write refused for size; a refused `set` also drops the old value, as
    /// memcached does (an `append` keeps it).
    pub fn too_large(&self, key: &[u8], drop_old: bool) {
        let hash = self.hash(key);
        let h = |k: &[u8]| self.hash(k);
        let ctx = self.ctx(&h);
        let mut shard = self.shard(hash).lock();
        shard.stats.ops.store_too_large += 1;
        if drop_old && let Ok(at) = shard.lookup(&ctx, hash, key) {
            shard.unlink(&ctx, hash, at, shard::Unlink::Removed);
        }
    }

    /// Deletes an item; true if it existed.
    pub fn delete(&self, key: &[u8]) -> bool {
        let hash = self.hash(key);
        let h = |k: &[u8]| self.hash(k);
        let ctx = self.ctx(&h);
        let mut shard = self.shard(hash).lock();
        match shard.lookup(&ctx, hash, key) {
            Ok(at) => {
                let class = self.classes.class_of(shard.item(at).total_len());
                shard.stats.classes[class].delete_hits += 1;
                shard.unlink(&ctx, hash, at, shard::Unlink::Removed);
                true
            }
            Err(_) => {
                shard.stats.ops.delete_misses += 1;
                false
            }
        }
    }

    /// Sets a new exptime; true if the item exists. The CAS is kept.
    pub fn touch(&self, key: &[u8], exptime: i64) -> bool {
        let opts = Read {
            touch: Some(exptime),
            ..Read::default()
        };
        self.read(key, &opts, |_| ()).is_some()
    }

    /// incr/decr: 64-bit unsigned, incr wraps, decr floors at 0. A shorter result is
    /// written in place padded with spaces (as memcached does); a longer one makes a new item.
    pub fn delta(
        &self,
        key: &[u8],
        incr: bool,
        delta: u64,
    ) -> Result<(DeltaResult, u64), StoreError> {
        let out = self.delta_with(
            key,
            &Delta {
                incr,
                delta,
                ..Delta::default()
            },
        )?;
        Ok((out.result, out.cas))
    }

    /// flush_all: with no delay every item goes now; with one, items last written or read
    /// before the deadline become invisible when it comes.
    pub fn flush(&self, delay: i64) {
        let h = |k: &[u8]| self.hash(k);
        let ctx = self.ctx(&h);
        if delay > 0 {
            self.oldest_live
                .store(self.time.deadline(delay).max(1), Ordering::Relaxed);
            self.shards[0].lock().stats.ops.flush_cmds += 1;
            return;
        }
        self.oldest_live.store(0, Ordering::Relaxed);
        for (i, shard) in self.shards.iter().enumerate() {
            let mut shard = shard.lock();
            shard.clear(&ctx);
            if i == 0 {
                shard.stats.ops.flush_cmds += 1;
            }
        }
    }

    /// One pass of the background reaper over every shard, `budget` items per shard.
    /// Returns the items checked.
    pub fn reap(&self, budget: usize) -> usize {
        let h = |k: &[u8]| self.hash(k);
        let ctx = self.ctx(&h);
        self.shards
            .iter()
            .map(|shard| shard.lock().reap(&ctx, budget))
            .sum()
    }

    /// Changes `-m` at runtime (`cache_memlimit`); shards give memory back as they write.
    pub fn set_limit(&self, bytes: usize) {
        self.pool.set_limit(bytes);
    }

    pub fn limit(&self) -> usize {
        self.pool.limit()
    }

    pub fn stats(&self) -> StoreStats {
        let mut out = StoreStats::default();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            out.add_shard(&shard.stats);
            out.index_bytes += shard.index_bytes() as u64;
            out.index_buckets += shard.index_buckets() as u64;
            out.index_expanding += u64::from(shard.index_expanding());
        }
        out.malloced = self.pool.used() as u64;
        out.limit = self.pool.limit() as u64;
        out
    }

    pub fn reset_stats(&self) {
        for shard in self.shards.iter() {
            shard.lock().stats.reset();
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One slice of a dump (`stats cachedump`, `lru_crawler metadump`/`mgdump`): visits the
    /// linked, unexpired items of class `class` (0 = any) among the next `budget` items from
    /// `cursor` on, holding one shard's lock for the slice only. Returns whether the dump has
    /// visited every shard. A dump of a million items is a few thousand short lock holds, not
    /// one per shard, so requests on the same shard wait microseconds, not the whole walk.
    pub fn dump_slice(
        &self,
        cursor: &mut DumpCursor,
        class: usize,
        budget: usize,
        mut f: impl FnMut(ItemRef<'_>),
    ) -> bool {
        let Some(shard) = self.shards.get(cursor.shard) else {
            return true;
        };
        let h = |k: &[u8]| self.hash(k);
        let ctx = self.ctx(&h);
        let done = shard.lock().visit_slice(&mut cursor.pos, budget, |it| {
            let wanted = class == 0 || self.classes.class_of(it.total_len()) == class;
            if wanted && ctx.validity(it) == Validity::Live {
                f(it);
            }
        });
        if done {
            cursor.shard += 1;
            cursor.pos = shard::DumpPos::default();
        }
        cursor.shard >= self.shards.len()
    }

    /// Location of a key, for tests of the engine's layout.
    #[cfg(test)]
    fn locate(&self, key: &[u8]) -> Option<shard::Loc> {
        let hash = self.hash(key);
        let h = |k: &[u8]| self.hash(k);
        let ctx = self.ctx(&h);
        self.shard(hash).lock().lookup(&ctx, hash, key).ok()
    }
}

/// A counter value as memcached reads it (`safe_strtoull` over the value): white space
/// around the digits (spaces left by an earlier `decr`), a sign, and < 2^64.
fn parse_counter(v: &[u8]) -> Option<u64> {
    crate::number::parse_u64(v)
}

#[cfg(test)]
mod tests;
