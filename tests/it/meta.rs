//! Meta protocol (`mg ms md ma mn me`): every command and flag, with the
//! exact reply bytes checked against Debian's memcached 1.6.18.
//!
//! Values that depend on the clock (`t`, `l`, `me exp=`/`la=`) are matched
//! with small ranges (`t99..100`), CAS values are read back from the server
//! (`mg <key> c` / `gets`) instead of being hard-coded.
//!
//! Divergences from memcached 1.6.18 asserted here (memcrab follows upstream
//! 1.6.45 / protocol.txt; the memcached half asserts what 1.6.18 answers):
//!
//! | Case | memcached 1.6.18 | memcrab (= 1.6.45) | Test |
//! |---|---|---|---|
//! | `mg <miss> N30 E999 c v` (E is 1.6.27+) | `CLIENT_ERROR invalid flag` | `VA 0 c999 W` + empty block | `meta::mg_e_flag_sets_cas_of_vivified_item` |
//! | `ms k 1 E5000 c` + data | `CLIENT_ERROR invalid flag` (data swallowed) | `HD c5000`, `gets` shows cas 5000 | `meta::ms_e_flag_sets_cas` |
//! | `md k I E777`, `ma k E888 c v` | `CLIENT_ERROR invalid or duplicate flag` | `HD` (then `mg k c` → `HD c777 X W`) / `VA 1 c888` | `meta::md_and_ma_e_flag_set_cas` |
//! | `md k x` (1.6.27+) | `CLIENT_ERROR invalid or duplicate flag` | `HD`; value emptied, client flags kept (`mg k v f` → `VA 0 f5`) | `meta::md_x_empties_value` |
//! | `md` flag errors (`!`, `k k`, `Cabc`, `!!!! b`) | `CLIENT_ERROR invalid or duplicate flag` for all | `CLIENT_ERROR invalid flag` / `duplicate flag` / `bad token in command line format` / `error decoding key` (as `mg`/`ms`) | `meta::md_flag_errors` |
//! | `ms k 3 s` (1.6.20+) | `HD` (s ignored) | `HD s3` (append: new size) | `meta::ms_s_flag_returns_size` |
//! | `ms <miss> 2 MA N30` (1.6.20+) | `NS`, nothing stored | `HD`, item created with TTL 30 | `meta::ms_append_n_autovivifies` |
//! | `mg k C<cas of k> v` (1.6.40+) | `VA <len>` + data (C ignored) | `HD` (value withheld; a mismatching C still gets `VA`) | `meta::mg_c_flag_conditional_value` |
//! | `me k` with 100 s left (fixed in 1.6.24) | `exp=-100` | `exp=100` | `meta::me_debug` |
//! | `ms k 1 F4294967296` | `HD`, flags stored as 0 | `CLIENT_ERROR bad command line format`, data swallowed | `meta::ms_client_flags_above_u32` |
//! | The lone `\n` left after a bad `ms` data chunk (`xyz\r\n` for 2 bytes) | `ERROR` | `CLIENT_ERROR bad command line format` (1-char line) | `meta::ms_bad_data_chunk` |

use crate::common::*;
use std::sync::Barrier;
use std::thread;

// ---------------------------------------------------------------------------
// helpers

/// `ms <key> <len>[ <flags>]\r\n<value>\r\n`.
fn ms(key: &str, value: &[u8], flags: &str) -> Vec<u8> {
    let mut v = if flags.is_empty() {
        format!("ms {key} {}\r\n", value.len())
    } else {
        format!("ms {key} {} {flags}\r\n", value.len())
    }
    .into_bytes();
    v.extend_from_slice(value);
    v.extend_from_slice(b"\r\n");
    v
}

/// One pattern token against one reply token:
/// - `t99..100` (or `exp=-100..-99`): the prefix, then an integer in range;
/// - `c?`: the prefix, then any integer;
/// - anything else: exact.
fn token_matches(got: &str, pat: &str) -> bool {
    if let Some(prefix) = pat.strip_suffix('?') {
        return got.strip_prefix(prefix).is_some_and(is_int);
    }
    if let Some((lo_part, hi)) = pat.split_once("..") {
        let cut = lo_part
            .char_indices()
            .skip(1)
            .find(|&(_, ch)| ch.is_ascii_digit() || ch == '-')
            .map(|(i, _)| i)
            .unwrap_or(lo_part.len());
        let (prefix, lo) = lo_part.split_at(cut);
        let lo: i64 = lo.parse().unwrap_or_else(|_| panic!("bad pattern {pat:?}"));
        let hi: i64 = hi.parse().unwrap_or_else(|_| panic!("bad pattern {pat:?}"));
        return got
            .strip_prefix(prefix)
            .and_then(|v| v.parse::<i64>().ok())
            .is_some_and(|v| lo <= v && v <= hi);
    }
    got == pat
}

/// Reads one reply line and matches it token by token against `pattern`
/// (see `token_matches`). Returns the line.
#[track_caller]
fn line_like(c: &mut Conn, pattern: &str) -> String {
    let line = c.read_line();
    let got: Vec<&str> = line.split(' ').collect();
    let pat: Vec<&str> = pattern.split(' ').collect();
    let ok = got.len() == pat.len() && got.iter().zip(&pat).all(|(g, p)| token_matches(g, p));
    assert!(
        ok,
        "[{}] reply line {line:?} does not match {pattern:?}",
        c.label()
    );
    line
}

/// Sends `req` and matches the reply line against `pattern`.
#[track_caller]
fn send_like(c: &mut Conn, req: &[u8], pattern: &str) -> String {
    c.send(req);
    line_like(c, pattern)
}

/// The integer after `prefix` in the first token of `line` that has it.
#[track_caller]
fn token_value(line: &str, prefix: &str) -> i64 {
    line.split(' ')
        .skip(1)
        .find_map(|t| t.strip_prefix(prefix).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("no {prefix}<n> token in {line:?}"))
}

/// The CAS of `key` as `mg <key> c` reports it.
#[track_caller]
fn cas_of(c: &mut Conn, key: &str) -> u64 {
    c.send(format!("mg {key} c\r\n").as_bytes());
    let line = c.read_line();
    assert!(
        line.starts_with("HD c"),
        "[{}] mg {key} c: {line:?}",
        c.label()
    );
    token_value(&line, "c") as u64
}

/// A key of `n` bytes.
fn long_key(n: usize) -> String {
    "k".repeat(n)
}

// ---------------------------------------------------------------------------
// mg

#[test]
fn mg_hit_return_flags_in_request_order() {
    for_each_target(&[], |_, c| {
        c.roundtrip(&ms("mk", b"hey", "T100 F9"), b"HD\r\n");
        c.roundtrip(b"mg mk\r\n", b"HD\r\n");
        c.roundtrip(b"mg mk v\r\n", b"VA 3\r\nhey\r\n");
        let cas = c.gets("mk").unwrap().2;
        send_like(
            c,
            b"mg mk s v t f c k O77\r\n",
            &format!("VA 3 s3 t99..100 f9 c{cas} kmk O77"),
        );
        c.expect(b"hey\r\n");
        // Reversed request order → reversed reply order.
        send_like(
            c,
            b"mg mk O1 k c f t s v\r\n",
            &format!("VA 3 O1 kmk c{cas} f9 t99..100 s3"),
        );
        c.expect(b"hey\r\n");
        c.roundtrip(b"mg mk f s\r\n", b"HD f9 s3\r\n");
        c.roundtrip(b"mg mk c\r\n", format!("HD c{cas}\r\n").as_bytes());
        // P and L are accepted and ignored.
        c.roundtrip(b"mg mk v Pfoo Lbar\r\n", b"VA 3\r\nhey\r\n");
        // Zero-length value.
        c.roundtrip(&ms("empty", b"", ""), b"HD\r\n");
        c.roundtrip(b"mg empty v s f t\r\n", b"VA 0 s0 f0 t-1\r\n\r\n");
    });
}

#[test]
fn mg_h_l_and_u() {
    for_each_target(&[], |_, c| {
        c.roundtrip(&ms("hl", b"x", ""), b"HD\r\n");
        // h/l report the state before this request; u leaves it alone.
        send_like(c, b"mg hl u h l\r\n", "HD h0 l0..1");
        send_like(c, b"mg hl u h l\r\n", "HD h0 l0..1");
        send_like(c, b"mg hl h l\r\n", "HD h0 l0..1");
        send_like(c, b"mg hl h l\r\n", "HD h1 l0..1");
        c.roundtrip(b"mg hl u v\r\n", b"VA 1\r\nx\r\n");
        send_like(c, b"mg hl h\r\n", "HD h1");
        // A classic get marks the item as fetched too.
        c.roundtrip(&ms("hl2", b"y", ""), b"HD\r\n");
        c.roundtrip(b"get hl2\r\n", b"VALUE hl2 0 1\r\ny\r\nEND\r\n");
        c.roundtrip(b"mg hl2 h\r\n", b"HD h1\r\n");
    });
}

#[test]
fn mg_t_updates_ttl() {
    for_each_target(&[], |_, c| {
        c.roundtrip(&ms("tt", b"x", ""), b"HD\r\n");
        c.roundtrip(b"mg tt t\r\n", b"HD t-1\r\n");
        c.roundtrip(b"mg tt T30 t\r\n", b"HD t30\r\n");
        send_like(c, b"mg tt t\r\n", "HD t29..30");
        // Flags act in request order: a t before T reports the old TTL.
        send_like(c, b"mg tt t T0\r\n", "HD t29..30");
        c.roundtrip(b"mg tt t\r\n", b"HD t-1\r\n");
        c.roundtrip(b"mg tt T50 v t\r\n", b"VA 1 t50\r\nx\r\n");
        // T on a miss creates nothing.
        c.roundtrip(b"mg nott T30 t\r\n", b"EN\r\n");
        c.roundtrip(b"mg nott v\r\n", b"EN\r\n");
    });
}

/// memcached 1.6.45 applies T, N and R in the order given, and t reports the TTL as the
/// flags before it left it: an item N creates has no TTL until the N.
#[test]
fn mg_and_ma_apply_ttl_flags_in_request_order() {
    for_each_target(&[], |srv, c| {
        if srv.legacy() {
            return;
        }
        c.table(&[
            (b"mg m1 T1000 N0 t\r\n", b"HD t-1 W\r\n"),
            (b"mg m1 t v\r\n", b"VA 0 t-1 Z\r\n\r\n"),
            (b"mg m2 t N100\r\n", b"HD t-1 W\r\n"),
            // T-1 then N0: the item lives; N100 then T-1: it is gone at once.
            (b"mg m3 T-1 N0 v\r\n", b"VA 0 W\r\n\r\n"),
            (b"mg m3 v t\r\n", b"VA 0 t-1 Z\r\n\r\n"),
            (b"mg m4 N100 T-1 v\r\n", b"VA 0 W\r\n\r\n"),
            (b"mg m4 v\r\n", b"EN\r\n"),
            // R compares the TTL a T before it set.
            (b"set r 0 100 1\r\nx\r\n", b"STORED\r\n"),
            (b"mg r T10 R30 t\r\n", b"HD t10 W\r\n"),
            // ma: the same for T, N and t.
            (b"ma c1 N0 t T100 J5 v\r\n", b"VA 1 t-1\r\n5\r\n"),
            (b"ma c2 T100 N50 t\r\n", b"HD t50\r\n"),
        ]);
        send_like(c, b"mg m2 t\r\n", "HD t99..100 Z");
        send_like(c, b"ma c1 t\r\n", "HD t99..100");
    });
}

#[test]
fn mg_miss_echoes_k_and_o() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"mg nokey v\r\n", b"EN\r\n"),
            (b"mg nokey\r\n", b"EN\r\n"),
            (b"mg nokey k O5 v\r\n", b"EN knokey O5\r\n"),
            // Only k and O come back on a miss, in request order.
            (b"mg nokey O5 k v s t f c h l\r\n", b"EN O5 knokey\r\n"),
            (b"mg nokey v q\r\nmn\r\n", b"MN\r\n"),
            (b"mg nokey k O5 q\r\nmn\r\n", b"MN\r\n"),
        ]);
        // q hides only the miss: a hit is still sent, with or without v.
        c.roundtrip(&ms("qq", b"hey", ""), b"HD\r\n");
        c.roundtrip(b"mg qq v q\r\nmn\r\n", b"VA 3\r\nhey\r\nMN\r\n");
        c.roundtrip(b"mg qq q\r\nmn\r\n", b"HD\r\nMN\r\n");
        c.roundtrip(b"mg qq q k\r\nmn\r\n", b"HD kqq\r\nMN\r\n");
    });
}

#[test]
fn mg_syntax_errors() {
    for_each_target(&[], |_, c| {
        c.roundtrip(&ms("mk", b"hey", ""), b"HD\r\n");
        let k251 = format!("mg {} v\r\n", long_key(251));
        let k250 = format!("mg {} v\r\n", long_key(250));
        c.table(&[
            (b"mg\r\n", b"CLIENT_ERROR bad command line format\r\n"),
            (b"mg \r\n", b"CLIENT_ERROR bad command line format\r\n"),
            (b"mz foo\r\n", b"ERROR\r\n"),
            (b" mg mk\r\n", b"ERROR\r\n"),
            (k251.as_bytes(), b"CLIENT_ERROR bad command line format\r\n"),
            (k250.as_bytes(), b"EN\r\n"),
            // A flag token must start with a letter or a digit, or the line is refused whole.
            (b"mg mk !\r\n", b"CLIENT_ERROR bad command line format\r\n"),
            (
                b"mg mk v \x80\r\n",
                b"CLIENT_ERROR bad command line format\r\n",
            ),
            (b"mg mk [\r\n", b"CLIENT_ERROR invalid flag\r\n"),
            (b"mg mk S\r\n", b"CLIENT_ERROR invalid flag\r\n"),
            (b"mg mk V\r\n", b"CLIENT_ERROR invalid flag\r\n"),
            (b"mg mk a\r\n", b"CLIENT_ERROR invalid flag\r\n"),
            (b"mg mk 5\r\n", b"CLIENT_ERROR invalid flag\r\n"),
            (b"mg mk v v\r\n", b"CLIENT_ERROR duplicate flag\r\n"),
            (b"mg mk k k\r\n", b"CLIENT_ERROR duplicate flag\r\n"),
            (b"mg mk O1 O2\r\n", b"CLIENT_ERROR duplicate flag\r\n"),
            (b"mg mk T1 T2\r\n", b"CLIENT_ERROR duplicate flag\r\n"),
            // P and L are ignored but still count as flags.
            (b"mg mk Pa Pb\r\n", b"CLIENT_ERROR duplicate flag\r\n"),
            (
                b"mg mk Tabc\r\n",
                b"CLIENT_ERROR bad token in command line format\r\n",
            ),
            (
                b"mg mk T\r\n",
                b"CLIENT_ERROR bad token in command line format\r\n",
            ),
            (
                b"mg mk N\r\n",
                b"CLIENT_ERROR bad token in command line format\r\n",
            ),
            (
                b"mg mk Nabc\r\n",
                b"CLIENT_ERROR bad token in command line format\r\n",
            ),
            (
                b"mg mk Rabc\r\n",
                b"CLIENT_ERROR bad token in command line format\r\n",
            ),
        ]);
        // An error in one command does not disturb the next in the same packet.
        c.roundtrip(
            b"mg mk V\r\nmg mk v\r\n",
            b"CLIENT_ERROR invalid flag\r\nVA 3\r\nhey\r\n",
        );
        c.roundtrip(b"mg nokey V\r\n", b"CLIENT_ERROR invalid flag\r\n");
    });
}

#[test]
fn mg_opaque_length_limit() {
    for_each_target(&[], |_, c| {
        c.roundtrip(&ms("mk", b"hey", ""), b"HD\r\n");
        // The O token, O included, may be at most 32 bytes.
        let o31 = "a".repeat(31);
        c.roundtrip(
            format!("mg mk O{o31}\r\n").as_bytes(),
            format!("HD O{o31}\r\n").as_bytes(),
        );
        c.roundtrip(
            format!("mg nokey O{o31}\r\n").as_bytes(),
            format!("EN O{o31}\r\n").as_bytes(),
        );
        let o32 = "1234567890".repeat(3) + "12";
        c.roundtrip(
            format!("mg mk O{o32}\r\n").as_bytes(),
            b"CLIENT_ERROR opaque token too long\r\n",
        );
        c.roundtrip(
            format!("md mk O{o32}\r\n").as_bytes(),
            b"CLIENT_ERROR opaque token too long\r\n",
        );
        // An empty opaque is echoed as a bare O.
        c.roundtrip(b"mg mk O\r\n", b"HD O\r\n");
        c.roundtrip(b"mg mk v\r\n", b"VA 3\r\nhey\r\n");
    });
}

#[test]
fn too_many_flag_tokens() {
    for_each_target(&[], |_, c| {
        c.roundtrip(&ms("tk", b"x", ""), b"HD\r\n");
        let flags = |f: &str, n: usize| vec![f; n].join(" ");
        // 20 tokens in all are fine (the count is checked before duplicates), 21 are not,
        // for every meta command; ms refuses them after <datalen> has parsed.
        c.roundtrip(
            format!("mg tk {}\r\n", flags("v", 18)).as_bytes(),
            b"CLIENT_ERROR duplicate flag\r\n",
        );
        c.roundtrip(
            format!("mg tk {}\r\n", flags("v", 19)).as_bytes(),
            b"CLIENT_ERROR options flags are too long\r\n",
        );
        c.roundtrip(
            format!("mg tk {}\r\n", flags("v", 40)).as_bytes(),
            b"CLIENT_ERROR options flags are too long\r\n",
        );
        c.roundtrip(
            format!("md tk {}\r\n", flags("k", 19)).as_bytes(),
            b"CLIENT_ERROR options flags are too long\r\n",
        );
        c.roundtrip(
            format!("ma tk {}\r\n", flags("k", 19)).as_bytes(),
            b"CLIENT_ERROR invalid or duplicate flag\r\n",
        );
        c.roundtrip(
            format!("ms tk 1 {}\r\nx\r\n", flags("k", 17)).as_bytes(),
            b"CLIENT_ERROR duplicate flag\r\n",
        );
        c.roundtrip(
            format!("ms tk 5 {}\r\nhello\r\nmn\r\n", flags("k", 18)).as_bytes(),
            b"CLIENT_ERROR options flags are too long\r\nMN\r\n",
        );
        // 17 distinct mg flags on one line work.
        // (t comes before T5, so it still reports no TTL.)
        c.send(b"mg tk k v s t f c h l u T5 Pa Lb O1 N5 R3 q\r\n");
        line_like(c, "VA 1 ktk s1 t-1 f0 c? h0 l0..1 O1");
        c.expect(b"x\r\n");
        send_like(c, b"mg tk t\r\n", "HD t4..5");
    });
}

// ---------------------------------------------------------------------------
// base64 keys

#[test]
fn base64_keys() {
    for_each_target(&[], |_, c| {
        // "Zm9v" is base64 for "foo".
        c.roundtrip(&ms("Zm9v", b"bin", "b k"), b"HD kZm9v b\r\n");
        c.roundtrip(b"get foo\r\n", b"VALUE foo 0 3\r\nbin\r\nEND\r\n");
        c.roundtrip(b"mg Zm9v b k v\r\n", b"VA 3 kZm9v b\r\nbin\r\n");
        c.roundtrip(b"mg Zm9v b v\r\n", b"VA 3\r\nbin\r\n");
        let cas = c.gets("foo").unwrap().2;
        c.roundtrip(
            b"mg Zm9v b k O1 c\r\n",
            format!("HD kZm9v b O1 c{cas}\r\n").as_bytes(),
        );
        // A classic set is visible through the base64 name.
        c.roundtrip(&set_cmd("set", "bar", 3, 0, b"xy"), b"STORED\r\n");
        c.roundtrip(b"mg YmFy b v f\r\n", b"VA 2 f3\r\nxy\r\n");
        // A miss echoes the encoded key with b.
        c.roundtrip(b"mg bm9rZXk= b k O1 v\r\n", b"EN kbm9rZXk= b O1\r\n");
        // Decoding errors (bad characters, bad length, bad padding, plain keys).
        c.table(&[
            (b"mg !!!! b v\r\n", b"CLIENT_ERROR error decoding key\r\n"),
            (b"mg Zm9 b v\r\n", b"CLIENT_ERROR error decoding key\r\n"),
            (b"mg Zm9v= b v\r\n", b"CLIENT_ERROR error decoding key\r\n"),
            (b"mg mk b v\r\n", b"CLIENT_ERROR error decoding key\r\n"),
            (b"mg nokey b k\r\n", b"CLIENT_ERROR error decoding key\r\n"),
        ]);
        // ms with a bad key: the data block is swallowed.
        c.roundtrip(
            b"ms !!!! 1 b\r\nx\r\nmn\r\n",
            b"CLIENT_ERROR error decoding key\r\nMN\r\n",
        );
        c.roundtrip(
            b"ms Zm9 1 b\r\nx\r\nmn\r\n",
            b"CLIENT_ERROR error decoding key\r\nMN\r\n",
        );
        // md and ma take b too.
        c.roundtrip(b"md Zm9v b k O1\r\n", b"HD kZm9v b O1\r\n");
        c.roundtrip(b"get foo\r\n", b"END\r\n");
        c.roundtrip(&ms("Y250", b"5", "b"), b"HD\r\n"); // "cnt"
        c.roundtrip(b"ma Y250 b k v\r\n", b"VA 1 kY250 b\r\n6\r\n");
        c.roundtrip(b"get cnt\r\n", b"VALUE cnt 0 1\r\n6\r\nEND\r\n");
    });
}

// ---------------------------------------------------------------------------
// ms

#[test]
fn ms_flags() {
    for_each_target(&[], |_, c| {
        c.roundtrip(&ms("mk", b"hi", ""), b"HD\r\n");
        // Defaults: client flags 0, no TTL.
        c.roundtrip(b"mg mk f t v\r\n", b"VA 2 f0 t-1\r\nhi\r\n");
        let line = send_like(c, &ms("mk", b"hey", "T100 F9 c k O123"), "HD c? kmk O123");
        let cas = token_value(&line, "c") as u64;
        assert_eq!(
            c.gets("mk"),
            Some((9, b"hey".to_vec(), cas)),
            "[{}]",
            c.label()
        );
        send_like(c, b"mg mk t f\r\n", "HD t99..100 f9");
        // q hides HD; the next command's reply comes next.
        c.roundtrip(
            &[ms("mq", b"x", "q"), b"mn\r\n".to_vec()].concat(),
            b"MN\r\n",
        );
        c.roundtrip(b"mg mq v\r\n", b"VA 1\r\nx\r\n");
        // P/L ignored.
        c.roundtrip(&ms("mq", b"y", "Pa Lb"), b"HD\r\n");
        // Largest client flags.
        c.roundtrip(&ms("fl", b"x", "F4294967295"), b"HD\r\n");
        c.roundtrip(b"mg fl f\r\n", b"HD f4294967295\r\n");
        c.roundtrip(b"get fl\r\n", b"VALUE fl 4294967295 1\r\nx\r\nEND\r\n");
        // Negative TTL: stored, expired at once.
        c.roundtrip(&ms("neg", b"x", "T-1"), b"HD\r\n");
        c.roundtrip(b"mg neg v\r\n", b"EN\r\n");
        // Extra spaces anywhere in the line are fine.
        c.roundtrip(b"ms sp   2   T0  \r\nhi\r\n", b"HD\r\n");
        c.roundtrip(b"mg sp v\r\n", b"VA 2\r\nhi\r\n");
        // I without C is a plain set.
        c.roundtrip(&ms("sp", b"ok", "I"), b"HD\r\n");
        c.roundtrip(b"mg sp v\r\n", b"VA 2\r\nok\r\n");
    });
}

#[test]
fn ms_flag_errors_swallow_data() {
    for_each_target(&[], |_, c| {
        c.roundtrip(&ms("mk", b"hi", ""), b"HD\r\n");
        // Once <datalen> parsed, a bad flag swallows the block: no ERROR.
        for (flags, err) in [
            ("V", "CLIENT_ERROR invalid flag"),
            ("k k", "CLIENT_ERROR duplicate flag"),
            ("T1 T1", "CLIENT_ERROR duplicate flag"),
            ("Fabc", "CLIENT_ERROR bad command line format"),
            ("F-1", "CLIENT_ERROR bad command line format"),
            ("Tabc", "CLIENT_ERROR bad token in command line format"),
            ("MZ", "CLIENT_ERROR invalid mode for ms M token"),
            ("Ms", "CLIENT_ERROR invalid mode for ms M token"),
            ("M", "CLIENT_ERROR invalid mode for ms M token"),
            ("q V", "CLIENT_ERROR invalid flag"), // errors ignore q
        ] {
            c.send(&ms("mk", b"zz", flags));
            c.send(b"mn\r\n");
            c.expect(format!("{err}\r\nMN\r\n").as_bytes());
        }
        // Nothing was stored by any of them.
        c.roundtrip(b"mg mk v\r\n", b"VA 2\r\nhi\r\n");
        // A flag token that does not start with a letter or digit fails the line before
        // <datalen> is read: the data is a line of its own.
        c.roundtrip(
            &ms("mk", b"zz", "q !"),
            b"CLIENT_ERROR bad command line format\r\nERROR\r\n",
        );
        // The mode is the byte after the M, whatever follows it.
        c.roundtrip(&ms("mk", b"zz", "MSS"), b"HD\r\n");
        c.roundtrip(b"mg mk v\r\n", b"VA 2\r\nzz\r\n");
    });
}

#[test]
fn ms_bad_datalen_and_key() {
    for_each_target(&[], |_, c| {
        // Without a usable <datalen> the data line is parsed as a command.
        // (The data lines here are 5 bytes: 1- and 2-byte lines differ
        // between 1.6.18 and 1.6.45, see ascii_errors::blank_line.)
        c.roundtrip(b"ms mk\r\n", b"CLIENT_ERROR bad command line format\r\n");
        for req in [
            &b"ms mk abc\r\nhello\r\n"[..],
            b"ms mk -1\r\nhello\r\n",
            b"ms mk 5x\r\nhello\r\n",
            b"ms sflag S5 T0\r\nhello\r\n", // the pre-1.6 syntax
        ] {
            c.send(req);
            c.send(b"mn\r\n");
            c.expect(b"CLIENT_ERROR bad command line format\r\nERROR\r\nMN\r\n");
        }
        // A 251-byte key is refused after <datalen> has parsed: the data is swallowed.
        let k251 = long_key(251);
        c.send(&ms(&k251, b"hello", ""));
        c.send(b"mn\r\n");
        c.expect(b"CLIENT_ERROR bad command line format\r\nMN\r\n");
        let k250 = long_key(250);
        c.roundtrip(&ms(&k250, b"x", "k"), format!("HD k{k250}\r\n").as_bytes());
        c.roundtrip(b"mg mk v\r\nmg sflag v\r\n", b"EN\r\nEN\r\n");
    });
}

#[test]
fn ms_bad_data_chunk() {
    for_each_target(&[], |srv, c| {
        // After the bad block ("xyz\r" for 2 bytes) a lone "\n" is left: a
        // 1-char line (1.6.18: ERROR; 1.6.45: CLIENT_ERROR).
        let leftover: &[u8] = if !srv.legacy() {
            b"CLIENT_ERROR bad command line format\r\n"
        } else {
            b"ERROR\r\n"
        };
        c.roundtrip(&ms("old", b"hi", ""), b"HD\r\n");
        c.send(b"ms old 2\r\nxyz\r\n");
        c.expect(b"CLIENT_ERROR bad data chunk\r\n");
        c.expect(leftover);
        // The old value survives a bad chunk.
        c.roundtrip(b"mg old v\r\n", b"VA 2\r\nhi\r\n");
        // "xyzw" is the block, "\r\n" a blank line.
        c.send(b"ms old 2\r\nxyzw\r\n");
        c.expect(b"CLIENT_ERROR bad data chunk\r\n");
        c.expect(leftover);
        // Errors are sent even with q.
        c.send(b"ms old 2 q\r\nxyz\r\nmn\r\n");
        c.expect(b"CLIENT_ERROR bad data chunk\r\n");
        c.expect(leftover);
        c.expect(b"MN\r\n");
        c.roundtrip(b"mg old v\r\n", b"VA 2\r\nhi\r\n");
    });
}

#[test]
fn ms_too_large_swallows_data_and_deletes_old_value() {
    for_each_target(&[], |_, c| {
        let big = vec![b'x'; 1_100_000];
        c.roundtrip(&ms("old", b"hi", ""), b"HD\r\n");
        c.roundtrip(
            &ms("old", &big, "T0"),
            b"SERVER_ERROR object too large for cache\r\n",
        );
        c.roundtrip(b"mg old v\r\n", b"EN\r\n");
        // q does not hide it.
        c.roundtrip(&ms("old", b"hi", ""), b"HD\r\n");
        c.send(&ms("old", &big, "q"));
        c.roundtrip(
            b"mn\r\n",
            b"SERVER_ERROR object too large for cache\r\nMN\r\n",
        );
        c.roundtrip(b"mg old v\r\n", b"EN\r\n");
        // In 1.6.18 the old value goes in every mode, append included.
        c.roundtrip(&ms("old", b"hi", ""), b"HD\r\n");
        c.roundtrip(
            &ms("old", &big, "MA"),
            b"SERVER_ERROR object too large for cache\r\n",
        );
        c.roundtrip(b"mg old v\r\n", b"EN\r\n");
        c.roundtrip(&ms("old", b"ok", ""), b"HD\r\n");
        c.roundtrip(b"mg old v\r\n", b"VA 2\r\nok\r\n");
    });
}

#[test]
fn ms_modes() {
    for_each_target(&[], |_, c| {
        c.table(&[
            // E = add
            (&ms("mm", b"x", "ME"), b"HD\r\n"),
            (&ms("mm", b"y", "ME"), b"NS\r\n"),
            (b"mg mm v\r\n", b"VA 1\r\nx\r\n"),
            // A = append, P = prepend
            (&ms("mm", b"zz", "MA"), b"HD\r\n"),
            (&ms("mm", b"aa", "MP"), b"HD\r\n"),
            (b"mg mm v\r\n", b"VA 5\r\naaxzz\r\n"),
            (&ms("nomm", b"x", "MA"), b"NS\r\n"),
            (&ms("nomm", b"x", "MP"), b"NS\r\n"),
            // R = replace
            (&ms("nomm", b"x", "MR"), b"NS\r\n"),
            (&ms("mm", b"r", "MR"), b"HD\r\n"),
            (b"mg mm v\r\n", b"VA 1\r\nr\r\n"),
            // S = set
            (&ms("mm", b"s", "MS"), b"HD\r\n"),
            (b"mg mm v\r\n", b"VA 1\r\ns\r\n"),
            (b"mg nomm v\r\n", b"EN\r\n"),
        ]);
        // Append keeps the client flags and TTL of the item.
        c.roundtrip(&ms("ap", b"a", "F5 T100"), b"HD\r\n");
        c.roundtrip(&ms("ap", b"b", "MA F9 T0"), b"HD\r\n");
        send_like(c, b"mg ap v f t\r\n", "VA 2 f5 t99..100");
        c.expect(b"ab\r\n");
        // q hides HD only.
        c.roundtrip(
            &[ms("mq", b"x", "q"), b"mn\r\n".to_vec()].concat(),
            b"MN\r\n",
        );
        c.roundtrip(
            &[ms("mq", b"x", "q ME"), b"mn\r\n".to_vec()].concat(),
            b"NS\r\nMN\r\n",
        );
        c.roundtrip(
            &[ms("nomq", b"x", "q MR"), b"mn\r\n".to_vec()].concat(),
            b"NS\r\nMN\r\n",
        );
    });
}

#[test]
fn ms_compare_and_swap() {
    for_each_target(&[], |_, c| {
        c.roundtrip(&ms("cs", b"x", ""), b"HD\r\n");
        let cas = cas_of(c, "cs");
        c.table(&[
            (&ms("cs", b"y", &format!("C{}", cas + 1)), b"EX\r\n"),
            (&ms("nocas", b"y", "C1"), b"NF\r\n"),
            (&ms("nocas", b"y", "C5000 c"), b"NF c0\r\n"),
            (
                &[
                    ms("cs", b"y", &format!("q C{}", cas + 1)),
                    ms("nocas", b"y", "q C1"),
                    b"mn\r\n".to_vec(),
                ]
                .concat(),
                b"EX\r\nNF\r\nMN\r\n",
            ),
            (b"mg cs v\r\n", b"VA 1\r\nx\r\n"),
        ]);
        let line = send_like(c, &ms("cs", b"z", &format!("C{cas} c")), "HD c?");
        let new = token_value(&line, "c") as u64;
        assert_ne!(new, cas, "[{}] CAS unchanged by ms", c.label());
        c.roundtrip(b"mg cs v\r\n", b"VA 1\r\nz\r\n");
        // The old CAS no longer matches.
        c.roundtrip(&ms("cs", b"w", &format!("C{cas}")), b"EX\r\n");
        // Append respects C.
        c.roundtrip(&ms("cs", b"!", &format!("MA C{cas}")), b"EX\r\n");
        c.roundtrip(&ms("cs", b"!", &format!("MA C{new}")), b"HD\r\n");
        c.roundtrip(b"mg cs v\r\n", b"VA 2\r\nz!\r\n");
    });
}

#[test]
fn ms_invalidate_with_older_cas() {
    for_each_target(&[], |_, c| {
        // (Store a few times first: `C0` would mean "no CAS".)
        for _ in 0..3 {
            c.roundtrip(&ms("inv", b"x", ""), b"HD\r\n");
        }
        let cas = cas_of(c, "inv");
        assert!(cas > 1, "[{}] cas {cas}", c.label());
        // A newer CAS than the item's is a plain mismatch.
        c.roundtrip(&ms("inv", b"y", &format!("I C{}", cas + 5)), b"EX\r\n");
        // An older one is accepted but the item is stale.
        let line = send_like(c, &ms("inv", b"z", &format!("I C{} c", cas - 1)), "HD c?");
        let new = token_value(&line, "c");
        c.roundtrip(
            b"mg inv v c\r\n",
            format!("VA 1 c{new} X W\r\nz\r\n").as_bytes(),
        );
        c.roundtrip(
            b"mg inv v c\r\n",
            format!("VA 1 c{new} Z X\r\nz\r\n").as_bytes(),
        );
        // A plain set clears the stale state.
        c.roundtrip(&ms("inv", b"q", ""), b"HD\r\n");
        c.roundtrip(b"mg inv v\r\n", b"VA 1\r\nq\r\n");
    });
}

#[test]
fn ms_invalidate_keeps_the_ttl_and_c0_is_never_older() {
    for_each_target(&[], |_, c| {
        for _ in 0..3 {
            c.roundtrip(&ms("inv0", b"x", "T100"), b"HD\r\n");
        }
        // CAS 0 is not an older version: a set fails, an append ignores it.
        c.roundtrip(&ms("inv0", b"y", "I C0"), b"EX\r\n");
        c.roundtrip(&ms("inv0", b"!", "MA I C0"), b"HD\r\n");
        c.roundtrip(b"mg inv0 v\r\n", b"VA 2\r\nx!\r\n");
        // A stale write keeps the item's TTL, not its own.
        c.roundtrip(&ms("inv0", b"z", "I C1 T5"), b"HD\r\n");
        let line = send_like(c, b"mg inv0 t v\r\n", "VA 1 t? X W");
        assert_eq!(c.read_line(), "z", "[{}]", c.label());
        let ttl = token_value(&line, "t");
        assert!((98..=100).contains(&ttl), "[{}] ttl {ttl}", c.label());
        // An append to a stale item makes a fresh one.
        c.roundtrip(&ms("inv0", b"+", "MA"), b"HD\r\n");
        c.roundtrip(b"mg inv0 v\r\n", b"VA 2\r\nz+\r\n");
    });
}

#[test]
fn ms_and_classic_commands_share_items_and_cas() {
    for_each_target(&[], |_, c| {
        // ms → classic
        c.roundtrip(&ms("sh", b"xyz", "F7 T0"), b"HD\r\n");
        c.roundtrip(b"get sh\r\n", b"VALUE sh 7 3\r\nxyz\r\nEND\r\n");
        let (_, _, gcas) = c.gets("sh").unwrap();
        assert_eq!(cas_of(c, "sh"), gcas, "[{}] mg c != gets cas", c.label());
        c.roundtrip(&set_cmd("append", "sh", 0, 0, b"!"), b"STORED\r\n");
        c.roundtrip(b"mg sh v f\r\n", b"VA 4 f7\r\nxyz!\r\n");
        // The CAS from gets works with ms C, and the one from mg c with cas.
        let (_, _, gcas) = c.gets("sh").unwrap();
        c.roundtrip(&ms("sh", b"ms", &format!("C{gcas}")), b"HD\r\n");
        let mcas = cas_of(c, "sh");
        c.roundtrip(
            format!("cas sh 1 0 2 {gcas}\r\nno\r\n").as_bytes(),
            b"EXISTS\r\n",
        );
        c.roundtrip(
            format!("cas sh 1 0 2 {mcas}\r\nok\r\n").as_bytes(),
            b"STORED\r\n",
        );
        c.roundtrip(b"mg sh v f\r\n", b"VA 2 f1\r\nok\r\n");
        // classic → mg
        c.roundtrip(&set_cmd("set", "cl", 5, 0, b"abc"), b"STORED\r\n");
        c.roundtrip(b"mg cl s v f k\r\n", b"VA 3 s3 f5 kcl\r\nabc\r\n");
        c.roundtrip(b"touch cl 100\r\n", b"TOUCHED\r\n");
        send_like(c, b"mg cl t\r\n", "HD t99..100");
        c.roundtrip(b"delete cl\r\n", b"DELETED\r\n");
        c.roundtrip(b"mg cl v\r\n", b"EN\r\n");
        // incr/decr and ma on the same counter.
        c.roundtrip(&ms("ctr", b"10", ""), b"HD\r\n");
        c.roundtrip(b"incr ctr 5\r\n", b"15\r\n");
        c.roundtrip(b"ma ctr v\r\n", b"VA 2\r\n16\r\n");
        c.roundtrip(b"decr ctr 6\r\n", b"10\r\n");
        c.roundtrip(b"get ctr\r\n", b"VALUE ctr 0 2\r\n10\r\nEND\r\n");
        // md removes what set stored, delete what ms stored.
        c.roundtrip(b"md ctr\r\n", b"HD\r\n");
        c.roundtrip(b"get ctr\r\n", b"END\r\n");
        c.roundtrip(&ms("ctr", b"1", ""), b"HD\r\n");
        c.roundtrip(b"delete ctr\r\n", b"DELETED\r\n");
        c.roundtrip(b"mg ctr\r\n", b"EN\r\n");
    });
}

// ---------------------------------------------------------------------------
// md

#[test]
fn md_basics() {
    for_each_target(&[], |_, c| {
        c.roundtrip(&ms("mk", b"x", ""), b"HD\r\n");
        c.table(&[
            (b"md mk q\r\nmn\r\n", b"MN\r\n"),
            (b"mg mk v\r\n", b"EN\r\n"),
            (b"md mk\r\n", b"NF\r\n"),
            (b"md mk q\r\nmn\r\n", b"NF\r\nMN\r\n"),
            (b"md mk k O9\r\n", b"NF kmk O9\r\n"),
            (b"md mk k O9 q\r\nmn\r\n", b"NF kmk O9\r\nMN\r\n"),
            (&ms("mx", b"x", ""), b"HD\r\n"),
            (b"md mx k O99\r\n", b"HD kmx O99\r\n"),
            // T without I: a plain delete.
            (&ms("mx", b"x", ""), b"HD\r\n"),
            (b"md mx T30\r\n", b"HD\r\n"),
            (b"mg mx v\r\n", b"EN\r\n"),
            // P/L ignored.
            (&ms("mx", b"x", ""), b"HD\r\n"),
            (b"md mx Lfoo Pbar q\r\nmn\r\n", b"MN\r\n"),
            (b"md\r\n", b"CLIENT_ERROR bad command line format\r\n"),
        ]);
        let k251 = format!("md {}\r\n", long_key(251));
        c.roundtrip(k251.as_bytes(), b"CLIENT_ERROR bad command line format\r\n");
        // CAS
        c.roundtrip(&ms("mc", b"x", ""), b"HD\r\n");
        let cas = cas_of(c, "mc");
        c.roundtrip(format!("md mc C{}\r\n", cas + 1).as_bytes(), b"EX\r\n");
        c.roundtrip(
            format!("md mc q C{}\r\nmn\r\n", cas + 1).as_bytes(),
            b"EX\r\nMN\r\n",
        );
        c.roundtrip(format!("md mc C{cas}\r\n").as_bytes(), b"HD\r\n");
        c.roundtrip(b"md mc\r\n", b"NF\r\n");
    });
}

#[test]
fn md_invalidate_then_mg_wins_once() {
    for_each_target(&[], |_, c| {
        c.roundtrip(&ms("mk", b"hey", "T100"), b"HD\r\n");
        let old = cas_of(c, "mk");
        c.roundtrip(b"md mk I T30\r\n", b"HD\r\n");
        // The first mg wins the recache (X W), later ones see Z X.
        let line = send_like(c, b"mg mk v c t\r\n", "VA 3 c? t29..30 X W");
        c.expect(b"hey\r\n");
        let new = token_value(&line, "c");
        assert_ne!(new as u64, old, "[{}] md I did not bump the CAS", c.label());
        send_like(c, b"mg mk v c t\r\n", &format!("VA 3 c{new} t29..30 Z X"));
        c.expect(b"hey\r\n");
        c.roundtrip(b"mg mk s c\r\n", format!("HD s3 c{new} Z X\r\n").as_bytes());
        // A classic get still returns the stale value, with no marker.
        c.roundtrip(b"get mk\r\n", b"VALUE mk 0 3\r\nhey\r\nEND\r\n");
        // Invalidating again re-arms the win token.
        c.roundtrip(b"md mk I q\r\nmn\r\n", b"MN\r\n");
        c.roundtrip(b"mg mk v\r\n", b"VA 3 X W\r\nhey\r\n");
        // I without T keeps the TTL.
        send_like(c, b"mg mk t\r\n", "HD t29..30 Z X");
        // md I with CAS, misses.
        c.roundtrip(b"md mk C1 I\r\n", b"EX\r\n");
        c.roundtrip(b"md nope I\r\n", b"NF\r\n");
        c.roundtrip(b"md nope I q\r\nmn\r\n", b"NF\r\nMN\r\n");
        let cas = cas_of_any(c, "mk");
        c.roundtrip(format!("md mk I C{cas} T60\r\n").as_bytes(), b"HD\r\n");
        send_like(c, b"mg mk t v\r\n", "VA 3 t59..60 X W");
        c.expect(b"hey\r\n");
        // A new ms clears the stale state.
        c.roundtrip(&ms("mk", b"new", "T100"), b"HD\r\n");
        send_like(c, b"mg mk v t\r\n", "VA 3 t99..100");
        c.expect(b"new\r\n");
    });
}

/// Like `cas_of`, but the reply may carry W/X/Z after the CAS.
#[track_caller]
fn cas_of_any(c: &mut Conn, key: &str) -> u64 {
    c.send(format!("mg {key} c\r\n").as_bytes());
    let line = c.read_line();
    assert!(
        line.starts_with("HD c"),
        "[{}] mg {key} c: {line:?}",
        c.label()
    );
    token_value(&line, "c") as u64
}

#[test]
fn md_flag_errors() {
    for_each_target(&[], |srv, c| {
        c.roundtrip(&ms("mc", b"x", ""), b"HD\r\n");
        let cases: [(&[u8], &str); 4] = [
            (b"md mc V\r\n", "CLIENT_ERROR invalid flag"),
            (b"md mc k k\r\n", "CLIENT_ERROR duplicate flag"),
            (
                b"md mc Cabc\r\n",
                "CLIENT_ERROR bad token in command line format",
            ),
            (b"md !!!! b\r\n", "CLIENT_ERROR error decoding key"),
        ];
        for (req, want_1645) in cases {
            if !srv.legacy() {
                c.roundtrip(req, format!("{want_1645}\r\n").as_bytes());
            } else {
                c.roundtrip(req, b"CLIENT_ERROR invalid or duplicate flag\r\n");
            }
        }
        c.roundtrip(b"mg mc v\r\n", b"VA 1\r\nx\r\n");
    });
}

// ---------------------------------------------------------------------------
// ma

#[test]
fn ma_counts() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"ma cnt\r\n", b"NF\r\n"),
            (b"ma cnt q\r\nmn\r\n", b"NF\r\nMN\r\n"),
            (b"ma cnt k O7 v\r\n", b"NF kcnt O7\r\n"),
            (b"ma cnt k O7 q\r\nmn\r\n", b"NF kcnt O7\r\nMN\r\n"),
            // J without N does not create.
            (b"ma cnt J5 v\r\n", b"NF\r\n"),
            (b"ma cnt N0 J10 v\r\n", b"VA 2\r\n10\r\n"),
            (b"ma cnt v\r\n", b"VA 2\r\n11\r\n"),
            (b"ma cnt D5 v t\r\n", b"VA 2 t-1\r\n16\r\n"),
            // Decrement floors at 0; M modes I + D -.
            (b"ma cnt MD D100 v\r\n", b"VA 1\r\n0\r\n"),
            (b"ma cnt M- v\r\n", b"VA 1\r\n0\r\n"),
            (b"ma cnt M+ D3 v\r\n", b"VA 1\r\n3\r\n"),
            (b"ma cnt MI v\r\n", b"VA 1\r\n4\r\n"),
            (b"ma cnt\r\n", b"HD\r\n"),
            (b"ma cnt q\r\nmn\r\n", b"MN\r\n"),
            (b"ma cnt v q\r\nmn\r\n", b"MN\r\n"),
            (b"ma cnt k O3 v\r\n", b"VA 1 kcnt O3\r\n8\r\n"),
            (b"ma cnt T100 t v\r\n", b"VA 1 t100\r\n9\r\n"),
            // The stored value kept its 2-byte length, space-padded.
            (b"mg cnt v\r\n", b"VA 2\r\n9 \r\n"),
        ]);
        // c returns the new CAS; C compares.
        let line = send_like(c, b"ma cnt c v\r\n", "VA 2 c?");
        c.expect(b"10\r\n");
        let cas = token_value(&line, "c") as u64;
        assert_eq!(cas_of(c, "cnt"), cas, "[{}]", c.label());
        c.roundtrip(format!("ma cnt C{} v\r\n", cas + 1).as_bytes(), b"EX\r\n");
        c.roundtrip(
            format!("ma cnt q C{}\r\nmn\r\n", cas + 1).as_bytes(),
            b"EX\r\nMN\r\n",
        );
        c.roundtrip(format!("ma cnt C{cas} v\r\n").as_bytes(), b"VA 2\r\n11\r\n");
        // Wraps at 2^64.
        c.roundtrip(&ms("big", b"18446744073709551615", ""), b"HD\r\n");
        c.roundtrip(b"ma big v\r\n", b"VA 1\r\n0\r\n");
        c.roundtrip(&ms("big", b"18446744073709551615", ""), b"HD\r\n");
        c.roundtrip(b"ma big D2 v\r\n", b"VA 1\r\n1\r\n");
        // Decrement keeps the length, space-padded (like decr).
        c.roundtrip(&ms("pad", b"10", ""), b"HD\r\n");
        c.roundtrip(b"ma pad MD v\r\n", b"VA 1\r\n9\r\n");
        c.roundtrip(b"mg pad v\r\n", b"VA 2\r\n9 \r\n");
        // Non-numeric value.
        c.roundtrip(&ms("txt", b"abc", ""), b"HD\r\n");
        c.roundtrip(
            b"ma txt v\r\n",
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        );
    });
}

#[test]
fn ma_autovivify_is_quiet_with_q() {
    for_each_target(&[], |srv, c| {
        if srv.legacy() {
            return; // 1.6.18 answered a miss that N creates even under q
        }
        c.roundtrip(b"ma v1 N0 q\r\nmn\r\n", b"MN\r\n");
        c.roundtrip(b"ma v2 N0 J5 q v\r\nmn\r\n", b"MN\r\n");
        c.roundtrip(b"ma v2 N0 J5 q v\r\nmn\r\n", b"MN\r\n");
        // A miss without N is not hidden.
        c.roundtrip(b"ma v9 q\r\nmn\r\n", b"NF\r\nMN\r\n");
        c.roundtrip(b"mg v1 v\r\nmg v2 v\r\n", b"VA 1\r\n0\r\nVA 1\r\n6\r\n");
        // N sets the TTL of the new item.
        c.roundtrip(b"ma v3 N100 J7 v t\r\n", b"VA 1 t100\r\n7\r\n");
    });
}

#[test]
fn ma_errors() {
    for_each_target(&[], |_, c| {
        c.roundtrip(&ms("cnt", b"5", ""), b"HD\r\n");
        c.table(&[
            (b"ma\r\n", b"CLIENT_ERROR bad command line format\r\n"),
            (
                b"ma cnt MX v\r\n",
                b"CLIENT_ERROR invalid mode for ma M token\r\n",
            ),
            (
                b"ma cnt Md v\r\n",
                b"CLIENT_ERROR invalid mode for ma M token\r\n",
            ),
            (
                b"ma cnt M v\r\n",
                b"CLIENT_ERROR invalid mode for ma M token\r\n",
            ),
            // ma reports every other flag error the same way.
            (
                b"ma cnt Dabc v\r\n",
                b"CLIENT_ERROR invalid or duplicate flag\r\n",
            ),
            (
                b"ma cnt D-1 v\r\n",
                b"CLIENT_ERROR invalid or duplicate flag\r\n",
            ),
            (
                b"ma cnt N0 Jabc v\r\n",
                b"CLIENT_ERROR invalid or duplicate flag\r\n",
            ),
            (
                b"ma cnt V\r\n",
                b"CLIENT_ERROR invalid or duplicate flag\r\n",
            ),
            // ...but a flag token that is not a letter or digit fails the line.
            (b"ma cnt !\r\n", b"CLIENT_ERROR bad command line format\r\n"),
            (
                b"ma cnt v v\r\n",
                b"CLIENT_ERROR invalid or duplicate flag\r\n",
            ),
            (b"mg cnt v\r\n", b"VA 1\r\n5\r\n"),
        ]);
    });
}

// ---------------------------------------------------------------------------
// mn, me, pipelines

#[test]
fn mn_answers_mn() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"mn\r\n", b"MN\r\n"),
            (b"mn foo bar\r\n", b"MN\r\n"),
            (b"mn \r\n", b"MN\r\n"),
            (b"mn\r\nmn\r\nmn\r\n", b"MN\r\nMN\r\nMN\r\n"),
        ]);
    });
}

#[test]
fn me_debug() {
    for_each_target(&[], |srv, c| {
        // exp: 1.6.18 prints the seconds left negated; 1.6.45 positive.
        let exp100 = if !srv.legacy() {
            "exp=98..100"
        } else {
            "exp=-100..-98"
        };
        let (cls, size) = if srv.is_memcrab() {
            ("cls=?", "size=?")
        } else {
            ("cls=1", "size=?")
        };
        c.roundtrip(&ms("dbg", b"abc", "T100"), b"HD\r\n");
        let line = send_like(
            c,
            b"me dbg\r\n",
            &format!("ME dbg {exp100} la=0..1 cas=? fetch=no {cls} {size}"),
        );
        let cas = token_value(&line.replace('=', ""), "cas") as u64;
        // gets marks the item fetched.
        assert_eq!(
            c.gets("dbg").unwrap().2,
            cas,
            "[{}] me cas != gets cas",
            c.label()
        );
        send_like(
            c,
            b"me dbg\r\n",
            &format!("ME dbg {exp100} la=0..1 cas={cas} fetch=yes {cls} {size}"),
        );
        c.roundtrip(&ms("dbg2", b"x", ""), b"HD\r\n");
        send_like(
            c,
            b"me dbg2\r\n",
            &format!("ME dbg2 exp=-1 la=0..1 cas=? fetch=no {cls} {size}"),
        );
        c.table(&[
            (b"me nokey\r\n", b"EN\r\n"),
            (b"me\r\n", b"CLIENT_ERROR bad command line format\r\n"),
        ]);
        let k251 = format!("me {}\r\n", long_key(251));
        c.roundtrip(k251.as_bytes(), b"CLIENT_ERROR bad command line format\r\n");
        // base64: the key is printed encoded when the item was stored with b
        // (whatever the me request used). me decodes its key only when a token follows
        // the b.
        c.roundtrip(&ms("Zm9v", b"bin", "b"), b"HD\r\n");
        c.roundtrip(b"me Zm9v b\r\n", b"EN\r\n");
        send_like(
            c,
            b"me Zm9v b x\r\n",
            &format!("ME Zm9v exp=-1 la=0..1 cas=? fetch=no {cls} {size}"),
        );
        send_like(
            c,
            b"me foo\r\n",
            &format!("ME Zm9v exp=-1 la=0..1 cas=? fetch=no {cls} {size}"),
        );
        c.roundtrip(&ms("plain", b"x", ""), b"HD\r\n");
        send_like(
            c,
            b"me cGxhaW4= b x\r\n",
            &format!("ME plain exp=-1 la=0..1 cas=? fetch=no {cls} {size}"),
        );
        c.table(&[
            // A bad base64 key.
            (
                b"me Zm9 b x\r\n",
                b"CLIENT_ERROR bad command line format\r\n",
            ),
            (b"me foo !\r\n", b"CLIENT_ERROR bad command line format\r\n"),
        ]);
    });
}

#[test]
fn quiet_pipeline_ends_with_mn() {
    for_each_target(&[], |_, c| {
        c.roundtrip(&ms("cntm", b"7 ", ""), b"HD\r\n");
        // One write: only the interesting replies come back, then MN.
        let mut req = Vec::new();
        req.extend_from_slice(b"mg a1 v q k\r\nmg cntm v q k\r\nmg a2 v q k O2\r\n");
        req.extend_from_slice(&ms("p1", b"x", "q"));
        req.extend_from_slice(&ms("p1", b"y", "q ME"));
        req.extend_from_slice(b"md nope q\r\nmd p1 q\r\nma nope q O5\r\n");
        req.extend_from_slice(&ms("p2", b"1", "q"));
        req.extend_from_slice(b"ma p2 q\r\nma p2 q v\r\nmg p2 q v\r\nmn\r\n");
        c.send(&req);
        c.expect(b"VA 2 kcntm\r\n7 \r\nNS\r\nNF\r\nNF O5\r\nVA 1\r\n3\r\nMN\r\n");
        // Byte by byte too.
        c.send_bytewise(b"mg a1 v q\r\nmg cntm q s\r\nmn\r\n");
        c.expect(b"HD s2\r\nMN\r\n");
    });
}

// ---------------------------------------------------------------------------
// win tokens: N (vivify on miss) and R (recache)

#[test]
fn mg_n_vivifies_and_wins_once() {
    for_each_target(&[], |_, c| {
        let line = send_like(c, b"mg viv N30 c v t s f\r\n", "VA 0 c? t30 s0 f0 W");
        c.expect(b"\r\n");
        let cas = token_value(&line, "c");
        send_like(
            c,
            b"mg viv N30 c v t\r\n",
            &format!("VA 0 c{cas} t29..30 Z"),
        );
        c.expect(b"\r\n");
        // Without N or R the Z still shows.
        c.roundtrip(b"mg viv v\r\n", b"VA 0 Z\r\n\r\n");
        // q does not hide a W/Z hit.
        send_like(c, b"mg viv2 N30 t k O1 q\r\n", "HD t30 kviv2 O1 W");
        c.roundtrip(b"mn\r\n", b"MN\r\n");
        send_like(c, b"mg viv2 N30 t k O1 q\r\n", "HD t29..30 kviv2 O1 Z");
        c.roundtrip(b"mn\r\n", b"MN\r\n");
        // N with R on a miss.
        c.roundtrip(b"mg viv3 N30 R30 v t\r\n", b"VA 0 t30 W\r\n\r\n");
        send_like(c, b"mg viv3 N30 R30 v t\r\n", "VA 0 t29..30 Z");
        c.expect(b"\r\n");
        // The winner fills the item with ms: no more W/Z.
        c.roundtrip(&ms("viv", b"data", &format!("T60 C{cas}")), b"HD\r\n");
        send_like(c, b"mg viv N30 v t\r\n", "VA 4 t59..60");
        c.expect(b"data\r\n");
        // A vivified stub is a real (empty) item for classic commands.
        c.roundtrip(b"get viv3\r\n", b"VALUE viv3 0 0\r\n\r\nEND\r\n");
    });
}

#[test]
fn mg_r_recache_when_ttl_low() {
    for_each_target(&[], |_, c| {
        c.roundtrip(&ms("rc", b"x", "T10"), b"HD\r\n");
        send_like(c, b"mg rc R30 v t\r\n", "VA 1 t9..10 W");
        c.expect(b"x\r\n");
        send_like(c, b"mg rc R30 v t\r\n", "VA 1 t9..10 Z");
        c.expect(b"x\r\n");
        send_like(c, b"mg rc R5 v t\r\n", "VA 1 t9..10 Z");
        c.expect(b"x\r\n");
        // TTL above the threshold: no token.
        c.roundtrip(&ms("rc", b"y", "T10"), b"HD\r\n");
        send_like(c, b"mg rc R5 v t\r\n", "VA 1 t9..10");
        c.expect(b"y\r\n");
        send_like(c, b"mg rc R30 v t q\r\n", "VA 1 t9..10 W");
        c.expect(b"y\r\n");
        c.roundtrip(b"mn\r\n", b"MN\r\n");
        // No TTL (t-1) never wins.
        c.roundtrip(&ms("rc", b"z", "T0"), b"HD\r\n");
        c.roundtrip(b"mg rc R30 v t\r\n", b"VA 1 t-1\r\nz\r\n");
        // R on a miss without N: EN.
        c.roundtrip(b"mg norc R30 v\r\n", b"EN\r\n");
    });
}

/// `clients` connections send `req` at once; returns the reply lines.
fn concurrent_replies(srv: &Server, clients: usize, req: &[u8], value: &[u8]) -> Vec<String> {
    let barrier = Barrier::new(clients);
    thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut conn = srv.connect();
                    barrier.wait();
                    conn.send(req);
                    let line = conn.read_line();
                    conn.expect(&[value, b"\r\n"].concat());
                    line
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn concurrent_vivify_has_exactly_one_winner() {
    for_each_server(&[], |srv| {
        let lines = concurrent_replies(srv, 50, b"mg swr N30 v c t\r\n", b"");
        let cas = token_value(&lines[0], "c");
        let mut winners = 0;
        for l in &lines {
            let got: Vec<&str> = l.split(' ').collect();
            assert!(
                got.len() == 5
                    && token_matches(got[0], "VA")
                    && token_matches(got[1], "0")
                    && got[2] == format!("c{cas}")
                    && token_matches(got[3], "t29..30")
                    && (got[4] == "W" || got[4] == "Z"),
                "[{}] unexpected reply {l:?}",
                srv.name()
            );
            winners += usize::from(got[4] == "W");
        }
        assert_eq!(
            winners,
            1,
            "[{}] {winners} winners in {lines:?}",
            srv.name()
        );
    });
}

#[test]
fn concurrent_recache_has_exactly_one_winner() {
    for_each_server(&[], |srv| {
        let mut c = srv.connect();
        c.roundtrip(&ms("rck", b"old", "T10"), b"HD\r\n");
        let lines = concurrent_replies(srv, 50, b"mg rck R30 v t\r\n", b"old");
        let mut winners = 0;
        for l in &lines {
            let got: Vec<&str> = l.split(' ').collect();
            assert!(
                got.len() == 4
                    && got[0] == "VA"
                    && got[1] == "3"
                    && token_matches(got[2], "t8..10")
                    && (got[3] == "W" || got[3] == "Z"),
                "[{}] unexpected reply {l:?}",
                srv.name()
            );
            winners += usize::from(got[3] == "W");
        }
        assert_eq!(
            winners,
            1,
            "[{}] {winners} winners in {lines:?}",
            srv.name()
        );
        send_like(&mut c, b"mg rck v\r\n", "VA 3 Z");
        c.expect(b"old\r\n");
    });
}

// ---------------------------------------------------------------------------
// proxy tolerance

#[test]
fn proxy_rewrites_are_tolerated() {
    for_each_server(&[], |srv| {
        // Proxies send `version` first on every new backend connection.
        let mut c = srv.connect();
        c.send(b"version\r\n");
        let v = c.read_line();
        if !srv.legacy() {
            assert_eq!(v, format!("VERSION {ORACLE_VERSION}"), "[{}]", srv.name());
        }
        // memcached's proxy rewrites `noreply` to `noreplY`: a normal reply.
        c.roundtrip(b"set k 0 0 1 noreplY\r\na\r\n", b"STORED\r\n");
        c.roundtrip(b"get k\r\n", b"VALUE k 0 1\r\na\r\nEND\r\n");
        c.roundtrip(b"delete k noreplY\r\n", b"DELETED\r\n");
        c.roundtrip(b"set k 0 0 1\r\nb\r\n", b"STORED\r\n");
        // ...and blanks the q flag to spaces.
        c.roundtrip(b"mg k v   \r\n", b"VA 1\r\nb\r\n");
        c.roundtrip(b"mg k   v\r\n", b"VA 1\r\nb\r\n");
        c.roundtrip(b"mg k s   v   k\r\n", b"VA 1 s1 kk\r\nb\r\n");
        c.roundtrip(b"mg nokey v   \r\n", b"EN\r\n");
        c.roundtrip(b"ms k 1 T0   \r\nc\r\n", b"HD\r\n");
        c.roundtrip(b"md k   \r\n", b"HD\r\n");
        c.roundtrip(b"ma k   \r\n", b"NF\r\n");
        c.roundtrip(b"mn   \r\n", b"MN\r\n");
    });
}

// ---------------------------------------------------------------------------
// 1.6.18 vs 1.6.45 (see the table at the top)

#[test]
fn mg_e_flag_sets_cas_of_vivified_item() {
    for_each_target(&[], |srv, c| {
        c.send(b"mg ve N30 E999 c v\r\n");
        if !srv.legacy() {
            c.expect(b"VA 0 c999 W\r\n\r\n");
            c.roundtrip(b"gets ve\r\n", b"VALUE ve 0 0 999\r\n\r\nEND\r\n");
        } else {
            c.expect(b"CLIENT_ERROR invalid flag\r\n");
            c.roundtrip(b"mg ve v\r\n", b"EN\r\n");
        }
    });
}

#[test]
fn ms_e_flag_sets_cas() {
    for_each_target(&[], |srv, c| {
        c.send(&ms("ec", b"x", "E5000 c"));
        c.send(b"mn\r\n");
        if !srv.legacy() {
            c.expect(b"HD c5000\r\nMN\r\n");
            c.roundtrip(b"gets ec\r\n", b"VALUE ec 0 1 5000\r\nx\r\nEND\r\n");
            c.roundtrip(&ms("ec", b"y", "C5000"), b"HD\r\n");
        } else {
            c.expect(b"CLIENT_ERROR invalid flag\r\nMN\r\n");
            c.roundtrip(b"mg ec v\r\n", b"EN\r\n");
        }
    });
}

#[test]
fn md_and_ma_e_flag_set_cas() {
    for_each_target(&[], |srv, c| {
        c.roundtrip(&ms("de", b"x", ""), b"HD\r\n");
        c.roundtrip(&ms("ae", b"1", ""), b"HD\r\n");
        if !srv.legacy() {
            c.roundtrip(b"md de I E777\r\n", b"HD\r\n");
            c.roundtrip(b"mg de c\r\n", b"HD c777 X W\r\n");
            c.roundtrip(b"ma ae E888 c v\r\n", b"VA 1 c888\r\n2\r\n");
            c.roundtrip(b"mg ae c\r\n", b"HD c888\r\n");
        } else {
            c.roundtrip(
                b"md de I E777\r\n",
                b"CLIENT_ERROR invalid or duplicate flag\r\n",
            );
            c.roundtrip(b"mg de v\r\n", b"VA 1\r\nx\r\n");
            c.roundtrip(
                b"ma ae E888 c v\r\n",
                b"CLIENT_ERROR invalid or duplicate flag\r\n",
            );
            c.roundtrip(b"mg ae v\r\n", b"VA 1\r\n1\r\n");
        }
    });
}

#[test]
fn md_x_empties_value() {
    for_each_target(&[], |srv, c| {
        c.roundtrip(&ms("mx", b"abc", "F5 T0"), b"HD\r\n");
        if !srv.legacy() {
            // The emptied item has the request's client flags and TTL (none without F
            // and T), the old CAS, and is not fetched.
            let cas = cas_of(c, "mx");
            c.roundtrip(b"md mx x\r\n", b"HD\r\n");
            c.roundtrip(
                b"mg mx v f t c h\r\n",
                format!("VA 0 f0 t-1 c{cas} h0\r\n\r\n").as_bytes(),
            );
            c.roundtrip(&ms("mx", b"abc", "F5 T0"), b"HD\r\n");
            c.roundtrip(b"md mx x F7 T100 q\r\nmn\r\n", b"MN\r\n");
            send_like(c, b"mg mx v f t\r\n", "VA 0 f7 t99..100");
            c.expect(b"\r\n");
        } else {
            c.roundtrip(
                b"md mx x\r\n",
                b"CLIENT_ERROR invalid or duplicate flag\r\n",
            );
            c.roundtrip(b"mg mx v f\r\n", b"VA 3 f5\r\nabc\r\n");
        }
    });
}

#[test]
fn ms_s_flag_returns_size() {
    for_each_target(&[], |srv, c| {
        if !srv.legacy() {
            c.roundtrip(&ms("sz", b"abc", "s"), b"HD s3\r\n");
            c.roundtrip(&ms("sz", b"de", "MA s k"), b"HD s5 ksz\r\n");
        } else {
            c.roundtrip(&ms("sz", b"abc", "s"), b"HD\r\n");
            c.roundtrip(&ms("sz", b"de", "MA s k"), b"HD ksz\r\n");
        }
        c.roundtrip(b"mg sz v\r\n", b"VA 5\r\nabcde\r\n");
    });
}

#[test]
fn ms_append_n_autovivifies() {
    for_each_target(&[], |srv, c| {
        if !srv.legacy() {
            c.roundtrip(&ms("nomm", b"zz", "MA N30"), b"HD\r\n");
            send_like(c, b"mg nomm v t\r\n", "VA 2 t29..30");
            c.expect(b"zz\r\n");
        } else {
            c.roundtrip(&ms("nomm", b"zz", "MA N30"), b"NS\r\n");
            c.roundtrip(b"mg nomm v t\r\n", b"EN\r\n");
        }
        // Without N an append miss is NS in both.
        c.roundtrip(&ms("nomm2", b"zz", "MA"), b"NS\r\n");
    });
}

#[test]
fn mg_c_flag_conditional_value() {
    for_each_target(&[], |srv, c| {
        c.roundtrip(&ms("cv", b"hey", ""), b"HD\r\n");
        let cas = cas_of(c, "cv");
        // A mismatching C returns the value in both.
        c.roundtrip(
            format!("mg cv C{} v\r\n", cas + 1).as_bytes(),
            b"VA 3\r\nhey\r\n",
        );
        c.send(format!("mg cv C{cas} v\r\n").as_bytes());
        if !srv.legacy() {
            c.expect(b"HD\r\n");
        } else {
            c.expect(b"VA 3\r\nhey\r\n");
        }
    });
}

#[test]
fn ms_client_flags_above_u32() {
    for_each_target(&[], |srv, c| {
        c.roundtrip(&ms("fl", b"hi", "F3"), b"HD\r\n");
        c.send(&ms("fl", b"hi", "F4294967296"));
        c.send(b"mn\r\n");
        if !srv.legacy() {
            c.expect(b"CLIENT_ERROR bad command line format\r\nMN\r\n");
            c.roundtrip(b"mg fl f\r\n", b"HD f3\r\n");
        } else {
            c.expect(b"HD\r\nMN\r\n");
            c.roundtrip(b"mg fl f\r\n", b"HD f0\r\n");
        }
    });
}

#[test]
fn a_classic_get_leaves_the_win_token_to_the_next_meta_read() {
    // A stale item's win token goes to the first meta read; `get`, `gets` and `gat` read
    // the value without taking it.
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set n 0 0 1\r\n1\r\n", b"STORED\r\n"),
            (b"md n I\r\n", b"HD\r\n"),
            (b"get n\r\n", b"VALUE n 0 1\r\n1\r\nEND\r\n"),
            (b"gat 0 n\r\n", b"VALUE n 0 1\r\n1\r\nEND\r\n"),
            (b"mg n\r\n", b"HD X W\r\n"),
            (b"get n\r\n", b"VALUE n 0 1\r\n1\r\nEND\r\n"),
            (b"mg n\r\n", b"HD Z X\r\n"),
        ]);
    });
}

#[test]
fn flag_errors_report_the_message_memcached_picks() {
    // A bad F has no message of its own (bad command line format alone); another flag's
    // message wins over it whatever the order; an over-long opaque is refused last, after
    // the mode is checked.
    let opaque = "o".repeat(33);
    let cases: Vec<(String, &str)> = vec![
        ("mg k Fx".into(), "bad command line format"),
        ("mg k R q Fx".into(), "bad token in command line format"),
        ("ms k 1 MAA Fx C0\r\nz".into(), "bad command line format"),
        (format!("ma k O{opaque} MR"), "invalid mode for ma M token"),
        (
            format!("ms k 1 O{opaque} MZ\r\nz"),
            "invalid mode for ms M token",
        ),
        (
            format!("mg k O{opaque} Tx"),
            "bad token in command line format",
        ),
        (format!("ma k O{opaque}"), "opaque token too long"),
    ];
    for_each_target(&[], |_, c| {
        for (request, error) in &cases {
            c.roundtrip(
                format!("{request}\r\n").as_bytes(),
                format!("CLIENT_ERROR {error}\r\n").as_bytes(),
            );
        }
    });
}

/// memcached 1.6.45 takes a CAS value for every write it attempts, stored or not, and for
/// an arithmetic change whose CAS `E` gives; so the next write's CAS value is higher.
#[test]
fn refused_writes_take_a_cas_value() {
    for_each_target(&[], |srv, c| {
        if srv.legacy() {
            return;
        }
        c.roundtrip(&ms("a", b"1", ""), b"HD\r\n");
        let first = cas_of(c, "a");
        c.table(&[
            (b"add a 0 0 1\r\n2\r\n", b"NOT_STORED\r\n"),
            (b"cas a 0 0 1 999999\r\n3\r\n", b"EXISTS\r\n"),
            (b"replace nope 0 0 1\r\n4\r\n", b"NOT_STORED\r\n"),
            (b"ms a 1 ME\r\n5\r\n", b"NS\r\n"),
            (b"ms a 1 ME E9\r\n5\r\n", b"NS\r\n"),
        ]);
        c.roundtrip(
            &ms("b", b"6", "c"),
            format!("HD c{}\r\n", first + 5).as_bytes(),
        );
        c.roundtrip(b"ma b E77 c\r\n", b"HD c77\r\n");
        c.roundtrip(
            &ms("b", b"7", "c"),
            format!("HD c{}\r\n", first + 7).as_bytes(),
        );
    });
}

/// ms's `s` reports the size sent when nothing was stored.
#[test]
fn ms_s_flag_on_a_refused_write() {
    for_each_target(&[], |srv, c| {
        if srv.legacy() {
            return;
        }
        c.roundtrip(&ms("a", b"1", ""), b"HD\r\n");
        c.roundtrip(&ms("a", b"22", "ME s c"), b"NS s2 c0\r\n");
        c.roundtrip(&ms("nope", b"333", "MR s"), b"NS s3\r\n");
    });
}

/// Base64 keys are decoded as memcached's decoder does: bytes outside the alphabet are
/// skipped, the rest must come in fours. Items that mg N or md x make from a base64 key are
/// not marked binary, so their `k` is the decoded key, as in memcached.
#[test]
fn base64_keys_decode_as_memcached_decodes_them() {
    for_each_target(&[], |srv, c| {
        if srv.legacy() {
            return;
        }
        c.table(&[
            (b"ms Zm9v 3 b\r\nbar\r\n", b"HD\r\n"),
            (b"mg YQ b v\r\n", b"CLIENT_ERROR error decoding key\r\n"),
            (b"mg Zm9v= b v\r\n", b"CLIENT_ERROR error decoding key\r\n"),
            (b"mg Zm9v!! b k v\r\n", b"VA 3 kZm9v b\r\nbar\r\n"),
            (b"mg YmF6 b N0 k\r\n", b"HD kbaz W\r\n"),
            (b"mg baz k\r\n", b"HD kbaz Z\r\n"),
            (b"md Zm9v b x\r\n", b"HD\r\n"),
            (b"mg foo k v\r\n", b"VA 0 kfoo\r\n\r\n"),
        ]);
    });
}

/// An incr whose number grows replaces the item with a new one, as memcached's does: not
/// fetched (`h0`).
#[test]
fn a_growing_incr_makes_a_new_unfetched_item() {
    for_each_target(&[], |srv, c| {
        if srv.legacy() {
            return;
        }
        c.table(&[
            (b"set k 0 0 1\r\n9\r\n", b"STORED\r\n"),
            (b"get k\r\n", b"VALUE k 0 1\r\n9\r\nEND\r\n"),
            (b"incr k 1\r\n", b"10\r\n"),
            (b"mg k h v\r\n", b"VA 2 h0\r\n10\r\n"),
            (b"incr k 1\r\n", b"11\r\n"),
            (b"mg k h\r\n", b"HD h1\r\n"),
        ]);
    });
}
