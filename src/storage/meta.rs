//! The operations with options that memcached's meta commands expose: reads that can touch,
//! vivify and hand out recache tokens; deletes that can invalidate instead; arithmetic that
//! can create. The classic commands are the same operations with the options off.

use super::item::{FETCHED, KEY_BINARY, NewItem, STALE, WIN_SENT};
use super::shard::{Unlink, Validity};
use super::{DeltaResult, Store, StoreError, parse_counter};

/// Options of a read (`mg`; `get`, `gat` and `touch` use a subset).
#[derive(Debug, Clone, Copy, Default)]
pub struct Read {
    /// Count as a get (`get`, `mg`) rather than only a touch (`touch`).
    pub is_get: bool,
    /// New exptime for a hit (`gat`, `touch`, meta `T`).
    pub touch: Option<i64>,
    /// On a miss, create an empty item with this exptime and win it (meta `N`).
    pub vivify: Option<i64>,
    /// Win a recache token if the item expires within this many seconds (meta `R`).
    pub recache: Option<i64>,
    /// Leave the access time, hit bit and CLOCK frequency alone (meta `u`).
    pub no_bump: bool,
    /// CAS for an item this read creates (meta `E`).
    pub new_cas: Option<u64>,
    /// A meta read, which hands out win tokens (`W`) for stale items and recaches; the
    /// classic `get`/`gat`/`touch` leave them for the next meta read, as in memcached.
    pub tokens: bool,
    /// The meta flags `T`, `N`, `R` and `t` in request order (see `Steps`).
    pub steps: Steps,
}

/// The meta flags `T` (touch), `N` (vivify), `R` (recache) and `t` (show the TTL) in the
/// order a request gave them, zeros after. memcached applies them in that order: `N` sets
/// the TTL of an item this request created (which starts with none), `R` compares the TTL
/// as the flags before it left it, and `t` reports it. All zeros: `T`, `N`, `R`.
pub type Steps = [u8; 4];

/// What applying [`Steps`] to an item gives.
struct Walked {
    exptime: u32,
    /// `N` created the item, or `R` found its TTL low enough: this request wins.
    won: bool,
    /// Seconds left at the `t` (at the end without one), -1 for never.
    ttl: i64,
}

/// An item as a meta read sees it, valid under the shard lock.
#[derive(Clone, Copy)]
pub struct ReadView<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub flags: u32,
    /// 0 when CAS is disabled.
    pub cas: u64,
    /// Seconds left when the flags before the `t` were applied, -1 for never.
    pub ttl: i64,
    /// Whether it had been read before this request.
    pub hit_before: bool,
    /// Seconds since the last access before this request.
    pub last_access: u32,
    pub stale: bool,
    /// This request won the right to recache.
    pub won: bool,
    /// Another request already won it.
    pub token_sent: bool,
    pub key_binary: bool,
}

/// Options of a delete (`md`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Delete {
    pub compare_cas: Option<u64>,
    /// Keep the item, mark it stale and give it a new CAS (meta `I`).
    pub invalidate: bool,
    /// With `invalidate`: the stale item's new exptime; with `drop_value`, the emptied
    /// item's (none if absent).
    pub touch: Option<i64>,
    /// Replace the item with an empty one (meta `x`), with these client flags.
    pub drop_value: bool,
    pub client_flags: u32,
    pub new_cas: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteResult {
    Deleted,
    NotFound,
    Exists,
}

/// Options of incr/decr (`ma`; `incr`/`decr` use a subset).
#[derive(Debug, Clone, Copy)]
pub struct Delta {
    pub incr: bool,
    pub delta: u64,
    pub compare_cas: Option<u64>,
    /// On a miss, create the item holding `initial` with this exptime (meta `N`, `J`).
    pub vivify: Option<(i64, u64)>,
    /// New exptime on success (meta `T`).
    pub touch: Option<i64>,
    pub new_cas: Option<u64>,
    /// The meta flags `T`, `N` and `t` in request order.
    pub steps: Steps,
}

impl Default for Delta {
    fn default() -> Self {
        Self {
            incr: true,
            delta: 1,
            compare_cas: None,
            vivify: None,
            touch: None,
            new_cas: None,
            steps: [0; 4],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaOutcome {
    pub result: DeltaResult,
    pub cas: u64,
    /// Seconds left at the `t` (for `ma t`), -1 for never.
    pub ttl: i64,
    /// The item was created by this request (meta `N`).
    pub created: bool,
}

/// What `me` shows of an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugInfo {
    pub key: Vec<u8>,
    pub key_binary: bool,
    /// Seconds left, -1 for never.
    pub ttl: i64,
    pub last_access: u32,
    pub cas: u64,
    pub fetched: bool,
    pub class: usize,
    pub size: usize,
}

fn ttl_of(exptime: u32, now: u32) -> i64 {
    if exptime == 0 {
        -1
    } else {
        i64::from(exptime) - i64::from(now)
    }
}

impl Store {
    /// Takes a CAS value and drops it: memcached 1.6.45 takes one for every write it
    /// attempts, stored or not (`NOT_STORED`, `EXISTS`, `NOT_FOUND`), so the CAS values of
    /// later writes match memcached's.
    pub fn take_cas(&self) {
        self.new_cas();
    }

    /// Applies `steps` (the flags `T`, `N`, `R`, `t` in request order) to an item whose
    /// exptime is `exptime` and which this request may have `created`.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        steps: Steps,
        mut exptime: u32,
        created: bool,
        touch: Option<i64>,
        vivify: Option<i64>,
        recache: Option<i64>,
        token_sent: bool,
        now: u32,
    ) -> Walked {
        let steps = if steps == [0; 4] { *b"TNR\0" } else { steps };
        let (mut won, mut ttl) = (false, None);
        for step in steps {
            match step {
                b'T' => {
                    if let Some(t) = touch {
                        exptime = self.time.deadline(t);
                    }
                }
                b'N' => {
                    if let Some(t) = vivify.filter(|_| created) {
                        exptime = self.time.deadline(t);
                        won = true;
                    }
                }
                b'R' => {
                    won |= recache.is_some_and(|r| {
                        !token_sent && !created && exptime != 0 && exptime < self.time.deadline(r)
                    });
                }
                b't' => ttl = Some(ttl_of(exptime, now)),
                _ => {}
            }
        }
        Walked {
            exptime,
            won,
            ttl: ttl.unwrap_or_else(|| ttl_of(exptime, now)),
        }
    }

    /// A read with options; `f` runs under the shard lock on a hit (or a vivified miss).
    pub fn read<R>(&self, key: &[u8], opts: &Read, f: impl FnOnce(ReadView<'_>) -> R) -> Option<R> {
        let hash = self.hash(key);
        let h = |k: &[u8]| self.hash(k);
        let ctx = self.ctx(&h);
        let mut shard = self.shard(hash).lock();
        let touching = opts.touch.is_some();
        if touching {
            shard.stats.ops.touch_cmds += 1;
        }
        let (at, created) = match shard.lookup(&ctx, hash, key) {
            Ok(at) => (at, false),
            Err(why) => {
                let created = opts.vivify.and_then(|_| {
                    let new = NewItem {
                        key,
                        value: [b"", b""],
                        flags: 0,
                        // `N` sets the TTL in its turn among the flags.
                        exptime: 0,
                        atime: ctx.now,
                        cas: opts.new_cas.unwrap_or_else(|| self.new_cas()),
                        // Not marked binary: memcached's vivified item is not either, so
                        // its `k` is the decoded key.
                        bits: 0,
                    };
                    shard.insert(&ctx, hash, &new).ok()
                });
                match created {
                    Some(at) => (at, true),
                    None => {
                        let ops = &mut shard.stats.ops;
                        if touching {
                            ops.touch_misses += 1;
                        } else if opts.is_get {
                            ops.get_misses += 1;
                            match why {
                                Validity::Expired => ops.get_expired += 1,
                                Validity::Flushed => ops.get_flushed += 1,
                                Validity::Live => {}
                            }
                        }
                        return None;
                    }
                }
            }
        };
        let class = self.classes.class_of(shard.item(at).total_len());
        if touching {
            shard.stats.classes[class].touch_hits += 1;
        } else if opts.is_get {
            shard.stats.classes[class].get_hits += 1;
        }
        let (bits, atime, exptime_before) = {
            let it = shard.item(at);
            (it.bits(), it.atime(), it.exptime())
        };
        let token_sent = bits & WIN_SENT != 0;
        let stale = bits & STALE != 0;
        let walked = self.walk(
            opts.steps,
            exptime_before,
            created,
            opts.touch,
            opts.vivify,
            opts.recache,
            token_sent,
            ctx.now,
        );
        if walked.exptime != exptime_before {
            shard.item_mut(at).set_exptime(walked.exptime);
        }
        let won = created || (opts.tokens && (walked.won || (stale && !token_sent)));
        if won {
            let mut it = shard.item_mut(at);
            let bits = it.as_ref().bits();
            it.set_bits(bits | WIN_SENT);
        }
        if !opts.no_bump {
            shard.touch_access(at, ctx.now);
        }
        let it = shard.item(at);
        Some(f(ReadView {
            key: it.key(),
            value: it.value(),
            flags: it.flags(),
            cas: self.visible_cas(it.cas()),
            ttl: walked.ttl,
            hit_before: bits & FETCHED != 0,
            last_access: ctx.now.saturating_sub(atime),
            stale,
            won,
            token_sent,
            key_binary: bits & KEY_BINARY != 0,
        }))
    }

    /// A delete with options (`md`).
    pub fn delete_with(&self, key: &[u8], opts: &Delete) -> DeleteResult {
        let hash = self.hash(key);
        let h = |k: &[u8]| self.hash(k);
        let ctx = self.ctx(&h);
        let mut shard = self.shard(hash).lock();
        let Ok(at) = shard.lookup(&ctx, hash, key) else {
            shard.stats.ops.delete_misses += 1;
            return DeleteResult::NotFound;
        };
        let it = shard.item(at);
        if opts.compare_cas.is_some_and(|cas| cas != it.cas()) {
            shard.stats.ops.delete_misses += 1;
            return DeleteResult::Exists;
        }
        let class = self.classes.class_of(it.total_len());
        if !opts.invalidate && !opts.drop_value {
            shard.stats.classes[class].delete_hits += 1;
            shard.unlink(&ctx, hash, at, Unlink::Removed);
            return DeleteResult::Deleted;
        }
        // `x` replaces the item with an empty one: new client flags and TTL (none unless
        // `T`), the old CAS unless `E`; `I` then marks it stale with a new CAS.
        let cas = match opts.new_cas {
            Some(cas) => cas,
            None if opts.invalidate => self.new_cas(),
            None => it.cas(),
        };
        let mut bits = it.bits();
        let mut exptime = it.exptime();
        if opts.drop_value {
            // memcached's empty item is a new one: not fetched, not stale, and not marked
            // binary (its `k` is the decoded key).
            bits = 0;
            exptime = self.time.deadline(opts.touch.unwrap_or(0));
        }
        if opts.invalidate {
            bits = (bits | STALE) & !WIN_SENT;
            if let Some(ttl) = opts.touch {
                exptime = self.time.deadline(ttl);
            }
        }
        if opts.drop_value {
            let new = NewItem {
                key,
                value: [b"", b""],
                flags: opts.client_flags,
                exptime,
                atime: ctx.now,
                cas,
                bits,
            };
            // An empty item is never larger than the one it replaces, and the old one's
            // space is freed by the same write, so this only fails if memory is gone.
            if shard.insert(&ctx, hash, &new).is_err() {
                shard.unlink(&ctx, hash, at, Unlink::Removed);
            }
        } else {
            let mut it = shard.item_mut(at);
            it.set_bits(bits);
            it.set_exptime(exptime);
            it.set_cas(cas);
        }
        DeleteResult::Deleted
    }

    /// incr/decr with options (`ma`).
    pub fn delta_with(&self, key: &[u8], opts: &Delta) -> Result<DeltaOutcome, StoreError> {
        let hash = self.hash(key);
        let h = |k: &[u8]| self.hash(k);
        let ctx = self.ctx(&h);
        let mut shard = self.shard(hash).lock();
        let miss = |result| DeltaOutcome {
            result,
            cas: 0,
            ttl: -1,
            created: false,
        };
        let at = match shard.lookup(&ctx, hash, key) {
            Ok(at) => at,
            Err(_) => {
                if let Some((ttl, initial)) = opts.vivify {
                    let text = initial.to_string();
                    let cas = opts.new_cas.unwrap_or_else(|| self.new_cas());
                    let walked = self.walk(
                        opts.steps,
                        0,
                        true,
                        opts.touch,
                        Some(ttl),
                        None,
                        false,
                        ctx.now,
                    );
                    let exptime = walked.exptime;
                    let new = NewItem {
                        key,
                        value: [text.as_bytes(), b""],
                        flags: 0,
                        exptime,
                        atime: ctx.now,
                        cas,
                        bits: 0,
                    };
                    return match shard.insert(&ctx, hash, &new) {
                        Ok(_) => Ok(DeltaOutcome {
                            result: DeltaResult::Value(initial),
                            cas: self.visible_cas(cas),
                            ttl: walked.ttl,
                            created: true,
                        }),
                        Err(()) => Err(StoreError::NoMemory),
                    };
                }
                let ops = &mut shard.stats.ops;
                if opts.incr {
                    ops.incr_misses += 1;
                } else {
                    ops.decr_misses += 1;
                }
                return Ok(miss(DeltaResult::NotFound));
            }
        };
        let it = shard.item(at);
        // memcached's order: an empty value is refused before the CAS is compared, any other
        // value that is not a number after.
        if it.value().is_empty() {
            return Ok(miss(DeltaResult::NonNumeric));
        }
        if opts
            .compare_cas
            .is_some_and(|cas| cas != 0 && cas != it.cas())
        {
            return Ok(miss(DeltaResult::Exists));
        }
        let Some(current) = parse_counter(it.value()) else {
            return Ok(miss(DeltaResult::NonNumeric));
        };
        let (value_len, flags) = (it.value_len(), it.flags());
        let walked = self.walk(
            opts.steps,
            it.exptime(),
            false,
            opts.touch,
            None,
            None,
            false,
            ctx.now,
        );
        let exptime = walked.exptime;
        let class = self.classes.class_of(it.total_len());
        let stats = &mut shard.stats.classes[class];
        let value = if opts.incr {
            stats.incr_hits += 1;
            current.wrapping_add(opts.delta)
        } else {
            stats.decr_hits += 1;
            current.saturating_sub(opts.delta)
        };
        let mut digits = itoa::Buffer::new();
        let text = digits.format(value).as_bytes();
        // memcached takes a CAS value for the change even when `E` gives the one to keep.
        let fresh = self.new_cas();
        let cas = opts.new_cas.unwrap_or(fresh);
        let done = DeltaOutcome {
            result: DeltaResult::Value(value),
            cas: self.visible_cas(cas),
            ttl: walked.ttl,
            created: false,
        };
        if text.len() <= value_len {
            let mut it = shard.item_mut(at);
            let dst = it.value_mut();
            dst[..text.len()].copy_from_slice(text);
            dst[text.len()..].fill(b' ');
            it.set_cas(cas);
            it.set_atime(ctx.now);
            it.set_exptime(exptime);
            return Ok(done);
        }
        let new = NewItem {
            key,
            value: [text, b""],
            flags,
            exptime,
            atime: ctx.now,
            cas,
            // A new item, as memcached's: not fetched, and not marked binary.
            bits: 0,
        };
        match shard.insert(&ctx, hash, &new) {
            Ok(_) => Ok(done),
            Err(()) => {
                shard.stats.ops.store_no_memory += 1;
                Err(StoreError::NoMemory)
            }
        }
    }

    /// The value length of an item, without counting an access (meta set's `s`).
    pub fn get_size(&self, key: &[u8]) -> Option<usize> {
        let hash = self.hash(key);
        let h = |k: &[u8]| self.hash(k);
        let ctx = self.ctx(&h);
        let mut shard = self.shard(hash).lock();
        let at = shard.lookup(&ctx, hash, key).ok()?;
        Some(shard.item(at).value_len())
    }

    /// What `me` shows; does not count as an access.
    pub fn debug(&self, key: &[u8]) -> Option<DebugInfo> {
        let hash = self.hash(key);
        let h = |k: &[u8]| self.hash(k);
        let ctx = self.ctx(&h);
        let mut shard = self.shard(hash).lock();
        let at = shard.lookup(&ctx, hash, key).ok()?;
        let it = shard.item(at);
        Some(DebugInfo {
            key: it.key().to_vec(),
            key_binary: it.bits() & KEY_BINARY != 0,
            ttl: ttl_of(it.exptime(), ctx.now),
            last_access: ctx.now.saturating_sub(it.atime()),
            cas: self.visible_cas(it.cas()),
            fetched: it.bits() & FETCHED != 0,
            class: self.classes.class_of(it.total_len()),
            size: it.total_len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::{ManualClock, Mode, StoreConfig};

    fn store() -> (Arc<ManualClock>, Store) {
        let clock = ManualClock::new(1_700_000_000);
        (clock.clone(), Store::new(StoreConfig::default(), clock))
    }

    fn read(s: &Store, key: &[u8], opts: Read) -> Option<(bool, bool, bool, i64, Vec<u8>)> {
        s.read(key, &opts, |v| {
            (v.won, v.token_sent, v.stale, v.ttl, v.value.to_vec())
        })
    }

    #[test]
    fn vivify_hands_one_win_then_z() {
        let (_, s) = store();
        let opts = Read {
            is_get: true,
            vivify: Some(30),
            ..Read::default()
        };
        assert_eq!(read(&s, b"k", opts), Some((true, false, false, 30, vec![])));
        assert_eq!(read(&s, b"k", opts), Some((false, true, false, 30, vec![])));
    }

    #[test]
    fn recache_wins_once_when_the_ttl_runs_low() {
        let (clock, s) = store();
        s.store(Mode::Set, b"k", b"v", 0, 10).unwrap();
        let opts = Read {
            is_get: true,
            recache: Some(30),
            tokens: true,
            ..Read::default()
        };
        assert!(read(&s, b"k", opts).unwrap().0);
        assert!(!read(&s, b"k", opts).unwrap().0);
        let far = Read {
            recache: Some(5),
            ..opts
        };
        s.store(Mode::Set, b"j", b"v", 0, 100).unwrap();
        assert!(!read(&s, b"j", far).unwrap().0);
        clock.advance(96);
        assert!(read(&s, b"j", far).unwrap().0);
    }

    #[test]
    fn invalidation_marks_stale_and_hands_a_new_token() {
        let (_, s) = store();
        let (_, cas) = s.store(Mode::Set, b"k", b"v", 0, 0).unwrap();
        let opts = Delete {
            invalidate: true,
            touch: Some(30),
            ..Delete::default()
        };
        assert_eq!(s.delete_with(b"k", &opts), DeleteResult::Deleted);
        let read_opts = Read {
            tokens: true,
            ..Read::default()
        };
        let first = read(&s, b"k", read_opts).unwrap();
        assert_eq!(
            (first.0, first.1, first.2, first.3),
            (true, false, true, 30)
        );
        let second = read(&s, b"k", read_opts).unwrap();
        assert_eq!((second.0, second.1, second.2), (false, true, true));
        let new_cas = s.get(b"k", None, |it| it.cas).unwrap();
        assert!(new_cas > cas);
        assert_eq!(
            s.delete_with(
                b"k",
                &Delete {
                    compare_cas: Some(cas),
                    ..Delete::default()
                }
            ),
            DeleteResult::Exists
        );
        assert_eq!(
            s.delete_with(
                b"k",
                &Delete {
                    compare_cas: Some(new_cas),
                    ..Delete::default()
                }
            ),
            DeleteResult::Deleted
        );
        assert_eq!(
            s.delete_with(b"k", &Delete::default()),
            DeleteResult::NotFound
        );
    }

    #[test]
    fn drop_value_keeps_an_empty_item() {
        let (_, s) = store();
        let (_, cas) = s.store(Mode::Set, b"k", b"value", 9, 100).unwrap();
        let opts = Delete {
            drop_value: true,
            client_flags: 7,
            ..Delete::default()
        };
        assert_eq!(s.delete_with(b"k", &opts), DeleteResult::Deleted);
        // memcached's tombstone: the request's client flags, no TTL, the old CAS.
        assert_eq!(
            s.get(b"k", None, |it| (it.value.len(), it.flags, it.cas)),
            Some((0, 7, cas))
        );
        assert_eq!(s.debug(b"k").unwrap().ttl, -1);
    }

    #[test]
    fn arithmetic_can_create_compare_and_touch() {
        let (_, s) = store();
        let create = Delta {
            vivify: Some((0, 10)),
            ..Delta::default()
        };
        let out = s.delta_with(b"c", &create).unwrap();
        assert_eq!((out.result, out.ttl), (DeltaResult::Value(10), -1));
        let out = s
            .delta_with(
                b"c",
                &Delta {
                    delta: 5,
                    touch: Some(100),
                    ..Delta::default()
                },
            )
            .unwrap();
        assert_eq!((out.result, out.ttl), (DeltaResult::Value(15), 100));
        let stale = Delta {
            compare_cas: Some(out.cas + 1),
            ..Delta::default()
        };
        assert_eq!(
            s.delta_with(b"c", &stale).unwrap().result,
            DeltaResult::Exists
        );
        let ok = Delta {
            compare_cas: Some(out.cas),
            incr: false,
            delta: 100,
            ..Delta::default()
        };
        assert_eq!(
            s.delta_with(b"c", &ok).unwrap().result,
            DeltaResult::Value(0)
        );
    }

    #[test]
    fn meta_writes_compare_invalidate_and_vivify() {
        use crate::storage::{StoreResult, Write};
        let (_, s) = store();
        let w = |mode, value, cas: Option<u64>| Write {
            mode,
            key: b"k",
            value,
            compare_cas: cas,
            ..Write::default()
        };
        assert_eq!(
            s.write(&w(Mode::Set, b"a", Some(1))).unwrap().0,
            StoreResult::NotFound
        );
        let (_, cas) = s.write(&w(Mode::Set, b"a", None)).unwrap();
        assert_eq!(
            s.write(&w(Mode::Append, b"b", Some(cas + 1))).unwrap().0,
            StoreResult::Exists
        );
        assert_eq!(
            s.write(&w(Mode::Append, b"b", Some(cas))).unwrap().0,
            StoreResult::Stored
        );
        let older = Write {
            invalidate: true,
            ..w(Mode::Set, b"old", Some(1))
        };
        assert_eq!(s.write(&older).unwrap().0, StoreResult::Stored);
        assert!(read(&s, b"k", Read::default()).unwrap().2, "stored stale");
        let viv = Write {
            key: b"n",
            vivify: Some(30),
            ..w(Mode::Append, b"seed", None)
        };
        assert_eq!(s.write(&viv).unwrap().0, StoreResult::Stored);
        assert_eq!(s.get(b"n", None, |it| it.value.to_vec()).unwrap(), b"seed");
        let with_cas = Write {
            key: b"e",
            new_cas: Some(5000),
            ..w(Mode::Set, b"x", None)
        };
        assert_eq!(s.write(&with_cas).unwrap().1, 5000);
    }

    #[test]
    fn debug_reports_without_touching() {
        let (clock, s) = store();
        s.store(Mode::Set, b"k", b"v", 0, 100).unwrap();
        clock.advance(5);
        let d = s.debug(b"k").unwrap();
        assert_eq!((d.ttl, d.last_access, d.fetched), (95, 5, false));
        assert_eq!(s.debug(b"k").unwrap().last_access, 5);
        assert!(s.debug(b"nope").is_none());
    }
}
