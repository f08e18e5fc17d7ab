//! Pipelining, byte-by-byte sends, large replies and concurrent clients.

use crate::common::*;
use std::io::Write;
use std::thread;

/// Writes `req` from a helper thread (one `write_all`) while the caller reads,
/// so neither side can block on full socket buffers.
#[track_caller]
fn send_in_background_and_expect(c: &mut Conn, req: Vec<u8>, want: &[u8]) {
    let mut w = c.stream().try_clone().unwrap();
    let writer = thread::spawn(move || w.write_all(&req));
    c.expect(want);
    writer.join().unwrap().unwrap();
}

#[test]
fn ten_thousand_pipelined_requests_reply_in_order() {
    for_each_target(&[], |_, c| {
        store(c, "n", b"0");
        let mut req = Vec::new();
        let mut want = Vec::new();
        for i in 0..2500u32 {
            let v = format!("v{i}");
            req.extend_from_slice(&set_cmd("set", &format!("p{i}"), i, 0, v.as_bytes()));
            want.extend_from_slice(b"STORED\r\n");
            req.extend_from_slice(format!("get p{i}\r\n").as_bytes());
            want.extend_from_slice(&value_reply(&format!("p{i}"), i, v.as_bytes()));
            req.extend_from_slice(b"incr n 1\r\n");
            want.extend_from_slice(format!("{}\r\n", i + 1).as_bytes());
            req.extend_from_slice(format!("delete p{}\r\n", i / 2).as_bytes());
            want.extend_from_slice(if i % 2 == 0 {
                b"DELETED\r\n"
            } else {
                b"NOT_FOUND\r\n"
            });
        }
        send_in_background_and_expect(c, req, &want);
        c.roundtrip(
            b"get n p2499 p1249\r\n",
            b"VALUE n 0 4\r\n2500\r\nVALUE p2499 2499 5\r\nv2499\r\nEND\r\n",
        );
    });
}

#[test]
fn byte_by_byte_set_and_get() {
    for_each_target(&[], |_, c| {
        let req = b"set bb 7 0 11\r\nhello\r\nworl\r\nget bb nope\r\ngets nope\r\ndelete bb\r\nget bb\r\n";
        c.send_bytewise(req);
        c.expect(b"STORED\r\nVALUE bb 7 11\r\nhello\r\nworl\r\nEND\r\nEND\r\nDELETED\r\nEND\r\n");
    });
}

#[test]
fn byte_by_byte_arith_and_noreply() {
    for_each_target(&[], |_, c| {
        let req = b"set n 0 0 2 noreply\r\n41\r\nincr n 1\r\ntouch n 0 noreply\r\ndecr n 2\r\n";
        c.send_bytewise(req);
        c.expect(b"42\r\n40\r\n");
    });
}

#[test]
fn pipelined_large_values() {
    for_each_target(&[], |_, c| {
        let mut req = Vec::new();
        let mut want = Vec::new();
        for i in 0..40u8 {
            let v = vec![b'a' + (i % 26); 100_000];
            req.extend_from_slice(&set_cmd("set", &format!("big{i}"), 0, 0, &v));
            want.extend_from_slice(b"STORED\r\n");
        }
        for i in 0..40u8 {
            let v = vec![b'a' + (i % 26); 100_000];
            req.extend_from_slice(format!("get big{i}\r\n").as_bytes());
            want.extend_from_slice(&value_reply(&format!("big{i}"), 0, &v));
        }
        send_in_background_and_expect(c, req, &want);
    });
}

#[test]
fn concurrent_clients_see_their_own_replies() {
    for_each_server(&[], |srv| {
        thread::scope(|s| {
            for t in 0..16 {
                s.spawn(move || {
                    let mut c = srv.connect();
                    for i in 0..150 {
                        let key = format!("t{t}k{i}");
                        let val = format!("{t}-{i}-{}", "x".repeat(i));
                        c.send(&set_cmd("set", &key, t, 0, val.as_bytes()));
                        c.expect(b"STORED\r\n");
                        c.send(format!("get {key}\r\n").as_bytes());
                        c.expect(&value_reply(&key, t, val.as_bytes()));
                    }
                });
            }
        });
        let mut c = srv.connect();
        assert_eq!(c.stat_u64("curr_items"), 16 * 150, "[{}]", srv.name());
    });
}

#[test]
fn concurrent_incr_is_atomic() {
    for_each_server(&[], |srv| {
        let mut c = srv.connect();
        store(&mut c, "ctr", b"0");
        thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(move || {
                    let mut c = srv.connect();
                    let req = b"incr ctr 1\r\n".repeat(500);
                    c.send(&req);
                    for _ in 0..500 {
                        let l = c.read_line();
                        assert!(is_int(&l), "[{}] incr reply {l:?}", srv.name());
                    }
                });
            }
        });
        c.roundtrip(b"get ctr\r\n", b"VALUE ctr 0 4\r\n4000\r\nEND\r\n");
    });
}
