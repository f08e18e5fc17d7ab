//! memcached's classic text protocol (protocol.txt, "Commands"): one line per command,
//! tokens split on spaces only, storage commands followed by a data block.
//!
//! Where memcached 1.6.18 and 1.6.45 answer differently, this follows 1.6.45 (see
//! docs/compatibility.md).

mod storage;
#[cfg(test)]
mod tests;

use memchr::memchr;

use super::{Dropped, Limits, MAX_KEY_LEN, Parsed, ProtocolError, Request, ShutdownMode};
pub(crate) use crate::number::{parse_i32, parse_u64};

/// Without a newline in this many buffered bytes, a line is too long and the connection is
/// closed (memcached's rule), unless it is a `get`/`gets`, whose key lists may be long.
pub const MAX_LINE: usize = 2048;
/// A line whose newline did arrive is still refused past this length (memcached reads 16 KB
/// at a time, so it never sees a longer one complete).
pub const MAX_LINE_COMPLETE: usize = 16 * 1024;
/// The longest `get`/`gets` line: about 4,000 keys of 250 bytes.
pub const MAX_GET_LINE: usize = 1 << 20;
/// memcached's tokenizer keeps at most this many tokens of a line; the rest of a longer
/// line is one with the last.
const MAX_TOKENS: usize = 23;

/// Parses the first command in `buf`.
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    let Some(nl) = memchr(b'\n', buf) else {
        let too_long = if is_multiget(buf) {
            buf.len() > MAX_GET_LINE
        } else {
            buf.len() > MAX_LINE
        };
        return if too_long {
            Parsed::Close(Dropped::LineTooLong)
        } else {
            Parsed::Incomplete
        };
    };
    let limit = if is_multiget(buf) {
        MAX_GET_LINE
    } else {
        MAX_LINE_COMPLETE
    };
    if nl > limit {
        return Parsed::Close(Dropped::LineTooLong);
    }
    // memcached refuses a line shorter than four bytes with its end (`ab\n`, `a\r\n`).
    if nl + 1 < 4 {
        return error(ProtocolError::BadCommandLine, nl + 1, false);
    }
    let end = if buf[nl - 1] == b'\r' { nl - 1 } else { nl };
    parse_line(&buf[..end], nl + 1, buf, limits)
}

/// memcached lets only `get ` and `gets ` lines grow past [`MAX_LINE`].
fn is_multiget(buf: &[u8]) -> bool {
    let start = buf.iter().take(100).take_while(|&&b| b == b' ').count();
    let rest = &buf[start..];
    rest.starts_with(b"get ") || rest.starts_with(b"gets ")
}

/// The tokens of a line, at most [`MAX_TOKENS`], as memcached's tokenizer keeps them.
pub(crate) struct Tokens<'a> {
    items: [&'a [u8]; MAX_TOKENS],
    count: usize,
}

impl<'a> Tokens<'a> {
    pub(crate) fn new(line: &'a [u8]) -> Self {
        let mut items = [&line[..0]; MAX_TOKENS];
        let mut count = 0;
        for token in line.split(|&b| b == b' ').filter(|t| !t.is_empty()) {
            if count == MAX_TOKENS {
                break;
            }
            items[count] = token;
            count += 1;
        }
        Self { items, count }
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    pub(crate) fn get(&self, i: usize) -> &'a [u8] {
        if i < self.count { self.items[i] } else { b"" }
    }

    /// memcached's noreply check: the last token kept is exactly `noreply`.
    pub(crate) fn noreply(&self) -> bool {
        self.count > 0 && self.get(self.count - 1) == b"noreply"
    }
}

fn error<'a>(error: ProtocolError, consumed: usize, noreply: bool) -> Parsed<'a> {
    Parsed::Error {
        error,
        consumed,
        swallow: 0,
        noreply,
    }
}

/// A number token as memcached 1.6.45 reads most of them (mcmc's `tokto*`): decimal digits
/// only, no sign, no white space, at most `max_len` bytes, no overflow.
fn strict_digits(t: &[u8], max_len: usize) -> Option<u64> {
    if t.len() > max_len {
        return None;
    }
    t.iter().try_fold(0u64, |acc, &b| {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// An unsigned 64-bit token (delta, CAS unique, meta `C`, `E`, `J`, `D`).
pub(crate) fn token_u64(t: &[u8]) -> Option<u64> {
    strict_digits(t, 22)
}

/// An unsigned 32-bit token (verbosity, `cache_memlimit`, meta `F`).
pub(crate) fn token_u32(t: &[u8]) -> Option<u32> {
    strict_digits(t, 11).and_then(|v| u32::try_from(v).ok())
}

/// A signed 32-bit token (exptimes of touch, gat and flush_all, lengths, meta TTLs): an
/// optional `-`, then digits (a lone `-` is 0, as in memcached).
pub(crate) fn token_i32(t: &[u8]) -> Option<i32> {
    if t.len() > 11 {
        return None;
    }
    match t.split_first() {
        Some((b'-', digits)) => {
            let v = strict_digits(digits, 11)?;
            (v <= 1 << 31).then(|| (v as i64).wrapping_neg() as i32)
        }
        _ => strict_digits(t, 11).and_then(|v| i32::try_from(v).ok()),
    }
}

/// The command word: the bytes before the first space. memcached picks the command by it,
/// so a line starting with a space names no command that takes a key.
fn command_word(line: &[u8]) -> &[u8] {
    &line[..memchr(b' ', line).unwrap_or(line.len())]
}

fn parse_line<'a>(line: &'a [u8], consumed: usize, buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    let word = command_word(line);
    if word.len() == 2
        && let Some(parsed) = super::meta::parse(line, consumed, buf, limits)
    {
        return parsed;
    }
    let tokens = Tokens::new(line);
    let n = tokens.len();
    // Too few tokens: `bad command line format`, never silenced by `noreply`.
    let too_few = match word {
        b"get" | b"gets" | b"delete" => n < 2,
        b"gat" | b"gats" | b"incr" | b"decr" | b"touch" => n < 3,
        _ => false,
    };
    if too_few {
        return error(ProtocolError::BadCommandLine, consumed, false);
    }
    let request = match word {
        b"get" | b"gets" => return parse_get(line, 1, consumed, word == b"gets", None),
        b"gat" | b"gats" => {
            let Some(exptime) = token_i32(tokens.get(1)).map(i64::from) else {
                return error(ProtocolError::InvalidExptime, consumed, false);
            };
            return parse_get(line, 2, consumed, word == b"gats", Some(exptime));
        }
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
            return storage::parse(&tokens, consumed, buf, limits);
        }
        b"delete" | b"incr" | b"decr" | b"touch" => parse_keyed(word, &tokens),
        b"version" => Ok(Request::Version),
        b"quit" => Ok(Request::Quit),
        b"stats" => Ok(Request::Stats {
            args: rest_after(line, 1),
        }),
        // The rest are found by their first token, wherever the line starts.
        _ => match tokens.get(0) {
            b"flush_all" => parse_flush(&tokens),
            b"verbosity" => parse_verbosity(&tokens),
            b"shutdown" => Ok(Request::Shutdown {
                mode: match (n, tokens.get(1)) {
                    (1, _) => ShutdownMode::Immediate,
                    (2, t) if b"graceful".starts_with(t) => ShutdownMode::Graceful,
                    _ => ShutdownMode::Invalid,
                },
                noreply: tokens.noreply(),
            }),
            b"cache_memlimit" => parse_memlimit(&tokens),
            b"lru_crawler" => Ok(Request::LruCrawler {
                args: rest_after(line, 1),
            }),
            _ => {
                // An HTTP request line: close without a word.
                if n > 1 && tokens.get(n - 1).starts_with(b"HTTP/") {
                    return Parsed::Close(Dropped::ForeignProtocol);
                }
                Err(ProtocolError::UnknownCommand)
            }
        },
    };
    match request {
        Ok(request) => Parsed::Request(request, consumed),
        Err(e) => error(e, consumed, tokens.noreply()),
    }
}

/// The bytes after the first `skip` tokens, without leading spaces.
pub(crate) fn rest_after(line: &[u8], skip: usize) -> &[u8] {
    let mut rest = line;
    for _ in 0..skip {
        let start = rest.iter().take_while(|&&b| b == b' ').count();
        rest = &rest[start..];
        let len = rest.iter().take_while(|&&b| b != b' ').count();
        rest = &rest[len..];
    }
    let start = rest.iter().take_while(|&&b| b == b' ').count();
    &rest[start..]
}

fn parse_get<'a>(
    line: &'a [u8],
    skip: usize,
    consumed: usize,
    with_cas: bool,
    touch: Option<i64>,
) -> Parsed<'a> {
    let keys = rest_after(line, skip);
    if keys.is_empty() && touch.is_none() {
        return error(ProtocolError::BadCommandLine, consumed, false);
    }
    if keys.split(|&b| b == b' ').any(|k| k.len() > MAX_KEY_LEN) {
        return error(ProtocolError::BadCommandLine, consumed, false);
    }
    Parsed::Request(
        Request::Get {
            keys,
            with_cas,
            touch,
        },
        consumed,
    )
}

/// delete, incr, decr, touch: `<cmd> <key> [<arg>] ...`; tokens after those read are ignored.
fn parse_keyed<'a>(word: &[u8], tokens: &Tokens<'a>) -> Result<Request<'a>, ProtocolError> {
    let key = tokens.get(1);
    if key.len() > MAX_KEY_LEN {
        return Err(ProtocolError::BadCommandLine);
    }
    let noreply = tokens.noreply();
    Ok(match word {
        b"delete" => Request::Delete { key, noreply },
        b"touch" => Request::Touch {
            key,
            exptime: token_i32(tokens.get(2))
                .map(i64::from)
                .ok_or(ProtocolError::InvalidExptime)?,
            noreply,
        },
        _ => Request::Delta {
            key,
            incr: word == b"incr",
            delta: token_u64(tokens.get(2)).ok_or(ProtocolError::InvalidDelta)?,
            noreply,
        },
    })
}

/// `flush_all [delay] [noreply]`: a token after the command that is not the `noreply` is the
/// delay; more are ignored.
fn parse_flush<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, ProtocolError> {
    let noreply = tokens.noreply();
    let delay = if tokens.len() == if noreply { 2 } else { 1 } {
        0
    } else {
        token_i32(tokens.get(1))
            .map(i64::from)
            .ok_or(ProtocolError::InvalidExptime)?
    };
    Ok(Request::FlushAll { delay, noreply })
}

fn parse_verbosity<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, ProtocolError> {
    let level = token_u32(tokens.get(1))
        .filter(|_| tokens.len() > 1)
        .ok_or(ProtocolError::BadCommandLine)?;
    Ok(Request::Verbosity {
        level,
        noreply: tokens.noreply(),
    })
}

fn parse_memlimit<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, ProtocolError> {
    let megabytes = token_u32(tokens.get(1))
        .filter(|_| tokens.len() > 1)
        .ok_or(ProtocolError::UnknownCommand)?;
    Ok(Request::CacheMemlimit {
        megabytes: u64::from(megabytes),
        noreply: tokens.noreply(),
    })
}
