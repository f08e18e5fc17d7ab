//! One task per client: read what has arrived, parse and run every complete request in it,
//! and send all their replies with one write.
//!
//! Memory per connection is bounded: the read buffer holds at most one request (a line of
//! at most `MAX_GET_LINE`, or a storage line and its data of at most `-I`), and the output
//! buffer is written out whenever it passes [`OUT_FLUSH`]; a client that does not read stalls
//! its own connection, not the server.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::shutdown::Shutdown;
use crate::command::latency::{CommandClass, LocalLatency};
use crate::command::{ConnInfo, Context, Outcome, conn_state as state, line};
use crate::protocol::{Limits, Parsed, ascii};
use crate::storage::item::MAX_HEADER_LEN;

/// Bytes asked of the socket per read (memcached reads 16 KB at a time too).
const READ_CHUNK: usize = 16 * 1024;
/// Replies are written out once this many bytes are waiting, even mid-batch.
const OUT_FLUSH: usize = 256 * 1024;
/// First allocation of the reply buffer of a batch.
const OUT_INITIAL: usize = 4096;

/// A stream whose readiness can be awaited without a buffer.
pub(crate) trait Readiness {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send;
}

impl Readiness for tokio::net::TcpStream {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        tokio::net::TcpStream::readable(self)
    }
}

impl Readiness for tokio::net::UnixStream {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        tokio::net::UnixStream::readable(self)
    }
}

/// Read buffers of idle connections go back to a small per-thread pool, so that thousands of
/// idle connections hold none and busy ones do not allocate per request.
mod buffers {
    use std::cell::RefCell;

    use bytes::BytesMut;

    use super::READ_CHUNK;

    /// Buffers kept per worker thread.
    const POOL: usize = 64;
    /// A buffer grown past this for one large value is freed rather than kept.
    const KEEP_CAPACITY: usize = 64 * 1024;

    thread_local! {
        static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn take() -> BytesMut {
        FREE.with(|f| f.borrow_mut().pop())
            .unwrap_or_else(|| BytesMut::with_capacity(READ_CHUNK))
    }

    pub(super) fn give(mut buf: BytesMut) {
        buf.clear();
        if buf.capacity() < READ_CHUNK || buf.capacity() > KEEP_CAPACITY {
            return;
        }
        FREE.with(|f| {
            let mut free = f.borrow_mut();
            if free.len() < POOL {
                free.push(buf);
            }
        });
    }
}

pub(crate) struct Connection<S> {
    stream: S,
    ctx: Arc<Context>,
    shutdown: Shutdown,
    info: Arc<ConnInfo>,
    limits: Limits,
    rbuf: BytesMut,
    out: Vec<u8>,
    /// Bytes of a refused value still to skip.
    swallow: usize,
    latency: LocalLatency,
    /// Time requests for the latency histogram (only when metrics are served).
    measure: bool,
    /// Buffer capacities last reported to the server-wide gauges.
    reported: (usize, usize),
}

impl<S: AsyncRead + AsyncWrite + Readiness + Unpin> Connection<S> {
    pub(crate) fn new(
        stream: S,
        fd: i32,
        peer: String,
        listen_addr: String,
        ctx: Arc<Context>,
        shutdown: Shutdown,
    ) -> Self {
        let info = Arc::new(ConnInfo::new(
            fd,
            peer,
            Some(listen_addr),
            ctx.store.time().unix_now(),
        ));
        let measure = ctx.config.metrics_port != 0;
        let limits = Limits {
            item_size_max: ctx.store.config().item_size_max,
            item_overhead: MAX_HEADER_LEN,
        };
        Self {
            stream,
            ctx,
            shutdown,
            info,
            limits,
            rbuf: BytesMut::new(),
            out: Vec::new(),
            swallow: 0,
            latency: LocalLatency::default(),
            measure,
            reported: (0, 0),
        }
    }

    fn verbosity(&self) -> u32 {
        self.ctx.verbosity.load(Ordering::Relaxed)
    }

    pub(crate) async fn serve(mut self) {
        self.ctx.register(self.info.clone());
        if self.verbosity() > 1 {
            eprintln!("<{} new auto-negotiating client connection", self.info.fd);
        }
        if let Err(e) = self.serve_inner().await
            && self.verbosity() > 0
        {
            eprintln!("<{} error: {e}", self.info.fd);
        }
        if self.shutdown.is_triggered() {
            linger(self.info.fd).await;
        }
        if self.verbosity() > 1 {
            eprintln!("<{} connection closed.", self.info.fd);
        }
        self.ctx.unregister(&self.info);
        self.latency.flush_into(&self.ctx.latency);
        self.rbuf = BytesMut::new();
        self.out = Vec::new();
        self.report_buffers();
        self.ctx
            .counters
            .curr_connections
            .fetch_sub(1, Ordering::Relaxed);
    }

    async fn serve_inner(&mut self) -> std::io::Result<()> {
        let idle = self.ctx.config.idle_timeout;
        loop {
            let go_on = self.process().await?;
            // Once per batch: `stats conns` shows seconds since the last command.
            self.info
                .last_cmd
                .store(self.ctx.store.time().unix_now(), Ordering::Relaxed);
            if !self.out.is_empty() && self.swallow == 0 {
                self.flush().await?;
            }
            self.latency.flush_into(&self.ctx.latency);
            self.report_buffers();
            if !go_on || self.shutdown.is_triggered() {
                return Ok(());
            }
            self.info.state.store(state::WAITING, Ordering::Relaxed);
            if self.rbuf.is_empty() {
                // Idle between requests: hold no buffers while waiting (memcached keeps idle
                // connections small the same way), then take them back when data comes.
                buffers::give(std::mem::take(&mut self.rbuf));
                // Replies held back while a refused value is skipped stay.
                if self.out.is_empty() {
                    self.out = Vec::new();
                }
                self.report_buffers();
                tokio::select! {
                    biased;
                    r = self.stream.readable() => r?,
                    _ = self.shutdown.wait() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(idle)), if idle > 0 => {
                        self.ctx.counters.idle_kicks.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                }
                self.rbuf = buffers::take();
            }
            self.rbuf.reserve(READ_CHUNK);
            let read = self.stream.read_buf(&mut self.rbuf);
            let n = tokio::select! {
                // Data first: polling in a fixed order also skips select!'s random draw.
                biased;
                r = read => r?,
                _ = self.shutdown.wait() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(idle)), if idle > 0 => {
                    self.ctx.counters.idle_kicks.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
            };
            if n == 0 {
                return Ok(());
            }
            self.ctx
                .counters
                .bytes_read
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Runs every complete request in the read buffer. `Ok(false)` means close.
    async fn process(&mut self) -> std::io::Result<bool> {
        let ctx = self.ctx.clone();
        let per_event = ctx.config.reqs_per_event;
        let mut handled = 0;
        loop {
            if self.swallow > 0 {
                let n = self.swallow.min(self.rbuf.len());
                self.rbuf.advance(n);
                self.swallow -= n;
                if self.swallow > 0 {
                    self.info.state.store(state::SWALLOW, Ordering::Relaxed);
                    return Ok(true);
                }
            }
            if self.rbuf.is_empty() {
                return Ok(true);
            }
            self.info.state.store(state::PARSE_CMD, Ordering::Relaxed);
            if self.out.capacity() == 0 {
                self.out.reserve(OUT_INITIAL);
            }
            let mark = self.out.len();
            let started = self.measure.then(std::time::Instant::now);
            let (used, outcome) = match ascii::parse(&self.rbuf, &self.limits) {
                Parsed::Incomplete => {
                    self.info.state.store(state::NREAD, Ordering::Relaxed);
                    return Ok(true);
                }
                Parsed::Close => return Ok(false),
                Parsed::Request(req, used) => {
                    self.swallow = req.swallow();
                    let outcome = ctx.execute(&req, &self.info, &mut self.out);
                    if let Some(started) = started {
                        self.latency
                            .record(CommandClass::of(&req), started.elapsed());
                    }
                    (used, outcome)
                }
                Parsed::Error {
                    error,
                    consumed,
                    swallow,
                    noreply,
                } => {
                    if !noreply {
                        line(&mut self.out, error.message());
                    }
                    self.swallow = swallow;
                    (consumed, Outcome::Continue)
                }
            };
            if self.verbosity() > 1 {
                self.log_exchange(used, mark);
            }
            self.rbuf.advance(used);
            match outcome {
                Outcome::Continue => {}
                Outcome::Close => return Ok(false),
                Outcome::Shutdown => {
                    self.shutdown.trigger();
                    return Ok(false);
                }
            }
            if self.out.len() >= OUT_FLUSH {
                self.flush().await?;
            }
            handled += 1;
            if handled % per_event == 0 {
                ctx.counters.conn_yields.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }
    }

    /// `-vv`: the command line and the first line of its reply, as memcached logs them.
    fn log_exchange(&self, used: usize, mark: usize) {
        let request = &self.rbuf[..used];
        let cmd = request.split(|&b| b == b'\n').next().unwrap_or(b"");
        let cmd = cmd.strip_suffix(b"\r").unwrap_or(cmd);
        eprintln!("<{} {}", self.info.fd, String::from_utf8_lossy(cmd));
        let reply = &self.out[mark..];
        if let Some(first) = reply
            .split(|&b| b == b'\n')
            .next()
            .filter(|l| !l.is_empty())
        {
            let first = first.strip_suffix(b"\r").unwrap_or(first);
            eprintln!(">{} {}", self.info.fd, String::from_utf8_lossy(first));
        }
    }
}

/// During a drain: wait (bounded by the server's drain timeout) until the kernel has
/// delivered every byte written on `fd`, so that exiting does not cut off a reply that a slow
/// client is still reading (a container's network goes away with the process).
async fn linger(fd: i32) {
    let deadline = tokio::time::Instant::now() + super::DRAIN_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        let mut unsent: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ for sockets) writes one int: the bytes not yet
        // acknowledged by the peer. The caller keeps the descriptor open meanwhile.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut unsent) };
        if rc != 0 || unsent == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl<S: AsyncRead + AsyncWrite + Readiness + Unpin> Connection<S> {
    /// Publishes changes of this connection's buffer capacities (memory outside `-m`).
    fn report_buffers(&mut self) {
        let now = (self.rbuf.capacity(), self.out.capacity());
        if now != self.reported {
            let counters = &self.ctx.counters;
            let delta = |new: usize, old: usize| new as i64 - old as i64;
            counters
                .read_buffer_bytes
                .fetch_add(delta(now.0, self.reported.0), Ordering::Relaxed);
            counters
                .write_buffer_bytes
                .fetch_add(delta(now.1, self.reported.1), Ordering::Relaxed);
            self.reported = now;
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.info.state.store(state::WRITE, Ordering::Relaxed);
        self.stream.write_all(&self.out).await?;
        self.ctx
            .counters
            .bytes_written
            .fetch_add(self.out.len() as u64, Ordering::Relaxed);
        self.out.clear();
        if self.out.capacity() > OUT_FLUSH * 2 {
            self.out.shrink_to(READ_CHUNK);
        }
        Ok(())
    }
}
