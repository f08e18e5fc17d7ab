//! The key index of one shard: from a key's hash to its item's [`Loc`], 5 bytes a slot.
//!
//! Bucketized cuckoo hashing. Slots come in groups of 8: a tag byte per slot (8 bits of the
//! hash, never 0; 0 marks an empty slot) and the 8 locations, 40 bytes. A key lives in one
//! of two groups picked from its hash, so a lookup reads at most two groups, and it reads an
//! item's key only when a tag matches (1 slot in 255 by chance). An insert takes the emptier
//! of its two groups; when both are full, it displaces a random entry of one of them to that
//! entry's other group, and so on for at most [`MAX_KICKS`] steps (a random walk), which at
//! the loads used here almost always ends within a few steps. An entry the walk could not
//! place goes to a small stash that lookups also search (empty in practice); the table grows
//! when that happens above [`GROWN_LOAD_PCT`], and the stash keeps identical hashes (which a
//! seeded 64-bit hash makes vanishingly rare) from ever making an insert loop or grow forever.
//!
//! Why not hashbrown: its bucket count is a power of two and it doubles, and under the churn
//! of a full cache (every set evicts, every eviction deletes) its tombstones fill its growth
//! budget and make it double again, so a full shard's index sat at 44-54% load, 9-10 bytes per
//! item. Here the group count is any number (a key's group is `hash * groups >> 32`, not
//! `hash & mask`), a delete just empties its slot (cuckoo needs no tombstones, as no probe
//! sequence runs through other groups), and the table grows by a quarter only when an insert
//! would take it past [`MAX_LOAD_PCT`]. It then sits between 72% and 90% load: 5.6 to 6.9
//! bytes per item.
//!
//! Growing is incremental, as memcached's hash table expansion is: a growth allocates the
//! larger table and keeps the old one beside it, lookups search both, and each insert then
//! moves [`MOVE_PER_INSERT`] of the old table's groups into the new one (the shard's reaper
//! moves more while no inserts come), emptying them as it goes. Moving an entry recomputes
//! its hash from its item's key (the index stores no hashes, which would cost 4-8 bytes a
//! slot), so rehashing a whole table at once held the shard's lock for 0.1-0.2 s per million
//! entries; spread out, it costs an insert a few microseconds at most. The old table is
//! empty long before the new one can need to grow again (the move takes under a third of the
//! inserts that would need); if it ever is not, the growth finishes the move first.

/// Where an item lies: `segment slot << SEGMENT_SHIFT | offset`, or a large item's slot
/// (see the shard). The index keeps one per item, 4 bytes, and never looks inside.
pub(crate) type Loc = u32;

const GROUP: usize = 8;
const EMPTY: u8 = 0;
/// The table grows when an insert would take it past this load (percent of slots).
const MAX_LOAD_PCT: usize = 90;
/// A grown table starts at this load.
const GROWN_LOAD_PCT: usize = 72;
/// Displacements one insert may make before the table grows instead.
const MAX_KICKS: usize = 128;
/// Groups of the old table each insert moves while a growth is under way (about 14 entries).
const MOVE_PER_INSERT: usize = 2;
/// Multiplier that derives a key's second group from all 64 bits of its hash.
const SECOND: u64 = 0x9E37_79B9_7F4A_7C15;

const LO: u64 = 0x0101_0101_0101_0101;
const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;

#[derive(Clone, Copy, Default)]
struct Group {
    tags: [u8; GROUP],
    locs: [Loc; GROUP],
}

/// The high bit of each byte of `x` that is zero, and no other bit (no borrow crosses bytes).
fn zero_bytes(x: u64) -> u64 {
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// The slot numbers of the high bits set in a mask from [`zero_bytes`].
fn slots(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let i = mask.trailing_zeros() as usize / 8;
        mask &= mask - 1;
        Some(i)
    })
}

impl Group {
    fn word(&self) -> u64 {
        u64::from_le_bytes(self.tags)
    }

    fn matching(&self, tag: u8) -> u64 {
        zero_bytes(self.word() ^ (LO * u64::from(tag)))
    }

    fn empties(&self) -> u64 {
        zero_bytes(self.word())
    }

    fn first_empty(&self) -> Option<usize> {
        slots(self.empties()).next()
    }

    /// The entries in use.
    fn entries(&self) -> impl Iterator<Item = Loc> + '_ {
        slots(!self.empties() & !LOW7).map(|i| self.locs[i])
    }
}

fn tag(hash: u64) -> u8 {
    ((hash >> 56) as u8).max(1)
}

/// xorshift, for picking the entry to displace.
fn next_random(seed: &mut u32) -> usize {
    let mut x = *seed;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *seed = x;
    x as usize
}

/// One table: its groups, and the entries no group had room for, with their hashes.
#[derive(Default)]
struct Table {
    groups: Box<[Group]>,
    stash: Vec<(u64, Loc)>,
}

/// Where an entry is: which table (the old one while a growth is under way), and where in it.
#[derive(Clone, Copy)]
struct Pos {
    old: bool,
    at: Slot,
}

#[derive(Clone, Copy)]
enum Slot {
    Group(usize, usize),
    Stash(usize),
}

impl Table {
    fn with_groups(n: usize) -> Self {
        // Zeroed memory comes from the allocator as fresh pages, touched only as entries
        // land in them; writing `n` empty groups would fault in the whole table at once, a
        // pause of its own at every growth.
        // SAFETY: a group is integers only, and all-zero is a valid group (every slot empty).
        let groups = unsafe { Box::<[Group]>::new_zeroed_slice(n).assume_init() };
        Self {
            groups,
            stash: Vec::new(),
        }
    }

    fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.groups) + self.stash.capacity() * 16
    }

    /// The two groups a hash may live in (the same one twice in a one-group table).
    fn homes(&self, hash: u64) -> (usize, usize) {
        let n = self.groups.len() as u64;
        let first = (u64::from(hash as u32) * n) >> 32;
        let second = ((hash.wrapping_mul(SECOND) >> 32) * n) >> 32;
        (first as usize, second as usize)
    }

    fn position(&self, hash: u64, eq: &mut impl FnMut(Loc) -> bool) -> Option<Slot> {
        if self.groups.is_empty() {
            return None;
        }
        let t = tag(hash);
        let (a, b) = self.homes(hash);
        // Both groups' tags are read before either is searched, so that the two cache misses
        // overlap instead of following one another.
        let (first, second) = (self.groups[a].matching(t), self.groups[b].matching(t));
        if let Some(i) = slots(first).find(|&i| eq(self.groups[a].locs[i])) {
            return Some(Slot::Group(a, i));
        }
        if a != b
            && let Some(i) = slots(second).find(|&i| eq(self.groups[b].locs[i]))
        {
            return Some(Slot::Group(b, i));
        }
        self.stash
            .iter()
            .position(|&(h, at)| h == hash && eq(at))
            .map(Slot::Stash)
    }

    fn loc(&self, at: Slot) -> Loc {
        match at {
            Slot::Group(g, i) => self.groups[g].locs[i],
            Slot::Stash(k) => self.stash[k].1,
        }
    }

    fn loc_mut(&mut self, at: Slot) -> &mut Loc {
        match at {
            Slot::Group(g, i) => &mut self.groups[g].locs[i],
            Slot::Stash(k) => &mut self.stash[k].1,
        }
    }

    fn take(&mut self, at: Slot) -> Loc {
        match at {
            Slot::Group(g, i) => {
                let group = &mut self.groups[g];
                group.tags[i] = EMPTY;
                group.locs[i]
            }
            Slot::Stash(k) => self.stash.swap_remove(k).1,
        }
    }

    fn put(&mut self, g: usize, i: usize, hash: u64, at: Loc) {
        let group = &mut self.groups[g];
        group.tags[i] = tag(hash);
        group.locs[i] = at;
    }

    /// Places an entry, displacing others if need be, or stashes the one entry the walk
    /// could not place (maybe not this one). Returns whether it had to stash.
    fn place(
        &mut self,
        mut hash: u64,
        mut at: Loc,
        hash_of: &dyn Fn(Loc) -> u64,
        seed: &mut u32,
    ) -> bool {
        let (a, b) = self.homes(hash);
        let free_a = self.groups[a].empties().count_ones();
        let free_b = self.groups[b].empties().count_ones();
        if free_a + free_b > 0 {
            let g = if free_a >= free_b { a } else { b };
            let i = self.groups[g].first_empty().expect("a free slot");
            self.put(g, i, hash, at);
            return false;
        }
        let mut g = if next_random(seed) & 1 == 0 { a } else { b };
        for _ in 0..MAX_KICKS {
            let i = next_random(seed) % GROUP;
            let victim = self.groups[g].locs[i];
            self.put(g, i, hash, at);
            (hash, at) = (hash_of(victim), victim);
            let (va, vb) = self.homes(hash);
            let other = if va == g { vb } else { va };
            if let Some(j) = self.groups[other].first_empty() {
                self.put(other, j, hash, at);
                return false;
            }
            g = other;
        }
        self.stash.push((hash, at));
        true
    }
}

/// The table a growth is emptying, and the first of its groups not yet moved.
struct Moving {
    table: Table,
    next: usize,
}

pub(crate) struct Index {
    table: Table,
    /// While a growth is under way: the previous table, holding the entries not yet moved.
    old: Option<Moving>,
    /// Entries in both tables.
    len: usize,
    /// xorshift state for picking the entry to displace.
    seed: u32,
}

impl Default for Index {
    fn default() -> Self {
        Self::new()
    }
}

impl Index {
    pub(crate) fn new() -> Self {
        Self {
            table: Table::default(),
            old: None,
            len: 0,
            seed: 0x9E37_79B9,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Slots in the table (the new one while a growth is under way).
    pub(crate) fn capacity(&self) -> usize {
        self.table.groups.len() * GROUP
    }

    /// Whether a growth is under way (entries are still in the old table).
    pub(crate) fn expanding(&self) -> bool {
        self.old.is_some()
    }

    /// Bytes of the table, and of the old one while a growth is under way.
    pub(crate) fn bytes(&self) -> usize {
        self.table.bytes() + self.old.as_ref().map_or(0, |m| m.table.bytes())
    }

    /// Sizes an empty index for `entries` at once (a restore knows how many are coming),
    /// so that filling it moves nothing. Does nothing once it holds entries.
    pub(crate) fn reserve(&mut self, entries: usize) {
        if self.len == 0 && self.old.is_none() {
            let groups = (entries * 100 / GROWN_LOAD_PCT).div_ceil(GROUP);
            if groups > self.table.groups.len() {
                self.table = Table::with_groups(groups);
            }
        }
    }

    /// Drops every entry and the table with them.
    pub(crate) fn clear(&mut self) {
        self.table = Table::default();
        self.old = None;
        self.len = 0;
    }

    fn position(&self, hash: u64, mut eq: impl FnMut(Loc) -> bool) -> Option<Pos> {
        if let Some(at) = self.table.position(hash, &mut eq) {
            return Some(Pos { old: false, at });
        }
        let old = self.old.as_ref()?;
        let at = old.table.position(hash, &mut eq)?;
        Some(Pos { old: true, at })
    }

    fn table(&self, old: bool) -> &Table {
        match &self.old {
            Some(moving) if old => &moving.table,
            _ => &self.table,
        }
    }

    fn table_mut(&mut self, old: bool) -> &mut Table {
        match &mut self.old {
            Some(moving) if old => &mut moving.table,
            _ => &mut self.table,
        }
    }

    /// The location of the entry with this hash that `eq` accepts.
    pub(crate) fn get(&self, hash: u64, eq: impl FnMut(Loc) -> bool) -> Option<Loc> {
        let pos = self.position(hash, eq)?;
        Some(self.table(pos.old).loc(pos.at))
    }

    pub(crate) fn get_mut(&mut self, hash: u64, eq: impl FnMut(Loc) -> bool) -> Option<&mut Loc> {
        let pos = self.position(hash, eq)?;
        Some(self.table_mut(pos.old).loc_mut(pos.at))
    }

    /// Removes the entry with this hash that `eq` accepts, returning its location.
    pub(crate) fn remove(&mut self, hash: u64, eq: impl FnMut(Loc) -> bool) -> Option<Loc> {
        let pos = self.position(hash, eq)?;
        let at = self.table_mut(pos.old).take(pos.at);
        self.len -= 1;
        Some(at)
    }

    /// Adds an entry the caller knows is absent. `hash_of` gives the hash of an entry
    /// already in the table (to displace it, or to move it after a growth).
    pub(crate) fn insert(&mut self, hash: u64, at: Loc, hash_of: &dyn Fn(Loc) -> u64) {
        self.migrate(MOVE_PER_INSERT, hash_of);
        if (self.len + 1) * 100 > self.capacity() * MAX_LOAD_PCT {
            self.grow(hash_of);
        }
        self.len += 1;
        if self.table.place(hash, at, hash_of, &mut self.seed)
            && self.len * 100 >= self.capacity() * GROWN_LOAD_PCT
        {
            self.grow(hash_of);
        }
    }

    /// Moves up to `groups` groups of the old table (and, with the last, its stash) into the
    /// new one, dropping the old table once it is empty.
    pub(crate) fn migrate(&mut self, groups: usize, hash_of: &dyn Fn(Loc) -> u64) {
        let Some(moving) = &mut self.old else {
            return;
        };
        let end = moving
            .next
            .saturating_add(groups)
            .min(moving.table.groups.len());
        for g in moving.next..end {
            let group = std::mem::take(&mut moving.table.groups[g]);
            // All of a group's hashes first: each reads an item's key, likely a cache miss,
            // and with no placement between them the misses overlap.
            let mut hashes = [0u64; GROUP];
            for (h, at) in hashes.iter_mut().zip(group.entries()) {
                *h = hash_of(at);
            }
            for (&hash, at) in hashes.iter().zip(group.entries()) {
                self.table.place(hash, at, hash_of, &mut self.seed);
            }
        }
        moving.next = end;
        if end < moving.table.groups.len() {
            return;
        }
        for (hash, at) in std::mem::take(&mut moving.table.stash) {
            self.table.place(hash, at, hash_of, &mut self.seed);
        }
        self.old = None;
    }

    /// Starts moving every entry into a table a quarter larger (after finishing any earlier
    /// growth's move).
    fn grow(&mut self, hash_of: &dyn Fn(Loc) -> u64) {
        self.migrate(usize::MAX, hash_of);
        let want = (self.len + 1) * 100 / GROWN_LOAD_PCT;
        let groups = want.div_ceil(GROUP).max(self.table.groups.len() + 1);
        let table = std::mem::replace(&mut self.table, Table::with_groups(groups));
        if !table.groups.is_empty() {
            self.old = Some(Moving { table, next: 0 });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hash for test locations: any fixed mixing function works.
    fn h(at: Loc) -> u64 {
        u64::from(at)
            .wrapping_mul(0xD6E8_FEB8_6659_FD93)
            .rotate_left(29)
            ^ 0x5555
    }

    #[test]
    fn zero_bytes_is_exact() {
        // A zero byte below a 0x01 byte must not flag the 0x01 (the borrow trick would).
        let x = u64::from_le_bytes([0, 1, 0x80, 0xFF, 0, 0x7F, 1, 0]);
        let found: Vec<usize> = slots(zero_bytes(x)).collect();
        assert_eq!(found, vec![0, 4, 7]);
    }

    #[test]
    fn insert_get_remove_through_growth() {
        let mut index = Index::new();
        for at in 0..100_000u32 {
            index.insert(h(at), at, &h);
        }
        assert_eq!(index.len(), 100_000);
        for at in 0..100_000u32 {
            assert_eq!(index.get(h(at), |l| l == at), Some(at), "entry {at}");
        }
        assert_eq!(index.get(h(100_001), |l| l == 100_001), None);
        for at in (0..100_000u32).step_by(2) {
            assert_eq!(index.remove(h(at), |l| l == at), Some(at));
        }
        assert_eq!(index.len(), 50_000);
        for at in 0..100_000u32 {
            let want = (at % 2 == 1).then_some(at);
            assert_eq!(index.get(h(at), |l| l == at), want);
        }
        assert_eq!(index.remove(h(0), |l| l == 0), None);
    }

    #[test]
    fn load_stays_between_grown_and_max() {
        let mut index = Index::new();
        let mut lowest = 100.0f64;
        for at in 0..200_000u32 {
            index.insert(h(at), at, &h);
            if at > 1_000 {
                let load = index.len() as f64 / index.capacity() as f64 * 100.0;
                lowest = lowest.min(load);
                assert!(load <= MAX_LOAD_PCT as f64, "load {load} after {at}");
            }
        }
        assert!(lowest >= 70.0, "load fell to {lowest}%");
        // Until the move ends, the old table is there too.
        index.migrate(usize::MAX, &h);
        assert_eq!(index.bytes(), index.capacity() / GROUP * 40);
    }

    #[test]
    fn growth_is_spread_over_the_inserts_that_follow() {
        // Every hash the index asks for is an entry it moves or displaces: count them per
        // insert. Rehashing a whole table at once would ask for every entry in one insert.
        use std::cell::Cell;
        let asked = Cell::new(0usize);
        let counting = |at: Loc| {
            asked.set(asked.get() + 1);
            h(at)
        };
        let mut index = Index::new();
        let (mut most, mut growths, mut capacity) = (0, 0, 0);
        for at in 0..300_000u32 {
            asked.set(0);
            index.insert(h(at), at, &counting);
            most = most.max(asked.get());
            if index.capacity() != capacity {
                (growths, capacity) = (growths + 1, index.capacity());
            }
            if at % 1_000 == 0 {
                // Whatever the state of a move, every entry is found.
                for probe in (0..=at).step_by(97) {
                    assert_eq!(index.get(h(probe), |l| l == probe), Some(probe));
                }
            }
        }
        assert!(growths > 20, "{growths} growths");
        assert!(most <= 200, "one insert rehashed {most} entries");
        // The reaper's steps end a move with no further inserts.
        while index.expanding() {
            index.migrate(1024, &h);
        }
        for at in 0..300_000u32 {
            assert_eq!(index.get(h(at), |l| l == at), Some(at));
        }
    }

    #[test]
    fn churn_at_a_steady_size_does_not_grow_the_table() {
        // A full cache: every insert is matched by a delete of an old entry.
        let mut index = Index::new();
        for at in 0..50_000u32 {
            index.insert(h(at), at, &h);
        }
        let capacity = index.capacity();
        for at in 50_000..1_000_000u32 {
            let old = at - 50_000;
            assert_eq!(index.remove(h(old), |l| l == old), Some(old));
            index.insert(h(at), at, &h);
        }
        assert_eq!(index.capacity(), capacity);
        assert_eq!(index.len(), 50_000);
    }

    #[test]
    fn identical_hashes_overflow_to_the_stash_without_growing_forever() {
        // Every entry has the same hash, so only its two home groups (16 slots) can hold
        // them: the rest go to the stash, each insert ends, and all stay findable.
        let same = |_: Loc| 42u64;
        let mut index = Index::new();
        for at in 0..100u32 {
            index.insert(42, at, &same);
        }
        assert_eq!(index.len(), 100);
        assert!(
            index.capacity() < 1_000,
            "grew to {} slots",
            index.capacity()
        );
        for at in 0..100u32 {
            assert_eq!(index.get(42, |l| l == at), Some(at));
        }
        for at in (0..100u32).rev() {
            assert_eq!(index.remove(42, |l| l == at), Some(at));
        }
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn random_operations_agree_with_a_hash_map() {
        // Entries are (location -> hash); a second map keeps what the index must answer.
        use std::collections::HashMap;
        let mut index = Index::new();
        let mut model: HashMap<Loc, u64> = HashMap::new();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut fresh = 0u32;
        let mut last_hash = 0;
        for step in 0..200_000u32 {
            let r = next();
            match r % 4 {
                // insert a new entry (one in eight shares the previous one's hash)
                0 | 1 => {
                    let hash = if r % 16 == 1 { last_hash } else { next() };
                    last_hash = hash;
                    fresh += 1;
                    let at = fresh;
                    // As in a shard, the new entry's key is readable before it is linked.
                    model.insert(at, hash);
                    index.insert(hash, at, &|l| model[&l]);
                }
                // remove an entry, or one that is not there
                2 => {
                    let at = (next() % u64::from(fresh.max(1) + 10)) as Loc;
                    let hash = model.get(&at).copied().unwrap_or_else(&mut next);
                    assert_eq!(
                        index.remove(hash, |l| l == at).is_some(),
                        model.remove(&at).is_some()
                    );
                }
                // repoint an entry
                _ => {
                    let at = (next() % u64::from(fresh.max(1))) as Loc;
                    if let Some(hash) = model.remove(&at) {
                        fresh += 1;
                        let to = fresh;
                        *index.get_mut(hash, |l| l == at).expect("present") = to;
                        model.insert(to, hash);
                    }
                }
            }
            assert_eq!(index.len(), model.len(), "step {step}");
        }
        for (&at, &hash) in &model {
            assert_eq!(index.get(hash, |l| l == at), Some(at));
        }
        index.migrate(usize::MAX, &|l| model[&l]);
        assert!(index.old.is_none());
        assert_eq!(index.len(), model.len());
        for (&at, &hash) in &model {
            assert_eq!(index.get(hash, |l| l == at), Some(at));
        }
    }

    #[test]
    fn get_mut_repoints_and_clear_empties() {
        let mut index = Index::new();
        index.insert(h(7), 7, &h);
        *index.get_mut(h(7), |l| l == 7).expect("present") = 9;
        assert_eq!(index.get(h(7), |l| l == 9), Some(9));
        index.clear();
        assert_eq!(index.len(), 0);
        assert_eq!(index.bytes(), 0);
        assert_eq!(index.get(h(7), |_| true), None);
    }
}
