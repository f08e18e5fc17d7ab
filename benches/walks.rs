//! The longest a walk over many items holds one shard's lock: what a request on that shard
//! waits at worst while a dump or a crawl runs. `cargo bench --bench walks -- [--items N]`.
//!
//! Fills a store (4 shards, 1 GiB) with `N` small items (default 1 million), then times
//! every slice of a key dump (`Store::dump_slice`, 64 items, as `lru_crawler metadump` runs
//! it, formatting included) and of a crawl (`Store::reap` with 1,000 items a shard, as
//! `lru_crawler crawl` runs it) and of the reaper's steps through an unfinished growth of
//! the key index (`Store::grow_step`), each slice being one lock hold, and prints the slowest, in
//! the thread's CPU time (the work done under the lock, whatever else the machine runs) and
//! in wall time (which includes being preempted, on a busy machine).

use std::sync::Arc;
use std::time::{Duration, Instant};

use memcrab::storage::{DumpCursor, Mode, Store, StoreConfig, SystemClock};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let items: usize = args
        .iter()
        .position(|a| a == "--items")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(1_000_000);
    let shards = 4;
    let store = Store::new(
        StoreConfig {
            limit_bytes: 1 << 30,
            threads: shards,
            ..StoreConfig::default()
        },
        Arc::new(SystemClock),
    );
    for i in 0..items {
        let key = format!("key:{i:012}");
        let _ = store.store(Mode::Set, key.as_bytes(), b"a value of 24 bytes here", 0, 0);
    }
    let (mut dump, mut dump_cpu) = (Vec::new(), Vec::new());
    let mut cursor = DumpCursor::default();
    let mut out = Vec::with_capacity(64 << 10);
    loop {
        out.clear();
        let (t, cpu) = (Instant::now(), thread_cpu());
        let done = store.dump_slice(&mut cursor, 0, 64, |it| {
            use std::io::Write;
            out.extend_from_slice(b"key=");
            out.extend_from_slice(it.key());
            let _ = writeln!(
                out,
                " exp={} la={} cas={}",
                it.exptime(),
                it.atime(),
                it.cas()
            );
        });
        dump.push(t.elapsed());
        dump_cpu.push(thread_cpu() - cpu);
        if done {
            break;
        }
    }
    let (mut crawl, mut crawl_cpu) = (Vec::new(), Vec::new());
    for _ in 0..=items / (1000 * shards) {
        let (t, cpu) = (Instant::now(), thread_cpu());
        store.reap(1000);
        // One call is one hold per shard, one after the other: the mean hold.
        crawl.push(t.elapsed() / shards as u32);
        crawl_cpu.push((thread_cpu() - cpu) / shards as u32);
    }
    // The reaper while the index grows: set more items until a growth of some shard's index
    // is under way, then move it on a step at a time, as the reaper does, until every growth
    // is done.
    let mut extra = 0;
    while store.stats().index_expanding == 0 && extra < items {
        for _ in 0..1000 {
            let key = format!("more:{extra:012}");
            let _ = store.store(Mode::Set, key.as_bytes(), b"a value of 24 bytes here", 0, 0);
            extra += 1;
        }
    }
    let (mut grow, mut grow_cpu) = (Vec::new(), Vec::new());
    while store.stats().index_expanding > 0 && grow.len() < 100_000 {
        let (t, cpu) = (Instant::now(), thread_cpu());
        store.grow_step();
        // One hold per shard, as in a crawl: the mean hold.
        grow.push(t.elapsed() / shards as u32);
        grow_cpu.push((thread_cpu() - cpu) / shards as u32);
    }
    report("dump slice (64 items), CPU", &mut dump_cpu);
    report("dump slice (64 items), wall", &mut dump);
    report("crawl slice (1,000 items a shard), CPU", &mut crawl_cpu);
    report("crawl slice (1,000 items a shard), wall", &mut crawl);
    if !grow.is_empty() {
        report(
            "growth step (the reaper's, while an index grows), CPU",
            &mut grow_cpu,
        );
        report(
            "growth step (the reaper's, while an index grows), wall",
            &mut grow,
        );
    }
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn report(what: &str, times: &mut [Duration]) {
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "walks: {what}: {} holds, median {:?}, p99 {:?}, longest {:?}",
        times.len(),
        at(0.5),
        at(0.99),
        times[times.len() - 1]
    );
}
