//! Engine operations, single-threaded and from several threads: `cargo bench --bench store`.

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

fn threads(c: &mut Criterion) {
    let store = filled(64);
    let mut group = c.benchmark_group("store_threads");
    for threads in [1usize, 2, 4] {
        group.bench_function(format!("get_90_set_10_x{threads}"), |b| {
            b.iter_custom(|iters| {
                let start = std::time::Instant::now();
                std::thread::scope(|s| {
                    for t in 0..threads {
                        let store = &store;
                        s.spawn(move || {
                            let value = [b'x'; 100];
                            let mut k = t * 31;
                            for n in 0..iters {
                                k = (k + 7919) % KEYS;
                                let key = format!("key:{k}");
                                if n % 10 == 0 {
                                    let _ = store.store(Mode::Set, key.as_bytes(), &value, 0, 0);
                                } else {
                                    black_box(store.get(key.as_bytes(), None, |it| it.value.len()));
                                }
                            }
                        });
                    }
                });
                start.elapsed() / threads as u32
            })
        });
    }
    group.finish();
}

criterion_group!(benches, single_thread, threads);
criterion_main!(benches);
