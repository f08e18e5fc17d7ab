//! `noreply` on every command that allows it: no reply at all, and the next
//! command's reply comes next.
//!
//! Divergences from memcached 1.6.18 asserted here (memcrab follows 1.6.45):
//! - `set <251-byte key> 0 0 1 noreply` + data: both send nothing for the
//!   line, but 1.6.18 then parses the data line as a command (`ERROR`) while
//!   memcrab swallows it.

use crate::common::*;

const MARK: &[u8] = b"get __mark__\r\n";
const MARK_REPLY: &[u8] = b"END\r\n";

/// Sends `req`, then the marker, and expects only the marker's reply.
#[track_caller]
fn silent(c: &mut Conn, req: &[u8]) {
    c.send(req);
    c.send(MARK);
    c.expect(MARK_REPLY);
}

#[test]
fn storage_commands_with_noreply() {
    for_each_target(&[], |_, c| {
        silent(c, b"set nr 1 0 1 noreply\r\na\r\n");
        c.roundtrip(b"get nr\r\n", b"VALUE nr 1 1\r\na\r\nEND\r\n");
        silent(c, b"add nr2 2 0 1 noreply\r\nb\r\n");
        silent(c, b"add nr2 2 0 1 noreply\r\nX\r\n"); // NOT_STORED suppressed
        silent(c, b"replace nr 3 0 1 noreply\r\nc\r\n");
        silent(c, b"replace missing 3 0 1 noreply\r\nc\r\n"); // NOT_STORED suppressed
        silent(c, b"append nr 0 0 1 noreply\r\nd\r\n");
        silent(c, b"prepend nr 0 0 1 noreply\r\ne\r\n");
        c.roundtrip(
            b"get nr nr2 missing\r\n",
            b"VALUE nr 3 3\r\necd\r\nVALUE nr2 2 1\r\nb\r\nEND\r\n",
        );
    });
}

#[test]
fn cas_with_noreply() {
    for_each_target(&[], |_, c| {
        store(c, "c", b"1");
        let (_, _, cas) = c.gets("c").unwrap();
        silent(
            c,
            format!("cas c 0 0 1 {} noreply\r\nX\r\n", cas + 1).as_bytes(),
        ); // EXISTS
        silent(c, b"cas nokey 0 0 1 1 noreply\r\nX\r\n"); // NOT_FOUND
        silent(c, format!("cas c 0 0 1 {cas} noreply\r\n2\r\n").as_bytes());
        c.roundtrip(b"get c nokey\r\n", b"VALUE c 0 1\r\n2\r\nEND\r\n");
    });
}

#[test]
fn delete_touch_and_arith_with_noreply() {
    for_each_target(&[], |_, c| {
        store(c, "cnt", b"10");
        store(c, "d", b"x");
        silent(c, b"incr cnt 5 noreply\r\n");
        silent(c, b"decr cnt 14 noreply\r\n");
        silent(c, b"incr nokey 1 noreply\r\n");
        c.roundtrip(b"get cnt\r\n", b"VALUE cnt 0 2\r\n1 \r\nEND\r\n");
        silent(c, b"touch cnt 100 noreply\r\n");
        silent(c, b"touch nokey 100 noreply\r\n");
        silent(c, b"delete d noreply\r\n");
        silent(c, b"delete d noreply\r\n");
        c.roundtrip(b"get d\r\n", b"END\r\n");
    });
}

#[test]
fn admin_commands_with_noreply() {
    for_each_target(&[], |_, c| {
        store(c, "f", b"x");
        silent(c, b"verbosity 0 noreply\r\n");
        silent(c, b"cache_memlimit 64 noreply\r\n");
        silent(c, b"flush_all noreply\r\n");
        c.roundtrip(b"get f\r\n", b"END\r\n");
        store(c, "f", b"x");
        silent(c, b"flush_all 0 noreply\r\n");
        c.roundtrip(b"get f\r\n", b"END\r\n");
    });
}

#[test]
fn noreply_suppresses_client_errors() {
    for_each_target(&[], |_, c| {
        store(c, "cnt", b"abc");
        silent(c, b"incr cnt abc noreply\r\n");
        silent(c, b"incr cnt 1 noreply\r\n"); // non-numeric value
        c.roundtrip(b"get cnt\r\n", b"VALUE cnt 0 3\r\nabc\r\nEND\r\n");
    });
}

#[test]
fn overlong_key_with_noreply() {
    for_each_target(&[], |srv, c| {
        let key = "k".repeat(251);
        c.send(format!("set {key} 0 0 1 noreply\r\nv\r\n").as_bytes());
        if srv.legacy() {
            c.expect(b"ERROR\r\n"); // 1.6.18: the data line "v"
        }
        c.roundtrip(MARK, MARK_REPLY);
    });
}
