//! set, add, replace, append, prepend and cas: a command line, then `<bytes>` of data and
//! `\r\n` (protocol.txt, "Storage commands").

use super::{Tokens, parse_i32, parse_u32, parse_u64};
use crate::protocol::{Limits, MAX_KEY_LEN, Parsed, ProtocolError, Request, StoreMode};

/// memcached refuses lengths above `INT_MAX - 2` (room for the `\r\n`).
const MAX_DATA_LEN: u64 = i32::MAX as u64 - 2;

pub(super) fn parse<'a>(
    tokens: &Tokens<'a>,
    consumed: usize,
    buf: &'a [u8],
    limits: &Limits,
) -> Parsed<'a> {
    let is_cas = tokens.get(0) == b"cas";
    let needed = if is_cas { 6 } else { 5 };
    let n = tokens.len();
    let noreply = tokens.noreply();
    let fail = |error, swallow| Parsed::Error {
        error,
        consumed,
        swallow,
        noreply,
    };
    if n < needed {
        return fail(ProtocolError::BadCommandLine, 0);
    }
    if n > needed + 1 {
        return fail(ProtocolError::UnknownCommand, 0);
    }
    // Once the length has parsed, any later error still skips the data (memcached 1.6.45).
    let Some(len) = parse_u64(tokens.get(4)).filter(|&l| l <= MAX_DATA_LEN) else {
        return fail(ProtocolError::BadCommandLine, 0);
    };
    let len = len as usize;
    let key = tokens.get(1);
    let flags = parse_u32(tokens.get(2));
    let exptime = parse_i32(tokens.get(3)).map(i64::from);
    let cas = if is_cas {
        parse_u64(tokens.get(5))
    } else {
        Some(0)
    };
    let (Some(flags), Some(exptime), Some(cas)) = (flags, exptime, cas) else {
        return fail(ProtocolError::BadCommandLine, len + 2);
    };
    if key.len() > MAX_KEY_LEN {
        return fail(ProtocolError::BadCommandLine, len + 2);
    }
    let mode = match tokens.get(0) {
        b"set" => StoreMode::Set,
        b"add" => StoreMode::Add,
        b"replace" => StoreMode::Replace,
        b"append" => StoreMode::Append,
        b"prepend" => StoreMode::Prepend,
        _ => StoreMode::Cas(cas),
    };
    if limits.too_large(key.len(), len) {
        return Parsed::Request(
            Request::TooLarge {
                mode,
                key: key.into(),
                swallow: len + 2,
                noreply,
            },
            consumed,
        );
    }
    let end = consumed + len + 2;
    if buf.len() < end {
        return Parsed::Incomplete;
    }
    if &buf[end - 2..end] != b"\r\n" {
        return Parsed::Error {
            error: ProtocolError::BadDataChunk,
            consumed: end,
            swallow: 0,
            noreply,
        };
    }
    Parsed::Request(
        Request::Store {
            mode,
            key,
            flags,
            exptime,
            value: &buf[consumed..consumed + len],
            noreply,
        },
        end,
    )
}
