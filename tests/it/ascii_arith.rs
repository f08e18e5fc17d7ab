//! incr / decr: 64-bit wrap, floor at 0, length rules, errors.

use crate::common::*;

#[test]
fn incr_and_decr_missing_key_is_not_found() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"incr cnt 1\r\n", b"NOT_FOUND\r\n"),
            (b"decr cnt 1\r\n", b"NOT_FOUND\r\n"),
            (b"get cnt\r\n", b"END\r\n"),
        ]);
    });
}

#[test]
fn incr_then_decr_floors_at_zero() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set cnt 0 0 2\r\n10\r\n", b"STORED\r\n"),
            (b"incr cnt 5\r\n", b"15\r\n"),
            (b"decr cnt 100\r\n", b"0\r\n"),
            (b"decr cnt 1\r\n", b"0\r\n"),
            (b"incr cnt 0\r\n", b"0\r\n"),
        ]);
    });
}

#[test]
fn incr_wraps_at_2_pow_64() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set big 0 0 20\r\n18446744073709551615\r\n", b"STORED\r\n"),
            (b"incr big 2\r\n", b"1\r\n"),
            (b"set half 0 0 19\r\n9223372036854775807\r\n", b"STORED\r\n"),
            (b"incr half 1\r\n", b"9223372036854775808\r\n"),
            (b"set z 0 0 1\r\n0\r\n", b"STORED\r\n"),
            (
                b"incr z 18446744073709551610\r\n",
                b"18446744073709551610\r\n",
            ),
            (
                b"incr z 18446744073709551615\r\n",
                b"18446744073709551609\r\n",
            ),
        ]);
    });
}

#[test]
fn decr_keeps_length_and_pads_with_spaces() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set len 0 0 3\r\n100\r\n", b"STORED\r\n"),
            (b"decr len 1\r\n", b"99\r\n"),
            (b"get len\r\n", b"VALUE len 0 3\r\n99 \r\nEND\r\n"),
            (b"incr len 1\r\n", b"100\r\n"),
            (b"get len\r\n", b"VALUE len 0 3\r\n100\r\nEND\r\n"),
        ]);
    });
}

#[test]
fn incr_grows_item_when_number_gets_longer() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set len2 4 0 2\r\n99\r\n", b"STORED\r\n"),
            (b"incr len2 1\r\n", b"100\r\n"),
            (b"get len2\r\n", b"VALUE len2 4 3\r\n100\r\nEND\r\n"),
        ]);
    });
}

#[test]
fn incr_accepts_leading_zeros_and_spaces() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set lz 0 0 3\r\n007\r\n", b"STORED\r\n"),
            (b"incr lz 1\r\n", b"8\r\n"),
            (b"get lz\r\n", b"VALUE lz 0 3\r\n8  \r\nEND\r\n"),
            (b"set sp 0 0 2\r\n 5\r\n", b"STORED\r\n"),
            (b"incr sp 1\r\n", b"6\r\n"),
        ]);
    });
}

#[test]
fn incr_on_non_numeric_value_is_client_error() {
    for_each_target(&[], |_, c| {
        let bad: &[&[u8]] = &[
            b"abc",
            b"12abc",
            b"-5",
            b"",
            b"123456789012345678901",
            b"99999999999999999999",
        ];
        for v in bad {
            c.send(&set_cmd("set", "nn", 0, 0, v));
            c.expect(b"STORED\r\n");
            for op in ["incr", "decr"] {
                c.send(format!("{op} nn 1\r\n").as_bytes());
                c.expect(b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
            }
            c.send(b"get nn\r\n");
            c.expect(&value_reply("nn", 0, v));
        }
    });
}

#[test]
fn bad_delta_is_client_error() {
    for_each_target(&[], |_, c| {
        store(c, "cnt", b"7");
        for delta in ["abc", "-1", "18446744073709551616", "1x"] {
            for op in ["incr", "decr"] {
                c.send(format!("{op} cnt {delta}\r\n").as_bytes());
                c.expect(b"CLIENT_ERROR invalid numeric delta argument\r\n");
            }
        }
        c.roundtrip(b"get cnt\r\n", b"VALUE cnt 0 1\r\n7\r\nEND\r\n");
    });
}

#[test]
fn incr_keeps_flags() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set f 42 0 1\r\n1\r\n", b"STORED\r\n"),
            (b"incr f 9\r\n", b"10\r\n"),
            (b"get f\r\n", b"VALUE f 42 2\r\n10\r\nEND\r\n"),
        ]);
    });
}

#[test]
fn numbers_are_read_as_memcached_reads_them() {
    // memcached 1.6.45 reads most number tokens as plain digits (no sign, no white space, at
    // most 22 bytes for 64 bits, 11 for 32; a signed one may start with `-`, and a lone `-`
    // is 0), but the flags and exptime of a storage command still with strtoul/strtol (a
    // sign, white space around the digits).
    for_each_target(&[], |_, c| {
        let bad_delta: &[u8] = b"CLIENT_ERROR invalid numeric delta argument\r\n";
        let bad_exptime: &[u8] = b"CLIENT_ERROR invalid exptime argument\r\n";
        c.table(&[
            (b"set n 0 0 1\r\n5\r\n", b"STORED\r\n"),
            (b"incr n +1\r\n", bad_delta),
            (b"incr n -0\r\n", bad_delta),
            (b"incr n \t2\r\n", bad_delta),
            (b"decr n 1\t\r\n", bad_delta),
            (b"incr n 1x\r\n", bad_delta),
            (b"incr n 00000000000000000000001\r\n", bad_delta),
            (b"incr n 0000000000000000000001\r\n", b"6\r\n"),
            (b"set f +3 +0 1\r\n7\r\n", b"STORED\r\n"),
            (b"set f2 \t3 0\t 1\r\n7\r\n", b"STORED\r\n"),
            (
                b"get f f2\r\n",
                b"VALUE f 3 1\r\n7\r\nVALUE f2 3 1\r\n7\r\nEND\r\n",
            ),
            // A bad length is refused before the data block, which is then a line of its own
            // (too short: `bad command line format` again).
            (
                b"set f +3 +0 +1\r\n7\r\n",
                b"CLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad command line format\r\n",
            ),
            (b"touch f +10\r\n", bad_exptime),
            (b"touch f 10\t\r\n", bad_exptime),
            (b"touch f -\r\n", b"TOUCHED\r\n"),
            (b"set e 0 0 -0\r\n\r\n", b"STORED\r\n"),
            (
                b"ms m 2 T+5\r\nab\r\n",
                b"CLIENT_ERROR bad token in command line format\r\n",
            ),
            (
                b"ms m +2 T5\r\nab\r\n",
                b"CLIENT_ERROR bad command line format\r\nERROR\r\n",
            ),
            (b"ms m 2 T5 F1\r\nab\r\n", b"HD\r\n"),
            (b"mg m f v t\r\n", b"VA 2 f1 t5\r\nab\r\n"),
        ]);
    });
}

#[test]
fn exptimes_keep_the_low_32_bits_as_memcached_does() {
    // A storage command's exptime goes through an int32_t: 2147483648 is -2147483648 (already
    // expired), 4294967296 is 0 (never expires). gat, touch and meta TTLs refuse what does
    // not fit in 32 bits.
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set a 0 0 1\r\n5\r\n", b"STORED\r\n"),
            (
                b"gat 2147483648 a\r\n",
                b"CLIENT_ERROR invalid exptime argument\r\n",
            ),
            (b"gat -2147483648 a a\r\n", b"VALUE a 0 1\r\n5\r\nEND\r\n"),
            (b"touch a 10\r\n", b"NOT_FOUND\r\n"),
            (b"set b 0 4294967296 1\r\n1\r\n", b"STORED\r\n"),
            (b"mg b t v\r\n", b"VA 1 t-1\r\n1\r\n"),
            (b"set b 0 2147483648 1\r\n1\r\n", b"STORED\r\n"),
            (b"mg b v\r\n", b"EN\r\n"),
        ]);
    });
}
