//! One client connection as a small state machine driven by the workers' event loop: read
//! what has arrived, parse and run every complete request in it, and send all their replies
//! with one write.
//!
//! Memory per connection is bounded: the read buffer holds at most one request (a line of
//! at most `MAX_GET_LINE`, or a storage line and its data of at most `-I`), and the reply
//! buffer is written out whenever it passes [`OUT_FLUSH`]; a client that does not read
//! stalls its own connection (no more of its requests run until its replies drain), not the
//! server. An idle connection holds no buffer at all: this struct, its socket and its
//! [`ConnInfo`] are all it costs (about 200 bytes).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Buf, BufMut, BytesMut};

use super::secure::{self, Secure};
use crate::command;
use crate::command::reply::{REPLY_FLOOR, STREAM_CAP, spare};
use crate::command::{
    Context, Outcome, Progress, Resume, Room, Session, latency_class, line, rejected_kind,
};
use crate::config::Binding;
use crate::protocol::binary::{self, BinParsed};
use crate::protocol::{self, Dropped, Limits, Parsed};
use crate::telemetry::conns::state;
use crate::telemetry::latency::{CommandClass, LocalLatency};
use crate::telemetry::{Closed, ConnInfo, Rejected};

/// Bytes asked of the socket per read (memcached reads 16 KB at a time too).
pub(super) const READ_CHUNK: usize = 16 * 1024;
/// Read buffer bytes a connection may hold without charging the buffer budget: room for a
/// read while part of a request is still buffered. A longer line or a value in flight
/// grows the buffer beyond it only with the budget's consent.
const READ_FLOOR: usize = 2 * READ_CHUNK;
/// Replies are written out once this many bytes are waiting, even mid-batch, and no further
/// request of the connection runs until they are below it again.
const OUT_FLUSH: usize = STREAM_CAP;
/// First allocation of the reply buffer of a batch.
const OUT_INITIAL: usize = 4096;
/// What memcached answers (and then closes) when a request needs a read buffer it cannot
/// have.
const READ_OUT_OF_MEMORY: &str = "SERVER_ERROR out of memory reading request";

/// A client socket, TCP or UNIX, registered with the workers' shared poller.
pub(super) enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Stream {
    pub(super) fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// Read buffers of idle connections go back to a small per-thread pool, so that thousands of
/// idle connections hold none and busy ones do not allocate per request.
mod buffers {
    use std::cell::RefCell;

    use bytes::BytesMut;

    use super::READ_CHUNK;
    use crate::command::reply::spare;

    /// Buffers kept per worker thread.
    const POOL: usize = 64;
    /// A buffer grown past this for one large value goes to the large pool.
    const KEEP_CAPACITY: usize = 64 * 1024;
    /// Bytes of large buffers (grown for a big value or a long line) kept per thread, so a
    /// big `set` does not cost a fresh mapping and its page faults each time.
    pub(in crate::server) const LARGE_BYTES: usize = 2 << 20;

    thread_local! {
        static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
        static LARGE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn take() -> BytesMut {
        FREE.with(|f| f.borrow_mut().pop())
            .unwrap_or_else(|| BytesMut::with_capacity(READ_CHUNK))
    }

    /// The smallest kept large buffer of at least `min` bytes, if any.
    pub(super) fn take_large(min: usize) -> Option<BytesMut> {
        LARGE.with(|l| spare::take_fitting(&mut l.borrow_mut(), min, BytesMut::capacity))
    }

    pub(super) fn give(mut buf: BytesMut) {
        buf.clear();
        // Requests consumed from the front leave the view's start past the allocation's:
        // move it back, so the whole allocation counts (nothing to copy, it is empty).
        let _ = buf.try_reclaim(buf.capacity() + 1);
        if buf.capacity() < READ_CHUNK {
            return;
        }
        if buf.capacity() > KEEP_CAPACITY {
            LARGE.with(|l| {
                spare::keep_within(&mut l.borrow_mut(), buf, LARGE_BYTES, BytesMut::capacity)
            });
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

/// What the connection waits for after [`Connection::drive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// The socket has no more data for now: wait for the next readable event.
    Read,
    /// Replies are waiting for room in the socket: wait for a writable event.
    Write,
    /// `-R` requests ran in a row: run the rest after the other connections had a turn.
    Yield,
    /// Close the connection, for this reason.
    Close(Closed),
}

/// What the worker lends a connection while driving it.
pub(super) struct Env<'a> {
    pub ctx: &'a Context,
    pub latency: &'a mut LocalLatency,
    /// Time requests for the latency histogram (only when metrics are served).
    pub measure: bool,
    /// Set when a client's `shutdown` asks the server to stop.
    pub stop_requested: &'a mut bool,
    /// While draining, run what is already buffered but read nothing new.
    pub draining: bool,
}

pub(super) struct Connection {
    pub(super) stream: Stream,
    pub(super) info: Arc<ConnInfo>,
    /// The TLS layer of a connection on a TLS listener (`-Z`).
    tls: Option<Secure>,
    limits: Limits,
    rbuf: BytesMut,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    sent: usize,
    /// Bytes of a refused value still to skip.
    swallow: usize,
    /// The last read filled what it asked for, or an event said there is more: read again
    /// before waiting (the poller is edge-triggered).
    more_to_read: bool,
    /// The poller reported the peer's FIN (read-closed).
    peer_closed: bool,
    /// Buffer capacities last reported to the server-wide gauges.
    reported: (usize, usize),
    /// Where a paused request (a streaming reply) goes on from.
    resume: Resume,
    /// Bytes charged to the buffer budget for the read and reply buffers beyond their floors.
    read_charged: usize,
    out_charged: usize,
    /// The protocol this connection speaks: fixed by `-B`, or (`-B auto`, memcached's
    /// default) by its first byte. `None` until then.
    binary: Option<bool>,
    /// Whether it has authenticated (`-S`, `-Y`).
    session: Session,
    /// Where the last reply before `-Y` authentication starts in `out`, while unsent.
    preauth_mark: Option<usize>,
    /// Replies in `out` that a binary no-op flushed: memcached sends them even if a bad
    /// header then closes the connection; the replies after them it drops.
    flushed: usize,
}

impl Connection {
    pub(super) fn new(
        stream: Stream,
        info: Arc<ConnInfo>,
        tls: Option<Arc<crate::tls::Tls>>,
        limits: Limits,
    ) -> Self {
        Self {
            stream,
            info,
            tls: tls.map(Secure::new),
            limits,
            rbuf: BytesMut::new(),
            out: Vec::new(),
            sent: 0,
            swallow: 0,
            more_to_read: true,
            peer_closed: false,
            reported: (0, 0),
            resume: Resume::Start,
            read_charged: 0,
            out_charged: 0,
            binary: None,
            session: Session::default(),
            preauth_mark: None,
            flushed: 0,
        }
    }

    /// The poller said the socket is readable (or closed, or in error: the read tells which).
    /// `closed`: the peer's FIN came with this event, so no later event will report it: a
    /// short read must not end the reading, the read after the data returns 0.
    pub(super) fn readable(&mut self, closed: bool) {
        self.more_to_read = true;
        self.peer_closed |= closed;
    }

    /// Whether the replies may go out now: not while a refused text value is being skipped
    /// (memcached holds them until its end), unless they all end in a binary flush point
    /// (memcached sends a binary error at once).
    fn may_write(&self) -> bool {
        self.swallow == 0 || (self.flushed > self.sent && self.flushed == self.out.len())
    }

    /// Replies accepted but not yet written to the socket (or, over TLS, encrypted bytes
    /// waiting for it).
    pub(super) fn has_unsent(&self) -> bool {
        self.sent < self.out.len() || self.tls.as_ref().is_some_and(Secure::wants_write)
    }

    /// A TLS connection whose handshake has not finished.
    pub(super) fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(Secure::handshaking)
    }

    /// Runs the connection as far as it can go without blocking.
    pub(super) fn drive(&mut self, env: &mut Env<'_>) -> Next {
        match self.drive_inner(env) {
            Ok(next) => next,
            Err(e) => {
                if env.ctx.verbosity.load(Ordering::Relaxed) > 0 {
                    eprintln!("<{} error: {e}", self.info.fd);
                }
                match e.kind() {
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                        Next::Close(Closed::Client)
                    }
                    // A TLS error (counted by the TLS layer).
                    io::ErrorKind::InvalidData => Next::Close(Closed::ProtocolError),
                    _ => Next::Close(Closed::IoError),
                }
            }
        }
    }

    fn drive_inner(&mut self, env: &mut Env<'_>) -> io::Result<Next> {
        let mut handled = 0;
        loop {
            // Replies still waiting for the socket go first: nothing more runs until they
            // are out, so a client that does not read cannot grow our buffers. (Replies
            // held back while a refused value is skipped wait for its end.)
            let due = self.may_write() || self.out.len() >= OUT_FLUSH;
            if self.has_unsent() && due && !self.write_out(env.ctx)? {
                return Ok(Next::Write);
            }
            match self.process(env, &mut handled) {
                Step::NeedInput => {}
                Step::OutFull => continue,
                Step::Yield => {
                    if self.may_write() && !self.write_out(env.ctx)? {
                        return Ok(Next::Write);
                    }
                    return Ok(Next::Yield);
                }
                Step::Close(why) => {
                    // Best effort: the last replies (an error, say) before closing.
                    let _ = self.write_out(env.ctx);
                    return Ok(Next::Close(why));
                }
            }
            // End of a batch: one write for all its replies (held back while a refused
            // value is being skipped, as memcached does).
            if self.may_write() && !self.write_out(env.ctx)? {
                return Ok(Next::Write);
            }
            if handled > 0 {
                self.end_batch(env);
            }
            if env.draining || !self.more_to_read {
                self.release_buffers();
                return Ok(Next::Read);
            }
            self.info.state.store(state::READ, Ordering::Relaxed);
            let read = match self.read(env.ctx) {
                Ok(read) => read,
                Err(ReadError::Io(e)) => return Err(e),
                Err(ReadError::OutOfMemory) => {
                    // memcached drops what it read, answers, and closes.
                    self.rbuf.clear();
                    line(&mut self.out, READ_OUT_OF_MEMORY);
                    let _ = self.write_out(env.ctx);
                    return Ok(Next::Close(Closed::OutOfMemory));
                }
            };
            match read {
                Some(0) => return Ok(Next::Close(Closed::Client)),
                Some(n) => {
                    env.ctx
                        .counters
                        .bytes_read
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                None => {
                    self.release_buffers();
                    return Ok(Next::Read);
                }
            }
        }
    }

    fn end_batch(&self, env: &Env<'_>) {
        // Once per batch: `stats conns` shows seconds since the last command.
        self.info
            .last_cmd
            .store(env.ctx.store.time().unix_now(), Ordering::Relaxed);
        self.info.state.store(state::WAITING, Ordering::Relaxed);
    }

    /// Reads once into the read buffer. `None`: nothing there (wait for the poller).
    fn read(&mut self, ctx: &Context) -> Result<Option<usize>, ReadError> {
        if self.rbuf.capacity() == 0 {
            self.rbuf = buffers::take();
        }
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK {
            // Growing for one long request: the budget must have room for the new buffer
            // (a doubling, as `reserve` does) beyond what this connection holds already.
            let target = (self.rbuf.len() + READ_CHUNK).max(self.rbuf.capacity() * 2);
            let kept = buffers::take_large(target);
            let capacity = kept.as_ref().map_or(target, BytesMut::capacity);
            let extra = capacity
                .saturating_sub(READ_FLOOR)
                .saturating_sub(self.read_charged);
            if !ctx.buffers.try_charge(extra) {
                if let Some(kept) = kept {
                    buffers::give(kept);
                }
                ctx.buffers.read_oom.fetch_add(1, Ordering::Relaxed);
                return Err(ReadError::OutOfMemory);
            }
            self.read_charged += extra;
            if let Some(mut kept) = kept {
                kept.extend_from_slice(&self.rbuf);
                buffers::give(std::mem::replace(&mut self.rbuf, kept));
            }
        }
        self.rbuf.reserve(READ_CHUNK);
        if let Some(tls) = &mut self.tls {
            let room = self.rbuf.capacity() - self.rbuf.len();
            let fd = self.stream.fd();
            let counters = &ctx
                .config
                .tls
                .as_ref()
                .expect("TLS connections need -Z")
                .counters;
            let read = tls.read(
                fd,
                &mut self.rbuf,
                room,
                &mut self.more_to_read,
                self.peer_closed,
                counters,
            )?;
            return Ok(match read {
                secure::Read::Data(n) => Some(n),
                secure::Read::Eof => Some(0),
                secure::Read::Empty => None,
            });
        }
        let spare = self.rbuf.spare_capacity_mut();
        let want = spare.len();
        loop {
            // SAFETY: `spare` is writable memory of `want` bytes owned by `rbuf`; read(2)
            // initialises the first `n` of them, which `advance_mut` then marks as filled.
            let n = unsafe { libc::read(self.stream.fd(), spare.as_mut_ptr().cast(), want) };
            if n >= 0 {
                let n = n as usize;
                // SAFETY: see above; n <= want.
                unsafe { self.rbuf.advance_mut(n) };
                // A short read emptied the socket: the next arrival raises a new event. Not
                // so the FIN: once it was reported, read until the 0 that says it.
                self.more_to_read = n == want || (self.peer_closed && n > 0);
                return Ok(Some(n));
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    self.more_to_read = false;
                    return Ok(None);
                }
                _ => return Err(err.into()),
            }
        }
    }

    /// Writes what is waiting in `out`. `Ok(false)`: the socket is full, the rest waits for
    /// a writable event.
    fn write_out(&mut self, ctx: &Context) -> io::Result<bool> {
        if !self.has_unsent() {
            return Ok(true);
        }
        self.info.state.store(state::WRITE, Ordering::Relaxed);
        if let Some(tls) = &mut self.tls {
            let n = tls.write(self.stream.fd(), &self.out[self.sent..])?;
            ctx.counters
                .bytes_written
                .fetch_add(n as u64, Ordering::Relaxed);
            self.sent += n;
            if self.has_unsent() {
                return Ok(false);
            }
        }
        while self.sent < self.out.len() {
            let rest = &self.out[self.sent..];
            // SAFETY: `rest` is initialised memory of `rest.len()` bytes. MSG_NOSIGNAL: a
            // peer that went away is an EPIPE error, not a signal.
            let n = unsafe {
                libc::send(
                    self.stream.fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                ctx.counters
                    .bytes_written
                    .fetch_add(n as u64, Ordering::Relaxed);
                self.sent += n as usize;
                continue;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(false),
                _ => return Err(err),
            }
        }
        self.out.clear();
        self.sent = 0;
        self.flushed = 0;
        self.preauth_mark = None;
        if self.out.capacity() > OUT_FLUSH * 2 {
            self.out.shrink_to(READ_CHUNK);
        }
        Ok(true)
    }

    /// Idle between requests: hold no buffers while waiting (memcached keeps idle
    /// connections small the same way); they come back from the pool when data comes.
    fn release_buffers(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            buffers::give(std::mem::take(&mut self.rbuf));
        }
        // Replies held back while a refused value is skipped stay.
        if self.out.is_empty() && self.out.capacity() > 0 {
            spare::give(std::mem::take(&mut self.out));
        }
    }

    /// Runs complete requests from the read buffer until it needs more input, the replies
    /// pass [`OUT_FLUSH`], `-R` requests ran, or the connection is to close.
    fn process(&mut self, env: &mut Env<'_>, handled: &mut usize) -> Step {
        let ctx = env.ctx;
        let per_event = ctx.config.reqs_per_event.max(1);
        let verbose = ctx.verbosity.load(Ordering::Relaxed) > 1;
        loop {
            if self.swallow > 0 {
                let n = self.swallow.min(self.rbuf.len());
                self.rbuf.advance(n);
                self.swallow -= n;
                if self.swallow > 0 {
                    self.info.state.store(state::SWALLOW, Ordering::Relaxed);
                    return Step::NeedInput;
                }
            }
            if self.rbuf.is_empty() {
                return Step::NeedInput;
            }
            if self.out.len() >= OUT_FLUSH {
                return Step::OutFull;
            }
            if self.out.len() >= REPLY_FLOOR && !ctx.buffers.has_room() {
                // Past its floor with the budget spent: wait for its own replies to drain.
                return Step::OutFull;
            }
            if *handled >= per_event {
                *handled = 0;
                ctx.counters.conn_yields.fetch_add(1, Ordering::Relaxed);
                return Step::Yield;
            }
            self.info.state.store(state::PARSE_CMD, Ordering::Relaxed);
            if self.out.capacity() == 0 {
                self.out = spare::take_small(OUT_INITIAL);
            }
            let mark = self.out.len();
            let started = env.measure.then(std::time::Instant::now);
            let binary = *self.binary.get_or_insert(match ctx.config.protocol {
                Binding::Binary => true,
                Binding::Ascii => false,
                Binding::Auto => self.rbuf[0] == binary::REQUEST_MAGIC,
            });
            let ran = if binary {
                self.process_binary(env, started)
            } else if ctx.config.ascii_auth.is_some() && !self.session.authenticated {
                self.process_unauthenticated(ctx)
                    .map(|used| (used, Outcome::Continue))
            } else {
                self.process_text(env, started, mark, verbose)
            };
            let (used, outcome) = match ran {
                Ok(ran) => ran,
                // A paused reply: the same request runs again once its replies so far are
                // sent, after the other connections of this thread had their turn (a
                // stream's slice is as much work as a turn allows, `-R`).
                Err(Step::OutFull) => {
                    *handled = per_event;
                    return Step::OutFull;
                }
                Err(step) => return step,
            };
            if used == self.rbuf.len() {
                // All of it: the view keeps its start, so the buffer goes back to the pool
                // (or takes the next read) whole, without reclaiming the consumed front.
                self.rbuf.clear();
            } else {
                self.rbuf.advance(used);
            }
            self.settle(ctx);
            *handled += 1;
            match outcome {
                Outcome::Continue => {}
                Outcome::Close => return Step::Close(Closed::Quit),
                Outcome::Shutdown => {
                    *env.stop_requested = true;
                    return Step::Close(Closed::Shutdown);
                }
            }
        }
    }

    /// Runs the text or meta request at the start of the read buffer: `Ok((bytes taken,
    /// what next))`, or `Err(step)` when it cannot run now (more input, a paused reply, a
    /// close).
    fn process_text(
        &mut self,
        env: &mut Env<'_>,
        started: Option<std::time::Instant>,
        mark: usize,
        verbose: bool,
    ) -> Result<(usize, Outcome), Step> {
        let ctx = env.ctx;
        // Matched by reference: moving the request out of `Parsed` cost a `memcpy` per request.
        let (used, outcome) = match &protocol::parse(&self.rbuf, &self.limits) {
            Parsed::Incomplete => {
                self.info.state.store(state::NREAD, Ordering::Relaxed);
                return Err(Step::NeedInput);
            }
            Parsed::Close(why) => {
                ctx.counters.reject(match why {
                    Dropped::LineTooLong => Rejected::LineTooLong,
                    Dropped::ForeignProtocol => Rejected::ForeignProtocol,
                });
                return Err(Step::Close(Closed::ProtocolError));
            }
            Parsed::Request(req, used) => {
                let mut room = Room {
                    budget: &ctx.buffers,
                    charged: &mut self.out_charged,
                    sent: self.sent,
                };
                let progress =
                    ctx.execute(req, &self.info, &mut self.out, &mut room, &mut self.resume);
                let Progress::Done(outcome) = progress else {
                    self.settle(ctx);
                    return Err(Step::OutFull);
                };
                self.swallow = req.swallow();
                if let Some(started) = started {
                    env.latency.record(latency_class(req), started.elapsed());
                }
                (*used, outcome)
            }
            Parsed::Error {
                error,
                consumed,
                swallow,
                noreply,
            } => {
                ctx.counters.reject(rejected_kind(*error));
                if !*noreply {
                    line(&mut self.out, error.message());
                }
                self.swallow = *swallow;
                (*consumed, Outcome::Continue)
            }
        };
        if verbose {
            self.log_exchange(used, mark);
        }
        Ok((used, outcome))
    }

    /// `-Y` before the connection authenticated, read as memcached reads it: a line of at
    /// most 2,048 bytes (a longer one closes the connection); `set` with a numeric length
    /// (key, flags and exptime are not looked at) whose data `user password` authenticates
    /// the connection; `quit` closes; any other line gets `CLIENT_ERROR unauthenticated`.
    /// Like memcached, which writes these replies into one buffer, a reply before
    /// authentication replaces the one before it if that was not sent yet.
    /// `Ok(bytes taken)` or `Err(step)`.
    fn process_unauthenticated(&mut self, ctx: &Context) -> Result<usize, Step> {
        if self.rbuf[0] == binary::REQUEST_MAGIC {
            ctx.counters.reject(Rejected::BinaryInvalid);
            return Err(Step::Close(Closed::ProtocolError));
        }
        let window = &self.rbuf[..self.rbuf.len().min(PREAUTH_LINE_MAX)];
        let Some(nl) = memchr::memchr(b'\n', window) else {
            if self.rbuf.len() >= PREAUTH_LINE_MAX {
                ctx.counters.reject(Rejected::LineTooLong);
                return Err(Step::Close(Closed::ProtocolError));
            }
            self.info.state.store(state::READ, Ordering::Relaxed);
            return Err(Step::NeedInput);
        };
        let line = &self.rbuf[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
        let reply = match tokens.next() {
            Some(b"set") => {
                let len = tokens
                    .nth(3)
                    .and_then(|t| std::str::from_utf8(t).ok()?.parse::<usize>().ok());
                let Some(len) = len else {
                    self.preauth_reply("CLIENT_ERROR unauthenticated");
                    return Ok(nl + 1);
                };
                if len > PREAUTH_LINE_MAX {
                    return Err(Step::Close(Closed::ProtocolError));
                }
                let end = nl + 1 + len + 2;
                if self.rbuf.len() < end {
                    self.info.state.store(state::NREAD, Ordering::Relaxed);
                    return Err(Step::NeedInput);
                }
                let reply =
                    ctx.ascii_authenticate(&self.rbuf[nl + 1..nl + 1 + len], &mut self.session);
                self.preauth_reply(reply);
                return Ok(end);
            }
            Some(b"quit") => return Err(Step::Close(Closed::Quit)),
            _ => "CLIENT_ERROR unauthenticated",
        };
        self.preauth_reply(reply);
        Ok(nl + 1)
    }

    /// Writes a reply before authentication, replacing the previous one if it is unsent.
    fn preauth_reply(&mut self, text: &str) {
        if let Some(mark) = self
            .preauth_mark
            .filter(|&m| m >= self.sent && m <= self.out.len())
        {
            self.out.truncate(mark);
        }
        self.preauth_mark = Some(self.out.len());
        line(&mut self.out, text);
    }

    /// Runs the binary request at the start of the read buffer: `Ok((bytes taken, what
    /// next))`, or `Err(step)` when it cannot run now (more input, a paused reply, a close).
    fn process_binary(
        &mut self,
        env: &mut Env<'_>,
        started: Option<std::time::Instant>,
    ) -> Result<(usize, Outcome), Step> {
        let ctx = env.ctx;
        let limits = self.limits;
        let mark = self.out.len();
        let auth_required = ctx.config.sasl_pwdb.is_some() && !self.session.authenticated;
        let fits = |key, value| !limits.too_large(key, value);
        match binary::parse(&self.rbuf, fits, auth_required) {
            BinParsed::Incomplete(_) => {
                self.info.state.store(state::NREAD, Ordering::Relaxed);
                Err(Step::NeedInput)
            }
            BinParsed::Request(header, command, used) => {
                let mut room = Room {
                    budget: &ctx.buffers,
                    charged: &mut self.out_charged,
                    sent: self.sent,
                };
                let progress = ctx.execute_binary(
                    &header,
                    &command,
                    &mut self.session,
                    &mut self.out,
                    &mut room,
                );
                let Progress::Done(outcome) = progress else {
                    // Runs again once the replies so far are sent (see `process`).
                    self.settle(ctx);
                    return Err(Step::OutFull);
                };
                // memcached sends at once a NoOp's reply and an error (any status but a
                // miss that carries its key), and everything before them.
                let first = self.out.get(mark..mark + 8);
                let error = first.is_some_and(|h| h[6..8] != [0, 0] && h[2..4] == [0, 0]);
                if header.opcode == binary::opcode::NOOP || error {
                    self.flushed = self.out.len();
                }
                if let Some(started) = started {
                    env.latency
                        .record(binary_latency_class(&command), started.elapsed());
                }
                Ok((used, outcome))
            }
            BinParsed::TooLarge {
                header,
                op,
                key,
                used,
                skip,
                ..
            } => {
                ctx.binary_too_large(&header, op, key, &mut self.out);
                self.flushed = self.out.len();
                self.swallow = usize::try_from(skip).unwrap_or(usize::MAX);
                Ok((used, Outcome::Continue))
            }
            BinParsed::SaslTooLong {
                header,
                mechanism,
                storable,
                used,
                skip,
            } => {
                ctx.binary_sasl_too_long(
                    &header,
                    mechanism,
                    storable,
                    &mut self.session,
                    &mut self.out,
                );
                self.flushed = self.out.len();
                self.swallow = usize::try_from(skip).unwrap_or(usize::MAX);
                Ok((used, Outcome::Continue))
            }
            BinParsed::Unknown { header, used, skip } => {
                ctx.counters.reject(Rejected::UnknownCommand);
                command::binary_error(&mut self.out, &header, binary::status::UNKNOWN_COMMAND);
                // Sent at once when there is nothing to skip; otherwise memcached skips
                // first and sends with what follows.
                if skip == 0 {
                    self.flushed = self.out.len();
                }
                // memcached's count: the body again, after the key and extras it read.
                self.swallow = usize::try_from(skip).unwrap_or(usize::MAX);
                Ok((used, Outcome::Continue))
            }
            BinParsed::Fatal { header, status } => {
                ctx.counters.reject(Rejected::BinaryInvalid);
                command::binary_error(&mut self.out, &header, status);
                Err(Step::Close(Closed::ProtocolError))
            }
            BinParsed::BadMagic | BinParsed::HeadTooLong => {
                // memcached closes at once: the replies it had not sent yet are lost.
                ctx.counters.reject(Rejected::BinaryInvalid);
                self.out.truncate(self.flushed.max(self.sent));
                Err(Step::Close(Closed::ProtocolError))
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

    /// Brings the buffer budget's charges in line with the buffers' capacities beyond their
    /// floors: growth that was not asked for (small replies that grew the buffer) is charged
    /// after the fact, and capacity given back is credited.
    fn settle(&mut self, ctx: &Context) {
        let budget = &ctx.buffers;
        for (charged, excess) in [
            (
                &mut self.read_charged,
                self.rbuf.capacity().saturating_sub(READ_FLOOR),
            ),
            (
                &mut self.out_charged,
                self.out.capacity().saturating_sub(REPLY_FLOOR),
            ),
        ] {
            // Runs after every request: the shared counter is written only on a change.
            if excess > *charged {
                budget.charge(excess - *charged);
            } else if excess < *charged {
                budget.credit(*charged - excess);
            }
            *charged = excess;
        }
    }

    /// Publishes changes of this connection's buffer capacities (memory outside `-m`) and
    /// settles its budget charges.
    pub(super) fn report_buffers(&mut self, ctx: &Context) {
        self.settle(ctx);
        let now = (self.rbuf.capacity(), self.out.capacity());
        if now != self.reported {
            let counters = &ctx.counters;
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

    /// Frees the buffers and withdraws them from the gauges; the socket closes on drop.
    pub(super) fn close(mut self, ctx: &Context) {
        if let Some(tls) = &mut self.tls {
            tls.close(self.stream.fd());
        }
        self.rbuf = BytesMut::new();
        self.out = Vec::new();
        self.report_buffers(ctx);
    }

    /// Bytes the kernel has not yet delivered to the peer (TIOCOUTQ).
    pub(super) fn unacknowledged(&self) -> usize {
        let mut unsent: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ for sockets) writes one int: the bytes not yet
        // acknowledged by the peer. The descriptor is open while `self` lives.
        let rc = unsafe { libc::ioctl(self.stream.fd(), libc::TIOCOUTQ, &mut unsent) };
        if rc != 0 { 0 } else { unsent.max(0) as usize }
    }
}

/// memcached's longest line before `-Y` authentication, and of the authentication data.
const PREAUTH_LINE_MAX: usize = 2048;

/// The latency class of a binary request.
fn binary_latency_class(command: &binary::Command<'_>) -> CommandClass {
    use binary::Command as C;
    match command {
        C::Get { touch: None, .. } => CommandClass::Get,
        C::Get { .. } | C::Touch { .. } => CommandClass::Touch,
        C::Store { .. } => CommandClass::Set,
        C::Delete { .. } => CommandClass::Delete,
        C::Arithmetic { .. } => CommandClass::Arith,
        _ => CommandClass::Other,
    }
}

/// Why a read failed.
enum ReadError {
    Io(io::Error),
    /// The request needs a larger read buffer than the budget allows.
    OutOfMemory,
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Where [`Connection::process`] stopped.
enum Step {
    NeedInput,
    OutFull,
    Yield,
    Close(Closed),
}
