//! Operator views of the keys: `stats detail` (per-prefix counters), `stats cachedump` and
//! `lru_crawler metadump`/`mgdump`. `-X` turns the key dumps off, as in memcached.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::Ordering;

use super::reply::{Admit, Room};
use super::{Context, Progress, Resume, line};
use crate::protocol::meta::encode_key;
use crate::storage::item::{FETCHED, KEY_BINARY};
use crate::storage::{DumpCursor, ItemRef};

/// memcached stops a cachedump reply at 2 MB.
const CACHEDUMP_MAX_BYTES: usize = 2 << 20;
/// Items visited per slice of a dump: one shard lock hold (tens of microseconds).
const DUMP_SLICE_ITEMS: usize = 64;
/// The longest line a dump writes for one item: a 250-byte key, %-encoded, and its fields.
const DUMP_LINE_MAX: usize = 1024;
/// Reply bytes a dump writes before it lets the other connections of its thread run.
const DUMP_PAUSE: usize = 64 * 1024;
/// Items `lru_crawler crawl` checks per shard lock hold.
const CRAWL_SLICE_ITEMS: usize = 1000;
/// A dump that finds no memory for its reply (memcached's message for stats replies).
const OUT_OF_MEMORY: &str = "SERVER_ERROR out of memory writing stats";
/// `lru_crawler sleep` refuses more than a second.
const MAX_CRAWLER_SLEEP_US: u64 = 1_000_000;

/// What `stats detail` counts per key prefix.
#[derive(Debug, Clone, Copy)]
pub enum DetailOp {
    Get { hit: bool },
    Set,
    Delete,
}

/// Per-prefix counters: get, hit, set, del.
#[derive(Debug, Default)]
pub struct Detail {
    prefixes: HashMap<Vec<u8>, [u64; 4]>,
}

impl Detail {
    pub fn record(&mut self, key: &[u8], delimiter: u8, op: DetailOp) {
        // Keys without the delimiter have no prefix and are not counted (memcached).
        let Some(end) = key.iter().position(|&b| b == delimiter) else {
            return;
        };
        let counts = self.prefixes.entry(key[..end].to_vec()).or_default();
        match op {
            DetailOp::Get { hit } => {
                counts[0] += 1;
                counts[1] += u64::from(hit);
            }
            DetailOp::Set => counts[2] += 1,
            DetailOp::Delete => counts[3] += 1,
        }
    }
}

/// memcached's `uriencode`: everything but unreserved characters as `%XX`.
fn uri_encode(key: &[u8], out: &mut String) {
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

impl Context {
    /// Records a keyed operation for `stats detail` when it is on.
    pub(super) fn detail(&self, key: &[u8], op: DetailOp) {
        if self.detail_on.load(Ordering::Relaxed) {
            let delimiter = self.config.stat_key_prefix as u8;
            self.detail.lock().record(key, delimiter, op);
        }
    }

    /// Prefixes `stats detail dump` would list.
    pub(super) fn detail_len(&self) -> usize {
        self.detail.lock().prefixes.len()
    }

    /// `stats detail on|off|dump`.
    pub(super) fn stats_detail(&self, arg: &[u8], out: &mut Vec<u8>) {
        if !self.config.dump_enabled {
            line(out, "CLIENT_ERROR stats detail not allowed");
            return;
        }
        match arg {
            b"on" => {
                self.detail_on.store(true, Ordering::Relaxed);
                line(out, "OK");
            }
            b"off" => {
                self.detail_on.store(false, Ordering::Relaxed);
                line(out, "OK");
            }
            b"dump" => {
                let detail = self.detail.lock();
                let mut prefixes: Vec<_> = detail.prefixes.iter().collect();
                prefixes.sort();
                for (prefix, c) in prefixes {
                    out.extend_from_slice(b"PREFIX ");
                    out.extend_from_slice(prefix);
                    let _ = write!(
                        out,
                        " get {} hit {} set {} del {}\r\n",
                        c[0], c[1], c[2], c[3]
                    );
                }
                line(out, "END");
            }
            _ => line(out, "CLIENT_ERROR usage: stats detail on|off|dump"),
        }
    }

    /// `stats cachedump <class> <limit>`, streamed in slices like the other dumps.
    pub(super) fn stats_cachedump(
        &self,
        args: &[&[u8]],
        out: &mut Vec<u8>,
        room: &mut Room<'_>,
        resume: &mut Resume,
    ) -> Progress {
        if !self.config.dump_enabled {
            line(out, "CLIENT_ERROR stats cachedump not allowed");
            return Progress::DONE;
        }
        let number = |t: &[u8]| std::str::from_utf8(t).ok()?.parse::<usize>().ok();
        let (Some(class), Some(limit)) = (
            args.first().and_then(|t| number(t)),
            args.get(1).and_then(|t| number(t)),
        ) else {
            line(out, "CLIENT_ERROR bad command line");
            return Progress::DONE;
        };
        if class == 0 || class > self.store.classes().len() {
            line(out, "CLIENT_ERROR Illegal slab id");
            return Progress::DONE;
        }
        let limit = if limit == 0 { usize::MAX } else { limit };
        let started = self.store.time().started();
        self.stream_dump(class, out, room, resume, |dump, it, out| {
            if dump.listed >= limit || dump.bytes > CACHEDUMP_MAX_BYTES {
                return;
            }
            let exp = if it.exptime() == 0 {
                0
            } else {
                started + u64::from(it.exptime())
            };
            let start = out.len();
            out.extend_from_slice(b"ITEM ");
            out.extend_from_slice(it.key());
            let _ = write!(out, " [{} b; {} s]\r\n", it.value_len(), exp);
            dump.listed += 1;
            dump.bytes += out.len() - start;
        })
        .finish(out, "END")
    }

    /// Runs a dump from where `resume` says, one slice (one short shard lock) at a time,
    /// until it is done or the reply must wait for the socket.
    fn stream_dump(
        &self,
        class: usize,
        out: &mut Vec<u8>,
        room: &mut Room<'_>,
        resume: &mut Resume,
        mut write: impl FnMut(&mut Dump, ItemRef<'_>, &mut Vec<u8>),
    ) -> Streamed {
        let mut dump = match std::mem::take(resume) {
            Resume::Dump(dump) => dump,
            _ => Box::default(),
        };
        loop {
            // Dumps pause sooner than gets: formatting a line costs more than copying a
            // value, and the other connections of the thread wait meanwhile.
            if room.unsent(out) >= DUMP_PAUSE {
                *resume = Resume::Dump(dump);
                return Streamed::Paused;
            }
            match room.admit(out, DUMP_SLICE_ITEMS * DUMP_LINE_MAX) {
                Admit::Fits => {}
                Admit::Pause => {
                    *resume = Resume::Dump(dump);
                    return Streamed::Paused;
                }
                Admit::Refuse => return Streamed::OutOfMemory,
            }
            let mut cursor = std::mem::take(&mut dump.cursor);
            let done = self
                .store
                .dump_slice(&mut cursor, class, DUMP_SLICE_ITEMS, |it| {
                    write(&mut dump, it, out)
                });
            dump.cursor = cursor;
            if done {
                return Streamed::Done;
            }
        }
    }

    /// `lru_crawler <subcommand>`.
    pub(super) fn lru_crawler(
        &self,
        args: &[u8],
        out: &mut Vec<u8>,
        room: &mut Room<'_>,
        resume: &mut Resume,
    ) -> Progress {
        let words: Vec<&[u8]> = args
            .split(|&b| b == b' ')
            .filter(|w| !w.is_empty())
            .collect();
        let number = |i: usize| {
            words
                .get(i)
                .and_then(|t| std::str::from_utf8(t).ok()?.parse::<u64>().ok())
        };
        match words.first().copied() {
            Some(b"metadump") | Some(b"mgdump") => {
                let mg = words[0] == b"mgdump";
                if !self.config.dump_enabled {
                    let what = if mg { "key dump" } else { "metadump" };
                    line(out, &format!("ERROR {what} not allowed"));
                    return Progress::DONE;
                }
                let Some(target) = words.get(1).copied() else {
                    line(out, "ERROR");
                    return Progress::DONE;
                };
                let Some(class) = self.crawl_target(target) else {
                    line(out, "BADCLASS invalid class id");
                    return Progress::DONE;
                };
                if matches!(resume, Resume::Start) {
                    // memcached acknowledges the dump before its lines.
                    line(out, "OK");
                }
                return self.metadump(class, mg, out, room, resume);
            }
            Some(b"crawl") if words.len() < 2 => line(out, "ERROR"),
            Some(b"crawl") => match self.crawl_target(words[1]) {
                Some(_) => {
                    // One pass over every item, in slices: no shard is locked for the
                    // whole walk.
                    let per_call = CRAWL_SLICE_ITEMS * self.store.shard_count();
                    for _ in 0..=self.store.len() / per_call {
                        self.store.reap(CRAWL_SLICE_ITEMS);
                    }
                    line(out, "OK");
                }
                None => line(out, "BADCLASS invalid class id"),
            },
            Some(b"sleep") => match number(1) {
                Some(us) if us > MAX_CRAWLER_SLEEP_US => {
                    line(out, "CLIENT_ERROR sleep must be one second or less");
                }
                Some(_) => line(out, "OK"),
                None => line(out, "CLIENT_ERROR bad command line format"),
            },
            Some(b"tocrawl") => match number(1) {
                Some(_) => line(out, "OK"),
                None => line(out, "CLIENT_ERROR bad command line format"),
            },
            Some(b"enable") | Some(b"disable") => line(out, "OK"),
            _ => line(out, "ERROR"),
        }
        Progress::DONE
    }

    /// `all`/`hash` (0: every class) or a class id; `None` for anything else.
    fn crawl_target(&self, arg: &[u8]) -> Option<usize> {
        match arg {
            b"all" | b"hash" => Some(0),
            id => {
                let id: usize = std::str::from_utf8(id).ok()?.parse().ok()?;
                (1..=self.store.classes().len()).contains(&id).then_some(id)
            }
        }
    }

    fn metadump(
        &self,
        class: usize,
        mg: bool,
        out: &mut Vec<u8>,
        room: &mut Room<'_>,
        resume: &mut Resume,
    ) -> Progress {
        let time = self.store.time();
        let cas_enabled = self.store.config().cas_enabled;
        let classes = self.store.classes();
        let mut text = String::new();
        self.stream_dump(class, out, room, resume, |_, it, out| {
            text.clear();
            let binary = it.bits() & KEY_BINARY != 0;
            if mg {
                text.push_str("mg ");
                if binary {
                    text.push_str(&encode_key(it.key()));
                    text.push_str(" b");
                } else {
                    text.push_str(&String::from_utf8_lossy(it.key()));
                }
                text.push_str("\r\n");
            } else {
                text.push_str("key=");
                uri_encode(it.key(), &mut text);
                let exp = if it.exptime() == 0 {
                    -1
                } else {
                    time.to_unix(it.exptime()) as i64
                };
                let _ = writeln!(
                    text,
                    " exp={exp} la={} cas={} fetch={} cls={} size={} flags={} ",
                    time.to_unix(it.atime()),
                    if cas_enabled { it.cas() } else { 0 },
                    if it.bits() & FETCHED != 0 {
                        "yes"
                    } else {
                        "no"
                    },
                    classes.class_of(it.total_len()),
                    it.total_len(),
                    it.flags()
                );
            }
            out.extend_from_slice(text.as_bytes());
        })
        .finish(out, if mg { "EN" } else { "END" })
    }
}

/// A dump between its slices.
#[derive(Debug, Default)]
pub struct Dump {
    cursor: DumpCursor,
    /// Items and bytes listed so far (`stats cachedump` stops at its limit and at 2 MB).
    listed: usize,
    bytes: usize,
}

/// How far [`Context::stream_dump`] got.
enum Streamed {
    Done,
    Paused,
    OutOfMemory,
}

impl Streamed {
    /// The request's progress, with its last line written when it is over.
    fn finish(self, out: &mut Vec<u8>, last: &str) -> Progress {
        match self {
            Streamed::Done => line(out, last),
            Streamed::Paused => return Progress::Paused,
            Streamed::OutOfMemory => line(out, OUT_OF_MEMORY),
        }
        Progress::DONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_counts_by_prefix_and_skips_keys_without_one() {
        let mut d = Detail::default();
        d.record(b"pfx:a", b':', DetailOp::Get { hit: false });
        d.record(b"pfx:b", b':', DetailOp::Get { hit: true });
        d.record(b"pfx:c", b':', DetailOp::Set);
        d.record(b"plain", b':', DetailOp::Set);
        assert_eq!(d.prefixes.len(), 1);
        assert_eq!(d.prefixes[&b"pfx"[..]], [2, 1, 1, 0]);
    }

    #[test]
    fn keys_are_uri_encoded() {
        let mut s = String::new();
        uri_encode(b"a b/c~d\x01", &mut s);
        assert_eq!(s, "a%20b%2Fc~d%01");
    }
}
