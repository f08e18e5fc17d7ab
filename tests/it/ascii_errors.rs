//! Unknown commands, malformed lines, line-length limits, the HTTP guard.
//!
//! Where Debian's memcached 1.6.18 answers differently from 1.6.45 (the
//! release memcrab follows), the memcached half of a test branches on
//! `srv.legacy()`; docs/compatibility.md lists those cases.

use crate::common::*;
use std::io::Write;
use std::thread;
use std::time::Duration;

#[test]
fn unknown_commands_are_error() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"foo\r\n", b"ERROR\r\n"),
            (b"GET foo\r\n", b"ERROR\r\n"),
            (b"Set foo 0 0 1\r\n", b"ERROR\r\n"),
            (b"bogus a b c d\r\n", b"ERROR\r\n"),
            (b"gett foo\r\n", b"ERROR\r\n"),
            (b"stats bogus\r\n", b"ERROR\r\n"),
        ]);
        // The connection stays usable.
        c.roundtrip(b"get foo\r\n", b"END\r\n");
    });
}

#[test]
fn too_few_tokens() {
    for_each_target(&[], |srv, c| {
        for req in [
            "set foo 0 0\r\n",
            "add foo 0\r\n",
            "set foo\r\n",
            "incr k\r\n",
            "decr k\r\n",
            "touch k\r\n",
            "delete\r\n",
            "verbosity\r\n",
            "gat 10\r\n",
            "mg\r\n",
            "ms k\r\n",
            "md\r\n",
            "ma\r\n",
            "me\r\n",
        ] {
            c.send(req.as_bytes());
            if !srv.legacy() {
                c.expect(b"CLIENT_ERROR bad command line format\r\n"); // 1.6.45
            } else {
                c.expect(b"ERROR\r\n"); // 1.6.18
            }
        }
        c.roundtrip(b"get foo\r\n", b"END\r\n");
    });
}

/// memcached 1.6.45 reads the tokens a command needs and ignores the rest; a last token
/// `noreply` silences the reply (1.6.18 refused most lines with extra tokens).
#[test]
fn extra_tokens_are_ignored() {
    for_each_target(&[], |srv, c| {
        if srv.legacy() {
            return;
        }
        c.table(&[
            (b"set k 0 0 1 noreply extra\r\nx\r\n", b"STORED\r\n"),
            (b"set k 0 0 1 a b c d e\r\ny\r\n", b"STORED\r\n"),
            (b"cas k 0 0 1 1 2 3\r\nz\r\n", b"EXISTS\r\n"),
            (b"incr n 1 2 3\r\n", b"NOT_FOUND\r\n"),
            (b"touch k 10 x\r\n", b"TOUCHED\r\n"),
            (b"verbosity 1 2\r\n", b"OK\r\n"),
            (b"delete k 10\r\n", b"DELETED\r\n"),
            (b"version 1 2\r\n", b"VERSION 1.6.45\r\n"),
            (b"flush_all 0 0 0\r\n", b"OK\r\n"),
        ]);
        // `noreply` counts only as the last token.
        c.send(b"set k 0 0 1 noreply x\r\n1\r\nset k 0 0 1 x noreply\r\n2\r\n");
        c.expect(b"STORED\r\n");
        c.roundtrip(b"get k\r\n", b"VALUE k 0 1\r\n2\r\nEND\r\n");
        c.send(b"bogus noreply\r\nincr k abc noreply\r\ntouch k x noreply\r\n");
        c.roundtrip(b"mn\r\n", b"MN\r\n");
    });
}

/// A storage line refused once its `<bytes>` has parsed (a missing or bad cas unique,
/// a 251-byte key) swallows its data block (1.6.18 read the block as a command).
#[test]
fn refused_storage_lines_swallow_their_data() {
    for_each_target(&[], |srv, c| {
        if srv.legacy() {
            return;
        }
        let k251 = "k".repeat(251);
        c.table(&[
            (
                b"cas k 0 0 2\r\nxx\r\n",
                b"CLIENT_ERROR bad command line format\r\n",
            ),
            (b"cas k 0 0 2 noreply\r\nxx\r\nmn\r\n", b"MN\r\n"),
            (
                format!("ms {k251} 2\r\nxx\r\n").as_bytes(),
                b"CLIENT_ERROR bad command line format\r\n",
            ),
            (
                format!("set {k251} 0 0 2\r\nxx\r\n").as_bytes(),
                b"CLIENT_ERROR bad command line format\r\n",
            ),
            // A bad <bytes> is refused before the block, which is then a command.
            (
                b"set k 0 0 +2\r\nxxxx\r\n",
                b"CLIENT_ERROR bad command line format\r\nERROR\r\n",
            ),
        ]);
        c.roundtrip(b"get k\r\n", b"END\r\n");
    });
}

/// memcached picks the command by the bytes before the first space and refuses a line
/// shorter than four bytes with its end.
#[test]
fn command_word_and_short_lines() {
    for_each_target(&[], |srv, c| {
        if srv.legacy() {
            return;
        }
        c.table(&[
            (b" get k\r\n", b"ERROR\r\n"),
            (b" mn\r\n", b"ERROR\r\n"),
            (b" flush_all\r\n", b"OK\r\n"),
            (b"ab\n", b"CLIENT_ERROR bad command line format\r\n"),
            (b"abc\n", b"ERROR\r\n"),
        ]);
    });
}

#[test]
fn blank_line() {
    for_each_target(&[], |srv, c| {
        for req in [&b"\r\n"[..], b" \n"] {
            c.send(req);
            if !srv.legacy() {
                c.expect(b"CLIENT_ERROR bad command line format\r\n"); // 1.6.45
            } else {
                c.expect(b"ERROR\r\n"); // 1.6.18
            }
        }
        c.roundtrip(b"get foo\r\n", b"END\r\n");
    });
}

#[test]
fn http_request_closes_connection_silently() {
    for_each_target(&[], |srv, c| {
        c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        c.expect_closed();
        let mut c2 = srv.connect();
        c2.send(b"POST /metrics HTTP/1.0\r\n\r\n");
        c2.expect_closed();
        // The server keeps serving other connections.
        let mut c3 = srv.connect();
        c3.roundtrip(b"get foo\r\n", b"END\r\n");
    });
}

#[test]
fn line_without_newline_over_2048_bytes_closes_connection() {
    for_each_target(&[], |srv, c| {
        c.send(&[b'x'; 3000]);
        c.expect_closed();
        let mut c2 = srv.connect();
        c2.roundtrip(b"version\r\n", b"VERSION ");
    });
}

#[test]
fn very_long_non_get_line_closes_connection() {
    for_each_target(&[], |_, c| {
        let mut req = b"set ".to_vec();
        req.extend(std::iter::repeat_n(b'k', 20_000));
        req.extend_from_slice(b" 0 0 1\r\nx\r\n");
        c.send(&req);
        c.expect_closed();
    });
}

#[test]
fn long_multiget_line_is_served() {
    for_each_target(&[], |_, c| {
        store(c, "foobarbaz", b"v");
        let n = 15_000; // 15,000 keys of 9 bytes: a ~150 KB request line
        let mut req = b"get".to_vec();
        for _ in 0..n {
            req.extend_from_slice(b" foobarbaz");
        }
        req.extend_from_slice(b"\r\n");
        let mut want = Vec::new();
        for _ in 0..n {
            want.extend_from_slice(b"VALUE foobarbaz 0 1\r\nv\r\n");
        }
        want.extend_from_slice(b"END\r\n");
        // Write from another thread so neither side blocks on full buffers.
        let mut w = c.stream().try_clone().unwrap();
        let writer = std::thread::spawn(move || w.write_all(&req));
        c.expect(&want);
        writer.join().unwrap().unwrap();
        c.roundtrip(b"get nope\r\n", b"END\r\n");
    });
}

#[test]
fn long_gets_line_is_served() {
    for_each_target(&[], |_, c| {
        store(c, "k", b"v");
        let (_, _, cas) = c.gets("k").unwrap();
        let n = 3000; // 3000 × " k-key-that-is-long" ≈ 57 KB
        let mut req = b"gets".to_vec();
        let mut want = Vec::new();
        for i in 0..n {
            if i % 2 == 0 {
                req.extend_from_slice(b" k");
                want.extend_from_slice(format!("VALUE k 0 1 {cas}\r\nv\r\n").as_bytes());
            } else {
                req.extend_from_slice(b" missing-key-that-is-long");
            }
        }
        req.extend_from_slice(b"\r\n");
        want.extend_from_slice(b"END\r\n");
        let mut w = c.stream().try_clone().unwrap();
        let writer = std::thread::spawn(move || w.write_all(&req));
        c.expect(&want);
        writer.join().unwrap().unwrap();
    });
}

#[test]
fn error_does_not_close_connection() {
    for_each_target(&[], |_, c| {
        for _ in 0..20 {
            c.roundtrip(b"nonsense\r\n", b"ERROR\r\n");
        }
        c.expect_nothing(50);
        c.roundtrip(b"get x\r\n", b"END\r\n");
    });
}

#[test]
fn quit_closes_connection() {
    for_each_server(&[], |srv| {
        for req in [&b"quit\r\n"[..], b"quit now\r\n"] {
            let mut c = srv.connect();
            c.send(req);
            c.expect_closed();
        }
        // Commands pipelined after quit are not answered.
        let mut c = srv.connect();
        c.send(b"get a\r\nquit\r\nget b\r\n");
        c.expect(b"END\r\n");
        c.expect_closed();
    });
}

/// Requests and FIN arriving in one poller event: the FIN is seen once, so the server must
/// read on to it instead of waiting for an event that will not come.
#[test]
fn requests_with_their_fin_in_one_burst_are_answered_and_closed() {
    for_each_server(&["-t", "2"], |srv| {
        thread::scope(|s| {
            for batch in 0..8 {
                s.spawn(move || {
                    let mut conns: Vec<_> = (0..25).map(|_| srv.connect()).collect();
                    for (i, c) in conns.iter_mut().enumerate() {
                        let key = format!("fin{batch}_{i}");
                        c.send(format!("set {key} 0 0 1\r\nx\r\nget {key}\r\n").as_bytes());
                        c.shutdown_write();
                    }
                    for (i, c) in conns.iter_mut().enumerate() {
                        let key = format!("fin{batch}_{i}");
                        c.expect(format!("STORED\r\nVALUE {key} 0 1\r\nx\r\nEND\r\n").as_bytes());
                        assert!(c.is_closed_within(3_000), "[{}] {key} left open", c.label());
                    }
                });
            }
        });
    });
}

#[test]
fn half_closed_client_still_gets_replies() {
    for_each_target(&[], |_, c| {
        c.send(b"set hc 0 0 1\r\nx\r\nget hc\r\n");
        c.shutdown_write();
        c.expect(b"STORED\r\nVALUE hc 0 1\r\nx\r\nEND\r\n");
        assert!(c.is_closed_within(Duration::from_secs(3).as_millis() as u64));
    });
}
