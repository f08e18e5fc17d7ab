//! Engine operations, single-threaded and from several threads, with uniform and zipf keys:
//! `cargo bench --bench store`.

use std::sync::Arc;

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use memcrab::storage::{Mode, Store, StoreConfig, SystemClock};

const KEYS: usize = 100_000;

fn filled(limit_mb: usize) -> Arc<Store> {
    let store = Arc::new(Store::new(
        StoreConfig {
            limit_bytes: limit_mb << 20,
            ..StoreConfig::default()
        },
        Arc::new(SystemClock),
    ));
    let value = [b'v'; 100];
    for i in 0..KEYS {
        store
            .store(Mode::Set, format!("key:{i}").as_bytes(), &value, 0, 0)
            .expect("fits");
    }
    store
}

fn single_thread(c: &mut Criterion) {
    let store = filled(64);
    let keys: Vec<Vec<u8>> = (0..KEYS).map(|i| format!("key:{i}").into_bytes()).collect();
    let value = [b'w'; 100];
    let mut group = c.benchmark_group("store");
    let mut i = 0;
    group.bench_function("get_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            store.get(black_box(&keys[i]), None, |it| it.value.len())
        })
    });
    group.bench_function("get_miss", |b| {
        b.iter(|| store.get(black_box(b"absent"), None, |it| it.value.len()))
    });
    group.bench_function("set_overwrite", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            store.store(Mode::Set, black_box(&keys[i]), &value, 0, 0)
        })
    });
    // 2 MiB holds a fraction of the keys: every set evicts.
    let small = filled(2);
    group.bench_function("set_evicting", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            small.store(Mode::Set, black_box(&keys[i]), &value, 0, 0)
        })
    });
    group.finish();
}

/// Key indices drawn by zipf(`s`) over `n` keys (exact CDF, binary search), from a fixed
/// xorshift seed: rank 0 is the hottest key.
fn zipf_sequence(n: usize, s: f64, len: usize, seed: u64) -> Vec<usize> {
    let mut cdf = Vec::with_capacity(n);
    let mut total = 0.0;
    for rank in 1..=n {
        total += 1.0 / (rank as f64).powf(s);
        cdf.push(total);
    }
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64 * total;
            cdf.partition_point(|&c| c < u).min(n - 1)
        })
        .collect()
}

/// 90% get / 10% set from 1, 2 and 4 threads, with uniform keys and with zipf(0.99) keys
/// (the hot keys' shards are the ones the threads meet on).
fn threads(c: &mut Criterion) {
    let store = filled(64);
    let keys: Vec<Vec<u8>> = (0..KEYS).map(|i| format!("key:{i}").into_bytes()).collect();
    const SEQ: usize = 1 << 16;
    let patterns: [(&str, Vec<Vec<usize>>); 2] = [
        (
            "uniform",
            (0..4)
                .map(|t| (0..SEQ).map(|n| (t * 31 + n * 7919) % KEYS).collect())
                .collect(),
        ),
        (
            "zipf",
            (0..4)
                .map(|t| zipf_sequence(KEYS, 0.99, SEQ, 0x9e37_79b9 + t as u64))
                .collect(),
        ),
    ];
    let mut group = c.benchmark_group("store_threads");
    for (name, sequences) in &patterns {
        for threads in [1usize, 2, 4] {
            group.bench_function(format!("get_90_set_10_{name}_x{threads}"), |b| {
                b.iter_custom(|iters| {
                    let start = std::time::Instant::now();
                    std::thread::scope(|s| {
                        for sequence in sequences.iter().take(threads) {
                            let (store, keys) = (&store, &keys);
                            s.spawn(move || {
                                let value = [b'x'; 100];
                                for n in 0..iters as usize {
                                    let key = &keys[sequence[n % SEQ]];
                                    if n % 10 == 0 {
                                        let _ = store.store(Mode::Set, key, &value, 0, 0);
                                    } else {
                                        black_box(store.get(key, None, |it| it.value.len()));
                                    }
                                }
                            });
                        }
                    });
                    start.elapsed() / threads as u32
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, single_thread, threads);
criterion_main!(benches);
