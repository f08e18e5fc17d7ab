//! Exptime rules: 0, relative, absolute (> 30 days), negative, absolute in
//! the past, plus real short TTLs (bounded polling, ≤ 3.5 s per wait) and
//! `flush_all <delay>`.

use crate::common::*;
use std::time::{Duration, Instant};

/// Polls `get key` until it misses; panics if it still hits after `within`.
#[track_caller]
fn wait_for_miss(c: &mut Conn, key: &str, within: Duration) -> Duration {
    let start = Instant::now();
    let req = format!("get {key}\r\n");
    let gone = wait_until(within, || {
        c.send(req.as_bytes());
        let first = c.read_line();
        if first == "END" {
            return true;
        }
        assert!(
            first.starts_with(&format!("VALUE {key} ")),
            "[{}] {first:?}",
            c.label()
        );
        c.read_line();
        c.expect(b"END\r\n");
        false
    });
    assert!(
        gone,
        "[{}] {key} still readable after {within:?}",
        c.label()
    );
    start.elapsed()
}

#[test]
fn exptime_zero_never_expires() {
    for_each_target(&[], |_, c| {
        c.roundtrip(b"set e0 0 0 1\r\nx\r\n", b"STORED\r\n");
        c.roundtrip(b"get e0\r\n", b"VALUE e0 0 1\r\nx\r\nEND\r\n");
    });
}

#[test]
fn negative_exptime_expires_at_once() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set ex1 0 -1 1\r\nx\r\n", b"STORED\r\n"),
            (b"get ex1\r\n", b"END\r\n"),
            (b"add ex1 0 0 1\r\ny\r\n", b"STORED\r\n"),
            (b"get ex1\r\n", b"VALUE ex1 0 1\r\ny\r\nEND\r\n"),
        ]);
    });
}

#[test]
fn absolute_exptime_in_the_past_expires_at_once() {
    for_each_target(&[], |_, c| {
        let now = unix_now();
        c.roundtrip(b"set ex2 0 2592001 1\r\nx\r\n", b"STORED\r\n"); // 1970
        c.send(&set_cmd("set", "ex3", 0, now - 10, b"x"));
        c.expect(b"STORED\r\n");
        c.send(&set_cmd("set", "ex4", 0, now, b"x"));
        c.expect(b"STORED\r\n");
        c.roundtrip(b"get ex2 ex3 ex4\r\n", b"END\r\n");
        c.roundtrip(b"incr ex2 1\r\n", b"NOT_FOUND\r\n");
        c.roundtrip(b"replace ex3 0 0 1\r\ny\r\n", b"NOT_STORED\r\n");
        c.roundtrip(b"touch ex4 100\r\n", b"NOT_FOUND\r\n");
    });
}

#[test]
fn absolute_exptime_in_the_future_and_30_days_relative_are_kept() {
    for_each_target(&[], |_, c| {
        c.roundtrip(b"set r30 0 2592000 1\r\nx\r\n", b"STORED\r\n"); // relative: 30 days
        c.send(&set_cmd("set", "abs", 0, unix_now() + 100, b"y"));
        c.expect(b"STORED\r\n");
        c.roundtrip(
            b"get r30 abs\r\n",
            b"VALUE r30 0 1\r\nx\r\nVALUE abs 0 1\r\ny\r\nEND\r\n",
        );
    });
}

#[test]
fn short_ttl_item_expires() {
    for_each_target(&[], |_, c| {
        c.roundtrip(b"set t1 0 1 1\r\nx\r\n", b"STORED\r\n");
        c.roundtrip(b"get t1\r\n", b"VALUE t1 0 1\r\nx\r\nEND\r\n");
        wait_for_miss(c, "t1", Duration::from_millis(3500));
        // An expired key behaves as absent.
        c.roundtrip(b"incr t1 1\r\n", b"NOT_FOUND\r\n");
        c.roundtrip(b"add t1 0 0 1\r\ny\r\n", b"STORED\r\n");
        c.roundtrip(b"get t1\r\n", b"VALUE t1 0 1\r\ny\r\nEND\r\n");
    });
}

#[test]
fn touch_gat_extend_ttl_and_append_keeps_it() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set touched 0 1 1\r\na\r\n", b"STORED\r\n"),
            (b"set gatted 0 1 1\r\nb\r\n", b"STORED\r\n"),
            (b"set gatsed 0 1 1\r\nc\r\n", b"STORED\r\n"),
            (b"set appended 0 1 1\r\nd\r\n", b"STORED\r\n"),
            (b"set control 0 1 1\r\ne\r\n", b"STORED\r\n"),
            (b"touch touched 100\r\n", b"TOUCHED\r\n"),
            (b"gat 0 gatted\r\n", b"VALUE gatted 0 1\r\nb\r\nEND\r\n"),
            (b"append appended 0 0 1\r\nD\r\n", b"STORED\r\n"),
        ]);
        c.send(b"gats 100 gatsed\r\n");
        assert!(
            c.read_line().starts_with("VALUE gatsed 0 1 "),
            "[{}]",
            c.label()
        );
        c.expect(b"c\r\nEND\r\n");
        wait_for_miss(c, "control", Duration::from_millis(3500));
        // append ignores its exptime: the item keeps its 1 s TTL.
        wait_for_miss(c, "appended", Duration::from_millis(1500));
        c.roundtrip(
            b"get touched gatted gatsed\r\n",
            b"VALUE touched 0 1\r\na\r\nVALUE gatted 0 1\r\nb\r\nVALUE gatsed 0 1\r\nc\r\nEND\r\n",
        );
    });
}

#[test]
fn flush_all_with_delay() {
    for_each_target(&[], |_, c| {
        store(c, "fd", b"x");
        c.roundtrip(b"flush_all 2\r\n", b"OK\r\n");
        c.roundtrip(b"get fd\r\n", b"VALUE fd 0 1\r\nx\r\nEND\r\n");
        let waited = wait_for_miss(c, "fd", Duration::from_millis(3500));
        assert!(
            waited >= Duration::from_millis(900),
            "[{}] flushed after {waited:?}",
            c.label()
        );
        // Items stored after the deadline survive. (memcached invalidates
        // items stored within the deadline's second too, so retry briefly.)
        let survived = wait_until(Duration::from_millis(1500), || {
            store(c, "fd", b"y");
            c.send(b"get fd\r\n");
            c.read_line() != "END" && {
                c.expect(b"y\r\nEND\r\n");
                true
            }
        });
        assert!(
            survived,
            "[{}] items stored after the flush deadline are dropped",
            c.label()
        );
        store(c, "other", b"z");
        c.roundtrip(
            b"get fd other\r\n",
            b"VALUE fd 0 1\r\ny\r\nVALUE other 0 1\r\nz\r\nEND\r\n",
        );
    });
}
