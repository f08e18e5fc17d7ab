//! The parser as the connection calls it: bytes in, [`Parsed`] out.

mod meta;

use super::*;

const LIMITS: Limits = Limits::new(1 << 20, |key, value| 26 + key + value);

fn p(input: &[u8]) -> Parsed<'_> {
    parse(input, &LIMITS)
}

fn req(input: &[u8]) -> Request<'_> {
    match p(input) {
        Parsed::Request(r, used) => {
            assert_eq!(
                used,
                input.len(),
                "consumed all of {:?}",
                String::from_utf8_lossy(input)
            );
            r
        }
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
    }
}

/// An error, the bytes consumed and swallowed, and whether it is silent.
type ErrorParts = (ProtocolError, usize, usize, bool);

fn err(input: &[u8]) -> ErrorParts {
    match p(input) {
        Parsed::Error {
            error,
            consumed,
            swallow,
            noreply,
        } => (error, consumed, swallow, noreply),
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
    }
}

#[test]
fn requests_parse_to_their_commands() {
    let cases: &[(&[u8], Request<'_>)] = &[
        (
            b"get foo\r\n",
            Request::Get {
                keys: b"foo",
                with_cas: false,
                touch: None,
            },
        ),
        (
            b"get a b  c\r\n",
            Request::Get {
                keys: b"a b  c",
                with_cas: false,
                touch: None,
            },
        ),
        (
            b"gets foo\n",
            Request::Get {
                keys: b"foo",
                with_cas: true,
                touch: None,
            },
        ),
        (
            b"get foo  \r\n",
            Request::Get {
                keys: b"foo  ",
                with_cas: false,
                touch: None,
            },
        ),
        (
            b"delete k 10\r\n",
            Request::Delete {
                key: b"k",
                noreply: false,
            },
        ),
        (
            b"verbosity 1 2 3\r\n",
            Request::Verbosity {
                level: 1,
                noreply: false,
            },
        ),
        (
            b"gat 10 a b\r\n",
            Request::Get {
                keys: b"a b",
                with_cas: false,
                touch: Some(10),
            },
        ),
        (
            b"gats -1 a\r\n",
            Request::Get {
                keys: b"a",
                with_cas: true,
                touch: Some(-1),
            },
        ),
        (
            b"get noreply\r\n",
            Request::Get {
                keys: b"noreply",
                with_cas: false,
                touch: None,
            },
        ),
        (
            b"set k 5 100 3\r\nbar\r\n",
            Request::Store {
                mode: StoreMode::Set,
                key: b"k",
                flags: 5,
                exptime: 100,
                value: b"bar",
                noreply: false,
            },
        ),
        (
            b"add k 4294967295 -1 0 noreply\r\n\r\n",
            Request::Store {
                mode: StoreMode::Add,
                key: b"k",
                flags: u32::MAX,
                exptime: -1,
                value: b"",
                noreply: true,
            },
        ),
        (
            b"set k 0 0 1 junk\r\nx\r\n",
            Request::Store {
                mode: StoreMode::Set,
                key: b"k",
                flags: 0,
                exptime: 0,
                value: b"x",
                noreply: false,
            },
        ),
        (
            b"cas k 0 0 2 77\r\nab\r\n",
            Request::Store {
                mode: StoreMode::Cas(77),
                key: b"k",
                flags: 0,
                exptime: 0,
                value: b"ab",
                noreply: false,
            },
        ),
        (
            b"append k 0 0 3\r\na\nb\r\n",
            Request::Store {
                mode: StoreMode::Append,
                key: b"k",
                flags: 0,
                exptime: 0,
                value: b"a\nb",
                noreply: false,
            },
        ),
        (
            b"delete k\r\n",
            Request::Delete {
                key: b"k",
                noreply: false,
            },
        ),
        (
            b"delete k 0\r\n",
            Request::Delete {
                key: b"k",
                noreply: false,
            },
        ),
        (
            b"delete k noreply\r\n",
            Request::Delete {
                key: b"k",
                noreply: true,
            },
        ),
        (
            b"delete k 0 noreply\r\n",
            Request::Delete {
                key: b"k",
                noreply: true,
            },
        ),
        (
            b"incr k 18446744073709551615\r\n",
            Request::Delta {
                key: b"k",
                incr: true,
                delta: u64::MAX,
                noreply: false,
            },
        ),
        (
            b"decr k 1 noreply\r\n",
            Request::Delta {
                key: b"k",
                incr: false,
                delta: 1,
                noreply: true,
            },
        ),
        (
            b"touch k 10\r\n",
            Request::Touch {
                key: b"k",
                exptime: 10,
                noreply: false,
            },
        ),
        (
            b"flush_all\r\n",
            Request::FlushAll {
                delay: 0,
                noreply: false,
            },
        ),
        (
            b"flush_all 5\r\n",
            Request::FlushAll {
                delay: 5,
                noreply: false,
            },
        ),
        (
            b"flush_all noreply\r\n",
            Request::FlushAll {
                delay: 0,
                noreply: true,
            },
        ),
        (
            b"flush_all -1 noreply\r\n",
            Request::FlushAll {
                delay: -1,
                noreply: true,
            },
        ),
        (b"version\r\n", Request::Version),
        (b"version foo\r\n", Request::Version),
        (b"quit now\r\n", Request::Quit),
        (
            b"verbosity 1\r\n",
            Request::Verbosity {
                level: 1,
                noreply: false,
            },
        ),
        (
            b"verbosity 0 noreply\r\n",
            Request::Verbosity {
                level: 0,
                noreply: true,
            },
        ),
        (
            b"shutdown\r\n",
            Request::Shutdown {
                mode: ShutdownMode::Immediate,
                noreply: false,
            },
        ),
        (
            b"shutdown graceful\r\n",
            Request::Shutdown {
                mode: ShutdownMode::Graceful,
                noreply: false,
            },
        ),
        (
            b"shutdown g\r\n",
            Request::Shutdown {
                mode: ShutdownMode::Graceful,
                noreply: false,
            },
        ),
        (
            b"shutdown noreply\r\n",
            Request::Shutdown {
                mode: ShutdownMode::Invalid,
                noreply: true,
            },
        ),
        (
            b"shutdown now\r\n",
            Request::Shutdown {
                mode: ShutdownMode::Invalid,
                noreply: false,
            },
        ),
        (
            b"cache_memlimit 100\r\n",
            Request::CacheMemlimit {
                megabytes: 100,
                noreply: false,
            },
        ),
        (b"stats\r\n", Request::Stats { args: b"" }),
        (
            b"stats  detail dump\r\n",
            Request::Stats {
                args: b"detail dump",
            },
        ),
    ];
    for (input, want) in cases {
        assert_eq!(&req(input), want, "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn errors_map_to_memcacheds_replies() {
    use ProtocolError::*;
    let key251 = format!("get {}\r\n", "k".repeat(251));
    let set251 = format!("set {} 0 0 1\r\nx\r\n", "k".repeat(251));
    let cases: Vec<(&[u8], ErrorParts)> = vec![
        (b"GET foo\r\n", (UnknownCommand, 9, 0, false)),
        (b"foo\r\n", (UnknownCommand, 5, 0, false)),
        (b"   \r\n", (UnknownCommand, 5, 0, false)),
        (b" get foo\r\n", (UnknownCommand, 10, 0, false)),
        (b"\r\n", (BadCommandLine, 2, 0, false)),
        (b"ab\n", (BadCommandLine, 3, 0, false)),
        (b"get\r\n", (BadCommandLine, 5, 0, false)),
        (key251.as_bytes(), (BadCommandLine, key251.len(), 0, false)),
        (b"gat abc k\r\n", (InvalidExptime, 11, 0, false)),
        (b"gat +1 k\r\n", (InvalidExptime, 10, 0, false)),
        (b"gat\r\n", (BadCommandLine, 5, 0, false)),
        (b"gat 10\r\n", (BadCommandLine, 8, 0, false)),
        (b"set foo 0 0\r\n", (BadCommandLine, 13, 0, false)),
        (b"set a b c d e f g h\r\n", (BadCommandLine, 21, 0, false)),
        (b"set k 0 0 -1\r\n", (BadCommandLine, 14, 0, false)),
        (b"set k 0 0 +1\r\n", (BadCommandLine, 14, 0, false)),
        (b"set k 0 0 abc\r\n", (BadCommandLine, 15, 0, false)),
        (b"set k 0 0 2147483647\r\n", (BadCommandLine, 22, 0, false)),
        (b"set k 0 0 4294967295\r\n", (BadCommandLine, 22, 0, false)),
        (b"set k 0 0 noreply\r\n", (BadCommandLine, 19, 0, false)),
        (b"set k abc 0 1\r\n", (BadCommandLine, 15, 3, false)),
        (b"set k -1 0 1\r\n", (BadCommandLine, 14, 3, false)),
        (b"set k 0 abc 1\r\n", (BadCommandLine, 15, 3, false)),
        (b"cas k 0 0 1 abc\r\n", (BadCommandLine, 17, 3, false)),
        (b"cas k 0 0 1 +1\r\n", (BadCommandLine, 16, 3, false)),
        (b"cas k 0 0 1\r\n", (BadCommandLine, 13, 3, false)),
        (b"cas k 0 0 1 noreply\r\n", (BadCommandLine, 21, 3, true)),
        (
            set251.as_bytes(),
            (BadCommandLine, set251.len() - 3, 3, false),
        ),
        (b"set k 0 0 3\r\nabcd\r\n", (BadDataChunk, 18, 0, false)),
        (
            b"set k 0 0 3 noreply\r\nabcd\r\n",
            (BadDataChunk, 26, 0, true),
        ),
        (b"delete\r\n", (BadCommandLine, 8, 0, false)),
        (b"incr k abc\r\n", (InvalidDelta, 12, 0, false)),
        (b"incr k -1\r\n", (InvalidDelta, 11, 0, false)),
        (b"incr k +1\r\n", (InvalidDelta, 11, 0, false)),
        (
            b"incr k 18446744073709551616\r\n",
            (InvalidDelta, 29, 0, false),
        ),
        (b"incr k abc noreply\r\n", (InvalidDelta, 20, 0, true)),
        (b"incr k\r\n", (BadCommandLine, 8, 0, false)),
        (b"incr k noreply\r\n", (InvalidDelta, 16, 0, true)),
        (b"touch k abc\r\n", (InvalidExptime, 13, 0, false)),
        (b"touch k\r\n", (BadCommandLine, 9, 0, false)),
        (b"flush_all abc\r\n", (InvalidExptime, 15, 0, false)),
        (b"flush_all +1\r\n", (InvalidExptime, 14, 0, false)),
        (b"verbosity\r\n", (BadCommandLine, 11, 0, false)),
        (b"verbosity abc\r\n", (BadCommandLine, 15, 0, false)),
        (b"verbosity noreply\r\n", (BadCommandLine, 19, 0, true)),
        (b"cache_memlimit abc\r\n", (UnknownCommand, 20, 0, false)),
        (b"bogus noreply\r\n", (UnknownCommand, 15, 0, true)),
    ];
    for (input, want) in cases {
        assert_eq!(err(input), want, "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn too_large_values_are_not_buffered() {
    match p(b"set k 0 0 2000000000\r\n") {
        Parsed::Request(
            Request::TooLarge {
                mode,
                key,
                swallow,
                noreply,
            },
            used,
        ) => {
            assert_eq!(
                (mode, &key[..], swallow, noreply, used),
                (StoreMode::Set, &b"k"[..], 2_000_000_002, false, 22)
            );
        }
        other => panic!("{other:?}"),
    }
    let limit = 1 << 20;
    let fits = format!("set k 0 0 {}\r\n", limit - 26 - 1);
    assert_eq!(p(fits.as_bytes()), Parsed::Incomplete);
    let over = format!("set k 0 0 {}\r\n", limit - 26);
    assert!(matches!(
        p(over.as_bytes()),
        Parsed::Request(Request::TooLarge { .. }, _)
    ));
}

#[test]
fn long_lines_close_the_connection_unless_they_are_gets() {
    assert_eq!(
        p(&[b'x'; MAX_LINE + 1]),
        Parsed::Close(Dropped::LineTooLong)
    );
    assert_eq!(p(&[b'x'; MAX_LINE]), Parsed::Incomplete);
    let mut line = vec![b'x'; 4000];
    line.extend_from_slice(b"\r\n");
    assert!(matches!(
        p(&line),
        Parsed::Error {
            error: ProtocolError::UnknownCommand,
            ..
        }
    ));
    let mut line = vec![b'x'; MAX_LINE_COMPLETE + 1];
    line.extend_from_slice(b"\r\n");
    assert_eq!(p(&line), Parsed::Close(Dropped::LineTooLong));
    let mut get = b"get ".to_vec();
    for i in 0..15_000 {
        get.extend_from_slice(format!("key{i} ").as_bytes());
    }
    assert_eq!(p(&get), Parsed::Incomplete);
    get.extend_from_slice(b"\r\n");
    assert!(matches!(p(&get), Parsed::Request(Request::Get { .. }, _)));
    assert_eq!(
        p(b"GET / HTTP/1.1\r\n"),
        Parsed::Close(Dropped::ForeignProtocol)
    );
}

#[test]
fn every_split_point_is_incomplete_until_the_last_byte() {
    let inputs: &[&[u8]] = &[
        b"get foo bar\r\n",
        b"set k 5 100 3\r\nbar\r\n",
        b"cas k 0 0 2 77 noreply\r\nab\r\n",
        b"incr k 5\r\n",
        b"delete k 0 noreply\r\n",
        b"touch k 10\r\n",
        b"gats 10 a b\r\n",
        b"flush_all 10\r\n",
        b"stats items\r\n",
    ];
    for input in inputs {
        for cut in 0..input.len() {
            let head = &input[..cut];
            let got = p(head);
            // A prefix may already be a complete command when it ends in a newline that is
            // part of the value; otherwise it must ask for more.
            if head.ends_with(b"\n") && !matches!(got, Parsed::Incomplete) {
                continue;
            }
            assert_eq!(
                got,
                Parsed::Incomplete,
                "{:?} cut at {cut}",
                String::from_utf8_lossy(input)
            );
        }
        assert!(!matches!(p(input), Parsed::Incomplete));
    }
}

#[test]
fn pipelined_commands_parse_one_at_a_time() {
    let input = b"set a 0 0 1\r\n1\r\nget a\r\ndelete a\r\n";
    let mut at = 0;
    let mut verbs = Vec::new();
    while at < input.len() {
        match p(&input[at..]) {
            Parsed::Request(r, used) => {
                verbs.push(std::mem::discriminant(&r));
                at += used;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(verbs.len(), 3);
}

/// Hostile input: random mixes of command words, numbers, spaces, line ends and binary
/// never panic, and a parse never claims more bytes than it was given.
#[test]
fn random_input_never_panics_or_overreads() {
    let words: &[&[u8]] = &[
        b"get",
        b"gets",
        b"gat",
        b"set",
        b"cas",
        b"append",
        b"incr",
        b"delete",
        b"touch",
        b"flush_all",
        b"stats",
        b"verbosity",
        b"noreply",
        b"0",
        b"-1",
        b"4294967296",
        b"5",
        b"18446744073709551616",
        b"key",
        b" ",
        b"  ",
        b"\r\n",
        b"\n",
        b"\r",
        b"\x00",
        b"\x80",
        b"HTTP/1.1",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..50_000 {
        let mut input = Vec::new();
        for _ in 0..(next() % 12) {
            input.extend_from_slice(words[(next() % words.len() as u64) as usize]);
            if next() % 3 == 0 {
                input.push(b' ');
            }
        }
        match p(&input) {
            Parsed::Request(_, used) => assert!(used <= input.len()),
            Parsed::Error { consumed, .. } => assert!(consumed <= input.len()),
            Parsed::Incomplete | Parsed::Close(_) => {}
        }
    }
}
