//! The operations the store calls, each whole under one hold of the shard's lock: writes
//! (every storage command), reads (get, gat, touch, mg), deletes, arithmetic, and the
//! looks `ms` and `me` take. The store hashes the key, picks and locks the shard and calls
//! one of these; everything they decide is decided here.

use crate::storage::item::{self, FETCHED, KEY_BINARY, NewItem, STALE, WIN_SENT};
use crate::storage::ops::{
    DebugInfo, Delete, DeleteResult, Delta, DeltaOutcome, DeltaResult, Mode, Read, ReadView, Steps,
    StoreError, StoreResult, Write,
};

use super::{Ctx, Shard, Unlink, Validity};

/// What applying [`Steps`] to an item gives.
struct Walked {
    exptime: u32,
    /// `N` created the item, or `R` found its TTL low enough: this request wins.
    won: bool,
    /// Seconds left at the `t` (at the end without one), -1 for never.
    ttl: i64,
}

fn ttl_of(exptime: u32, now: u32) -> i64 {
    if exptime == 0 {
        -1
    } else {
        i64::from(exptime) - i64::from(now)
    }
}

/// Applies `steps` (the flags `T`, `N`, `R`, `t` in request order) to an item whose
/// exptime is `exptime` and which this request may have `created`.
#[allow(clippy::too_many_arguments)]
fn walk(
    ctx: &Ctx<'_>,
    steps: Steps,
    mut exptime: u32,
    created: bool,
    touch: Option<i64>,
    vivify: Option<i64>,
    recache: Option<i64>,
    token_sent: bool,
) -> Walked {
    let steps = if steps == [0; 4] { *b"TNR\0" } else { steps };
    let (mut won, mut ttl) = (false, None);
    for step in steps {
        match step {
            b'T' => {
                if let Some(t) = touch {
                    exptime = ctx.time.deadline(t);
                }
            }
            b'N' => {
                if let Some(t) = vivify.filter(|_| created) {
                    exptime = ctx.time.deadline(t);
                    won = true;
                }
            }
            b'R' => {
                won |= recache.is_some_and(|r| {
                    !token_sent && !created && exptime != 0 && exptime < ctx.time.deadline(r)
                });
            }
            b't' => ttl = Some(ttl_of(exptime, ctx.now)),
            _ => {}
        }
    }
    Walked {
        exptime,
        won,
        ttl: ttl.unwrap_or_else(|| ttl_of(exptime, ctx.now)),
    }
}

/// A counter value as memcached reads it (`safe_strtoull` over the value): white space
/// around the digits (spaces left by an earlier `decr`), a sign, and < 2^64.
fn parse_counter(v: &[u8]) -> Option<u64> {
    crate::number::parse_u64(v)
}

impl Shard {
    /// A write with every option (see [`Write`]); `Err(NoMemory)` when this shard found no
    /// room (the store may then ask the other shards for memory and call again).
    pub(crate) fn write(
        &mut self,
        ctx: &Ctx<'_>,
        hash: u64,
        w: &Write<'_>,
    ) -> Result<(StoreResult, u64), StoreError> {
        // Every storage command that gets this far counts in cmd_set, whatever its outcome,
        // in the class of the data it brought (memcached counts it when the data is read).
        let set_class = ctx
            .classes
            .class_of(item::max_total_len(w.key.len(), w.value.len()));
        self.stats.classes[set_class].cmd_set += 1;
        let current = self.lookup(ctx, hash, w.key).ok();
        let mut scratch = Vec::new();
        let mut bits = if w.key_binary { KEY_BINARY } else { 0 };
        let is_cas = w.compare_cas.is_some() && matches!(w.mode, Mode::Set | Mode::Replace);
        let (flags, deadline, value) = match (w.mode, current) {
            (Mode::Add, Some(at)) => {
                // memcached bumps the existing item on a failed add, without marking it
                // fetched.
                self.touch_unread(at, ctx.now);
                return Ok((StoreResult::NotStored, 0));
            }
            (_, None) if is_cas => {
                self.stats.ops.cas_misses += 1;
                return Ok((StoreResult::NotFound, 0));
            }
            (Mode::Append | Mode::Prepend, None) if w.vivify.is_some() => {
                let ttl = w.vivify.expect("checked");
                (w.flags, ctx.time.deadline(ttl), [w.value, &[][..]])
            }
            (Mode::Replace | Mode::Append | Mode::Prepend, None) => {
                return Ok((StoreResult::NotStored, 0));
            }
            (_, Some(at)) if is_cas => {
                let it = self.item(at);
                let class = ctx.classes.class_of(it.total_len());
                let (current_cas, cas) = (it.cas(), w.compare_cas.expect("checked"));
                let mut deadline = ctx.time.deadline(w.exptime);
                if current_cas != cas {
                    // Meta `I`: an older version (never 0) is still stored, marked stale,
                    // with the current item's deadline and recache token.
                    if !(w.invalidate && cas != 0 && cas < current_cas) {
                        self.stats.classes[class].cas_badval += 1;
                        return Ok((StoreResult::Exists, 0));
                    }
                    bits |= STALE | (it.bits() & WIN_SENT);
                    deadline = it.exptime();
                }
                self.stats.classes[class].cas_hits += 1;
                (w.flags, deadline, [w.value, &[][..]])
            }
            (Mode::Append | Mode::Prepend, Some(at)) => {
                let it = self.item(at);
                // memcached checks an append's CAS only when it is not 0.
                if w.compare_cas.is_some_and(|cas| cas != 0 && cas != it.cas()) {
                    return Ok((StoreResult::Exists, 0));
                }
                if !ctx.fits(w.key.len(), it.value_len() + w.value.len()) {
                    return Ok((StoreResult::NotStored, 0));
                }
                it.value().append_to(&mut scratch);
                let parts = if w.mode == Mode::Append {
                    [&scratch[..], w.value]
                } else {
                    [w.value, &scratch[..]]
                };
                bits |= it.bits() & KEY_BINARY;
                (it.flags(), it.exptime(), parts)
            }
            (Mode::Set | Mode::Add | Mode::Replace | Mode::Cas(_), _) => {
                (w.flags, ctx.time.deadline(w.exptime), [w.value, &[][..]])
            }
        };
        let cas = w.new_cas.unwrap_or_else(|| ctx.new_cas());
        let new = NewItem {
            key: w.key,
            value,
            flags,
            exptime: deadline,
            atime: ctx.now,
            cas,
            bits,
        };
        match self.insert(ctx, hash, &new) {
            Ok(_) => Ok((StoreResult::Stored, ctx.visible_cas(cas))),
            Err(()) => {
                // Refused for memory: memcached never reads such data, nor counts it.
                self.stats.classes[set_class].cmd_set -= 1;
                self.stats.ops.store_no_memory += 1;
                let class = ctx.classes.class_of(new.total_len());
                self.stats.classes[class].outofmemory += 1;
                Err(StoreError::NoMemory)
            }
        }
    }

    /// A read with options; `f` runs under the shard lock on a hit (or a vivified miss).
    pub(crate) fn read<R>(
        &mut self,
        ctx: &Ctx<'_>,
        hash: u64,
        key: &[u8],
        opts: &Read,
        f: impl FnOnce(ReadView<'_>) -> R,
    ) -> Option<R> {
        let touching = opts.touch.is_some();
        if touching {
            self.stats.ops.touch_cmds += 1;
        }
        let (at, created) = match self.lookup(ctx, hash, key) {
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
                        cas: opts.new_cas.unwrap_or_else(|| ctx.new_cas()),
                        // Not marked binary: memcached's vivified item is not either, so
                        // its `k` is the decoded key.
                        bits: 0,
                    };
                    self.insert(ctx, hash, &new).ok()
                });
                match created {
                    Some(at) => (at, true),
                    None => {
                        let ops = &mut self.stats.ops;
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
        let class = ctx.classes.class_of(self.item(at).total_len());
        if touching {
            self.stats.classes[class].touch_hits += 1;
        } else if opts.is_get {
            self.stats.classes[class].get_hits += 1;
        }
        let (bits, atime, exptime_before) = {
            let it = self.item(at);
            (it.bits(), it.atime(), it.exptime())
        };
        let token_sent = bits & WIN_SENT != 0;
        let stale = bits & STALE != 0;
        let walked = walk(
            ctx,
            opts.steps,
            exptime_before,
            created,
            opts.touch,
            opts.vivify,
            opts.recache,
            token_sent,
        );
        if walked.exptime != exptime_before {
            self.item_mut(at).set_exptime(walked.exptime);
        }
        let won = created || (opts.tokens && (walked.won || (stale && !token_sent)));
        if won {
            let mut it = self.item_mut(at);
            let bits = it.as_ref().bits();
            it.set_bits(bits | WIN_SENT);
        }
        if !opts.no_bump {
            self.touch_access(at, ctx.now);
        }
        let it = self.item(at);
        Some(f(ReadView {
            key: it.key(),
            value: it.value(),
            flags: it.flags(),
            cas: ctx.visible_cas(it.cas()),
            ttl: walked.ttl,
            hit_before: bits & FETCHED != 0,
            last_access: ctx.now.saturating_sub(atime),
            stale,
            won,
            token_sent,
            key_binary: bits & KEY_BINARY != 0,
        }))
    }

    /// A delete with options (`md`; `delete` with none).
    pub(crate) fn delete(
        &mut self,
        ctx: &Ctx<'_>,
        hash: u64,
        key: &[u8],
        opts: &Delete,
    ) -> DeleteResult {
        let Ok(at) = self.lookup(ctx, hash, key) else {
            self.stats.ops.delete_misses += 1;
            return DeleteResult::NotFound;
        };
        let it = self.item(at);
        if opts.compare_cas.is_some_and(|cas| cas != it.cas()) {
            self.stats.ops.delete_misses += 1;
            return DeleteResult::Exists;
        }
        let class = ctx.classes.class_of(it.total_len());
        if !opts.invalidate && !opts.drop_value {
            self.stats.classes[class].delete_hits += 1;
            self.unlink(ctx, hash, at, Unlink::Removed);
            return DeleteResult::Deleted;
        }
        // `x` replaces the item with an empty one: new client flags and TTL (none unless
        // `T`), the old CAS unless `E`; `I` then marks it stale with a new CAS.
        let cas = match opts.new_cas {
            Some(cas) => cas,
            None if opts.invalidate => ctx.new_cas(),
            None => it.cas(),
        };
        let mut bits = it.bits();
        let mut exptime = it.exptime();
        if opts.drop_value {
            // memcached's empty item is a new one: not fetched, not stale, and not marked
            // binary (its `k` is the decoded key).
            bits = 0;
            exptime = ctx.time.deadline(opts.touch.unwrap_or(0));
        }
        if opts.invalidate {
            bits = (bits | STALE) & !WIN_SENT;
            if let Some(ttl) = opts.touch {
                exptime = ctx.time.deadline(ttl);
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
            if self.insert(ctx, hash, &new).is_err() {
                self.unlink(ctx, hash, at, Unlink::Removed);
            }
        } else {
            let mut it = self.item_mut(at);
            it.set_bits(bits);
            it.set_exptime(exptime);
            it.set_cas(cas);
        }
        DeleteResult::Deleted
    }

    /// incr/decr with options (`ma`; `incr`/`decr` with none).
    pub(crate) fn delta(
        &mut self,
        ctx: &Ctx<'_>,
        hash: u64,
        key: &[u8],
        opts: &Delta,
    ) -> Result<DeltaOutcome, StoreError> {
        let miss = |result| DeltaOutcome {
            result,
            cas: 0,
            ttl: -1,
            created: false,
        };
        let at = match self.lookup(ctx, hash, key) {
            Ok(at) => at,
            Err(_) => {
                if let Some((ttl, initial)) = opts.vivify {
                    let text = initial.to_string();
                    let cas = opts.new_cas.unwrap_or_else(|| ctx.new_cas());
                    let walked = walk(ctx, opts.steps, 0, true, opts.touch, Some(ttl), None, false);
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
                    return match self.insert(ctx, hash, &new) {
                        Ok(_) => Ok(DeltaOutcome {
                            result: DeltaResult::Value(initial),
                            cas: ctx.visible_cas(cas),
                            ttl: walked.ttl,
                            created: true,
                        }),
                        Err(()) => Err(StoreError::NoMemory),
                    };
                }
                let ops = &mut self.stats.ops;
                if opts.incr {
                    ops.incr_misses += 1;
                } else {
                    ops.decr_misses += 1;
                }
                return Ok(miss(DeltaResult::NotFound));
            }
        };
        let it = self.item(at);
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
        let Some(current) = parse_counter(&it.value().joined()) else {
            return Ok(miss(DeltaResult::NonNumeric));
        };
        let (value_len, flags) = (it.value_len(), it.flags());
        let walked = walk(
            ctx,
            opts.steps,
            it.exptime(),
            false,
            opts.touch,
            None,
            None,
            false,
        );
        let exptime = walked.exptime;
        let class = ctx.classes.class_of(it.total_len());
        let stats = &mut self.stats.classes[class];
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
        let fresh = ctx.new_cas();
        let cas = opts.new_cas.unwrap_or(fresh);
        let done = DeltaOutcome {
            result: DeltaResult::Value(value),
            cas: ctx.visible_cas(cas),
            ttl: walked.ttl,
            created: false,
        };
        if text.len() <= value_len {
            let mut it = self.item_mut(at);
            it.rewrite_value(text);
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
        match self.insert(ctx, hash, &new) {
            Ok(_) => Ok(done),
            Err(()) => {
                self.stats.ops.store_no_memory += 1;
                Err(StoreError::NoMemory)
            }
        }
    }

    /// The value length of an item, without counting an access (meta set's `s`).
    pub(crate) fn value_len(&mut self, ctx: &Ctx<'_>, hash: u64, key: &[u8]) -> Option<usize> {
        let at = self.lookup(ctx, hash, key).ok()?;
        Some(self.item(at).value_len())
    }

    /// What `me` shows; does not count as an access.
    pub(crate) fn debug(&mut self, ctx: &Ctx<'_>, hash: u64, key: &[u8]) -> Option<DebugInfo> {
        let at = self.lookup(ctx, hash, key).ok()?;
        let it = self.item(at);
        Some(DebugInfo {
            key: it.key().to_vec(),
            key_binary: it.bits() & KEY_BINARY != 0,
            ttl: ttl_of(it.exptime(), ctx.now),
            last_access: ctx.now.saturating_sub(it.atime()),
            cas: ctx.visible_cas(it.cas()),
            fetched: it.bits() & FETCHED != 0,
            class: ctx.classes.class_of(it.total_len()),
            size: it.total_len(),
        })
    }

    /// Counts a write refused for size; a refused `set` also drops the old value, as
    /// memcached does (an `append` keeps it).
    pub(crate) fn refuse_too_large(
        &mut self,
        ctx: &Ctx<'_>,
        hash: u64,
        key: &[u8],
        drop_old: bool,
    ) {
        self.stats.ops.store_too_large += 1;
        if drop_old && let Ok(at) = self.lookup(ctx, hash, key) {
            self.unlink(ctx, hash, at, Unlink::Removed);
        }
    }
}
