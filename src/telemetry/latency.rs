//! Request latency histograms, cheap enough for every request.
//!
//! A worker thread counts its requests in a plain local array ([`LocalLatency`]) and adds
//! them to the shared atomic buckets ([`Latency`]) once per turn of its event loop, so the
//! request path does no atomic operation and takes no lock; a flush touches only the few
//! buckets used since the last. The
//! Prometheus exporter's own histograms keep every sample until the next scrape, so their
//! memory grows with the request rate; these are fixed-size (ARCHITECTURE.md, "Metrics").

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (`memcrab_request_duration_seconds`).
pub const BUCKETS: [f64; 11] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0,
];
/// The same bounds in nanoseconds, for the request path.
const BUCKETS_NS: [u64; 11] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
    1_000_000_000,
];
/// Counts per class: one per bucket and one above the last (`+Inf`).
const SLOTS: usize = BUCKETS.len() + 1;

/// The command label of the histogram. Which request counts as which is for the commands
/// to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandClass {
    Get,
    Set,
    Delete,
    Arith,
    Touch,
    Meta,
    Other,
}

impl CommandClass {
    pub const ALL: [CommandClass; 7] = [
        CommandClass::Get,
        CommandClass::Set,
        CommandClass::Delete,
        CommandClass::Arith,
        CommandClass::Touch,
        CommandClass::Meta,
        CommandClass::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CommandClass::Get => "get",
            CommandClass::Set => "set",
            CommandClass::Delete => "delete",
            CommandClass::Arith => "arith",
            CommandClass::Touch => "touch",
            CommandClass::Meta => "meta",
            CommandClass::Other => "other",
        }
    }
}

fn slot(ns: u64) -> usize {
    BUCKETS_NS.partition_point(|&bound| bound < ns)
}

/// One worker thread's counts since its last flush.
#[derive(Debug, Default)]
pub struct LocalLatency {
    counts: [[u32; SLOTS]; CommandClass::ALL.len()],
    sum_ns: [u64; CommandClass::ALL.len()],
    dirty: bool,
}

impl LocalLatency {
    #[inline]
    pub fn record(&mut self, class: CommandClass, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let c = class as usize;
        self.counts[c][slot(ns)] += 1;
        self.sum_ns[c] = self.sum_ns[c].saturating_add(ns);
        self.dirty = true;
    }

    /// Adds the local counts to the shared histogram and clears them.
    pub fn flush_into(&mut self, shared: &Latency) {
        if !self.dirty {
            return;
        }
        for (c, counts) in self.counts.iter_mut().enumerate() {
            if self.sum_ns[c] == 0 && counts.iter().all(|&n| n == 0) {
                continue;
            }
            for (s, n) in counts.iter_mut().enumerate() {
                if *n > 0 {
                    shared.counts[c][s].fetch_add(u64::from(*n), Ordering::Relaxed);
                    *n = 0;
                }
            }
            shared.sum_ns[c].fetch_add(self.sum_ns[c], Ordering::Relaxed);
            self.sum_ns[c] = 0;
        }
        self.dirty = false;
    }
}

/// The server-wide histogram.
#[derive(Debug, Default)]
pub struct Latency {
    counts: [[AtomicU64; SLOTS]; CommandClass::ALL.len()],
    sum_ns: [AtomicU64; CommandClass::ALL.len()],
}

/// A reading of one class: cumulative counts per bucket bound, total count, sum in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub cumulative: [u64; BUCKETS.len()],
    pub count: u64,
    pub sum_seconds: f64,
}

impl Latency {
    pub fn snapshot(&self, class: CommandClass) -> Snapshot {
        let c = class as usize;
        let mut cumulative = [0; BUCKETS.len()];
        let mut running = 0;
        for (s, bucket) in self.counts[c].iter().enumerate() {
            running += bucket.load(Ordering::Relaxed);
            if s < BUCKETS.len() {
                cumulative[s] = running;
            }
        }
        Snapshot {
            cumulative,
            count: running,
            sum_seconds: self.sum_ns[c].load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_cumulative_buckets() {
        let shared = Latency::default();
        let mut local = LocalLatency::default();
        local.record(CommandClass::Get, Duration::from_micros(10));
        local.record(CommandClass::Get, Duration::from_micros(50));
        local.record(CommandClass::Get, Duration::from_micros(300));
        local.record(CommandClass::Get, Duration::from_secs(2));
        local.record(CommandClass::Set, Duration::from_micros(1));
        assert_eq!(
            shared.snapshot(CommandClass::Get).count,
            0,
            "not flushed yet"
        );
        local.flush_into(&shared);
        let get = shared.snapshot(CommandClass::Get);
        assert_eq!(get.count, 4);
        assert_eq!(get.cumulative[0], 2, "50µs is inside the 50µs bucket");
        assert_eq!(get.cumulative[3], 3);
        assert_eq!(get.cumulative[10], 3, "2 s is above the last bound");
        assert!((get.sum_seconds - 2.00036).abs() < 1e-9);
        assert_eq!(shared.snapshot(CommandClass::Set).count, 1);
        local.flush_into(&shared);
        assert_eq!(shared.snapshot(CommandClass::Get).count, 4, "flush clears");
    }
}
