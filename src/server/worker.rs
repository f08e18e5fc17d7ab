//! Worker threads, memcached's model: `-t` threads, each with its own edge-triggered poller
//! (epoll) and its own connections, which never move. The accept loop hands each new
//! connection to the next worker through a channel and a waker.
//!
//! Why not one tokio task per connection: a task costs its future (1.6 KiB here) plus the
//! runtime's bookkeeping, so 5,000 idle clients cost 7 KiB each, ten times memcached; and a
//! work-stealing runtime spends futex wake-ups moving requests between threads. Here an idle
//! connection costs its [`Connection`] slot and its [`ConnInfo`], and a request is one
//! `epoll_wait` (shared by every connection ready at once), one `read` and one `send`.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::DRAIN_TIMEOUT;
use super::connection::{Connection, Env, Next, Stream};
use crate::command::Context;
use crate::protocol::Limits;
use crate::telemetry::latency::LocalLatency;
use crate::telemetry::{Closed, ConnInfo};

const WAKER: Token = Token(usize::MAX);
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;
/// How often the idle-timeout sweep runs (when `-o idle_timeout` is set).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often a draining worker checks whether its last replies have been delivered.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// A connection accepted for a worker.
pub(super) struct Accepted {
    pub stream: Stream,
    pub info: Arc<ConnInfo>,
    /// It came from a TLS listener.
    pub tls: bool,
}

/// The accept loop's end of one worker.
pub(super) struct Handle {
    tx: mpsc::Sender<Accepted>,
    waker: Waker,
}

impl Handle {
    /// Hands a connection to the worker. Fails only if the worker has exited.
    pub(super) fn send(&self, conn: Accepted) -> Result<(), Accepted> {
        self.tx.send(conn).map_err(|e| e.0)?;
        let _ = self.waker.wake();
        Ok(())
    }

    pub(super) fn wake(&self) {
        let _ = self.waker.wake();
    }
}

/// Starts worker `index`. `stop` ends its loop (after waking it); `stop_requested` is set
/// when a client's `shutdown` asks the whole server to stop.
pub(super) fn spawn(
    index: usize,
    ctx: Arc<Context>,
    stop: Arc<AtomicBool>,
    stop_requested: Arc<dyn Fn() + Send + Sync>,
) -> io::Result<(Handle, std::thread::JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let (tx, rx) = mpsc::channel();
    let worker = Worker {
        poll,
        rx,
        conns: Slab::new(),
        yielded: Vec::new(),
        latency: LocalLatency::default(),
        limits: ctx.limits(),
        measure: ctx.config.metrics_port != 0,
        ctx,
        stop,
        stop_requested,
    };
    let thread = std::thread::Builder::new()
        .name(format!("memcrab-worker-{index}"))
        .spawn(move || worker.run())?;
    Ok((Handle { tx, waker }, thread))
}

struct Worker {
    poll: Poll,
    rx: mpsc::Receiver<Accepted>,
    conns: Slab<Connection>,
    /// Connections that ran `-R` requests in a row and have more buffered.
    yielded: Vec<usize>,
    /// Request latencies of this thread, added to the shared histogram once per loop.
    latency: LocalLatency,
    limits: Limits,
    measure: bool,
    ctx: Arc<Context>,
    stop: Arc<AtomicBool>,
    stop_requested: Arc<dyn Fn() + Send + Sync>,
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        let idle_timeout = self.ctx.config.idle_timeout;
        let mut last_sweep = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            let timeout = if !self.yielded.is_empty() {
                Some(Duration::ZERO)
            } else if idle_timeout > 0 {
                Some(SWEEP_EVERY)
            } else {
                None
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("worker poll failed: {e}");
                break;
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => self.admit(),
                    Token(key) => {
                        if (event.is_readable() || event.is_read_closed() || event.is_error())
                            && let Some(conn) = self.conns.get_mut(key)
                        {
                            conn.readable(event.is_read_closed());
                        }
                        self.drive(key, false);
                    }
                }
            }
            for key in std::mem::take(&mut self.yielded) {
                self.drive(key, false);
            }
            self.latency.flush_into(&self.ctx.latency);
            if idle_timeout > 0 && last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                self.close_idle(idle_timeout);
            }
        }
        self.drain(&mut events);
    }

    /// Registers the connections the accept loop sent.
    fn admit(&mut self) {
        while let Ok(Accepted {
            mut stream,
            info,
            tls,
        }) = self.rx.try_recv()
        {
            // The TLS state itself is made when the client first speaks (`secure.rs`).
            let tls = self.ctx.config.tls.clone().filter(|_| tls);
            let entry = self.conns.vacant_entry();
            let token = Token(entry.key());
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = self
                .poll
                .registry()
                .register(stream.source(), token, interest)
            {
                eprintln!("failed to register a connection: {e}");
                self.ctx
                    .counters
                    .curr_connections
                    .fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            if self.ctx.verbosity.load(Ordering::Relaxed) > 1 {
                eprintln!("<{} new auto-negotiating client connection", info.fd);
            }
            self.ctx.register(info.clone());
            entry.insert(Connection::new(stream, info, tls, self.limits));
            // Data may have arrived before registration; the first drive reads it.
            self.drive(token.0, false);
        }
    }

    /// Runs connection `key` (if it is still open) until it would block, then acts on what
    /// it waits for next.
    fn drive(&mut self, key: usize, draining: bool) {
        let mut stop_requested = false;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
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
            Next::Read | Next::Write => {}
            Next::Yield => self.yielded.push(key),
            Next::Close(why) => self.close(key, why),
        }
    }

    fn close(&mut self, key: usize, why: Closed) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        self.ctx.counters.closed[why as usize].fetch_add(1, Ordering::Relaxed);
        if self.ctx.verbosity.load(Ordering::Relaxed) > 1 {
            eprintln!("<{} connection closed.", conn.info.fd);
        }
        self.ctx.unregister(&conn.info);
        conn.close(&self.ctx);
        self.ctx
            .counters
            .curr_connections
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// `-o idle_timeout`: closes connections with no command for that many seconds.
    fn close_idle(&mut self, idle_timeout: u64) {
        let now = self.ctx.store.time().unix_now();
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                // A TLS handshake the client stalls counts as idle, even with the server's
                // flight unread.
                (!c.has_unsent() || c.handshaking())
                    && now.saturating_sub(c.info.last_cmd.load(Ordering::Relaxed)) >= idle_timeout
            })
            .map(|(key, _)| key)
            .collect();
        for key in idle {
            self.ctx.counters.idle_kicks.fetch_add(1, Ordering::Relaxed);
            self.close(key, Closed::IdleTimeout);
        }
    }

    /// Shutdown: idle connections close now; replies being written are finished (requests
    /// already received still run, nothing new is read) and delivered, within the drain
    /// timeout, so that exiting does not cut off a reply a slow client is still reading (a
    /// container's network goes away with the process).
    fn drain(&mut self, events: &mut Events) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.drive(key, true);
        }
        loop {
            for key in std::mem::take(&mut self.yielded) {
                self.drive(key, true);
            }
            self.latency.flush_into(&self.ctx.latency);
            let done: Vec<usize> = self
                .conns
                .iter()
                .filter(|(key, c)| {
                    !c.has_unsent() && !self.yielded.contains(key) && c.unacknowledged() == 0
                })
                .map(|(key, _)| key)
                .collect();
            for key in done {
                self.close(key, Closed::Shutdown);
            }
            if self.conns.is_empty() || Instant::now() >= deadline {
                break;
            }
            let wait = if self.yielded.is_empty() {
                DRAIN_POLL
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(events, Some(wait))
                && e.kind() != io::ErrorKind::Interrupted
            {
                break;
            }
            let ready: Vec<usize> = events
                .iter()
                .filter(|e| e.token() != WAKER)
                .map(|e| e.token().0)
                .collect();
            for key in ready {
                self.drive(key, true);
            }
        }
        let rest: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in rest {
            self.close(key, Closed::Shutdown);
        }
        // Connections handed over after the stop are closed unserved.
        while let Ok(Accepted { .. }) = self.rx.try_recv() {
            self.ctx
                .counters
                .curr_connections
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}
