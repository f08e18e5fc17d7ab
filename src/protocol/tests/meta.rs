//! Meta commands through [`parse`](crate::protocol::parse).

use crate::protocol::meta::decode_key;
use crate::protocol::*;

const LIMITS: Limits = Limits::new(1 << 20, |key, value| 26 + key + value);

fn p(input: &[u8]) -> Parsed<'_> {
    parse(input, &LIMITS)
}

fn meta(input: &[u8]) -> Meta<'_> {
    match p(input) {
        Parsed::Request(Request::Meta(m), used) => {
            assert_eq!(used, input.len());
            m
        }
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
    }
}

fn error(input: &[u8]) -> (ProtocolError, usize) {
    match p(input) {
        Parsed::Error { error, swallow, .. } => (error, swallow),
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
    }
}

#[test]
fn flags_parse_in_order() {
    let m = meta(b"mg key s v t f c k O77 h l q u T30 N10 R5 E99\r\n");
    assert_eq!(m.command, MetaCommand::Get);
    assert_eq!(&m.key[..], b"key");
    let f = &m.flags;
    assert!(f.value && f.quiet && f.no_bump);
    assert_eq!(
        (f.ttl, f.vivify, f.recache, f.new_cas),
        (Some(30), Some(10), Some(5), Some(99))
    );
    let tokens: Vec<&[u8]> = f.tokens().collect();
    assert_eq!(tokens[..3], [&b"s"[..], b"v", b"t"]);
    assert_eq!(tokens[6], b"O77");
    let m = meta(b"ms k 3 T100 F9 c k O123 MA C5 I\r\nabc\r\n");
    assert_eq!(
        (m.value, m.flags.client_flags, m.flags.mode),
        (&b"abc"[..], 9, Some(b'A'))
    );
    assert_eq!((m.flags.compare_cas, m.flags.invalidate), (Some(5), true));
    let m = meta(b"ma k N0 J10 D5 MD v\r\n");
    assert_eq!(
        (m.flags.vivify, m.flags.initial, m.flags.delta, m.flags.mode),
        (Some(0), 10, 5, Some(b'D'))
    );
    assert_eq!(meta(b"mn foo\r\n").command, MetaCommand::Noop);
    assert_eq!(&meta(b"mg Zm9v b k v\r\n").key[..], b"foo");
    // me decodes only when a token follows the `b`, as memcached does.
    assert_eq!(&meta(b"me Zm9v b x\r\n").key[..], b"foo");
    assert_eq!(&meta(b"me Zm9v b\r\n").key[..], b"Zm9v");
    assert!(
        meta(b"mg k   v  \r\n").flags.value,
        "blanked flags are spaces"
    );
}

#[test]
fn errors_are_memcacheds() {
    use ProtocolError::*;
    let long_key = format!("mg {} v\r\n", "k".repeat(251));
    let opaque33 = format!("mg k O{}\r\n", "x".repeat(32));
    let opaque32 = format!("mg k O{}\r\n", "x".repeat(31));
    let cases: Vec<(&[u8], (ProtocolError, usize))> = vec![
        (b"mg\r\n", (BadCommandLine, 0)),
        (long_key.as_bytes(), (BadCommandLine, 0)),
        (b"mg k !\r\n", (BadCommandLine, 0)),
        (b"mg k 5\r\n", (InvalidFlag, 0)),
        (b"mg k S\r\n", (InvalidFlag, 0)),
        (b"mg k T+1\r\n", (BadToken, 0)),
        (b"mg k T\r\n", (BadToken, 0)),
        (b"mg k v v\r\n", (DuplicateFlag, 0)),
        (b"mg k Tabc\r\n", (BadToken, 0)),
        (opaque33.as_bytes(), (OpaqueTooLong, 0)),
        (b"mg !!!! b v\r\n", (KeyDecode, 0)),
        (b"mg qk b v\r\n", (KeyDecode, 0)),
        (b"ms k\r\n", (BadCommandLine, 0)),
        (b"ms k abc\r\n", (BadCommandLine, 0)),
        (b"ms sflag S2 T0\r\n", (BadCommandLine, 0)),
        (b"ms k 1 Fabc\r\n", (BadCommandLine, 3)),
        (b"ms k 1 Tabc\r\n", (BadToken, 3)),
        (b"ms k 1 MZ\r\n", (MsMode, 3)),
        (b"ms k 1 M\r\n", (MsMode, 3)),
        (b"ms k 1 !\r\n", (BadCommandLine, 0)),
        (b"ms k 2\r\nxyz\r\n", (BadDataChunk, 0)),
        (b"md k !\r\n", (BadCommandLine, 0)),
        (b"md k 9\r\n", (InvalidFlag, 0)),
        (b"ma k Dabc v\r\n", (InvalidOrDuplicateFlag, 0)),
        (b"ma k v v\r\n", (InvalidOrDuplicateFlag, 0)),
        (b"ma k MX v\r\n", (MaMode, 0)),
        (b"ma k ! v\r\n", (BadCommandLine, 0)),
        (b"ma\r\n", (BadCommandLine, 0)),
        (b"me\r\n", (BadCommandLine, 0)),
        (
            b"mg k a b c d e f g h i j k l m n o p q r\r\n",
            (InvalidFlag, 0),
        ),
        (
            b"mg k a b c d e f g h i j k l m n o p q r s\r\n",
            (FlagsAreTooLong, 0),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(error(input), want, "{:?}", String::from_utf8_lossy(input));
    }
    assert!(matches!(p(opaque32.as_bytes()), Parsed::Request(..)));
}

#[test]
fn keys_decode_as_memcacheds_base64_does() {
    assert_eq!(decode_key(b"Zm9v").as_deref(), Some(&b"foo"[..]));
    assert_eq!(decode_key(b"YQ==").as_deref(), Some(&b"a"[..]));
    assert_eq!(decode_key(b"Zm9v!!").as_deref(), Some(&b"foo"[..]));
    assert_eq!(decode_key(b"YWJj\x01ZGVm").as_deref(), Some(&b"abcdef"[..]));
    assert_eq!(decode_key(b"YQ==Zm9v").as_deref(), Some(&b"a"[..]));
    for bad in [&b"YQ"[..], b"Zm9v=", b"====", b"A===", b"!!!!", b""] {
        assert_eq!(decode_key(bad), None, "{bad:?}");
    }
}

#[test]
fn too_large_ms_is_swallowed() {
    match p(b"ms k 2000000 T0\r\n") {
        Parsed::Request(Request::TooLarge { swallow, .. }, _) => assert_eq!(swallow, 2_000_002),
        other => panic!("{other:?}"),
    }
}

#[test]
fn incomplete_until_the_data_arrives() {
    let input = b"ms k 3 T0\r\nabc\r\n";
    for cut in 0..input.len() {
        assert_eq!(p(&input[..cut]), Parsed::Incomplete, "cut at {cut}");
    }
}
