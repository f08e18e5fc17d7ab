//! set, add, replace, append, prepend and cas: a command line, then `<bytes>` of data and
//! `\r\n` (protocol.txt, "Storage commands").

use crate::number::{parse_i32, parse_u64};
use crate::protocol::request::{Limits, MAX_KEY_LEN, Parsed, ProtocolError, Request, StoreMode};
use crate::protocol::tokens::{Tokens, token_i32, token_u64};

/// memcached refuses lengths above `INT_MAX - 2` (room for the `\r\n`).
const MAX_DATA_LEN: i32 = i32::MAX - 2;

/// As memcached 1.6.45: too few tokens or a bad `<bytes>` is refused at once (and not
/// silenced by `noreply`); once `<bytes>` has parsed, any other error skips the data block.
/// Tokens after those read are ignored. Flags and exptime are read as `strtoul`/`strtol`
/// read them (flags keep their low 32 bits), `<bytes>` and the cas unique as plain digits.
pub(super) fn parse<'a>(
    tokens: &Tokens<'a>,
    consumed: usize,
    buf: &'a [u8],
    limits: &Limits,
) -> Parsed<'a> {
    let is_cas = tokens.get(0) == b"cas";
    let fail = |error, swallow, noreply| Parsed::Error {
        error,
        consumed,
        swallow,
        noreply,
    };
    let len = token_i32(tokens.get(4)).filter(|l| (0..=MAX_DATA_LEN).contains(l));
    let (true, Some(len)) = (tokens.len() >= 5, len) else {
        return fail(ProtocolError::BadCommandLine, 0, false);
    };
    let len = len as usize;
    let noreply = tokens.noreply();
    let key = tokens.get(1);
    let flags = parse_u64(tokens.get(2)).map(|f| f as u32);
    let exptime = parse_i32(tokens.get(3)).map(i64::from);
    let cas = if is_cas {
        token_u64(tokens.get(5)).filter(|_| tokens.len() > 5)
    } else {
        Some(0)
    };
    let (Some(flags), Some(exptime), Some(cas), true) =
        (flags, exptime, cas, key.len() <= MAX_KEY_LEN)
    else {
        return fail(ProtocolError::BadCommandLine, len + 2, noreply);
    };
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
