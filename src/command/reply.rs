//! Reply memory: how much a connection may buffer for the client, and the server-wide cap.
//!
//! Every connection may hold a small reply buffer of its own ([`REPLY_FLOOR`]) without asking
//! anyone: a typical reply (a few small values, `STORED`, a `stats` page) never waits. Beyond
//! it, buffer bytes are charged to the [`BufferBudget`] (`-o read_buf_mem_limit`) before they
//! are allocated. A request that produces a large reply asks for room one value (or one
//! slice of a dump) at a time:
//!
//! - the connection's unsent replies have passed [`STREAM_CAP`]: stop here, send, and go on
//!   from this point once the socket has taken them (a multi-key `get` streams);
//! - the budget cannot give the room and replies are waiting: stop the same way (they drain
//!   into the socket and free their bytes);
//! - the budget cannot give the room and nothing is waiting: refuse with memcached's
//!   `SERVER_ERROR out of memory writing get response`.
//!
//! So one connection holds at most `STREAM_CAP` plus one value, and all of them together at
//! most the budget beyond their floors, whatever their clients ask for and however slowly
//! they read.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Reply bytes a connection may buffer without charging the budget.
pub const REPLY_FLOOR: usize = 16 * 1024;
/// A connection with this many unsent reply bytes runs nothing more until they are sent.
pub const STREAM_CAP: usize = 256 * 1024;

/// The server-wide cap on connection buffer bytes beyond the floors.
#[derive(Debug)]
pub struct BufferBudget {
    used: AtomicUsize,
    limit: usize,
    /// Reads refused for want of buffer memory (memcached's `read_buf_oom`).
    pub read_oom: AtomicU64,
    /// Replies refused or cut for want of buffer memory (memcached's `response_obj_oom`).
    pub reply_oom: AtomicU64,
}

impl BufferBudget {
    /// `limit` in bytes; `usize::MAX` for none.
    pub fn new(limit: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
            read_oom: AtomicU64::new(0),
            reply_oom: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether anything is left.
    pub fn has_room(&self) -> bool {
        self.used() < self.limit
    }

    /// Charges `bytes` if they fit under the limit.
    pub fn try_charge(&self, bytes: usize) -> bool {
        if bytes == 0 {
            return true;
        }
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > self.limit {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Charges `bytes` whether or not they fit (memory already allocated: a small reply
    /// that grew a buffer, counted after the fact).
    pub fn charge(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn credit(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// Reply buffers larger than the floor, kept per worker thread between requests: a value of
/// 100 KiB would otherwise cost a fresh mapping, its page faults and an `munmap` per `get`
/// (allocations this large are mappings of their own, see `main`'s allocator tuning). With
/// a few small ones (one per request otherwise), at most `SPARE_BYTES` a thread; not
/// charged to the budget (ARCHITECTURE.md counts it per thread).
pub mod spare {
    use std::cell::RefCell;

    use super::REPLY_FLOOR;

    /// Bytes of spare reply buffers kept per thread, the small ones included.
    pub const SPARE_BYTES: usize = 2 << 20;
    /// Small reply buffers (at most [`REPLY_FLOOR`]) kept per thread. A connection gives its
    /// reply buffer back each time it waits for its next request, so without these every
    /// unpipelined request costs an allocation and a free. A worker drives one connection at
    /// a time, so a few cover it.
    pub const SMALL_KEPT: usize = 8;
    /// What the larger spare buffers may take of [`SPARE_BYTES`]: the rest is the small ones'.
    const LARGE_SPARE_BYTES: usize = SPARE_BYTES - SMALL_KEPT * REPLY_FLOOR;

    thread_local! {
        static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
        static SMALL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    /// A reply buffer for a connection that has none: a kept small one, or a new one of
    /// `initial` bytes.
    pub fn take_small(initial: usize) -> Vec<u8> {
        SMALL
            .with(|s| s.borrow_mut().pop())
            .unwrap_or_else(|| Vec::with_capacity(initial))
    }

    /// The smallest spare buffer of at least `min` bytes, if one is kept.
    pub fn take(min: usize) -> Option<Vec<u8>> {
        SPARE.with(|s| take_fitting(&mut s.borrow_mut(), min, Vec::capacity))
    }

    /// Keeps `buf` for a later reply: a small one among the [`SMALL_KEPT`], a larger one
    /// if it fits the thread's allowance; frees it otherwise.
    pub fn give(mut buf: Vec<u8>) {
        buf.clear();
        if buf.capacity() <= REPLY_FLOOR {
            if buf.capacity() > 0 {
                SMALL.with(|s| {
                    let mut small = s.borrow_mut();
                    if small.len() < SMALL_KEPT {
                        small.push(buf);
                    }
                });
            }
            return;
        }
        SPARE.with(|s| keep_within(&mut s.borrow_mut(), buf, LARGE_SPARE_BYTES, Vec::capacity));
    }

    /// Takes the smallest buffer of a pool with at least `min` bytes of capacity.
    pub fn take_fitting<T>(pool: &mut Vec<T>, min: usize, cap: fn(&T) -> usize) -> Option<T> {
        let best = (0..pool.len())
            .filter(|&i| cap(&pool[i]) >= min)
            .min_by_key(|&i| cap(&pool[i]))?;
        Some(pool.swap_remove(best))
    }

    /// Keeps `buf` in a pool if the pool's capacities stay within `allowance` bytes.
    pub fn keep_within<T>(pool: &mut Vec<T>, buf: T, allowance: usize, cap: fn(&T) -> usize) {
        let kept: usize = pool.iter().map(cap).sum();
        if kept + cap(&buf) <= allowance {
            pool.push(buf);
        }
    }
}

/// The answer to "may this reply grow by n bytes?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Write it; the buffer has the capacity.
    Fits,
    /// Stop here and go on after the waiting replies are sent.
    Pause,
    /// Nothing is waiting and there is no memory: refuse the request.
    Refuse,
}

/// One connection's reply buffer and what it has charged to the budget, lent to a request.
pub struct Room<'a> {
    pub budget: &'a BufferBudget,
    /// Bytes of the reply buffer's capacity charged to the budget (capacity beyond
    /// [`REPLY_FLOOR`]).
    pub charged: &'a mut usize,
    /// Bytes of the reply buffer already handed to the socket (the rest is waiting).
    pub sent: usize,
}

impl Room<'_> {
    /// Whether the connection should stop before the next part of a streamed reply: its
    /// unsent replies passed [`STREAM_CAP`].
    pub fn must_pause(&self, out: &[u8]) -> bool {
        self.unsent(out) >= STREAM_CAP
    }

    /// Whether the budget has room for `bytes` more beyond the whole stream cap, so no
    /// admission of a reply that size can fail now (barring other threads' charges meanwhile).
    pub fn surely_fits(&self, bytes: usize) -> bool {
        self.budget.used().saturating_add(STREAM_CAP + bytes) <= self.budget.limit()
    }

    /// Reply bytes not yet handed to the socket.
    pub fn unsent(&self, out: &[u8]) -> usize {
        out.len() - self.sent.min(out.len())
    }

    /// Makes room in `out` for `need` more bytes, charging the budget for capacity beyond
    /// the floor, or says why not.
    pub fn admit(&mut self, out: &mut Vec<u8>, need: usize) -> Admit {
        let want = out.len().saturating_add(need);
        if want <= out.capacity() {
            return Admit::Fits;
        }
        // Grow as a Vec would (doubling), but never past what the stream needs, so that
        // the capacity charged stays close to what is used.
        let target = want.max(out.capacity().saturating_mul(2).min(STREAM_CAP));
        let kept = spare::take(target);
        let capacity = kept.as_ref().map_or(target, Vec::capacity);
        let extra = capacity
            .saturating_sub(REPLY_FLOOR)
            .saturating_sub(*self.charged);
        if !self.budget.try_charge(extra) {
            if let Some(kept) = kept {
                spare::give(kept);
            }
            self.budget.reply_oom.fetch_add(1, Ordering::Relaxed);
            return if out.len() > self.sent {
                Admit::Pause
            } else {
                Admit::Refuse
            };
        }
        *self.charged += extra;
        match kept {
            Some(mut kept) => {
                kept.extend_from_slice(out);
                *out = kept;
            }
            None => out.reserve_exact(target - out.len()),
        }
        Admit::Fits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room<'a>(budget: &'a BufferBudget, charged: &'a mut usize) -> Room<'a> {
        Room {
            budget,
            charged,
            sent: 0,
        }
    }

    #[test]
    fn small_reply_buffers_given_back_are_reused_and_a_few_are_kept() {
        let mut given = Vec::new();
        for _ in 0..spare::SMALL_KEPT + 3 {
            let mut buf = Vec::with_capacity(4096);
            buf.extend_from_slice(b"END\r\n");
            given.push(buf.as_ptr());
            spare::give(buf);
        }
        // The first SMALL_KEPT come back emptied, newest first; the rest were freed.
        for &ptr in given[..spare::SMALL_KEPT].iter().rev() {
            let buf = spare::take_small(4096);
            assert_eq!(buf.as_ptr(), ptr);
            assert!(buf.is_empty());
            assert_eq!(buf.capacity(), 4096);
        }
        // The pool is empty now: a new buffer of the asked size.
        assert_eq!(spare::take_small(1024).capacity(), 1024);
        // A buffer past the floor never lands among the small ones.
        spare::give(Vec::with_capacity(REPLY_FLOOR + 1));
        assert!(spare::take_small(64).capacity() < REPLY_FLOOR + 1);
    }

    #[test]
    fn the_floor_is_free_and_growth_beyond_it_is_charged() {
        let budget = BufferBudget::new(1 << 20);
        let mut charged = 0;
        let mut out = Vec::new();
        let mut room = room(&budget, &mut charged);
        assert_eq!(room.admit(&mut out, 1000), Admit::Fits);
        assert_eq!(budget.used(), 0);
        out.resize(1000, 0);
        assert_eq!(room.admit(&mut out, 100_000), Admit::Fits);
        assert!(out.capacity() >= 101_000);
        assert_eq!(budget.used(), out.capacity() - REPLY_FLOOR);
    }

    #[test]
    fn without_room_a_connection_with_waiting_replies_pauses_and_an_empty_one_is_refused() {
        let budget = BufferBudget::new(10_000);
        let mut charged = 0;
        let mut out = Vec::new();
        let mut room = room(&budget, &mut charged);
        assert_eq!(room.admit(&mut out, 100_000), Admit::Refuse);
        out.extend_from_slice(b"VALUE a 0 1\r\na\r\n");
        assert_eq!(room.admit(&mut out, 100_000), Admit::Pause);
        assert_eq!(budget.used(), 0);
        assert_eq!(budget.reply_oom.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn the_stream_pauses_past_its_cap_counting_only_unsent_bytes() {
        let budget = BufferBudget::new(usize::MAX);
        let mut charged = 0;
        let out = vec![0; STREAM_CAP];
        let room = room(&budget, &mut charged);
        assert!(room.must_pause(&out));
        let room = Room { sent: 1, ..room };
        assert!(!room.must_pause(&out));
    }
}
