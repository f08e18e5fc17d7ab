//! Runs a parsed [`Request`] on the [`Store`] and writes memcached's reply into the
//! connection's output buffer. Owns command semantics: which reply each outcome gets,
//! `noreply`, and the server-wide state commands can see or change (verbosity, stats).
//!
//! Replies are written straight into the output buffer rather than built as values first:
//! a `get` copies each value once, from the item under the shard lock into the bytes that
//! go to the socket.

mod auth;
mod binary;
mod dump;
mod meta;
pub mod reply;
mod stats;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::config::Config;
use crate::protocol::{self, Limits, MetaCommand, ProtocolError, Request, ShutdownMode, StoreMode};
use crate::storage::item;
use crate::storage::{DeltaResult, Mode, Store, StoreError, StoreResult};
use crate::telemetry::latency::{CommandClass, Latency};
use crate::telemetry::{ConnInfo, Counters, Rejected};

pub use auth::Session;
pub use binary::error as binary_error;
pub use reply::{Admit, BufferBudget, Room};
pub use stats::active_classes;

/// `cache_memlimit` refuses less than this many megabytes, like memcached.
const MIN_MEMLIMIT_MB: u64 = 8;
/// A larger `cache_memlimit` argument is surely bytes given by mistake.
const MAX_MEMLIMIT_MB: u64 = 1_000_000_000;

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
    /// Set while a warm restart reads the saved cache: `/readyz` fails.
    pub loading: AtomicBool,
    pub latency: Latency,
    /// The cap on connection buffers (`-o read_buf_mem_limit`).
    pub buffers: BufferBudget,
    /// `stats detail`: on by `stats detail on` or `-D`. The map is behind a plain mutex,
    /// taken per keyed request only while detail is on (memcached does the same).
    detail_on: AtomicBool,
    detail: Mutex<dump::Detail>,
    /// This host's name: the realm of SASL user names without one.
    hostname: String,
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
            loading: AtomicBool::new(false),
            latency: Latency::default(),
            detail_on: AtomicBool::new(config_detail),
            detail: Mutex::new(dump::Detail::default()),
            hostname: crate::auth::hostname(),
        }
    }

    /// The limits the parser enforces for this server: `-I`, against which an item counts
    /// its key, its value and the store's longest header (`parsed_item_len`).
    pub fn limits(&self) -> Limits {
        Limits::new(self.store.config().item_size_max, item::limit_len)
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
            Request::RefreshCerts => self.refresh_certs(out),
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
                it.value.append_to(out);
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

/// The class a request's latency is counted under.
pub fn latency_class(req: &Request<'_>) -> CommandClass {
    match req {
        Request::Get { touch: None, .. } => CommandClass::Get,
        Request::Get { .. } | Request::Touch { .. } => CommandClass::Touch,
        Request::Store { .. } | Request::TooLarge { .. } => CommandClass::Set,
        Request::Delete { .. } => CommandClass::Delete,
        Request::Delta { .. } => CommandClass::Arith,
        Request::Meta(m) if m.command == MetaCommand::Noop => CommandClass::Other,
        Request::Meta(_) => CommandClass::Meta,
        _ => CommandClass::Other,
    }
}

/// The kind of refused input a parse error counts as.
pub fn rejected_kind(error: ProtocolError) -> Rejected {
    match error {
        ProtocolError::UnknownCommand => Rejected::UnknownCommand,
        ProtocolError::BadDataChunk => Rejected::BadDataChunk,
        _ => Rejected::BadCommandLine,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ManualClock;

    #[test]
    fn the_parser_lets_through_only_values_the_store_fits() {
        let config = Config::default();
        let store = Arc::new(Store::new(config.store.clone(), ManualClock::new(1)));
        let ctx = Context::new(store, config);
        let limits = ctx.limits();
        let max = ctx.store.config().item_size_max;
        for key_len in [1, 100, protocol::MAX_KEY_LEN] {
            let last = max - item::MAX_HEADER_LEN - key_len;
            assert!(limits.too_large(key_len, last + 1));
            let lengths = [0, 127, 128, 16_383, 16_384].into_iter();
            for value_len in lengths.chain(last - 64..=last) {
                assert!(!limits.too_large(key_len, value_len));
                assert!(ctx.store.fits(key_len, value_len), "{key_len} {value_len}");
            }
        }
        // At -I 1m under a 1-byte key, memcached 1.6.45 refuses from 1,048,517 bytes.
        assert!(!limits.too_large(1, 1_048_548));
        assert!(limits.too_large(1, 1_048_549));
    }
}
