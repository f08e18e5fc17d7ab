//! The longest single `set` while a large cache fills: what a client sees when a shard's key
//! index grows under it. `cargo bench --bench fill -- [--items N] [--mb M] [--threads T]`.
//!
//! One thread sets `N` distinct small items (10-byte keys' worth of digits, 10-byte values)
//! into a store of `M` MiB split into `T` shards, timing every `set`, and prints the time
//! of the slowest sets, how many took over 1 ms and over 10 ms, and the index's final size.
//! Defaults: 20 million items, 2048 MiB, 4 shards (about 5 million entries a shard).

use std::sync::Arc;
use std::time::{Duration, Instant};

use memcrab::storage::{Mode, Store, StoreConfig, SystemClock};

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        // `cargo bench -- --list` (as CI's smoke run may ask): nothing to list.
        return;
    }
    let items = arg(&args, "--items", 20_000_000);
    let mb = arg(&args, "--mb", 2048);
    let threads = arg(&args, "--threads", 4);
    let store = Arc::new(Store::new(
        StoreConfig {
            limit_bytes: mb << 20,
            threads,
            ..StoreConfig::default()
        },
        Arc::new(SystemClock),
    ));
    let value = [b'v'; 10];
    let mut key = Vec::with_capacity(16);
    let mut times = Vec::with_capacity(items);
    let started = Instant::now();
    for i in 0..items {
        key.clear();
        key.extend_from_slice(format!("{i:010}").as_bytes());
        let t = Instant::now();
        let _ = store.store(Mode::Set, &key, &value, 0, 0);
        times.push(t.elapsed());
    }
    let total = started.elapsed();
    let over = |limit: Duration| times.iter().filter(|&&t| t > limit).count();
    let (over_1ms, over_10ms) = (
        over(Duration::from_millis(1)),
        over(Duration::from_millis(10)),
    );
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    let stats = store.stats();
    println!(
        "fill: {items} sets into -m {mb} with {threads} shards in {:.2} s ({:.0} sets/s)",
        total.as_secs_f64(),
        items as f64 / total.as_secs_f64()
    );
    println!(
        "  set latency: p10 {:?}  p50 {:?}  p90 {:?}  p99 {:?}  p99.99 {:?}  max {:?}; over 1 ms: {over_1ms}, over 10 ms: {over_10ms}",
        at(0.1),
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.9999),
        times[times.len() - 1]
    );
    println!(
        "  items {}  index {:.1} MiB ({:.2} bytes an item)",
        stats.curr_items(),
        stats.index_bytes as f64 / (1u64 << 20) as f64,
        stats.index_bytes as f64 / stats.curr_items().max(1) as f64
    );
}
