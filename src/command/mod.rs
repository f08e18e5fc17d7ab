//! Runs a parsed [`Request`] on the [`Store`] and writes memcached's reply into the
//! connection's output buffer. Owns command semantics: which reply each outcome gets,
//! `noreply`, and the server-wide state commands can see or change (verbosity, stats).
//!
//! Replies are written straight into the output buffer rather than built as values first:
//! a `get` copies each value once, from the item under the shard lock into the bytes that
//! go to the socket.

mod dump;
pub mod latency;
mod meta;
pub mod reply;
mod stats;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::config::Config;
use crate::protocol::{self, ProtocolError, Request, ShutdownMode, StoreMode};
use crate::storage::{DeltaResult, Mode, Store, StoreError, StoreResult};

pub use reply::{Admit, BufferBudget, Room};
pub use stats::{ConnInfo, active_classes, rusage_seconds, state as conn_state};

/// `cache_memlimit` refuses less than this many megabytes, like memcached.
const MIN_MEMLIMIT_MB: u64 = 8;
/// A larger `cache_memlimit` argument is surely bytes given by mistake.
const MAX_MEMLIMIT_MB: u64 = 1_000_000_000;

/// Server-wide counters kept outside the engine. Updated once per read batch, not per request.
#[derive(Debug, Default)]
pub struct Counters {
    pub curr_connections: AtomicU64,
    pub total_connections: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub conn_yields: AtomicU64,
    pub idle_kicks: AtomicU64,
    pub listen_disabled_num: AtomicU64,
    /// Runs of the background reaper (`lru_crawler_starts`).
    pub reaper_runs: AtomicU64,
    pub meta_cmds: AtomicU64,
    /// Capacity of all connections' read and write buffers (memory outside `-m`).
    pub read_buffer_bytes: AtomicI64,
    pub write_buffer_bytes: AtomicI64,
    /// Connections closed, by [`Closed`] reason.
    pub closed: [AtomicU64; Closed::ALL.len()],
    /// Rejected input, by [`Rejected`] kind.
    pub rejected: [AtomicU64; Rejected::ALL.len()],
}

/// Input refused with an error reply or a close (`memcrab_protocol_errors_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// `ERROR`.
    UnknownCommand,
    /// A `CLIENT_ERROR` about the command line (format, flags, tokens, exptime, delta).
    BadCommandLine,
    /// `CLIENT_ERROR bad data chunk`.
    BadDataChunk,
    /// A line past the limit: the connection is closed.
    LineTooLong,
    /// An HTTP request line: the connection is closed.
    ForeignProtocol,
    /// A binary-protocol request: answered "Unknown command", the connection is closed.
    BinaryRejected,
    /// `SERVER_ERROR object too large for cache`.
    TooLarge,
    /// `SERVER_ERROR out of memory ...`.
    OutOfMemory,
}

impl Rejected {
    pub const ALL: [Rejected; 8] = [
        Rejected::UnknownCommand,
        Rejected::BadCommandLine,
        Rejected::BadDataChunk,
        Rejected::LineTooLong,
        Rejected::ForeignProtocol,
        Rejected::BinaryRejected,
        Rejected::TooLarge,
        Rejected::OutOfMemory,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Rejected::UnknownCommand => "unknown_command",
            Rejected::BadCommandLine => "bad_command_line",
            Rejected::BadDataChunk => "bad_data_chunk",
            Rejected::LineTooLong => "line_too_long",
            Rejected::ForeignProtocol => "foreign_protocol",
            Rejected::BinaryRejected => "binary_rejected",
            Rejected::TooLarge => "too_large",
            Rejected::OutOfMemory => "out_of_memory",
        }
    }

    /// The kind of a parse error.
    pub fn of(error: ProtocolError) -> Self {
        match error {
            ProtocolError::UnknownCommand => Rejected::UnknownCommand,
            ProtocolError::BadDataChunk => Rejected::BadDataChunk,
            _ => Rejected::BadCommandLine,
        }
    }
}

impl Counters {
    pub fn reject(&self, kind: Rejected) {
        self.rejected[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a connection was closed (`memcrab_connections_closed_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// End of stream or reset from the peer.
    Client,
    /// `quit`.
    Quit,
    /// Input memcached also drops the connection for (an overlong line, foreign protocol).
    ProtocolError,
    /// `-o idle_timeout`.
    IdleTimeout,
    /// Server shutdown (the drain, or the `shutdown` command).
    Shutdown,
    /// A socket error.
    IoError,
    /// A request needed more buffer memory than the server-wide cap had left.
    OutOfMemory,
}

impl Closed {
    pub const ALL: [Closed; 7] = [
        Closed::Client,
        Closed::Quit,
        Closed::ProtocolError,
        Closed::IdleTimeout,
        Closed::Shutdown,
        Closed::IoError,
        Closed::OutOfMemory,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Closed::Client => "client",
            Closed::Quit => "quit",
            Closed::ProtocolError => "protocol_error",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Shutdown => "shutdown",
            Closed::IoError => "io_error",
            Closed::OutOfMemory => "out_of_memory",
        }
    }
}

/// What the connection should do after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    Close,
    /// `shutdown` with `-A`: stop the server.
    Shutdown,
}

/// How far a request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Done(Outcome),
    /// Its reply is streaming ([`reply`]): send what is waiting, then run the same request
    /// again with the [`Resume`] it left.
    Paused,
}

impl Progress {
    const DONE: Progress = Progress::Done(Outcome::Continue);
}

/// Where a paused request goes on from, kept by the connection. Its input stays in the read
/// buffer until it is done, so the request is parsed again and continues from here.
#[derive(Debug, Default)]
pub enum Resume {
    #[default]
    Start,
    /// A multi-key get: the offset of the next key in the key list.
    Get { offset: usize },
    /// A key dump.
    Dump(Box<dump::Dump>),
}

/// What memcached answers a get whose reply finds no memory.
const GET_OUT_OF_MEMORY: &str = "SERVER_ERROR out of memory writing get response";
/// The longest `VALUE <key> <flags> <bytes> <cas>\r\n` line and `END\r\n`.
const VALUE_LINE_MAX: usize = 6 + crate::protocol::MAX_KEY_LEN + 3 * 21 + 2 + 5;

/// Everything commands share, one per server.
pub struct Context {
    pub store: Arc<Store>,
    pub config: Config,
    pub counters: Counters,
    pub verbosity: AtomicU32,
    pub started: Instant,
    /// Open connections and listeners by fd, for `stats conns` (memcached lists them in fd
    /// order). Plain mutex: taken on connect, close and `stats conns` only.
    pub conns: Mutex<BTreeMap<i32, Arc<ConnInfo>>>,
    /// Set from the shutdown signal on: `/readyz` fails, `accepting_conns` is 0.
    pub draining: AtomicBool,
    pub latency: latency::Latency,
    /// The cap on connection buffers (`-o read_buf_mem_limit`).
    pub buffers: BufferBudget,
    /// `stats detail`: on by `stats detail on` or `-D`. The map is behind a plain mutex,
    /// taken per keyed request only while detail is on (memcached does the same).
    detail_on: AtomicBool,
    detail: Mutex<dump::Detail>,
}

impl Context {
    pub fn new(store: Arc<Store>, config: Config) -> Self {
        let config_detail = config.detail_enabled;
        Self {
            store,
            verbosity: AtomicU32::new(u32::from(config.verbosity)),
            buffers: BufferBudget::new(config.buffer_limit()),
            config,
            counters: Counters::default(),
            started: Instant::now(),
            conns: Mutex::new(BTreeMap::new()),
            draining: AtomicBool::new(false),
            latency: latency::Latency::default(),
            detail_on: AtomicBool::new(config_detail),
            detail: Mutex::new(dump::Detail::default()),
        }
    }

    pub fn register(&self, info: Arc<ConnInfo>) {
        self.conns.lock().insert(info.fd, info);
    }

    /// Forgets a closed connection, unless its fd was already reused by a newer one.
    pub fn unregister(&self, info: &Arc<ConnInfo>) {
        let mut conns = self.conns.lock();
        if conns.get(&info.fd).is_some_and(|c| Arc::ptr_eq(c, info)) {
            conns.remove(&info.fd);
        }
    }

    /// Runs one request, appending its reply (if any) to `out`; a reply that must stream
    /// (a multi-key get, a dump) may pause, see [`Progress::Paused`].
    pub fn execute(
        &self,
        req: &Request<'_>,
        conn: &ConnInfo,
        out: &mut Vec<u8>,
        room: &mut Room<'_>,
        resume: &mut Resume,
    ) -> Progress {
        let mark = out.len();
        let progress = self.run(req, conn, out, room, resume);
        if req.noreply() {
            out.truncate(mark);
        }
        progress
    }

    fn run(
        &self,
        req: &Request<'_>,
        conn: &ConnInfo,
        out: &mut Vec<u8>,
        room: &mut Room<'_>,
        resume: &mut Resume,
    ) -> Progress {
        match *req {
            Request::Meta(ref m) => return self.meta(m, out, room),
            Request::Get {
                keys,
                with_cas,
                touch,
            } => return self.get(keys, with_cas, touch, out, room, resume),
            Request::Store {
                mode,
                key,
                flags,
                exptime,
                value,
                ..
            } => {
                self.detail(key, dump::DetailOp::Set);
                let result = self
                    .store
                    .store(engine_mode(mode), key, value, flags, exptime);
                if matches!(result, Ok((r, _)) if r != StoreResult::Stored) {
                    // memcached takes a CAS value for the write whether it stores or not.
                    self.store.take_cas();
                }
                let reply = match result {
                    Ok((StoreResult::Stored, _)) => "STORED",
                    Ok((StoreResult::NotStored, _)) => "NOT_STORED",
                    Ok((StoreResult::Exists, _)) => "EXISTS",
                    Ok((StoreResult::NotFound, _)) => "NOT_FOUND",
                    Err(e) => self.store_error(e),
                };
                line(out, reply);
            }
            Request::TooLarge { mode, ref key, .. } => {
                self.store.too_large(key, mode == StoreMode::Set);
                line(out, self.store_error(StoreError::TooLarge));
            }
            Request::Delete { key, .. } => {
                self.detail(key, dump::DetailOp::Delete);
                line(
                    out,
                    if self.store.delete(key) {
                        "DELETED"
                    } else {
                        "NOT_FOUND"
                    },
                );
            }
            Request::Delta {
                key, incr, delta, ..
            } => match self.store.delta(key, incr, delta) {
                Ok((DeltaResult::Value(v), _)) => {
                    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                Ok((DeltaResult::NotFound | DeltaResult::Exists, _)) => line(out, "NOT_FOUND"),
                Ok((DeltaResult::NonNumeric, _)) => line(
                    out,
                    "CLIENT_ERROR cannot increment or decrement non-numeric value",
                ),
                Err(e) => line(out, self.store_error(e)),
            },
            Request::Touch { key, exptime, .. } => {
                let hit = self.store.touch(key, exptime);
                line(out, if hit { "TOUCHED" } else { "NOT_FOUND" });
            }
            Request::FlushAll { delay, .. } => {
                if self.config.flush_enabled {
                    self.store.flush(delay);
                    line(out, "OK");
                } else {
                    line(out, "CLIENT_ERROR flush_all not allowed");
                }
            }
            Request::Version => {
                out.extend_from_slice(b"VERSION ");
                out.extend_from_slice(protocol::VERSION.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Request::Verbosity { level, .. } => {
                self.verbosity.store(level, Ordering::Relaxed);
                line(out, "OK");
            }
            Request::Quit => return Progress::Done(Outcome::Close),
            Request::Shutdown { mode, .. } => {
                if !self.config.shutdown_enabled {
                    line(out, "SERVER_ERROR: shutdown not enabled");
                } else if mode == ShutdownMode::Invalid {
                    line(out, "CLIENT_ERROR invalid shutdown mode");
                } else {
                    return Progress::Done(Outcome::Shutdown);
                }
            }
            Request::CacheMemlimit { megabytes, .. } => {
                let reply = if megabytes < MIN_MEMLIMIT_MB {
                    "MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m"
                } else if megabytes > MAX_MEMLIMIT_MB {
                    "MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes"
                } else {
                    self.store.set_limit((megabytes as usize) << 20);
                    "OK"
                };
                line(out, reply);
            }
            Request::Stats { args } => return self.stats(args, conn, out, room, resume),
            Request::LruCrawler { args } => return self.lru_crawler(args, out, room, resume),
        }
        Progress::DONE
    }

    /// get, gets, gat, gats: one value at a time into the reply, pausing whenever the
    /// connection's unsent replies pass the stream cap or the buffer budget is spent, so a
    /// get naming a large value thousands of times costs the cap, not their sum.
    fn get(
        &self,
        keys: &[u8],
        with_cas: bool,
        touch: Option<i64>,
        out: &mut Vec<u8>,
        room: &mut Room<'_>,
        resume: &mut Resume,
    ) -> Progress {
        let mut offset = match std::mem::take(resume) {
            Resume::Get { offset } => offset,
            _ => 0,
        };
        while let Some(start) = keys[offset..].iter().position(|&b| b != b' ') {
            let start = offset + start;
            let end = keys[start..]
                .iter()
                .position(|&b| b == b' ')
                .map_or(keys.len(), |n| start + n);
            let key = &keys[start..end];
            if room.must_pause(out) {
                *resume = Resume::Get { offset: start };
                return Progress::Paused;
            }
            let mut admit = Admit::Fits;
            let hit = self.store.get(key, touch, |it| {
                admit = room.admit(out, VALUE_LINE_MAX + it.value.len());
                if admit != Admit::Fits {
                    return;
                }
                let mut num = itoa::Buffer::new();
                out.extend_from_slice(b"VALUE ");
                out.extend_from_slice(it.key);
                out.push(b' ');
                out.extend_from_slice(num.format(it.flags).as_bytes());
                out.push(b' ');
                out.extend_from_slice(num.format(it.value.len()).as_bytes());
                if with_cas {
                    out.push(b' ');
                    out.extend_from_slice(num.format(it.cas).as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(it.value);
                out.extend_from_slice(b"\r\n");
            });
            match admit {
                Admit::Fits => {}
                // Looked up again when the reply goes on (its hit is counted twice).
                Admit::Pause => {
                    *resume = Resume::Get { offset: start };
                    return Progress::Paused;
                }
                Admit::Refuse => {
                    line(out, GET_OUT_OF_MEMORY);
                    return Progress::DONE;
                }
            }
            self.detail(key, dump::DetailOp::Get { hit: hit.is_some() });
            offset = end;
        }
        out.extend_from_slice(b"END\r\n");
        Progress::DONE
    }
}

fn engine_mode(mode: StoreMode) -> Mode {
    match mode {
        StoreMode::Set => Mode::Set,
        StoreMode::Add => Mode::Add,
        StoreMode::Replace => Mode::Replace,
        StoreMode::Append => Mode::Append,
        StoreMode::Prepend => Mode::Prepend,
        StoreMode::Cas(cas) => Mode::Cas(cas),
    }
}

impl Context {
    /// The reply to a refused write, counted.
    pub(crate) fn store_error(&self, e: StoreError) -> &'static str {
        match e {
            StoreError::TooLarge => {
                self.counters.reject(Rejected::TooLarge);
                "SERVER_ERROR object too large for cache"
            }
            StoreError::NoMemory => {
                self.counters.reject(Rejected::OutOfMemory);
                "SERVER_ERROR out of memory storing object"
            }
        }
    }
}

/// Appends one reply line and its `\r\n`.
pub fn line(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `STAT <name> <value>\r\n`.
pub(crate) fn stat(out: &mut Vec<u8>, name: &str, value: impl std::fmt::Display) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "STAT {name} {value}\r\n");
}
