//! Worker threads: `-t` threads that wait on the connection table's one poller
//! ([`super::table`]) and drive whichever connections are ready. A connection belongs to no
//! thread: each event goes to a waiting worker, which holds the connection only while it
//! runs the requests that arrived, so one worker taken off its CPU by the scheduler delays
//! only the few connections in its hands, never every connection it once accepted.
//!
//! Why not one tokio task per connection: a task costs its future (1.6 KiB here) plus the
//! runtime's bookkeeping, so 5,000 idle clients cost 7 KiB each, ten times memcached; and a
//! work-stealing runtime spends futex wake-ups moving requests between threads. Here an idle
//! connection costs its [`Connection`], its slot and its
//! [`ConnInfo`](crate::telemetry::ConnInfo), and a request is one
//! `epoll_wait` (shared by every connection ready at once), one `read` and one `send`.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::DRAIN_TIMEOUT;
use super::connection::{Connection, Env, Next};
use super::table::{Held, Release, Table, WAKE_KEY};
use crate::command::Context;
use crate::telemetry::Closed;
use crate::telemetry::latency::LocalLatency;

/// Events taken per `epoll_wait`: the most connections a worker holds at once (besides
/// those it lets run again after a `-R` yield). Few, so that a worker that loses its CPU
/// mid-batch holds up few connections; the others' events go to the other workers.
const EVENTS: usize = 16;
/// The longest a worker runs without sleeping before it lets other runnable threads of
/// this CPU go first (`sched_yield`, which returns at once when there are none). The kernel
/// preempts a thread that never sleeps only at its tick (4 ms at `HZ=250`), and a busy
/// worker always finds another ready connection, so without this a thread it competes
/// with (a client on the same machine, another pod's process, the other worker) waits
/// whole ticks: that was memcrab's closed-loop p99 (BENCHMARKS.md, "Tail latency"). A
/// quarter of a tick: 250 us served the closed loop as well, but under a steady open load
/// its yields (1,500 a second at half load) made the yielding worker's requests wait out
/// the other thread's turn, and the half-load p99 went to 1.4-1.8x memcached's.
const QUANTUM_NS: u64 = 1_000_000;
/// An `epoll_wait` that took this long put the thread to sleep (a call that finds events
/// returns in a microsecond or two).
const SLEPT_NS: u64 = 30_000;
/// How often the idle-timeout sweep runs (when `-o idle_timeout` is set).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often the drain checks whether the last replies have been delivered.
const DRAIN_POLL_MS: i32 = 10;

/// What every worker shares.
pub(super) struct Shared {
    pub table: Arc<Table<Connection>>,
    pub ctx: Arc<Context>,
    /// Ends the workers' loops (after [`Table::wake`]).
    pub stop: Arc<AtomicBool>,
    /// Called when a client's `shutdown` asks the whole server to stop.
    pub stop_requested: Arc<dyn Fn() + Send + Sync>,
    /// Workers still serving: the last one to stop drains the connections.
    pub running: Arc<AtomicUsize>,
}

/// Starts worker `index`.
pub(super) fn spawn(index: usize, shared: &Shared) -> io::Result<std::thread::JoinHandle<()>> {
    let ctx = shared.ctx.clone();
    let worker = Worker {
        index,
        table: shared.table.clone(),
        yielded: Vec::new(),
        latency: LocalLatency::default(),
        measure: ctx.config.metrics_port != 0,
        ctx,
        stop: shared.stop.clone(),
        stop_requested: shared.stop_requested.clone(),
        running: shared.running.clone(),
    };
    shared.running.fetch_add(1, Ordering::AcqRel);
    std::thread::Builder::new()
        .name(format!("memcrab-worker-{index}"))
        .spawn(move || worker.run())
        .inspect_err(|_| {
            shared.running.fetch_sub(1, Ordering::AcqRel);
        })
}

struct Worker {
    index: usize,
    table: Arc<Table<Connection>>,
    /// Connections held to run again after this batch: they ran `-R` requests in a row and
    /// have more buffered, or events came for them while they ran.
    yielded: Vec<Held>,
    /// Request latencies of this thread, added to the shared histogram once per loop.
    latency: LocalLatency,
    measure: bool,
    ctx: Arc<Context>,
    stop: Arc<AtomicBool>,
    stop_requested: Arc<dyn Fn() + Send + Sync>,
    running: Arc<AtomicUsize>,
}

/// The monotonic clock in nanoseconds: the loop's turn accounting reads it twice per
/// wait, and plain integers cost less than `Instant`'s checked arithmetic.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which lives for the call; CLOCK_MONOTONIC
    // exists on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// What an epoll event says of a socket: (readable, read-closed), as mio reads them.
fn readiness(flags: u32) -> (bool, bool) {
    let has = |bit: i32| flags & bit as u32 != 0;
    let closed = has(libc::EPOLLHUP) || (has(libc::EPOLLIN) && has(libc::EPOLLRDHUP));
    let read = has(libc::EPOLLIN) || has(libc::EPOLLPRI) || has(libc::EPOLLERR) || closed;
    (read, closed)
}

impl Worker {
    fn run(mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        let idle_timeout = self.ctx.config.idle_timeout;
        // One worker is enough to sweep the shared table.
        let sweeps = idle_timeout > 0 && self.index == 0;
        let mut last_sweep = Instant::now();
        // When this thread last slept (or gave its CPU away).
        let mut busy_since = monotonic_ns();
        while !self.stop.load(Ordering::Acquire) {
            // Two clock reads a loop: this one ends the last batch's turn and starts the wait.
            let mut before = monotonic_ns();
            if before - busy_since >= QUANTUM_NS {
                // SAFETY: no arguments; it only reschedules this thread.
                unsafe { libc::sched_yield() };
                before = monotonic_ns();
                busy_since = before;
            }
            let timeout = if !self.yielded.is_empty() {
                0
            } else if sweeps {
                SWEEP_EVERY.as_millis() as i32
            } else {
                -1
            };
            let n = match self.table.wait(&mut events, timeout) {
                Ok(n) => {
                    let after = monotonic_ns();
                    if n == 0 || after - before >= SLEPT_NS {
                        busy_since = after;
                    }
                    n
                }
                Err(e) => {
                    eprintln!("worker poll failed: {e}");
                    break;
                }
            };
            for event in &events[..n] {
                self.on_event(*event, false);
            }
            for held in std::mem::take(&mut self.yielded) {
                self.drive(held, false);
            }
            self.latency.flush_into(&self.ctx.latency);
            if sweeps && last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                self.close_idle(idle_timeout);
            }
        }
        // Pass the stop on to a worker still waiting, and let go of what this one holds.
        self.table.wake();
        for held in std::mem::take(&mut self.yielded) {
            self.let_go(held);
        }
        self.latency.flush_into(&self.ctx.latency);
        if self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drain(&mut events);
        }
    }

    /// Drives the connection an event names, unless another worker holds it (which then
    /// runs it again) or it has closed. The stop's wake-up is checked by the loop.
    fn on_event(&mut self, event: libc::epoll_event, draining: bool) {
        let (flags, key) = (event.events, event.u64);
        if key == WAKE_KEY {
            return;
        }
        let (read, closed) = readiness(flags);
        if let Some(mut held) = self.table.claim(key, read, closed) {
            if read {
                self.table.conn(&mut held).readable(closed);
            }
            self.drive(held, draining);
        }
    }

    /// Runs a held connection until it would block, then acts on what it waits for next.
    fn drive(&mut self, mut held: Held, draining: bool) {
        let mut stop_requested = false;
        let conn = self.table.conn(&mut held);
        let mut env = Env {
            ctx: &self.ctx,
            latency: &mut self.latency,
            measure: self.measure,
            stop_requested: &mut stop_requested,
            draining,
        };
        let next = conn.drive(&mut env);
        conn.report_buffers(&self.ctx);
        if stop_requested {
            (self.stop_requested)();
        }
        match next {
            Next::Read | Next::Write => self.settle(held),
            Next::Yield => self.yielded.push(held),
            Next::Close(why) => self.close(held, why),
        }
    }

    /// Lets go of a connection, or, if events came for it meanwhile, keeps it to run again
    /// after this batch.
    fn settle(&mut self, held: Held) {
        if let Release::Again {
            mut held,
            read,
            closed,
        } = self.table.release(held)
        {
            if read {
                self.table.conn(&mut held).readable(closed);
            }
            self.yielded.push(held);
        }
    }

    /// Lets go of a connection for good (this worker is stopping): whatever came for it is
    /// left to the drain, which drives every connection.
    fn let_go(&self, mut held: Held) {
        while let Release::Again {
            held: again, read, ..
        } = self.table.release(held)
        {
            held = again;
            if read {
                self.table.conn(&mut held).readable(false);
            }
        }
    }

    fn close(&mut self, held: Held, why: Closed) {
        let conn = self.table.remove(held);
        self.ctx.counters.closed[why as usize].fetch_add(1, Ordering::Relaxed);
        if self.ctx.verbosity.load(Ordering::Relaxed) > 1 {
            eprintln!("<{} connection closed.", conn.info.fd);
        }
        self.ctx.unregister(&conn.info);
        Connection::close(*conn, &self.ctx);
        self.ctx
            .counters
            .curr_connections
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// `-o idle_timeout`: closes connections with no command for that many seconds.
    fn close_idle(&mut self, idle_timeout: u64) {
        let now = self.ctx.store.time().unix_now();
        for key in self.table.keys() {
            // A connection some worker holds is not idle.
            let Some(mut held) = self.table.try_claim(key) else {
                continue;
            };
            let c = self.table.conn(&mut held);
            // A TLS handshake the client stalls counts as idle, even with the server's
            // flight unread.
            let idle = (!c.has_unsent() || c.handshaking())
                && now.saturating_sub(c.info.last_cmd.load(Ordering::Relaxed)) >= idle_timeout;
            if idle {
                self.ctx.counters.idle_kicks.fetch_add(1, Ordering::Relaxed);
                self.close(held, Closed::IdleTimeout);
            } else {
                self.settle(held);
            }
        }
    }

    /// Shutdown, run by the last worker to stop, alone with the table: idle connections
    /// close now; replies being written are finished (requests already received still run,
    /// nothing new is read) and delivered, within the drain timeout, so that exiting does not
    /// cut off a reply a slow client is still reading (a container's network goes away with
    /// the process).
    fn drain(&mut self, events: &mut [libc::epoll_event]) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        for key in self.table.keys() {
            if let Some(held) = self.table.try_claim(key) {
                self.drive(held, true);
            }
        }
        loop {
            for held in std::mem::take(&mut self.yielded) {
                self.drive(held, true);
            }
            self.latency.flush_into(&self.ctx.latency);
            // Connections run again after this pass are held, so `try_claim` skips them.
            for key in self.table.keys() {
                let Some(mut held) = self.table.try_claim(key) else {
                    continue;
                };
                let c = self.table.conn(&mut held);
                if !c.has_unsent() && c.unacknowledged() == 0 {
                    self.close(held, Closed::Shutdown);
                } else {
                    self.let_go(held);
                }
            }
            let open = self.table.keys();
            if open.is_empty() || Instant::now() >= deadline {
                break;
            }
            let wait = if self.yielded.is_empty() {
                DRAIN_POLL_MS
            } else {
                0
            };
            let Ok(n) = self.table.wait(events, wait) else {
                break;
            };
            for event in &events[..n] {
                self.on_event(*event, true);
            }
        }
        for held in std::mem::take(&mut self.yielded) {
            self.close(held, Closed::Shutdown);
        }
        for key in self.table.keys() {
            if let Some(held) = self.table.try_claim(key) {
                self.close(held, Closed::Shutdown);
            }
        }
    }
}
