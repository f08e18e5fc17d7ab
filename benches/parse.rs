//! Parser cost per command: `cargo bench --bench parse`.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use memcrab::protocol::{self, Limits};

const LIMITS: Limits = Limits::new(1 << 20, |key, value| 26 + key + value);

fn parse(c: &mut Criterion) {
    let value = vec![b'v'; 100];
    let mut set = b"set user:12345:profile 0 3600 100\r\n".to_vec();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    let mut multiget = b"get".to_vec();
    for i in 0..10 {
        multiget.extend_from_slice(format!(" user:{i}:profile").as_bytes());
    }
    multiget.extend_from_slice(b"\r\n");
    let cases: [(&str, &[u8]); 5] = [
        ("get", b"get user:12345:profile\r\n"),
        ("get_10_keys", &multiget),
        ("set_100b", &set),
        ("incr", b"incr counter:7 1\r\n"),
        ("delete_noreply", b"delete user:12345:profile noreply\r\n"),
    ];
    let mut group = c.benchmark_group("parse_ascii");
    for (name, input) in cases {
        group.bench_function(name, |b| {
            b.iter(|| protocol::parse(black_box(input), &LIMITS))
        });
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
