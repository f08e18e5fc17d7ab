//! Engine counters. Each shard keeps plain integers under its own lock (no atomics on the
//! request path); [`StoreStats`] is the sum over shards, taken one shard lock at a time.

/// Counters kept per size class (memcached's `stats items` / `stats slabs` columns).
#[derive(Debug, Default, Clone, Copy)]
pub struct ClassStats {
    /// Items linked now, and the bytes they occupy.
    pub number: u64,
    pub bytes: u64,
    pub evicted: u64,
    pub evicted_nonzero: u64,
    /// Seconds since last access of the most recently evicted item.
    pub evicted_time: u64,
    pub evicted_unfetched: u64,
    pub evicted_active: u64,
    pub expired_unfetched: u64,
    pub reclaimed: u64,
    pub crawler_reclaimed: u64,
    pub outofmemory: u64,
    pub get_hits: u64,
    pub cmd_set: u64,
    pub delete_hits: u64,
    pub incr_hits: u64,
    pub decr_hits: u64,
    pub cas_hits: u64,
    pub cas_badval: u64,
    pub touch_hits: u64,
}

impl ClassStats {
    fn add(&mut self, o: &ClassStats) {
        self.number += o.number;
        self.bytes += o.bytes;
        self.evicted += o.evicted;
        self.evicted_nonzero += o.evicted_nonzero;
        self.evicted_time = self.evicted_time.max(o.evicted_time);
        self.evicted_unfetched += o.evicted_unfetched;
        self.evicted_active += o.evicted_active;
        self.expired_unfetched += o.expired_unfetched;
        self.reclaimed += o.reclaimed;
        self.crawler_reclaimed += o.crawler_reclaimed;
        self.outofmemory += o.outofmemory;
        self.get_hits += o.get_hits;
        self.cmd_set += o.cmd_set;
        self.delete_hits += o.delete_hits;
        self.incr_hits += o.incr_hits;
        self.decr_hits += o.decr_hits;
        self.cas_hits += o.cas_hits;
        self.cas_badval += o.cas_badval;
        self.touch_hits += o.touch_hits;
    }

    /// Zeroes the event counters, keeping what describes the current contents.
    fn reset(&mut self) {
        *self = ClassStats {
            number: self.number,
            bytes: self.bytes,
            ..ClassStats::default()
        };
    }
}

/// Counters that belong to no class (misses have no item to class).
#[derive(Debug, Default, Clone, Copy)]
pub struct OpStats {
    pub get_misses: u64,
    pub get_expired: u64,
    pub get_flushed: u64,
    pub touch_cmds: u64,
    pub touch_misses: u64,
    pub delete_misses: u64,
    pub incr_misses: u64,
    pub decr_misses: u64,
    pub cas_misses: u64,
    pub store_too_large: u64,
    pub store_no_memory: u64,
    pub total_items: u64,
    pub crawler_items_checked: u64,
    pub flush_cmds: u64,
    /// Items dropped by flush_all.
    pub flushed_items: u64,
}

impl OpStats {
    fn add(&mut self, o: &OpStats) {
        self.get_misses += o.get_misses;
        self.get_expired += o.get_expired;
        self.get_flushed += o.get_flushed;
        self.touch_cmds += o.touch_cmds;
        self.touch_misses += o.touch_misses;
        self.delete_misses += o.delete_misses;
        self.incr_misses += o.incr_misses;
        self.decr_misses += o.decr_misses;
        self.cas_misses += o.cas_misses;
        self.store_too_large += o.store_too_large;
        self.store_no_memory += o.store_no_memory;
        self.total_items += o.total_items;
        self.crawler_items_checked += o.crawler_items_checked;
        self.flush_cmds += o.flush_cmds;
        self.flushed_items += o.flushed_items;
    }
}

/// One shard's counters.
#[derive(Debug, Clone)]
pub struct ShardStats {
    pub classes: Vec<ClassStats>,
    pub ops: OpStats,
    /// Segments and large items held, in bytes.
    pub segment_bytes: u64,
    pub large_bytes: u64,
}

impl ShardStats {
    pub fn new(classes: usize) -> Self {
        Self {
            classes: vec![ClassStats::default(); classes + 1],
            ops: OpStats::default(),
            segment_bytes: 0,
            large_bytes: 0,
        }
    }

    pub fn reset(&mut self) {
        self.classes.iter_mut().for_each(ClassStats::reset);
        self.ops = OpStats::default();
    }
}

/// A snapshot of the whole engine.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    /// Index = class id; index 0 is unused.
    pub classes: Vec<ClassStats>,
    pub ops: OpStats,
    pub totals: ClassStats,
    /// Bytes charged against `-m` (segments, pooled segments, large items).
    pub malloced: u64,
    pub limit: u64,
    pub index_bytes: u64,
    pub index_buckets: u64,
    /// Shards whose index is moving its entries into a larger table.
    pub index_expanding: u64,
}

impl StoreStats {
    pub(crate) fn add_shard(&mut self, s: &ShardStats) {
        if self.classes.len() < s.classes.len() {
            self.classes.resize(s.classes.len(), ClassStats::default());
        }
        for (mine, theirs) in self.classes.iter_mut().zip(&s.classes) {
            mine.add(theirs);
            self.totals.add(theirs);
        }
        self.ops.add(&s.ops);
    }

    pub fn curr_items(&self) -> u64 {
        self.totals.number
    }

    pub fn get_hits(&self) -> u64 {
        self.totals.get_hits
    }
}
