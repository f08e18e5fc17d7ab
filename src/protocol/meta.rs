//! memcached's meta commands (protocol.txt, "Meta Commands"): `mg ms md ma mn me`, a key,
//! and single-character flags, some with a token (`T30`, `Oabc`).
//!
//! Flags are checked the way memcached 1.6.45 checks them: a flag token that does not start
//! with a letter or digit makes the whole line `CLIENT_ERROR bad command line format`, a
//! repeated flag is `CLIENT_ERROR duplicate flag`, an unknown one `CLIENT_ERROR invalid
//! flag`, a bad numeric token the message of that flag (numbers are plain digits); `ma`
//! reports every flag error as `CLIENT_ERROR invalid or duplicate flag`, but an over-long
//! opaque as `opaque token too long`. Errors are sent even with `q`.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose;

use super::request::{
    Limits, MAX_KEY_LEN, Meta, MetaCommand, MetaFlags, Parsed, ProtocolError, Request, StoreMode,
};
use super::tokens::{Tokens, rest_after, token_i32, token_u32, token_u64};

/// memcached refuses a meta line of more tokens than this.
const MAX_OPT_TOKENS: usize = 20;
/// The opaque token, `O` included, may be at most this long.
pub const MAX_OPAQUE_LEN: usize = 32;
/// memcached refuses data lengths above `INT_MAX - 2`.
const MAX_DATA_LEN: i32 = i32::MAX - 2;

/// memcached's base64 decoder (its base64.c): bytes outside the alphabet are skipped, the
/// others (`=` too) must come in fours, and decoding stops after the first block with
/// padding. `None` when that gives no byte.
pub(crate) fn decode_key(src: &[u8]) -> Option<Vec<u8>> {
    fn value(b: u8) -> Option<u8> {
        match b {
            b'A'..=b'Z' => Some(b - b'A'),
            b'a'..=b'z' => Some(b - b'a' + 26),
            b'0'..=b'9' => Some(b - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            b'=' => Some(0),
            _ => None,
        }
    }
    let count = src.iter().filter(|&&b| value(b).is_some()).count();
    if count == 0 || count % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(count / 4 * 3);
    let (mut block, mut n, mut pad) = ([0u8; 4], 0, 0);
    for &b in src {
        let Some(v) = value(b) else { continue };
        pad += usize::from(b == b'=');
        block[n] = v;
        n += 1;
        if n == 4 {
            out.extend_from_slice(&[
                block[0] << 2 | block[1] >> 4,
                block[1] << 4 | block[2] >> 2,
                block[2] << 6 | block[3],
            ]);
            n = 0;
            if pad > 0 {
                if pad > 2 {
                    return None;
                }
                out.truncate(out.len() - pad);
                break;
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Encodes a binary key for `k` in a reply.
pub fn encode_key(key: &[u8]) -> String {
    general_purpose::STANDARD.encode(key)
}

impl<'a> Parsed<'a> {
    /// Attaches the raw flag text to a parsed meta request.
    fn with_raw_flags(mut self, raw: &'a [u8]) -> Self {
        if let Parsed::Request(Request::Meta(m), _) = &mut self {
            m.flags.raw = raw;
        }
        self
    }
}

fn fail<'a>(error: ProtocolError, consumed: usize, swallow: usize) -> Parsed<'a> {
    Parsed::Error {
        error,
        consumed,
        swallow,
        noreply: false,
    }
}

/// The meta command a command word names, if any.
pub(super) fn command(word: &[u8]) -> Option<MetaCommand> {
    Some(match word {
        b"mg" => MetaCommand::Get,
        b"ms" => MetaCommand::Set,
        b"md" => MetaCommand::Delete,
        b"ma" => MetaCommand::Arithmetic,
        b"me" => MetaCommand::Debug,
        b"mn" => MetaCommand::Noop,
        _ => return None,
    })
}

/// Parses a meta line (without its line end) of the `command` its command word names;
/// `consumed` is the line's length with its end, `buf` the whole input, for `ms` data.
pub(super) fn parse<'a>(
    command: MetaCommand,
    line: &'a [u8],
    consumed: usize,
    buf: &'a [u8],
    limits: &Limits,
) -> Parsed<'a> {
    let first_flag = if command == MetaCommand::Set { 3 } else { 2 };
    let tokens = Tokens::meta(line, first_flag);
    let tokens = tokens.as_slice();
    match command {
        MetaCommand::Noop => Parsed::Request(
            Request::Meta(Meta {
                command,
                key: Cow::Borrowed(b""),
                flags: MetaFlags::default(),
                value: b"",
            }),
            consumed,
        ),
        MetaCommand::Debug => parse_debug(tokens, consumed),
        MetaCommand::Set => {
            parse_set(tokens, consumed, buf, limits).with_raw_flags(rest_after(line, 3))
        }
        _ => parse_keyed(command, tokens, consumed).with_raw_flags(rest_after(line, 2)),
    }
}

/// me: `me <key> [b <anything>]`: memcached decodes a base64 key only when a token follows
/// the `b`.
fn parse_debug<'a>(tokens: &[&'a [u8]], consumed: usize) -> Parsed<'a> {
    if tokens.len() < 2 || tokens[1].len() > MAX_KEY_LEN {
        return fail(ProtocolError::BadCommandLine, consumed, 0);
    }
    let mut flags = MetaFlags::default();
    let key = if tokens.len() >= 4 && tokens[2] == b"b" {
        flags.base64 = true;
        match decode_key(tokens[1]) {
            Some(k) => Cow::Owned(k),
            None => return fail(ProtocolError::BadCommandLine, consumed, 0),
        }
    } else {
        Cow::Borrowed(tokens[1])
    };
    Parsed::Request(
        Request::Meta(Meta {
            command: MetaCommand::Debug,
            key,
            flags,
            value: b"",
        }),
        consumed,
    )
}

/// mg, md, ma: `<cm> <key> <flags>*`.
fn parse_keyed<'a>(command: MetaCommand, tokens: &[&'a [u8]], consumed: usize) -> Parsed<'a> {
    if tokens.len() < 2 {
        return fail(ProtocolError::BadCommandLine, consumed, 0);
    }
    let Preparsed {
        key,
        flags,
        opaque_too_long,
    } = match preparse(tokens, tokens.len()) {
        Ok(parsed) => parsed,
        Err(_) if command == MetaCommand::Arithmetic => {
            return fail(ProtocolError::InvalidOrDuplicateFlag, consumed, 0);
        }
        Err(e) => return fail(e, consumed, 0),
    };
    if command == MetaCommand::Arithmetic
        && !matches!(flags.mode, None | Some(b'I' | b'+' | b'D' | b'-'))
    {
        return fail(ProtocolError::MaMode, consumed, 0);
    }
    if opaque_too_long {
        return fail(ProtocolError::OpaqueTooLong, consumed, 0);
    }
    Parsed::Request(
        Request::Meta(Meta {
            command,
            key,
            flags,
            value: b"",
        }),
        consumed,
    )
}

/// ms: `ms <key> <datalen> <flags>*\r\n<data>\r\n`. Once the length has parsed, an error
/// still skips the data; the checks come in memcached's order: flags, mode, size, opaque.
fn parse_set<'a>(
    tokens: &[&'a [u8]],
    consumed: usize,
    buf: &'a [u8],
    limits: &Limits,
) -> Parsed<'a> {
    let len = tokens
        .get(2)
        .and_then(|t| token_i32(t))
        .filter(|l| (0..=MAX_DATA_LEN).contains(l));
    let Some(len) = len else {
        return fail(ProtocolError::BadCommandLine, consumed, 0);
    };
    let len = len as usize;
    let swallow = len + 2;
    let mut flag_tokens = tokens.to_vec();
    flag_tokens.remove(2);
    let Preparsed {
        key,
        flags,
        opaque_too_long,
    } = match preparse(&flag_tokens, tokens.len()) {
        Ok(parsed) => parsed,
        Err(e) => return fail(e, consumed, swallow),
    };
    if !matches!(flags.mode, None | Some(b'E' | b'A' | b'P' | b'R' | b'S')) {
        return fail(ProtocolError::MsMode, consumed, swallow);
    }
    if limits.too_large(key.len(), len) {
        return Parsed::Request(
            Request::TooLarge {
                mode: StoreMode::Set,
                key,
                swallow,
                noreply: false,
            },
            consumed,
        );
    }
    if opaque_too_long {
        return fail(ProtocolError::OpaqueTooLong, consumed, swallow);
    }
    let end = consumed + swallow;
    if buf.len() < end {
        return Parsed::Incomplete;
    }
    if &buf[end - 2..end] != b"\r\n" {
        return fail(ProtocolError::BadDataChunk, end, 0);
    }
    Parsed::Request(
        Request::Meta(Meta {
            command: MetaCommand::Set,
            key,
            flags,
            value: &buf[consumed..consumed + len],
        }),
        end,
    )
}

/// A key (decoded) and its flags; `opaque_too_long` is for the caller to refuse once it has
/// checked the rest, as memcached checks it only when it writes the reply's flags.
struct Preparsed<'a> {
    key: Cow<'a, [u8]>,
    flags: MetaFlags<'a>,
    opaque_too_long: bool,
}

/// A flag's numeric argument: at least one byte after the flag letter.
fn flag_arg<T>(token: &[u8], parse: impl Fn(&[u8]) -> Option<T>) -> Option<T> {
    token.get(1..).filter(|a| !a.is_empty()).and_then(parse)
}

/// memcached's flag pre-parse of `<cm> <key> <flags>*` (the `ms` length left out; `count`
/// is the line's token count): the key length, the token count, then every flag, decoding a base64 key. A duplicate or unknown
/// flag stops at once; a bad argument is remembered and reported after the rest, with the
/// message of the last flag that has one (a bad `F` has none: alone it is `bad command line
/// format`).
fn preparse<'a>(tokens: &[&'a [u8]], count: usize) -> Result<Preparsed<'a>, ProtocolError> {
    let key = tokens[1];
    if key.len() > MAX_KEY_LEN {
        return Err(ProtocolError::BadCommandLine);
    }
    if count > MAX_OPT_TOKENS {
        return Err(ProtocolError::FlagsAreTooLong);
    }
    let mut f = MetaFlags::default();
    let mut seen = [false; 128];
    let mut error = None;
    let mut has_error = false;
    let mut opaque_too_long = false;
    let mut key = Cow::Borrowed(key);
    for &token in &tokens[2..] {
        let flag = token[0];
        if seen[usize::from(flag)] {
            return Err(ProtocolError::DuplicateFlag);
        }
        seen[usize::from(flag)] = true;
        let mut bad = |e: ProtocolError| {
            error = Some(e);
        };
        match flag {
            b'b' => {
                f.base64 = true;
                match decode_key(&key) {
                    Some(decoded) => key = Cow::Owned(decoded),
                    None => bad(ProtocolError::KeyDecode),
                }
            }
            b'N' | b'T' | b'R' => {
                let v = flag_arg(token, token_i32).map(i64::from);
                if v.is_none() {
                    bad(ProtocolError::BadToken);
                }
                match flag {
                    b'N' => f.vivify = v,
                    b'T' => f.ttl = v,
                    _ => f.recache = v,
                }
            }
            b'C' | b'E' => {
                let v = flag_arg(token, token_u64);
                if v.is_none() {
                    bad(ProtocolError::BadToken);
                }
                if flag == b'C' {
                    f.compare_cas = v;
                } else {
                    f.new_cas = v;
                }
            }
            b'F' => match flag_arg(token, token_u32) {
                Some(v) => f.client_flags = v,
                None => has_error = true,
            },
            // The byte after the `M` (a space or the line end when it is alone).
            b'M' => f.mode = Some(token.get(1).copied().unwrap_or(b' ')),
            b'J' => match flag_arg(token, token_u64) {
                Some(v) => f.initial = v,
                None => bad(ProtocolError::BadInitial),
            },
            b'D' => match flag_arg(token, token_u64) {
                Some(v) => f.delta = v,
                None => bad(ProtocolError::BadDeltaValue),
            },
            b'O' => opaque_too_long |= token.len() > MAX_OPAQUE_LEN,
            b'v' => f.value = true,
            b'u' => f.no_bump = true,
            b'q' => f.quiet = true,
            b'I' => f.invalidate = true,
            b'x' => f.drop_value = true,
            b'P' | b'L' | b'k' | b's' | b't' | b'c' | b'f' | b'h' | b'l' => {}
            _ => return Err(ProtocolError::InvalidFlag),
        }
    }
    match error {
        Some(e) => Err(e),
        None if has_error => Err(ProtocolError::BadCommandLine),
        None => Ok(Preparsed {
            key,
            flags: f,
            opaque_too_long,
        }),
    }
}
