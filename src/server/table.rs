//! The connection table and the one poller every worker waits on.
//!
//! Each client socket is registered, edge-triggered, in a single epoll instance shared by
//! the `-t` worker threads, and its [`Connection`](super::connection::Connection) lives in a
//! slot of this table. An event goes to whichever worker is waiting (the kernel wakes one
//! waiter per event), and that worker drives the connection. So a connection is never stuck behind a worker that the
//! scheduler has taken off its CPU while another worker could serve it: on a busy machine a
//! preempted thread waits for the next scheduler tick (4 ms at `HZ=250`), and with
//! connections bound to threads, as memcached binds them, every connection of that thread
//! waited with it (BENCHMARKS.md, "Tail latency").
//!
//! # Ownership
//!
//! One worker at a time drives a connection. The slot's state word holds the slot's
//! generation (high 32 bits, bumped on every close, so an event that names a closed
//! connection is recognized and dropped) and these flags:
//!
//! - `VACANT`: no connection; the index is on the free list or being filled.
//! - `RUNNING`: a worker holds the connection (a [`Held`] exists).
//! - `AGAIN` (with `AGAIN_READ`, `AGAIN_CLOSED`): an event came while it was held. The
//!   worker that got the event leaves it to the holder, which drives the connection again
//!   before letting go. Edge-triggered readiness is reported once per edge, so dropping
//!   such an event would strand bytes that arrived after the holder's last read.
//!
//! Taking a connection is one compare-and-swap on the state word, and so is letting go;
//! neither waits. The epoll event's data names the slot and its generation.

use std::cell::UnsafeCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Slots are allocated this many at a time, as connections first need them.
const CHUNK: usize = 1024;

const VACANT: u64 = 1;
const RUNNING: u64 = 1 << 1;
const AGAIN: u64 = 1 << 2;
const AGAIN_READ: u64 = 1 << 3;
const AGAIN_CLOSED: u64 = 1 << 4;
const AGAIN_ALL: u64 = AGAIN | AGAIN_READ | AGAIN_CLOSED;

/// The event data of the wake-up descriptor (no slot has this index).
pub(super) const WAKE_KEY: u64 = u64::MAX;

fn generation(state: u64) -> u32 {
    (state >> 32) as u32
}

fn key(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

struct Slot<T> {
    state: AtomicU64,
    conn: UnsafeCell<Option<Box<T>>>,
}

// SAFETY: `conn` is touched only by the thread that owns the slot: the one that took a
// vacant index off the free list (until it publishes the slot as idle), or the one holding
// the [`Held`] won by the compare-and-swap that set `RUNNING`. The Release stores and the
// AcqRel swaps on `state` order those accesses between threads.
unsafe impl<T: Send> Sync for Slot<T> {}

impl<T> Slot<T> {
    fn vacant() -> Self {
        Slot {
            state: AtomicU64::new(VACANT),
            conn: UnsafeCell::new(None),
        }
    }
}

/// Proof that this thread drives connection `index` of generation `generation`: made only
/// by [`Table::claim`], given back by [`Table::release`] or [`Table::remove`].
#[derive(Debug)]
pub(super) struct Held {
    index: u32,
    generation: u32,
}

/// What [`Table::release`] did.
pub(super) enum Release {
    /// The connection is idle again; the next event goes to any worker.
    Done,
    /// Events came while it was held: drive it again (`read`: one said readable, `closed`:
    /// one carried the peer's FIN).
    Again {
        held: Held,
        read: bool,
        closed: bool,
    },
}

/// [`CHUNK`] slots, allocated when the first of them is needed.
type Chunk<T> = OnceLock<Box<[Slot<T>]>>;

/// The table of `T`s (the server's are [`super::connection::Connection`]s).
pub(super) struct Table<T> {
    epoll: OwnedFd,
    /// An eventfd registered under [`WAKE_KEY`]: written to wake the workers for a stop.
    wake: OwnedFd,
    chunks: Box<[Chunk<T>]>,
    capacity: u32,
    /// Indexes of vacant slots, used again before never-used ones.
    free: Mutex<Vec<u32>>,
    /// The first index never used.
    unused: AtomicU32,
}

impl<T: Send> Table<T> {
    /// A table for at most `capacity` open connections.
    pub(super) fn new(capacity: usize) -> io::Result<Self> {
        let capacity = capacity.clamp(1, (u32::MAX - 1) as usize);
        // SAFETY: plain system calls; each result is checked before it is owned.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor this call just created and nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        // SAFETY: as above.
        let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if wake < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        let wake = unsafe { OwnedFd::from_raw_fd(wake) };
        let chunks = (0..capacity.div_ceil(CHUNK))
            .map(|_| OnceLock::new())
            .collect();
        let table = Table {
            epoll,
            wake,
            chunks,
            capacity: capacity as u32,
            free: Mutex::new(Vec::new()),
            unused: AtomicU32::new(0),
        };
        table.ctl(
            libc::EPOLL_CTL_ADD,
            table.wake.as_raw_fd(),
            (libc::EPOLLIN | libc::EPOLLET) as u32,
            WAKE_KEY,
        )?;
        Ok(table)
    }

    fn ctl(&self, op: i32, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: data };
        // SAFETY: a valid epoll descriptor and event; the kernel copies the event.
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn slot(&self, index: u32) -> Option<&Slot<T>> {
        let index = index as usize;
        self.chunks
            .get(index / CHUNK)?
            .get()
            .map(|chunk| &chunk[index % CHUNK])
    }

    /// Stores `conn` in a vacant slot and registers its socket `fd`. Fails when every slot
    /// is taken or the registration fails, giving the connection back.
    pub(super) fn admit(&self, conn: T, fd: RawFd) -> Result<(), (T, io::Error)> {
        let popped = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let index = match popped {
            Some(index) => index,
            None => {
                let index = self.unused.fetch_add(1, Ordering::Relaxed);
                if index >= self.capacity {
                    self.unused.fetch_sub(1, Ordering::Relaxed);
                    let full = io::Error::other("the connection table is full");
                    return Err((conn, full));
                }
                index
            }
        };
        let slot = self.chunks[index as usize / CHUNK]
            .get_or_init(|| (0..CHUNK).map(|_| Slot::vacant()).collect());
        let slot = &slot[index as usize % CHUNK];
        let generation = generation(slot.state.load(Ordering::Acquire));
        // SAFETY: the slot is vacant and its index came off the free list (or was never
        // used), so no other thread touches `conn` until the store below publishes it.
        unsafe { *slot.conn.get() = Some(Box::new(conn)) };
        slot.state
            .store(u64::from(generation) << 32, Ordering::Release);
        let interest = libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET;
        if let Err(e) = self.ctl(
            libc::EPOLL_CTL_ADD,
            fd,
            interest as u32,
            key(index, generation),
        ) {
            // Not registered, so no event names it: this thread can take it back.
            let held = self
                .try_claim(key(index, generation))
                .expect("an unregistered connection is idle");
            return Err((*self.remove(held), e));
        }
        Ok(())
    }

    /// Takes the connection an event names, if it is open and no worker holds it. If one
    /// does, the event is left to it (see the module docs: `read` and `closed` say what the
    /// event reported) and this returns `None`; an event for a closed connection also
    /// returns `None`.
    pub(super) fn claim(&self, key: u64, read: bool, closed: bool) -> Option<Held> {
        self.take(key, Some((read, closed)))
    }

    /// Takes an open connection that no worker holds (a sweep's visit: unlike an event's,
    /// it leaves a held connection alone).
    pub(super) fn try_claim(&self, key: u64) -> Option<Held> {
        self.take(key, None)
    }

    fn take(&self, key: u64, event: Option<(bool, bool)>) -> Option<Held> {
        let index = key as u32;
        let wanted = (key >> 32) as u32;
        let slot = self.slot(index)?;
        let mut state = slot.state.load(Ordering::Acquire);
        loop {
            if generation(state) != wanted || state & VACANT != 0 {
                return None;
            }
            let held = state & RUNNING != 0;
            let next = match event {
                None if held => return None,
                Some((read, closed)) if held => {
                    state
                        | AGAIN
                        | if read { AGAIN_READ } else { 0 }
                        | if closed { AGAIN_CLOSED } else { 0 }
                }
                _ => state | RUNNING,
            };
            if next == state {
                return None;
            }
            match slot
                .state
                .compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if held => return None,
                Ok(_) => {
                    return Some(Held {
                        index,
                        generation: wanted,
                    });
                }
                Err(now) => state = now,
            }
        }
    }

    /// The connection `held` names.
    pub(super) fn conn<'a>(&'a self, held: &'a mut Held) -> &'a mut T {
        let slot = self.slot(held.index).expect("a held slot exists");
        // SAFETY: `held` proves this thread owns the slot (RUNNING, set by its claim), and
        // the borrow of `held` keeps the reference from outliving that ownership.
        unsafe { (*slot.conn.get()).as_deref_mut() }.expect("a held slot has a connection")
    }

    /// Lets go of a connection, unless events came for it meanwhile: then it is still held,
    /// and the caller drives it again.
    pub(super) fn release(&self, held: Held) -> Release {
        let slot = self.slot(held.index).expect("a held slot exists");
        let mut state = slot.state.load(Ordering::Acquire);
        loop {
            debug_assert!(state & RUNNING != 0 && generation(state) == held.generation);
            let again = state & AGAIN != 0;
            let next = if again {
                state & !AGAIN_ALL
            } else {
                state & !RUNNING
            };
            match slot
                .state
                .compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if again => {
                    return Release::Again {
                        read: state & AGAIN_READ != 0,
                        closed: state & AGAIN_CLOSED != 0,
                        held,
                    };
                }
                Ok(_) => return Release::Done,
                Err(now) => state = now,
            }
        }
    }

    /// Takes a held connection out of the table for closing; the slot becomes vacant under
    /// a new generation, so events still on their way for it are dropped. Closing the
    /// socket (dropping the connection) removes it from the poller.
    pub(super) fn remove(&self, held: Held) -> Box<T> {
        let slot = self.slot(held.index).expect("a held slot exists");
        // SAFETY: `held` proves this thread owns the slot; after the store below nobody
        // touches `conn` until the index comes off the free list again.
        let conn = unsafe { (*slot.conn.get()).take() }.expect("a held slot has a connection");
        let next = u64::from(held.generation.wrapping_add(1)) << 32 | VACANT;
        slot.state.store(next, Ordering::Release);
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(held.index);
        conn
    }

    /// The keys of the open connections right now (for sweeps; some may close meanwhile,
    /// and a claim then fails).
    pub(super) fn keys(&self) -> Vec<u64> {
        let used = self.unused.load(Ordering::Relaxed).min(self.capacity);
        (0..used)
            .filter_map(|index| {
                let state = self.slot(index)?.state.load(Ordering::Acquire);
                (state & VACANT == 0).then(|| key(index, generation(state)))
            })
            .collect()
    }

    /// Waits up to `timeout` ms (-1: without end) for events; how many it wrote.
    pub(super) fn wait(&self, events: &mut [libc::epoll_event], timeout: i32) -> io::Result<usize> {
        // SAFETY: `events` is a writable buffer of its length.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                timeout,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        Ok(n as usize)
    }

    /// Makes one waiting worker return from [`Table::wait`] with [`WAKE_KEY`]. A worker
    /// that gets it and stops calls this again, so one call reaches every worker in turn.
    pub(super) fn wake(&self) {
        let fd = self.wake.as_raw_fd();
        let mut drained = 0u64;
        // SAFETY: an eventfd takes and gives 8-byte counters; both calls are non-blocking
        // and their results do not matter: the read resets the counter so that the write
        // makes a new edge.
        unsafe {
            libc::read(fd, (&mut drained as *mut u64).cast(), 8);
            let one = 1u64;
            libc::write(fd, (&one as *const u64).cast(), 8);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;

    fn events() -> Vec<libc::epoll_event> {
        vec![libc::epoll_event { events: 0, u64: 0 }; 8]
    }

    /// Admits `value` on a fresh socket pair; returns the peer and the key its events carry.
    fn admit(table: &Table<u32>, value: u32) -> (UnixStream, UnixStream, u64) {
        let (ours, peer) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        table.admit(value, ours.as_raw_fd()).unwrap();
        // A new socket is writable at once: its first event names it.
        let mut ev = events();
        let n = table.wait(&mut ev, 1000).unwrap();
        assert_eq!(n, 1);
        (ours, peer, ev[0].u64)
    }

    #[test]
    fn an_event_for_a_held_connection_is_left_to_its_holder() {
        let table = Table::<u32>::new(4).unwrap();
        let (_ours, _peer, key) = admit(&table, 7);
        let mut held = table.claim(key, false, false).unwrap();
        assert_eq!(*table.conn(&mut held), 7);
        // Another worker's event: not taken, but recorded for the holder.
        assert!(table.claim(key, true, false).is_none());
        assert!(table.claim(key, false, true).is_none());
        // A sweep neither takes it nor asks for another run.
        assert!(table.try_claim(key).is_none());
        let Release::Again { held, read, closed } = table.release(held) else {
            panic!("the events must be handed to the holder");
        };
        assert!(read && closed);
        assert!(matches!(table.release(held), Release::Done));
        // Idle again: anyone may take it.
        assert!(table.try_claim(key).is_some());
    }

    #[test]
    fn events_for_a_closed_connection_never_reach_the_next_one_in_its_slot() {
        let table = Table::<u32>::new(1).unwrap();
        let (ours, _peer, old) = admit(&table, 1);
        let held = table.claim(old, true, false).unwrap();
        assert_eq!(*table.remove(held), 1);
        drop(ours);
        assert!(table.claim(old, true, false).is_none());
        assert!(table.keys().is_empty());
        // The only slot is used again, under a new generation.
        let (_ours, _peer, new) = admit(&table, 2);
        assert_ne!(old, new);
        assert_eq!(old as u32, new as u32);
        assert!(table.claim(old, true, false).is_none());
        let mut held = table.claim(new, true, false).unwrap();
        assert_eq!(*table.conn(&mut held), 2);
        assert_eq!(table.keys(), vec![new]);
    }

    #[test]
    fn a_full_table_gives_the_connection_back() {
        let table = Table::<u32>::new(1).unwrap();
        let (_a, _peer, _) = admit(&table, 1);
        let (b, _peer_b) = UnixStream::pair().unwrap();
        let (value, e) = table.admit(2, b.as_raw_fd()).unwrap_err();
        assert_eq!(value, 2);
        assert!(e.to_string().contains("full"), "{e}");
    }

    #[test]
    fn a_peer_write_is_one_event_naming_the_connection() {
        let table = Table::<u32>::new(4).unwrap();
        let (_ours, mut peer, key) = admit(&table, 1);
        let mut ev = events();
        assert_eq!(
            table.wait(&mut ev, 0).unwrap(),
            0,
            "edge-triggered: no repeat"
        );
        std::io::Write::write_all(&mut peer, b"get a\r\n").unwrap();
        let n = table.wait(&mut ev, 1000).unwrap();
        assert_eq!((n, ev[0].u64), (1, key));
        assert!(ev[0].events & libc::EPOLLIN as u32 != 0);
    }

    #[test]
    fn one_wake_reaches_each_waiter_in_turn() {
        let table = Arc::new(Table::<u32>::new(4).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (table, stop) = (table.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut ev = events();
                    // Bounded: a lost wake fails the test instead of hanging it.
                    for _ in 0..100 {
                        let n = table.wait(&mut ev, 100).unwrap();
                        if stop.load(Ordering::Acquire) && ev[..n].iter().any(|e| e.u64 == WAKE_KEY)
                        {
                            table.wake();
                            return true;
                        }
                    }
                    false
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        stop.store(true, Ordering::Release);
        table.wake();
        for waiter in waiters {
            assert!(waiter.join().unwrap(), "a waiter never got the wake");
        }
    }

    /// Threads race to claim and release the same connections, as workers do with events;
    /// the holder checks that nobody else is inside.
    #[test]
    fn claims_are_exclusive_under_contention() {
        let table = Arc::new(Table::<u32>::new(4).unwrap());
        let pairs: Vec<_> = (0..2).map(|i| admit(&table, i)).collect();
        let keys: Vec<u64> = pairs.iter().map(|p| p.2).collect();
        let inside: Arc<[AtomicBool; 2]> =
            Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (table, keys, inside) = (table.clone(), keys.clone(), inside.clone());
                std::thread::spawn(move || {
                    let mut runs = 0u64;
                    for i in 0..200_000usize {
                        let which = (i + t) % 2;
                        let Some(mut held) = table.claim(keys[which], true, false) else {
                            continue;
                        };
                        loop {
                            assert!(!inside[which].swap(true, Ordering::AcqRel), "two holders");
                            *table.conn(&mut held) += 1;
                            runs += 1;
                            inside[which].store(false, Ordering::Release);
                            match table.release(held) {
                                Release::Done => break,
                                Release::Again { held: again, .. } => held = again,
                            }
                        }
                    }
                    runs
                })
            })
            .collect();
        let runs: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let mut total = 0u64;
        for key in keys {
            let mut held = table.try_claim(key).expect("idle after the race");
            total += u64::from(*table.conn(&mut held));
        }
        // Every run was counted once, and the initial values were 0 and 1.
        assert_eq!(total, runs + 1);
    }
}
