//! Memory limit: eviction under `-m 1`, `-M` (no eviction, out of memory).
//! memcached refuses `-I` above half of `-m`, so these start with `-m 1 -I 512k`.

use crate::common::*;
use std::io::Write;
use std::thread;

const VALUE_LEN: usize = 1000;

/// Pipelines `set <prefix><i>` for i in range with 1000-byte values; returns
/// the reply lines.
fn fill(c: &mut Conn, prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    let mut req = Vec::new();
    for i in range.clone() {
        let v = vec![b'a' + (i % 26) as u8; VALUE_LEN];
        req.extend_from_slice(&set_cmd("set", &format!("{prefix}{i}"), 0, 0, &v));
    }
    let mut w = c.stream().try_clone().unwrap();
    let writer = thread::spawn(move || w.write_all(&req));
    let lines = range.map(|_| c.read_line()).collect();
    writer.join().unwrap().unwrap();
    lines
}

#[track_caller]
fn is_hit(c: &mut Conn, key: &str) -> bool {
    c.send(format!("get {key}\r\n").as_bytes());
    let l = c.read_line();
    if l == "END" {
        return false;
    }
    assert_eq!(l, format!("VALUE {key} 0 {VALUE_LEN}"), "[{}]", c.label());
    c.read_line();
    c.expect(b"END\r\n");
    true
}

#[test]
fn old_items_are_evicted_under_small_memory_limit() {
    for_each_target(&["-m", "1", "-I", "512k"], |_, c| {
        let n = 4000; // ~4 MB of values into a 1 MB cache
        let replies = fill(c, "ev", 0..n);
        for (i, r) in replies.iter().enumerate() {
            assert_eq!(r, "STORED", "[{}] set ev{i}", c.label());
        }
        assert!(
            !is_hit(c, "ev0"),
            "[{}] the oldest item survived",
            c.label()
        );
        assert!(
            !is_hit(c, "ev1"),
            "[{}] the second oldest item survived",
            c.label()
        );
        for i in n - 5..n {
            assert!(
                is_hit(c, &format!("ev{i}")),
                "[{}] newest item ev{i} missing",
                c.label()
            );
        }
        let st = c.stats("stats");
        let evictions: u64 = lookup(&st, "evictions").unwrap().parse().unwrap();
        let items: u64 = lookup(&st, "curr_items").unwrap().parse().unwrap();
        let bytes: u64 = lookup(&st, "bytes").unwrap().parse().unwrap();
        assert!(evictions > 0, "[{}] evictions = 0", c.label());
        assert!(
            items < n as u64 && items > 100,
            "[{}] curr_items = {items}",
            c.label()
        );
        assert!(
            bytes <= 1 << 20,
            "[{}] bytes = {bytes} above -m 1",
            c.label()
        );
        assert_eq!(
            items + evictions,
            n as u64,
            "[{}] every stored item is either present or evicted",
            c.label()
        );
    });
}

#[test]
fn cache_keeps_working_after_heavy_eviction() {
    for_each_target(&["-m", "1", "-I", "512k"], |_, c| {
        fill(c, "a", 0..3000);
        fill(c, "b", 0..3000);
        store(c, "small", b"ok");
        c.roundtrip(b"get small\r\n", b"VALUE small 0 2\r\nok\r\nEND\r\n");
        assert!(is_hit(c, "b2999"), "[{}]", c.label());
    });
}

#[test]
fn disabled_eviction_reports_out_of_memory() {
    for_each_target(&["-m", "1", "-I", "512k", "-M"], |_, c| {
        let n = 4000;
        let replies = fill(c, "m", 0..n);
        let first_err = replies
            .iter()
            .position(|r| r != "STORED")
            .unwrap_or_else(|| panic!("[{}] 4 MB stored into -m 1 -M", c.label()));
        assert!(
            first_err > 100,
            "[{}] out of memory after only {first_err} items",
            c.label()
        );
        for (i, r) in replies.iter().enumerate().skip(first_err) {
            assert_eq!(
                r,
                "SERVER_ERROR out of memory storing object",
                "[{}] set m{i}",
                c.label()
            );
        }
        // Nothing was evicted: the first items are still there.
        assert!(is_hit(c, "m0"), "[{}] m0 evicted despite -M", c.label());
        assert!(is_hit(c, &format!("m{}", first_err - 1)), "[{}]", c.label());
        assert!(!is_hit(c, &format!("m{}", n - 1)), "[{}]", c.label());
        let st = c.stats("stats");
        assert_eq!(lookup(&st, "evictions"), Some("0"), "[{}]", c.label());
        let no_mem: u64 = lookup(&st, "store_no_memory").unwrap().parse().unwrap();
        assert_eq!(
            no_mem,
            (n - first_err) as u64,
            "[{}] store_no_memory",
            c.label()
        );
        // Deleting makes room again.
        for i in 0..first_err.min(200) {
            c.roundtrip(format!("delete m{i}\r\n").as_bytes(), b"DELETED\r\n");
        }
        store(c, "again", &[b'x'; VALUE_LEN]);
    });
}
