//! The engine: a sharded hash table of items under a memory budget. Synchronous; it knows
//! nothing of sockets, wire formats, tokio or metrics.
//!
//! [`Store`] hashes the key once, picks a shard from bits 32.. of the hash (the index takes
//! its groups from the low 32 bits and a mix of all 64, and its tag from the top 8, so
//! neither loses entropy inside a shard), takes that shard's mutex and calls
//! one `Shard` method (`shard/ops.rs`), which does the whole operation under that one lock
//! hold. What the store itself decides is what spans shards: the CAS counter, a delayed
//! `flush_all`, memory stolen from another shard, and walks over all of them. One shard
//! lock at a time; the pool's free list is the only lock taken under it (docs/locking.md).
//!
//! - [`ops`]: what the operations take and give (options and outcomes);
//! - `shard/`: one shard (index, segments, large items, eviction, reaping);
//! - [`item`]: the byte layout of one item; `index.rs`: the key index;
//! - [`pool`]: the `-m` budget and its segments; [`classes`]: memcached's size classes;
//! - [`expiry`]: the clock and memcached's exptime rules; [`stats`]: the counters.

pub mod classes;
pub mod expiry;
mod index;
pub mod item;
pub mod ops;
pub mod pool;
mod shard;
pub mod snapshot;
pub mod stats;

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hashbrown::DefaultHashBuilder;

/// A shard's lock: std's futex mutex, which spins briefly and then sleeps until the holder
/// wakes it, where parking_lot's yields the CPU first (`sched_yield`), handing it to any other
/// runnable thread for a time slice.
struct Mutex<T>(std::sync::Mutex<T>);

impl<T> Mutex<T> {
    fn new(value: T) -> Self {
        Self(std::sync::Mutex::new(value))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, T> {
        // A panic under the lock is a bug that aborts the worker anyway; the data stays
        // usable.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub use classes::SizeClasses;
pub use expiry::{Clock, ManualClock, SystemClock, Timebase};
pub use item::ItemRef;
pub use ops::{
    DebugInfo, Delete, DeleteResult, Delta, DeltaOutcome, DeltaResult, ItemView, Mode, Read,
    ReadView, StoreError, StoreResult, Write,
};
pub use pool::MMAP_THRESHOLD;
use pool::{Pool, SEGMENT_SIZE};
use shard::{Ctx, MAX_SEGMENTS, Shard, Validity};
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
/// Steps of an unfinished index growth one reaper pass moves per shard, each in a hold of
/// its own: 1,024 groups a pass, about 7,000 entries.
const REAP_GROW_STEPS: usize = 8;

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

    fn shard_of(&self, hash: u64) -> usize {
        ((hash >> 32) & self.shard_mask) as usize
    }

    /// What a shard reads of the store for one operation, at the time it runs.
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            pool: &self.pool,
            classes: &self.classes,
            hasher: &self.hasher,
            time: &self.time,
            next_cas: &self.next_cas,
            now: self.time.now(),
            evictions: self.config.evictions,
            cas_enabled: self.config.cas_enabled,
            item_size_max: self.config.item_size_max,
            oldest_live: self.oldest_live.load(Ordering::Relaxed),
        }
    }

    /// Every one-key operation: hash the key, lock its shard, run `op` on it.
    fn on_key<R>(&self, key: &[u8], op: impl FnOnce(&mut Shard, &Ctx<'_>, u64) -> R) -> R {
        let hash = self.hash(key);
        let ctx = self.ctx();
        op(&mut self.shards[self.shard_of(hash)].lock(), &ctx, hash)
    }

    /// Runs `op` on every shard, one lock at a time.
    fn each_shard(&self, mut op: impl FnMut(usize, &mut Shard, &Ctx<'_>)) {
        let ctx = self.ctx();
        for (i, shard) in self.shards.iter().enumerate() {
            op(i, &mut shard.lock(), &ctx);
        }
    }

    /// Whether an item of this key and value length can ever be stored (`-I`).
    pub fn fits(&self, key_len: usize, value_len: usize) -> bool {
        item::limit_len(key_len, value_len) <= self.config.item_size_max
    }

    /// The largest value storable under `key_len` bytes of key.
    pub fn max_value_len(&self, key_len: usize) -> usize {
        self.config
            .item_size_max
            .saturating_sub(item::limit_len(key_len, 0))
    }

    /// Takes a CAS value and drops it: memcached 1.6.45 takes one for every write it
    /// attempts, stored or not (`NOT_STORED`, `EXISTS`, `NOT_FOUND`), so the CAS values of
    /// later writes match memcached's.
    pub fn take_cas(&self) {
        self.next_cas.fetch_add(1, Ordering::Relaxed);
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

    /// A read with every option `mg` has (see [`Read`]); `f` runs under the shard lock on a
    /// hit (or a vivified miss).
    pub fn read<R>(&self, key: &[u8], opts: &Read, f: impl FnOnce(ReadView<'_>) -> R) -> Option<R> {
        self.on_key(key, |shard, ctx, hash| shard.read(ctx, hash, key, opts, f))
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

    /// A write with every option the storage commands have (see [`Write`]). When the key's
    /// shard finds no memory of its own, the other shards are asked for some and the write
    /// is tried once more.
    pub fn write(&self, w: &Write<'_>) -> Result<(StoreResult, u64), StoreError> {
        if !self.fits(w.key.len(), w.value.len()) {
            return Err(StoreError::TooLarge);
        }
        let hash = self.hash(w.key);
        for attempt in 0..2 {
            let ctx = self.ctx();
            let result = self.shards[self.shard_of(hash)].lock().write(&ctx, hash, w);
            match result {
                Err(StoreError::NoMemory) if attempt == 0 && self.steal_memory(hash) => continue,
                other => return other,
            }
        }
        Err(StoreError::NoMemory)
    }

    /// Another shard holds the memory: ask the others, one lock at a time, to give some
    /// back. Returns whether any did.
    fn steal_memory(&self, hash: u64) -> bool {
        if !self.config.evictions {
            return false;
        }
        let ctx = self.ctx();
        let mine = self.shard_of(hash);
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
        self.on_key(key, |shard, ctx, hash| {
            shard.refuse_too_large(ctx, hash, key, drop_old)
        });
    }

    /// Deletes an item; true if it existed.
    pub fn delete(&self, key: &[u8]) -> bool {
        self.delete_with(key, &Delete::default()) == DeleteResult::Deleted
    }

    /// A delete with every option `md` has (see [`Delete`]).
    pub fn delete_with(&self, key: &[u8], opts: &Delete) -> DeleteResult {
        self.on_key(key, |shard, ctx, hash| shard.delete(ctx, hash, key, opts))
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

    /// incr/decr with every option `ma` has (see [`Delta`]).
    pub fn delta_with(&self, key: &[u8], opts: &Delta) -> Result<DeltaOutcome, StoreError> {
        self.on_key(key, |shard, ctx, hash| shard.delta(ctx, hash, key, opts))
    }

    /// The value length of an item, without counting an access (meta set's `s`).
    pub fn get_size(&self, key: &[u8]) -> Option<usize> {
        self.on_key(key, |shard, ctx, hash| shard.value_len(ctx, hash, key))
    }

    /// What `me` shows; does not count as an access.
    pub fn debug(&self, key: &[u8]) -> Option<DebugInfo> {
        self.on_key(key, |shard, ctx, hash| shard.debug(ctx, hash, key))
    }

    /// flush_all: with no delay every item goes now; with one, items last written or read
    /// before the deadline become invisible when it comes.
    pub fn flush(&self, delay: i64) {
        if delay > 0 {
            self.oldest_live
                .store(self.time.deadline(delay).max(1), Ordering::Relaxed);
            self.shards[0].lock().stats.ops.flush_cmds += 1;
            return;
        }
        self.oldest_live.store(0, Ordering::Relaxed);
        self.each_shard(|i, shard, ctx| {
            shard.clear(ctx);
            if i == 0 {
                shard.stats.ops.flush_cmds += 1;
            }
        });
    }

    /// One pass of the background reaper over every shard, `budget` items per shard.
    /// Returns the items checked.
    pub fn reap(&self, budget: usize) -> usize {
        let ctx = self.ctx();
        let mut checked = 0;
        for shard in self.shards.iter() {
            // A growth of the index that inserts left unfinished moves on too, so that the
            // old table does not linger: a few short holds, not one long one, since every
            // request on the shard waits for each.
            for _ in 0..REAP_GROW_STEPS {
                if !shard.lock().grow_step(&ctx) {
                    break;
                }
            }
            checked += shard.lock().reap(&ctx, budget);
        }
        checked
    }

    /// Moves each unfinished growth of a shard's index on by one step, one lock hold per
    /// shard (as [`Store::reap`] does); whether any growth remains.
    pub fn grow_step(&self) -> bool {
        let mut left = false;
        self.each_shard(|_, shard, ctx| left |= shard.grow_step(ctx));
        left
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
        let ctx = self.ctx();
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
    fn locate(&self, key: &[u8]) -> Option<index::Loc> {
        self.on_key(key, |shard, ctx, hash| shard.lookup(ctx, hash, key).ok())
    }
}

#[cfg(test)]
mod tests;
