//! Storage commands: set, add, replace, append, prepend, cas.
//!
//! Divergences from memcached 1.6.18 asserted here (memcrab follows 1.6.45):
//! - A `CLIENT_ERROR` on a storage command line whose `<bytes>` parsed (bad
//!   flags, exptime, cas unique, key > 250 bytes): 1.6.18 parses the data
//!   block as the next command (usually `ERROR`); memcrab swallows
//!   `<bytes>+2` bytes like 1.6.45, so no extra reply.
//! - Client flags above 2^32-1 (`4294967296`): 1.6.18 answers `STORED` and
//!   stores flags 0 (a bug); memcrab rejects the line with
//!   `CLIENT_ERROR bad command line format` (and swallows the data block).
//! - The leftover `\n` after a `bad data chunk` (`set k 0 0 3` + `abcd\r\n`)
//!   is a blank line: 1.6.18 answers `ERROR`, memcrab (1.6.45) answers
//!   `CLIENT_ERROR bad command line format`.

use crate::common::*;

/// A command whose reply is fixed on both servers, used to show where the
/// previous command's reply ended.
const MARK: &[u8] = b"get __mark__\r\n";
const MARK_REPLY: &[u8] = b"END\r\n";

#[test]
fn set_then_get_returns_value() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set foo 5 0 3\r\nbar\r\n", b"STORED\r\n"),
            (b"get foo\r\n", b"VALUE foo 5 3\r\nbar\r\nEND\r\n"),
        ]);
    });
}

#[test]
fn set_overwrites_value_and_flags() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set k 1 0 3\r\nold\r\n", b"STORED\r\n"),
            (b"set k 2 0 5\r\nnewer\r\n", b"STORED\r\n"),
            (b"get k\r\n", b"VALUE k 2 5\r\nnewer\r\nEND\r\n"),
        ]);
    });
}

#[test]
fn set_zero_length_value() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set empty 0 0 0\r\n\r\n", b"STORED\r\n"),
            (b"get empty\r\n", b"VALUE empty 0 0\r\n\r\nEND\r\n"),
        ]);
    });
}

#[test]
fn set_value_with_crlf_and_binary_bytes_inside() {
    for_each_target(&[], |_, c| {
        let value = b"a\r\nb\0c\xff\r\n";
        c.send(&set_cmd("set", "bin", 0, 0, value));
        c.expect(b"STORED\r\n");
        c.send(b"get bin\r\n");
        c.expect(&value_reply("bin", 0, value));
    });
}

#[test]
fn set_ignores_unknown_sixth_token() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set foo 0 0 1 junk\r\nx\r\n", b"STORED\r\n"),
            (b"get foo\r\n", b"VALUE foo 0 1\r\nx\r\nEND\r\n"),
        ]);
    });
}

#[test]
fn client_flags_max_u32_round_trips() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set fl 4294967295 0 1\r\nx\r\n", b"STORED\r\n"),
            (b"get fl\r\n", b"VALUE fl 4294967295 1\r\nx\r\nEND\r\n"),
        ]);
    });
}

#[test]
fn client_flags_keep_their_low_32_bits() {
    // memcached reads the flags with strtoul and stores the low 32 bits.
    for_each_target(&[], |_, c| {
        c.roundtrip(b"set fl 4294967296 0 1\r\nx\r\n", b"STORED\r\n");
        c.roundtrip(b"get fl\r\n", b"VALUE fl 0 1\r\nx\r\nEND\r\n");
        c.roundtrip(b"set fl 18446744073709551615 0 1\r\nx\r\n", b"STORED\r\n");
        c.roundtrip(b"get fl\r\n", b"VALUE fl 4294967295 1\r\nx\r\nEND\r\n");
    });
}

#[test]
fn negative_or_huge_flags_rejected() {
    for_each_target(&[], |srv, c| {
        for line in [
            "set fl -1 0 1\r\nx\r\n",
            "set fl 18446744073709551616 0 1\r\nx\r\n",
        ] {
            c.send(line.as_bytes());
            c.expect(b"CLIENT_ERROR bad command line format\r\n");
            if srv.legacy() {
                c.expect(b"ERROR\r\n"); // 1.6.18 parses the data line "x"
            }
            c.roundtrip(MARK, MARK_REPLY);
        }
    });
}

#[test]
fn bad_exptime_rejected_and_data_swallowed() {
    for_each_target(&[], |srv, c| {
        c.send(b"set ex5 0 abc 1\r\nx\r\n");
        c.expect(b"CLIENT_ERROR bad command line format\r\n");
        if srv.legacy() {
            c.expect(b"ERROR\r\n");
        }
        c.roundtrip(b"get ex5\r\n", b"END\r\n");
    });
}

#[test]
fn bad_length_rejected() {
    for_each_target(&[], |_, c| {
        // `<bytes>` itself is bad: nothing is swallowed (no data sent here).
        for line in [
            "set neg 0 0 -1\r\n",
            "set neg 0 0 abc\r\n",
            "set issue70 0 0 4294967295\r\n",
            "set issue70 0 0 2147483647\r\n",
        ] {
            c.send(line.as_bytes());
            c.expect(b"CLIENT_ERROR bad command line format\r\n");
            c.roundtrip(MARK, MARK_REPLY);
        }
    });
}

#[test]
fn key_of_250_bytes_is_accepted() {
    for_each_target(&[], |_, c| {
        let key = "k".repeat(250);
        c.send(&set_cmd("set", &key, 0, 0, b"v"));
        c.expect(b"STORED\r\n");
        c.send(format!("get {key}\r\n").as_bytes());
        c.expect(&value_reply(&key, 0, b"v"));
    });
}

#[test]
fn key_of_251_bytes_is_rejected() {
    for_each_target(&[], |srv, c| {
        let key = "k".repeat(251);
        c.send(&set_cmd("set", &key, 0, 0, b"v"));
        c.expect(b"CLIENT_ERROR bad command line format\r\n");
        if srv.legacy() {
            c.expect(b"ERROR\r\n"); // 1.6.18: data line "v" parsed as a command
        }
        c.roundtrip(MARK, MARK_REPLY);
    });
}

#[test]
fn keys_with_control_bytes_are_stored() {
    for_each_target(&[], |_, c| {
        for key in ["a\x01b", "a\tb"] {
            c.send(&set_cmd("set", key, 0, 0, b"v"));
            c.expect(b"STORED\r\n");
            c.send(format!("get {key}\r\n").as_bytes());
            c.expect(&value_reply(key, 0, b"v"));
        }
    });
}

#[test]
fn add_stores_only_missing_keys() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"add a 1 0 1\r\nx\r\n", b"STORED\r\n"),
            (b"add a 2 0 1\r\ny\r\n", b"NOT_STORED\r\n"),
            (b"get a\r\n", b"VALUE a 1 1\r\nx\r\nEND\r\n"),
        ]);
    });
}

#[test]
fn add_succeeds_after_flush_all() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set fa 0 0 3\r\nold\r\n", b"STORED\r\n"),
            (b"flush_all\r\n", b"OK\r\n"),
            (b"add fa 0 0 3\r\nnew\r\n", b"STORED\r\n"),
            (b"get fa\r\n", b"VALUE fa 0 3\r\nnew\r\nEND\r\n"),
        ]);
    });
}

#[test]
fn replace_needs_existing_key() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"replace r 0 0 1\r\nx\r\n", b"NOT_STORED\r\n"),
            (b"get r\r\n", b"END\r\n"),
            (b"set r 0 0 1\r\nx\r\n", b"STORED\r\n"),
            (b"replace r 7 0 2\r\nyy\r\n", b"STORED\r\n"),
            (b"get r\r\n", b"VALUE r 7 2\r\nyy\r\nEND\r\n"),
        ]);
    });
}

#[test]
fn append_and_prepend_need_existing_key() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"append nokey 0 0 1\r\nx\r\n", b"NOT_STORED\r\n"),
            (b"prepend nokey 0 0 1\r\nx\r\n", b"NOT_STORED\r\n"),
            (b"get nokey\r\n", b"END\r\n"),
        ]);
    });
}

#[test]
fn append_and_prepend_keep_flags() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set ap 5 1000 3\r\nmid\r\n", b"STORED\r\n"),
            (b"append ap 99 0 4\r\n_end\r\n", b"STORED\r\n"),
            (b"prepend ap 77 0 6\r\nstart_\r\n", b"STORED\r\n"),
            (b"get ap\r\n", b"VALUE ap 5 13\r\nstart_mid_end\r\nEND\r\n"),
        ]);
    });
}

#[test]
fn cas_on_missing_key_is_not_found() {
    for_each_target(&[], |_, c| {
        c.roundtrip(b"cas nokey 0 0 1 12345\r\nx\r\n", b"NOT_FOUND\r\n");
        c.roundtrip(b"get nokey\r\n", b"END\r\n");
    });
}

#[test]
fn cas_with_current_unique_stores_and_stale_unique_is_exists() {
    for_each_target(&[], |_, c| {
        store(c, "foo", b"bar");
        let (_, _, cas) = c.gets("foo").expect("hit");
        c.send(format!("cas foo 3 0 1 {}\r\nX\r\n", cas + 1000).as_bytes());
        c.expect(b"EXISTS\r\n");
        c.send(format!("cas foo 3 0 1 {cas}\r\nY\r\n").as_bytes());
        c.expect(b"STORED\r\n");
        c.roundtrip(b"get foo\r\n", b"VALUE foo 3 1\r\nY\r\nEND\r\n");
        // The old unique is now stale.
        c.send(format!("cas foo 0 0 1 {cas}\r\nZ\r\n").as_bytes());
        c.expect(b"EXISTS\r\n");
        let (flags, value, cas2) = c.gets("foo").expect("hit");
        assert_eq!((flags, value.as_slice()), (3, &b"Y"[..]), "[{}]", c.label());
        assert_ne!(
            cas,
            cas2,
            "[{}] cas must change on a successful cas",
            c.label()
        );
    });
}

#[test]
fn cas_unique_changes_on_every_mutation() {
    for_each_target(&[], |_, c| {
        let mut seen = Vec::new();
        let steps: &[(&[u8], &[u8])] = &[
            (b"set cu 0 0 1\r\n1\r\n", b"STORED\r\n"),
            (b"append cu 0 0 1\r\n0\r\n", b"STORED\r\n"),
            (b"prepend cu 0 0 1\r\n1\r\n", b"STORED\r\n"),
            (b"incr cu 1\r\n", b"111\r\n"),
            (b"decr cu 2\r\n", b"109\r\n"),
            (b"replace cu 0 0 1\r\n5\r\n", b"STORED\r\n"),
            (b"set cu 0 0 1\r\n5\r\n", b"STORED\r\n"),
        ];
        for (req, reply) in steps {
            c.roundtrip(req, reply);
            let (_, _, cas) = c.gets("cu").expect("hit");
            assert!(
                !seen.contains(&cas),
                "[{}] cas {cas} reused after {:?}",
                c.label(),
                esc(req)
            );
            seen.push(cas);
        }
    });
}

#[test]
fn cas_with_bad_unique_is_client_error() {
    for_each_target(&[], |srv, c| {
        store(c, "foo", b"bar");
        c.send(b"cas foo 0 0 1 abc\r\nx\r\n");
        c.expect(b"CLIENT_ERROR bad command line format\r\n");
        if srv.legacy() {
            c.expect(b"ERROR\r\n"); // 1.6.18; 1.6.45 swallows (upstream t/cas.t)
        }
        c.send(b"cas bad blah 0 0 0\r\n\r\n");
        c.expect(b"CLIENT_ERROR bad command line format\r\n");
        if srv.legacy() {
            c.expect(b"ERROR\r\n");
        }
        c.roundtrip(b"get foo\r\n", b"VALUE foo 0 3\r\nbar\r\nEND\r\n");
    });
}

#[test]
fn bad_data_chunk_is_client_error() {
    for_each_target(&[], |srv, c| {
        // Exactly <bytes>+2 bytes are read as the block; "abcXY" does not end
        // in \r\n, and what follows is parsed as the next command.
        c.send(b"set bd 0 0 3\r\nabcXYversion\r\n");
        c.expect(b"CLIENT_ERROR bad data chunk\r\n");
        let v = c.read_line();
        assert!(v.starts_with("VERSION "), "[{}] got {v:?}", c.label());
        c.roundtrip(b"get bd\r\n", b"END\r\n");

        // One byte too many: "abcd\r" is the block; the lone "\n" left over
        // is a blank line (1.6.18: ERROR; 1.6.45: CLIENT_ERROR).
        c.send(b"set bd 0 0 3\r\nabcd\r\n");
        c.expect(b"CLIENT_ERROR bad data chunk\r\n");
        if !srv.legacy() {
            c.expect(b"CLIENT_ERROR bad command line format\r\n");
        } else {
            c.expect(b"ERROR\r\n");
        }
        c.roundtrip(b"get bd\r\n", b"END\r\n");
    });
}

#[test]
fn bad_data_chunk_waits_for_the_full_block() {
    for_each_target(&[], |_, c| {
        // "abc\n" is one byte short of <bytes>+2: no reply until more arrives.
        c.send(b"set bd 0 0 3\r\nabc\n");
        c.expect_nothing(300);
        c.send(b"Xversion\r\n"); // block = "abc\nX"
        c.expect(b"CLIENT_ERROR bad data chunk\r\n");
        let v = c.read_line();
        assert!(v.starts_with("VERSION "), "[{}] got {v:?}", c.label());
        c.roundtrip(MARK, MARK_REPLY);
    });
}

#[test]
fn value_split_across_writes_is_reassembled() {
    for_each_target(&[], |_, c| {
        c.send(b"set sp 0 0 10\r\n01234");
        c.expect_nothing(100);
        c.send(b"56789\r");
        c.expect_nothing(100);
        c.send(b"\n");
        c.expect(b"STORED\r\n");
        c.roundtrip(b"get sp\r\n", b"VALUE sp 0 10\r\n0123456789\r\nEND\r\n");
    });
}

#[test]
fn a_failed_add_does_not_mark_the_item_fetched() {
    // memcached bumps the item a failed `add` finds, but it stays unfetched.
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set b 0 0 1\r\n1\r\n", b"STORED\r\n"),
            (b"add b 0 0 1\r\n2\r\n", b"NOT_STORED\r\n"),
            (b"mg b h\r\n", b"HD h0\r\n"),
            (b"mg b h\r\n", b"HD h1\r\n"),
        ]);
    });
}

/// Values over 32 KiB (which memcrab keeps as a head and whole pages) of lengths on and off
/// page boundaries: read back, appended, prepended and counted by `decr` as one value.
#[test]
fn large_values_of_any_length_read_append_and_count_as_one_value() {
    for_each_target(&["-I", "2m"], |_, c| {
        for len in [32 * 1024 + 1, 25 * 4096, 100 * 1024 + 4095, 300_001] {
            let value: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let mut set = format!("set k 5 0 {len}\r\n").into_bytes();
            set.extend_from_slice(&value);
            set.extend_from_slice(b"\r\n");
            c.roundtrip(&set, b"STORED\r\n");
            c.roundtrip(b"append k 0 0 4\r\n-end\r\n", b"STORED\r\n");
            c.roundtrip(b"prepend k 0 0 6\r\nstart-\r\n", b"STORED\r\n");
            let mut want = format!("VALUE k 5 {}\r\nstart-", len + 10).into_bytes();
            want.extend_from_slice(&value);
            want.extend_from_slice(b"-end\r\nEND\r\n");
            c.roundtrip(b"get k\r\n", &want);
            // A long number with leading zeros is a number; the shorter result is padded
            // with spaces in place.
            let mut number = vec![b'0'; len];
            number[len - 1] = b'7';
            let mut set = format!("set n 0 0 {len}\r\n").into_bytes();
            set.extend_from_slice(&number);
            set.extend_from_slice(b"\r\n");
            c.roundtrip(&set, b"STORED\r\n");
            c.roundtrip(b"decr n 3\r\n", b"4\r\n");
            let mut want = format!("VALUE n 0 {len}\r\n4").into_bytes();
            want.resize(want.len() + len - 1, b' ');
            want.extend_from_slice(b"\r\nEND\r\n");
            c.roundtrip(b"get n\r\n", &want);
        }
    });
}
