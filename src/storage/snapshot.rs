//! Warm restart (`-e`): the store's live items saved to a file at shutdown and written back
//! at start-up.
//!
//! A snapshot, not a mapped file: items live in ordinary memory while the server runs (so
//! `-e` costs nothing per request), and a stop writes them out in an explicit format of its
//! own, independent of the segment layout, the shard count and the hash seed, all of which
//! may differ in the next process. See ARCHITECTURE.md ("Warm restart") for the measured
//! choice.
//!
//! ```text
//! header (128 bytes)
//!   0   8  magic "MCRBSNAP"
//!   8   4  format version (1)
//!  12   4  header length (128)
//!  16   8  saved at (unix seconds)
//!  24   8  the next CAS value
//!  32   8  the flush_all horizon (unix seconds; 0 = none)
//!  40   8  -m in bytes
//!  48   8  -I in bytes
//!  56  32  memcrab version, zero-padded
//!  88   8  items linked at the save (some may have expired since)
//!  96  28  zero
//! 124   4  CRC-32 of bytes 0..124
//! blocks, each
//!   0   1  kind: 1 = main queue, 2 = probation queue, 0xFF = end
//!   1   3  zero
//!   4   4  payload length
//!   8   4  records in the payload
//!  12   4  CRC-32 of bytes 0..12 and the payload
//!  16      payload: records back to back (the end block: items u64, blocks u64)
//! record
//!   0   1  key length (1..=250)
//!   1   1  bits (frequency, fetched, stale, win sent, base64 key)
//!   2   4  client flags
//!   6   4  expiry (unix seconds; 0 = never)
//!  10   4  last access (unix seconds)
//!  14   8  CAS
//!  22   4  value length
//!  26      key, value
//! ```
//!
//! Nothing in a file is trusted: every length is checked against what is left before it
//! is used, no block larger than the largest item the server accepts is ever held in
//! memory, and a block whose checksum fails stops the restore (the blocks before it were
//! whole and are kept: every item in them is exactly what was saved). The file is written
//! under a temporary name, synced and renamed into place, so a process killed mid-save
//! leaves no file, never half of one; and it is removed as soon as a restore has opened it,
//! so a process that dies later cannot bring back items that were changed or deleted since.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use super::Store;
use super::item::{FETCHED, FREQ_MASK, ItemRef, KEY_BINARY, NewItem, STALE, WIN_SENT};

const MAGIC: &[u8; 8] = b"MCRBSNAP";
/// Raised whenever the layout above changes; an older or newer file is not read.
pub const FORMAT: u32 = 1;
const HEADER_LEN: usize = 128;
const BLOCK_HEADER: usize = 16;
const RECORD_HEADER: usize = 26;
/// A block's payload is at most this; a record larger than it has a block of its own.
const BLOCK_TARGET: usize = 1 << 20;
const KIND_MAIN: u8 = 1;
const KIND_PROBATION: u8 = 2;
const KIND_END: u8 = 0xFF;
/// The bits a snapshot keeps; the others describe where the item lies.
const SAVED_BITS: u8 = FREQ_MASK | FETCHED | STALE | WIN_SENT | KEY_BINARY;

/// What a save wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Saved {
    pub items: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// What a restore did, and why it stopped early if it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    pub items: u64,
    /// Expired (or flushed) since the save.
    pub expired: u64,
    /// Larger than this server's `-I`.
    pub too_large: u64,
    /// No memory left for them (a smaller `-m`).
    pub no_memory: u64,
    pub elapsed: Duration,
    /// Set when the file ended or went bad before its end block: what was wrong. The
    /// items before that point are restored.
    pub problem: Option<String>,
    /// What differs from this server's settings, for the log line.
    pub notes: Vec<String>,
}

/// What loading a snapshot file came to.
#[derive(Debug)]
pub enum Loaded {
    /// No file: a first start, or the last stop did not save.
    Missing,
    /// Not restored at all, and why; the server starts empty.
    Refused(String),
    Restored(Restored),
}

/// The header's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    saved_at: u64,
    next_cas: u64,
    oldest_live: u64,
    limit_bytes: u64,
    item_size_max: u64,
    version: String,
    items: u64,
}

fn crc(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.saved_at.to_le_bytes());
        b[24..32].copy_from_slice(&self.next_cas.to_le_bytes());
        b[32..40].copy_from_slice(&self.oldest_live.to_le_bytes());
        b[40..48].copy_from_slice(&self.limit_bytes.to_le_bytes());
        b[48..56].copy_from_slice(&self.item_size_max.to_le_bytes());
        let v = self.version.as_bytes();
        let n = v.len().min(32);
        b[56..56 + n].copy_from_slice(&v[..n]);
        b[88..96].copy_from_slice(&self.items.to_le_bytes());
        let sum = crc(&[&b[..124]]);
        b[124..128].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Whether `b` starts like a snapshot at all (a foreign file is left alone).
    fn is_ours(b: &[u8]) -> bool {
        b.len() >= MAGIC.len() && &b[..MAGIC.len()] == MAGIC
    }

    fn decode(b: &[u8; HEADER_LEN]) -> Result<Self, String> {
        if !Self::is_ours(b) {
            return Err("not a memcrab snapshot".into());
        }
        let format = u32_at(b, 8);
        if format != FORMAT {
            return Err(format!(
                "snapshot format {format}, this memcrab reads format {FORMAT}"
            ));
        }
        if u32_at(b, 12) as usize != HEADER_LEN || crc(&[&b[..124]]) != u32_at(b, 124) {
            return Err("the snapshot header is corrupt".into());
        }
        let version = &b[56..88];
        let end = version.iter().position(|&c| c == 0).unwrap_or(32);
        Ok(Self {
            saved_at: u64_at(b, 16),
            next_cas: u64_at(b, 24),
            oldest_live: u64_at(b, 32),
            limit_bytes: u64_at(b, 40),
            item_size_max: u64_at(b, 48),
            version: String::from_utf8_lossy(&version[..end]).into_owned(),
            items: u64_at(b, 88),
        })
    }
}

/// Hands a finished block on (to the writer thread) and gives back an empty buffer.
type Sink<'s> = dyn FnMut(Vec<u8>) -> io::Result<Vec<u8>> + 's;

/// Cuts records into checksummed blocks and hands each on whole.
struct BlockWriter<'w, 's> {
    sink: &'w mut Sink<'s>,
    kind: u8,
    /// The block being built: room for its header, then its payload.
    buf: Vec<u8>,
    records: u32,
    blocks: u64,
    items: u64,
    bytes: u64,
}

impl<'w, 's> BlockWriter<'w, 's> {
    fn new(sink: &'w mut Sink<'s>, bytes: u64) -> Self {
        let mut buf = Vec::with_capacity(BLOCK_HEADER + BLOCK_TARGET);
        buf.resize(BLOCK_HEADER, 0);
        Self {
            sink,
            kind: KIND_MAIN,
            buf,
            records: 0,
            blocks: 0,
            items: 0,
            bytes,
        }
    }

    fn payload_len(&self) -> usize {
        self.buf.len() - BLOCK_HEADER
    }

    fn record(&mut self, it: ItemRef<'_>, to_unix: impl Fn(u32) -> u32) -> io::Result<()> {
        let (key, value) = (it.key(), it.value());
        if self.payload_len() + RECORD_HEADER + key.len() + value.len() > BLOCK_TARGET {
            self.flush()?;
        }
        let p = &mut self.buf;
        p.push(key.len() as u8);
        p.push(it.bits() & SAVED_BITS);
        p.extend_from_slice(&it.flags().to_le_bytes());
        let exptime = if it.exptime() == 0 {
            0
        } else {
            to_unix(it.exptime())
        };
        p.extend_from_slice(&exptime.to_le_bytes());
        p.extend_from_slice(&to_unix(it.atime()).to_le_bytes());
        p.extend_from_slice(&it.cas().to_le_bytes());
        p.extend_from_slice(&(value.len() as u32).to_le_bytes());
        p.extend_from_slice(key);
        value.append_to(p);
        self.records += 1;
        self.items += 1;
        Ok(())
    }

    fn block(&mut self, kind: u8) -> io::Result<()> {
        let len = self.payload_len() as u32;
        let head = &mut self.buf[..BLOCK_HEADER];
        head[0] = kind;
        head[1..4].fill(0);
        head[4..8].copy_from_slice(&len.to_le_bytes());
        head[8..12].copy_from_slice(&self.records.to_le_bytes());
        let sum = crc(&[&self.buf[..12], &self.buf[BLOCK_HEADER..]]);
        self.buf[12..16].copy_from_slice(&sum.to_le_bytes());
        self.bytes += self.buf.len() as u64;
        self.blocks += 1;
        let full = std::mem::take(&mut self.buf);
        self.buf = (self.sink)(full)?;
        self.buf.clear();
        self.buf.resize(BLOCK_HEADER, 0);
        self.records = 0;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.records == 0 {
            return Ok(());
        }
        self.block(self.kind)
    }

    fn finish(mut self) -> io::Result<(u64, u64)> {
        self.flush()?;
        let (items, blocks) = (self.items, self.blocks);
        self.buf.extend_from_slice(&items.to_le_bytes());
        self.buf.extend_from_slice(&(blocks + 1).to_le_bytes());
        self.block(KIND_END)?;
        Ok((items, self.bytes))
    }
}

/// Reads blocks, holding at most one block of at most `max_block` bytes.
struct BlockReader<R: Read> {
    input: R,
    max_block: usize,
    payload: Vec<u8>,
}

enum Block {
    Items {
        main: bool,
        records: u32,
    },
    /// A block too large for this server's `-I`, skipped unread.
    Skipped,
    End {
        items: u64,
        blocks: u64,
    },
}

impl<R: Read> BlockReader<R> {
    fn next(&mut self) -> Result<Block, String> {
        let mut head = [0u8; BLOCK_HEADER];
        read_exact(&mut self.input, &mut head, "a block header")?;
        let len = u32_at(&head, 4) as usize;
        let records = u32_at(&head, 8);
        let kind = head[0];
        if head[1..4] != [0, 0, 0] || !matches!(kind, KIND_MAIN | KIND_PROBATION | KIND_END) {
            return Err("a block header is corrupt".into());
        }
        if len > self.max_block {
            // Only a block of one record outgrows the target, and that record is larger than
            // this server takes: skip it without holding it.
            if kind == KIND_END || records != 1 {
                return Err("a block header is corrupt".into());
            }
            let skipped = io::copy(&mut (&mut self.input).take(len as u64), &mut io::sink())
                .map_err(|e| format!("reading the file failed: {e}"))?;
            if skipped != len as u64 {
                return Err("the file ends inside a block".into());
            }
            return Ok(Block::Skipped);
        }
        self.payload.clear();
        let got = (&mut self.input)
            .take(len as u64)
            .read_to_end(&mut self.payload)
            .map_err(|e| format!("reading the file failed: {e}"))?;
        if got != len {
            return Err("the file ends inside a block".into());
        }
        if crc(&[&head[..12], &self.payload]) != u32_at(&head, 12) {
            return Err("a block's checksum does not match".into());
        }
        match kind {
            KIND_END if len == 16 => Ok(Block::End {
                items: u64_at(&self.payload, 0),
                blocks: u64_at(&self.payload, 8),
            }),
            KIND_END => Err("the end block is corrupt".into()),
            kind => Ok(Block::Items {
                main: kind == KIND_MAIN,
                records,
            }),
        }
    }
}

fn read_exact(input: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), String> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => format!("the file ends inside {what}"),
        _ => format!("reading the file failed: {e}"),
    })
}

/// One record of a payload, checked against what is left of it.
struct Record<'a> {
    key: &'a [u8],
    value: &'a [u8],
    bits: u8,
    flags: u32,
    exptime: u32,
    atime: u32,
    cas: u64,
}

fn parse_record<'a>(p: &mut &'a [u8]) -> Option<Record<'a>> {
    let b = *p;
    if b.len() < RECORD_HEADER {
        return None;
    }
    let key_len = usize::from(b[0]);
    let value_len = u32_at(b, 22) as usize;
    let total = RECORD_HEADER.checked_add(key_len)?.checked_add(value_len)?;
    if key_len == 0 || key_len > super::MAX_KEY_LEN || b.len() < total || b[1] & !SAVED_BITS != 0 {
        return None;
    }
    *p = &b[total..];
    Some(Record {
        key: &b[RECORD_HEADER..RECORD_HEADER + key_len],
        value: &b[RECORD_HEADER + key_len..total],
        bits: b[1],
        flags: u32_at(b, 2),
        exptime: u32_at(b, 6),
        atime: u32_at(b, 10),
        cas: u64_at(b, 14),
    })
}

impl Store {
    /// Writes every live item to `out`: the main queues of all shards, the large items,
    /// then the probation queues, each oldest first. Runs shard by shard under each lock;
    /// meant for a server that no longer serves.
    pub fn save(&self, out: &mut (impl Write + Send)) -> io::Result<Saved> {
        let start = Instant::now();
        let oldest_live = self.oldest_live.load(Ordering::Relaxed);
        let header = Header {
            saved_at: self.time.unix_now(),
            next_cas: self.next_cas.load(Ordering::Relaxed),
            oldest_live: if oldest_live == 0 {
                0
            } else {
                self.time.to_unix(oldest_live)
            },
            limit_bytes: self.pool.limit() as u64,
            item_size_max: self.config.item_size_max as u64,
            version: env!("CARGO_PKG_VERSION").into(),
            items: self.len() as u64,
        };
        out.write_all(&header.encode())?;
        // Two threads: this one copies items into blocks and checksums them while a writer
        // writes the previous blocks (the copy into the file is the kernel's, and as long).
        let (full_tx, full_rx) = sync_channel::<Vec<u8>>(2);
        let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(4);
        let (produced, written) = std::thread::scope(|scope| {
            let writer = scope.spawn(move || -> io::Result<()> {
                for buf in full_rx {
                    out.write_all(&buf)?;
                    let _ = empty_tx.try_send(buf);
                }
                Ok(())
            });
            let mut sink = move |buf: Vec<u8>| -> io::Result<Vec<u8>> {
                full_tx
                    .send(buf)
                    .map_err(|_| io::Error::other("the snapshot writer stopped"))?;
                Ok(empty_rx
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(BLOCK_HEADER + BLOCK_TARGET)))
            };
            let produced = self.save_blocks(&mut sink);
            // The writer ends when the sender, which the sink owns, is gone.
            drop(sink);
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("panicked")));
            (produced, written)
        });
        written?;
        let (items, bytes) = produced?;
        Ok(Saved {
            items,
            bytes,
            elapsed: start.elapsed(),
        })
    }

    /// The blocks of a save, main queues first, then probation.
    fn save_blocks(&self, sink: &mut Sink<'_>) -> io::Result<(u64, u64)> {
        let to_unix = |rel: u32| u32::try_from(self.time.to_unix(rel)).unwrap_or(u32::MAX);
        let mut blocks = BlockWriter::new(sink, HEADER_LEN as u64);
        for (kind, main) in [(KIND_MAIN, true), (KIND_PROBATION, false)] {
            blocks.flush()?;
            blocks.kind = kind;
            let ctx = self.ctx();
            for shard in self.shards.iter() {
                let shard = shard.lock();
                let mut result = Ok(());
                shard.visit_live(&ctx, main, |it| {
                    if result.is_ok() {
                        result = blocks.record(it, to_unix);
                    }
                });
                result?;
            }
        }
        blocks.finish()
    }

    /// Writes back the items of a snapshot read from `input`. Never fails: a file that
    /// goes bad stops the restore where it does, with the reason in `problem`, keeping
    /// what came before (each block is checked whole before any of its items is used).
    pub fn restore(&self, input: &mut (impl Read + Send)) -> Restored {
        let start = Instant::now();
        let mut report = Restored::default();
        let mut head = [0u8; HEADER_LEN];
        let header =
            read_exact(input, &mut head, "the header").and_then(|()| Header::decode(&head));
        let header = match header {
            Ok(h) => h,
            Err(problem) => {
                report.problem = Some(problem);
                return report;
            }
        };
        if header.version != env!("CARGO_PKG_VERSION") {
            report
                .notes
                .push(format!("saved by memcrab {}", header.version));
        }
        if header.limit_bytes != self.pool.limit() as u64 {
            report.notes.push(format!(
                "saved with -m {} MiB, now {} MiB",
                header.limit_bytes >> 20,
                self.pool.limit() >> 20
            ));
        }
        if header.item_size_max != self.config.item_size_max as u64 {
            report.notes.push(format!(
                "saved with -I {}, now {}",
                header.item_size_max, self.config.item_size_max
            ));
        }
        let started = self.time.started();
        if header.oldest_live != 0 {
            let rel = relative(started, header.oldest_live);
            self.oldest_live.fetch_max(rel, Ordering::Relaxed);
        }
        // Size each shard's index once for what is coming (bounded by what -m could hold,
        // whatever the header claims), instead of growing it step by step.
        let most = self.pool.limit() / 32;
        let per_shard = (header.items as usize).min(most) / self.shards.len();
        let ctx = self.ctx();
        for shard in self.shards.iter() {
            shard.lock().reserve(&ctx, per_shard + per_shard / 16);
        }
        let mut reader = BlockReader {
            input,
            max_block: BLOCK_TARGET
                .max(self.config.item_size_max + RECORD_HEADER + super::MAX_KEY_LEN),
            payload: Vec::new(),
        };
        // Two threads: a reader reads and checks the next blocks while this one writes
        // the items of the last into the store.
        let (block_tx, block_rx) = sync_channel::<Result<(Block, Vec<u8>), String>>(2);
        let (spare_tx, spare_rx) = sync_channel::<Vec<u8>>(4);
        let mut max_cas = 0u64;
        std::thread::scope(|scope| {
            let reader = scope.spawn(move || {
                loop {
                    let next = reader.next();
                    let more = matches!(next, Ok(Block::Items { .. } | Block::Skipped));
                    let payload = std::mem::replace(
                        &mut reader.payload,
                        spare_rx.try_recv().unwrap_or_default(),
                    );
                    // A receiver that stopped listening has found the file bad.
                    if block_tx.send(next.map(|b| (b, payload))).is_err() || !more {
                        return;
                    }
                }
            });
            let mut blocks = 0u64;
            let mut items_seen = 0u64;
            for next in block_rx {
                let (block, payload) = match next {
                    Ok(b) => b,
                    Err(problem) => {
                        report.problem = Some(problem);
                        break;
                    }
                };
                blocks += 1;
                match block {
                    Block::Skipped => {
                        report.too_large += 1;
                        items_seen += 1;
                    }
                    Block::End { items, blocks: b } => {
                        if items != items_seen || b != blocks {
                            report.problem = Some("the end block does not match the file".into());
                        }
                        break;
                    }
                    Block::Items { main, records } => {
                        match self.restore_block(&payload, records, main, started, &mut report) {
                            Some(cas) => max_cas = max_cas.max(cas),
                            None => {
                                report.problem = Some("a block's records are malformed".into());
                                break;
                            }
                        }
                        items_seen += u64::from(records);
                    }
                }
                let _ = spare_tx.try_send(payload);
            }
            // Joined by hand: that waits for the thread to be gone, its thread-locals
            // included (the scope's own join does not).
            let _ = reader.join();
        });
        // CAS values keep increasing across the restart.
        let next = header.next_cas.max(max_cas.saturating_add(1));
        self.next_cas.fetch_max(next, Ordering::Relaxed);
        report.elapsed = start.elapsed();
        report
    }

    /// Writes back one block's records, all checked before the first is used. Returns the
    /// largest CAS restored, or `None` if the records do not add up to the block.
    fn restore_block(
        &self,
        payload: &[u8],
        records: u32,
        main: bool,
        started: u64,
        report: &mut Restored,
    ) -> Option<u64> {
        let mut p = payload;
        let mut parsed = Vec::with_capacity(records.min(1 << 16) as usize);
        for _ in 0..records {
            parsed.push(parse_record(&mut p)?);
        }
        if !p.is_empty() {
            return None;
        }
        let now = self.time.now();
        let mut max_cas = 0;
        for r in parsed {
            let exptime = if r.exptime == 0 {
                0
            } else {
                relative(started, u64::from(r.exptime))
            };
            if exptime != 0 && exptime <= now {
                report.expired += 1;
                continue;
            }
            if !self.fits(r.key.len(), r.value.len()) {
                report.too_large += 1;
                continue;
            }
            let new = NewItem {
                key: r.key,
                value: [r.value, &[]],
                flags: r.flags,
                exptime,
                atime: relative(started, u64::from(r.atime)),
                cas: r.cas,
                bits: r.bits,
            };
            if self.restore_item(&new, main) {
                report.items += 1;
                max_cas = max_cas.max(r.cas);
            } else {
                report.no_memory += 1;
            }
        }
        Some(max_cas)
    }

    fn restore_item(&self, new: &NewItem<'_>, main: bool) -> bool {
        let hash = self.hash(new.key);
        for attempt in 0..2 {
            let ctx = self.ctx();
            if self.shards[self.shard_of(hash)]
                .lock()
                .restore(&ctx, hash, new, main)
            {
                return true;
            }
            if attempt == 0 && !self.steal_memory(hash) {
                break;
            }
        }
        false
    }

    /// Saves to `path` through a temporary file beside it, synced and renamed into place:
    /// a stop at any point leaves either the whole new file or none.
    pub fn save_file(&self, path: &Path) -> io::Result<Saved> {
        let temp = temp_path(path);
        let result = (|| {
            let mut file = File::create(&temp)?;
            let saved = self.save(&mut file)?;
            file.sync_all()?;
            std::fs::rename(&temp, path)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                // The rename is durable once the directory is.
                File::open(dir)?.sync_all()?;
            }
            Ok(saved)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    /// Restores from `path` if it holds a snapshot. The file is removed once opened and
    /// recognised, before any item is read: from then on the items live only in this
    /// process, and a crash must not bring back a state that has since changed. A file
    /// that is not a snapshot is left alone (a save replaces it). A temporary file left by
    /// a save that was killed is removed.
    pub fn load_file(&self, path: &Path) -> Loaded {
        let _ = std::fs::remove_file(temp_path(path));
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::Missing,
            Err(e) => return Loaded::Refused(format!("cannot open it: {e}")),
        };
        let mut magic = [0u8; MAGIC.len()];
        match file.read(&mut magic) {
            Ok(n) if Header::is_ours(&magic[..n]) => {}
            Ok(0) => return Loaded::Refused("the file is empty".into()),
            Ok(_) => return Loaded::Refused("not a memcrab snapshot".into()),
            Err(e) => return Loaded::Refused(format!("cannot read it: {e}")),
        }
        if let Err(e) = std::fs::remove_file(path) {
            return Loaded::Refused(format!(
                "cannot remove it once read ({e}), and a later crash would bring it back"
            ));
        }
        let mut input = io::BufReader::with_capacity(1 << 20, io::Cursor::new(magic).chain(file));
        Loaded::Restored(self.restore(&mut input))
    }
}

/// A well-formed header followed by blocks cut from `data` with correct checksums, so that
/// a fuzzer reaches the record parsing behind them: each block is a kind byte (its low two
/// bits pick main, probation, end or a raw byte), a record count and a payload length (two
/// bytes each, little-endian), then the payload. For the fuzz targets and tests.
#[doc(hidden)]
pub fn framed_for_fuzzing(data: &[u8], item_size_max: usize) -> Vec<u8> {
    let header = Header {
        saved_at: 1_700_000_000,
        next_cas: 2,
        oldest_live: 0,
        limit_bytes: 64 << 20,
        item_size_max: item_size_max as u64,
        version: env!("CARGO_PKG_VERSION").into(),
        items: u64::from(data.first().copied().unwrap_or(0)),
    };
    let mut out = header.encode().to_vec();
    let mut rest = data;
    while rest.len() >= 5 {
        let kind = [KIND_MAIN, KIND_PROBATION, KIND_END, rest[0]][usize::from(rest[0] & 3)];
        let records = u32::from(u16::from_le_bytes([rest[1], rest[2]]));
        let len = usize::from(u16::from_le_bytes([rest[3], rest[4]])).min(rest.len() - 5);
        let payload = &rest[5..5 + len];
        rest = &rest[5 + len..];
        let mut head = [0u8; BLOCK_HEADER];
        head[0] = kind;
        head[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        head[8..12].copy_from_slice(&records.to_le_bytes());
        let sum = crc(&[&head[..12], payload]);
        head[12..16].copy_from_slice(&sum.to_le_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(payload);
    }
    out.extend_from_slice(rest);
    out
}

/// A saved unix time as a time relative to this process's start (`started`); 1 for any
/// time before it.
fn relative(started: u64, unix: u64) -> u32 {
    u32::try_from(unix.saturating_sub(started))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// Checks at start-up that a save to `path` can be written (its temporary file can be made
/// beside it), so that a wrong path or a read-only volume stops the server at once, as it
/// stops memcached, instead of losing the cache at the next stop.
pub fn check_writable(path: &Path) -> io::Result<()> {
    let temp = temp_path(path);
    let _ = std::fs::remove_file(&temp);
    File::create(&temp)?;
    std::fs::remove_file(&temp)
}

/// Where a save writes before the rename.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".saving");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::{ManualClock, Mode, StoreConfig};

    const T0: u64 = 1_700_000_000;

    fn store_at(unix: u64, config: StoreConfig) -> (Arc<ManualClock>, Store) {
        let clock = ManualClock::new(unix);
        (clock.clone(), Store::new(config, clock))
    }

    fn get(s: &Store, key: &[u8]) -> Option<(Vec<u8>, u32, u64)> {
        s.get(key, None, |it| (it.value.to_vec(), it.flags, it.cas))
    }

    fn ttl(s: &Store, key: &[u8]) -> Option<i64> {
        s.read(key, &crate::storage::Read::default(), |v| v.ttl)
    }

    /// Key, value, flags and CAS of an item written.
    type Written = (Vec<u8>, Vec<u8>, u32, u64);

    /// A store with small, medium and large values, flags, TTLs and a read item.
    fn filled() -> (Arc<ManualClock>, Store, Vec<Written>) {
        let (clock, s) = store_at(T0, StoreConfig::default());
        let mut items = Vec::new();
        for i in 0..3000u32 {
            let key = format!("key:{i}").into_bytes();
            let len = match i % 100 {
                0 => 100_000,
                1..=9 => 5000,
                _ => (i % 300) as usize,
            };
            let value: Vec<u8> = (0..len).map(|j| (i as usize * 7 + j) as u8).collect();
            let flags = if i % 3 == 0 { 0 } else { i };
            let (_, cas) = s.store(Mode::Set, &key, &value, flags, 0).unwrap();
            items.push((key, value, flags, cas));
        }
        for (key, ..) in items.iter().step_by(7) {
            get(&s, key);
        }
        s.store(Mode::Set, b"short", b"x", 0, 5).unwrap();
        s.store(Mode::Set, b"long", b"y", 0, 1000).unwrap();
        s.store(Mode::Set, b"gone", b"z", 0, 0).unwrap();
        s.delete(b"gone");
        clock.advance(3);
        (clock, s, items)
    }

    fn saved(s: &Store) -> Vec<u8> {
        let mut file = Vec::new();
        let report = s.save(&mut file).unwrap();
        assert_eq!(report.bytes, file.len() as u64);
        file
    }

    #[test]
    fn a_restore_brings_back_every_live_item_with_its_flags_cas_and_remaining_ttl() {
        let (_, a, items) = filled();
        let file = saved(&a);
        // The next process starts 10 seconds later.
        let (_, b) = store_at(T0 + 13, StoreConfig::default());
        let report = b.restore(&mut &file[..]);
        assert_eq!(report.problem, None);
        assert_eq!((report.items, report.expired), (items.len() as u64 + 1, 1));
        for (key, value, flags, cas) in &items {
            assert_eq!(get(&b, key), Some((value.clone(), *flags, *cas)));
        }
        // Saved with 997 s left; 10 s passed while down.
        assert_eq!(ttl(&b, b"long"), Some(987));
        assert_eq!(get(&b, b"gone"), None);
        // The 5-second item expired while the server was down.
        assert_eq!(get(&b, b"short"), None);
        assert_eq!(b.len(), items.len() + 1);
        // CAS values keep increasing.
        let (_, cas) = b.store(Mode::Set, b"new", b"v", 0, 0).unwrap();
        assert!(items.iter().all(|i| i.3 < cas));
    }

    #[test]
    fn expired_items_are_not_saved_and_a_delayed_flush_survives() {
        let (clock, a) = store_at(T0, StoreConfig::default());
        a.store(Mode::Set, b"soon", b"1", 0, 2).unwrap();
        a.store(Mode::Set, b"old", b"2", 0, 0).unwrap();
        clock.advance(3);
        a.flush(100);
        let file = saved(&a);
        let (clock_b, b) = store_at(T0 + 10, StoreConfig::default());
        let report = b.restore(&mut &file[..]);
        assert_eq!((report.items, report.problem), (1, None));
        assert_eq!(get(&b, b"soon"), None);
        assert!(get(&b, b"old").is_some());
        // The flush horizon was T0 + 103.
        clock_b.advance(94);
        assert_eq!(get(&b, b"old"), None);
    }

    #[test]
    fn a_smaller_memory_limit_or_item_size_restores_what_fits() {
        let (_, a, items) = filled();
        let file = saved(&a);
        let small = StoreConfig {
            limit_bytes: 4 << 20,
            item_size_max: 64 << 10,
            ..StoreConfig::default()
        };
        let (_, b) = store_at(T0 + 5, small);
        let report = b.restore(&mut &file[..]);
        assert_eq!(report.problem, None);
        assert_eq!(report.too_large, 30);
        assert!(report.notes.iter().any(|n| n.contains("-m")));
        assert!(report.notes.iter().any(|n| n.contains("-I")));
        for (key, value, flags, cas) in &items {
            if let Some(got) = get(&b, key) {
                assert_eq!(got, (value.clone(), *flags, *cas));
            }
        }
        assert!(b.len() > 100);
    }

    #[test]
    fn foreign_empty_and_other_format_files_restore_nothing() {
        let (_, b) = store_at(T0, StoreConfig::default());
        for (bytes, why) in [
            (&b""[..], "ends inside the header"),
            (b"VALUE x 0 1\r\n", "ends inside the header"),
            (&[0u8; 200][..], "not a memcrab snapshot"),
        ] {
            let r = b.restore(&mut &bytes[..]);
            assert_eq!(r.items, 0);
            assert!(r.problem.as_deref().unwrap().contains(why), "{r:?}");
        }
        let (_, a, _) = filled();
        let mut file = saved(&a);
        file[8] = 2;
        let r = b.restore(&mut &file[..]);
        assert!(r.problem.unwrap().contains("format 2"));
        assert_eq!(b.len(), 0);
    }

    /// Random byte flips, cut points and garbage: never a panic, never an item that differs
    /// from what was saved.
    #[test]
    fn damaged_files_never_restore_a_wrong_item() {
        let (_, a, items) = filled();
        let file = saved(&a);
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..300 {
            let mut damaged = file.clone();
            match round % 3 {
                0 => damaged.truncate(next() as usize % file.len()),
                1 => {
                    for _ in 0..1 + next() % 4 {
                        let at = next() as usize % damaged.len();
                        damaged[at] ^= 1 << (next() % 8);
                    }
                }
                _ => {
                    let at = HEADER_LEN + next() as usize % (file.len() - HEADER_LEN);
                    let n = (next() as usize % 64).min(damaged.len() - at);
                    for b in &mut damaged[at..at + n] {
                        *b = next() as u8;
                    }
                }
            }
            let (_, b) = store_at(T0 + 5, StoreConfig::default());
            let report = b.restore(&mut &damaged[..]);
            if damaged != file {
                assert!(report.problem.is_some() || report.items < items.len() as u64 + 2);
            }
            for (key, value, flags, cas) in &items {
                if let Some(got) = get(&b, key) {
                    assert_eq!(got, (value.clone(), *flags, *cas), "round {round}");
                }
            }
            assert!(b.len() <= items.len() + 1);
        }
    }

    #[test]
    fn framed_fuzz_input_reaches_the_records() {
        // One main block holding one record: key "k", value "v", no expiry, CAS 7.
        let mut record = vec![1u8, 0];
        record.extend_from_slice(&0u32.to_le_bytes());
        record.extend_from_slice(&0u32.to_le_bytes());
        record.extend_from_slice(&(T0 as u32).to_le_bytes());
        record.extend_from_slice(&7u64.to_le_bytes());
        record.extend_from_slice(&1u32.to_le_bytes());
        record.extend_from_slice(b"kv");
        let mut data = vec![0u8, 1, 0];
        data.extend_from_slice(&(record.len() as u16).to_le_bytes());
        data.extend_from_slice(&record);
        let (_, s) = store_at(T0, StoreConfig::default());
        let report = s.restore(&mut &framed_for_fuzzing(&data, 1 << 20)[..]);
        assert_eq!(report.items, 1);
        assert_eq!(get(&s, b"k"), Some((b"v".to_vec(), 0, 7)));
    }

    #[test]
    fn a_file_is_consumed_by_its_restore_and_a_killed_save_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("memcrab-snap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("memory_file");
        let (_, a, items) = filled();
        a.save_file(&path).unwrap();
        // A save killed midway left its temporary file: it is never read.
        std::fs::write(temp_path(&path), b"MCRBSNAP partial").unwrap();
        let (_, b) = store_at(T0 + 5, StoreConfig::default());
        match b.load_file(&path) {
            Loaded::Restored(r) => assert_eq!(r.items, items.len() as u64 + 1),
            other => panic!("{other:?}"),
        }
        assert!(!path.exists() && !temp_path(&path).exists());
        let (_, c) = store_at(T0 + 6, StoreConfig::default());
        assert!(matches!(c.load_file(&path), Loaded::Missing));
        std::fs::write(&path, b"not ours").unwrap();
        assert!(matches!(c.load_file(&path), Loaded::Refused(_)));
        assert!(path.exists(), "a foreign file is left alone");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
