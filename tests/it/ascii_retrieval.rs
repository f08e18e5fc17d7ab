//! Retrieval and key commands: get, gets, gat, gats, touch, delete.
//!
//! Divergences from memcached 1.6.18 asserted here (memcrab follows 1.6.45):
//! - `get` / `gets` with no key: 1.6.18 `ERROR`; memcrab
//!   `CLIENT_ERROR bad command line format`.

use crate::common::*;

#[test]
fn get_miss_is_end() {
    for_each_target(&[], |_, c| {
        c.roundtrip(b"get nope\r\n", b"END\r\n");
        c.roundtrip(b"gets nope\r\n", b"END\r\n");
    });
}

#[test]
fn get_many_keys_skips_misses_and_repeats_hits_in_order() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set m1 1 0 1\r\na\r\n", b"STORED\r\n"),
            (b"set m2 2 0 2\r\nbb\r\n", b"STORED\r\n"),
            (
                b"get m2 nope m1 m2\r\n",
                b"VALUE m2 2 2\r\nbb\r\nVALUE m1 1 1\r\na\r\nVALUE m2 2 2\r\nbb\r\nEND\r\n",
            ),
        ]);
    });
}

#[test]
fn get_hundred_keys_in_one_request() {
    for_each_target(&[], |_, c| {
        let mut req = String::from("get");
        let mut want = Vec::new();
        for i in 0..100 {
            let (k, v) = (format!("key{i}"), format!("value-{i}"));
            if i % 3 != 0 {
                store(c, &k, v.as_bytes());
                want.extend_from_slice(format!("VALUE {k} 0 {}\r\n{v}\r\n", v.len()).as_bytes());
            }
            req.push(' ');
            req.push_str(&k);
        }
        req.push_str("\r\n");
        want.extend_from_slice(b"END\r\n");
        c.roundtrip(req.as_bytes(), &want);
    });
}

#[test]
fn gets_returns_cas_per_key() {
    for_each_target(&[], |_, c| {
        c.roundtrip(b"set m1 1 0 1\r\na\r\n", b"STORED\r\n");
        c.roundtrip(b"set m2 2 0 1\r\nb\r\n", b"STORED\r\n");
        let (_, _, cas1) = c.gets("m1").unwrap();
        let (_, _, cas2) = c.gets("m2").unwrap();
        assert_ne!(cas1, cas2, "[{}] distinct items share a cas", c.label());
        c.roundtrip(
            b"gets m1 nope m2\r\n",
            format!("VALUE m1 1 1 {cas1}\r\na\r\nVALUE m2 2 1 {cas2}\r\nb\r\nEND\r\n").as_bytes(),
        );
    });
}

#[test]
fn get_tolerates_extra_spaces_and_bare_lf() {
    for_each_target(&[], |_, c| {
        store(c, "foo", b"bar");
        let hit = b"VALUE foo 0 3\r\nbar\r\nEND\r\n";
        c.roundtrip(b"get foo   \r\n", hit);
        c.roundtrip(b"get   foo\r\n", hit);
        c.roundtrip(b"get foo\n", hit);
        // memcached names the command by the bytes before the first space.
        c.roundtrip(b" get foo\r\n", b"ERROR\r\n");
    });
}

#[test]
fn get_noreply_is_a_key() {
    for_each_target(&[], |_, c| {
        c.roundtrip(b"get noreply\r\n", b"END\r\n");
        store(c, "noreply", b"x");
        c.roundtrip(b"get noreply\r\n", b"VALUE noreply 0 1\r\nx\r\nEND\r\n");
    });
}

#[test]
fn get_without_key() {
    for_each_target(&[], |srv, c| {
        for req in [&b"get\r\n"[..], b"gets\r\n"] {
            c.send(req);
            if !srv.legacy() {
                c.expect(b"CLIENT_ERROR bad command line format\r\n"); // 1.6.45
            } else {
                c.expect(b"ERROR\r\n"); // 1.6.18
            }
        }
    });
}

#[test]
fn get_with_overlong_key_fails_whole_request() {
    for_each_target(&[], |srv, c| {
        store(c, "m1", b"a");
        store(c, "m2", b"b");
        let long = "k".repeat(251);
        // memcached 1.6.45 follows the error with an empty line, which a client would read
        // as the next reply; memcrab does not (docs/compatibility.md).
        let want: &[u8] = if srv.is_memcrab() || srv.legacy() {
            b"CLIENT_ERROR bad command line format\r\n"
        } else {
            b"CLIENT_ERROR bad command line format\r\n\r\n"
        };
        c.roundtrip(format!("get {long}\r\n").as_bytes(), want);
        c.roundtrip(format!("get m1 {long} m2\r\n").as_bytes(), want);
        c.roundtrip(b"get m2\r\n", b"VALUE m2 0 1\r\nb\r\nEND\r\n");
    });
}

#[test]
fn delete_hit_then_miss() {
    for_each_target(&[], |_, c| {
        store(c, "foo", b"bar");
        c.table(&[
            (b"delete foo\r\n", b"DELETED\r\n"),
            (b"delete foo\r\n", b"NOT_FOUND\r\n"),
            (b"get foo\r\n", b"END\r\n"),
        ]);
    });
}

#[test]
fn delete_ignores_tokens_after_the_key() {
    // 1.6.18 took a legacy hold time of 0 and refused any other; 1.6.45 ignores the tokens
    // after the key, but a last `noreply` still silences.
    for_each_target(&[], |_, c| {
        store(c, "foo2", b"x");
        c.roundtrip(b"delete foo2 0\r\n", b"DELETED\r\n");
        store(c, "foo2", b"x");
        c.roundtrip(b"delete foo2 10\r\n", b"DELETED\r\n");
        store(c, "foo2", b"x");
        c.send(b"delete foo2 10 20 noreply\r\n");
        c.roundtrip(b"get foo2\r\n", b"END\r\n");
        c.roundtrip(b"delete\r\n", b"CLIENT_ERROR bad command line format\r\n");
    });
}

#[test]
fn touch_hit_and_miss() {
    for_each_target(&[], |_, c| {
        store(c, "tk", b"x");
        c.table(&[
            (b"touch tk 100\r\n", b"TOUCHED\r\n"),
            (b"touch nokey 100\r\n", b"NOT_FOUND\r\n"),
            (
                b"touch tk abc\r\n",
                b"CLIENT_ERROR invalid exptime argument\r\n",
            ),
            (b"get tk\r\n", b"VALUE tk 0 1\r\nx\r\nEND\r\n"),
        ]);
    });
}

#[test]
fn touch_negative_expires_item() {
    for_each_target(&[], |_, c| {
        store(c, "tn", b"x");
        c.table(&[
            (b"touch tn -1\r\n", b"TOUCHED\r\n"),
            (b"get tn\r\n", b"END\r\n"),
        ]);
    });
}

#[test]
fn touch_keeps_cas() {
    for_each_target(&[], |_, c| {
        store(c, "ct", b"x");
        let (_, _, before) = c.gets("ct").unwrap();
        c.roundtrip(b"touch ct 100\r\n", b"TOUCHED\r\n");
        let (_, _, after) = c.gets("ct").unwrap();
        assert_eq!(before, after, "[{}] touch changed the cas", c.label());
    });
}

#[test]
fn gat_and_gats_return_hits_and_keep_cas() {
    for_each_target(&[], |_, c| {
        c.roundtrip(b"set tk 3 0 1\r\nx\r\n", b"STORED\r\n");
        let (_, _, cas) = c.gets("tk").unwrap();
        c.roundtrip(b"gat 500 tk nokey\r\n", b"VALUE tk 3 1\r\nx\r\nEND\r\n");
        c.roundtrip(
            b"gats 500 tk nokey tk\r\n",
            format!("VALUE tk 3 1 {cas}\r\nx\r\nVALUE tk 3 1 {cas}\r\nx\r\nEND\r\n").as_bytes(),
        );
        c.roundtrip(b"gat 500 nokey\r\n", b"END\r\n");
    });
}

#[test]
fn gat_bad_exptime_and_no_key() {
    for_each_target(&[], |_, c| {
        store(c, "tk", b"x");
        c.table(&[
            (
                b"gat abc tk\r\n",
                b"CLIENT_ERROR invalid exptime argument\r\n",
            ),
            (
                b"gats abc tk\r\n",
                b"CLIENT_ERROR invalid exptime argument\r\n",
            ),
            (b"gat 10\r\n", b"CLIENT_ERROR bad command line format\r\n"),
            (b"gat\r\n", b"CLIENT_ERROR bad command line format\r\n"),
        ]);
    });
}

#[test]
fn gat_negative_expires_item() {
    for_each_target(&[], |_, c| {
        store(c, "gn", b"x");
        c.table(&[
            (b"gat -1 gn\r\n", b"VALUE gn 0 1\r\nx\r\nEND\r\n"),
            (b"get gn\r\n", b"END\r\n"),
        ]);
    });
}

#[test]
fn disabled_cas_reports_zero() {
    for_each_target(&["-C"], |_, c| {
        store(c, "foo", b"bar");
        c.roundtrip(b"gets foo\r\n", b"VALUE foo 0 3 0\r\nbar\r\nEND\r\n");
        c.roundtrip(b"gats 100 foo\r\n", b"VALUE foo 0 3 0\r\nbar\r\nEND\r\n");
    });
}
