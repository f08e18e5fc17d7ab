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
pub(crate) use crate::number::{parse_i32, parse_u32, parse_u64};

/// Without a newline in this many buffered bytes, a line is too long and the connection is
/// closed (memcached's rule), unless it is a `get`/`gets`, whose key lists may be long.
pub const MAX_LINE: usize = 2048;
/// A line whose newline did arrive is still refused past this length (memcached reads 16 KB
/// at a time, so it never sees a longer one complete).
pub const MAX_LINE_COMPLETE: usize = 16 * 1024;
/// The longest `get`/`gets` line: about 4,000 keys of 250 bytes.
pub const MAX_GET_LINE: usize = 1 << 20;
/// More tokens than any fixed-arity command takes; a line with more is not one of them.
const MAX_TOKENS: usize = 8;

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
    let end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    parse_line(&buf[..end], nl + 1, buf, limits)
}

/// memcached lets only `get ` and `gets ` lines grow past [`MAX_LINE`].
fn is_multiget(buf: &[u8]) -> bool {
    let start = buf.iter().take(100).take_while(|&&b| b == b' ').count();
    let rest = &buf[start..];
    rest.starts_with(b"get ") || rest.starts_with(b"gets ")
}

/// The tokens of a line, at most [`MAX_TOKENS`]; `count` keeps counting past that.
pub(crate) struct Tokens<'a> {
    items: [&'a [u8]; MAX_TOKENS],
    count: usize,
}

impl<'a> Tokens<'a> {
    pub(crate) fn new(line: &'a [u8]) -> Self {
        let mut items = [&line[..0]; MAX_TOKENS];
        let mut count = 0;
        for token in line.split(|&b| b == b' ').filter(|t| !t.is_empty()) {
            if count < MAX_TOKENS {
                items[count] = token;
            }
            count += 1;
        }
        Self { items, count }
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    pub(crate) fn get(&self, i: usize) -> &'a [u8] {
        if i < self.count.min(MAX_TOKENS) {
            self.items[i]
        } else {
            b""
        }
    }

    /// memcached's `set_noreply_maybe`: the last token is exactly `noreply`.
    pub(crate) fn noreply(&self) -> bool {
        self.count <= MAX_TOKENS && self.count > 1 && self.get(self.count - 1) == b"noreply"
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

fn parse_line<'a>(line: &'a [u8], consumed: usize, buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    if line.len() < 2 {
        return error(ProtocolError::BadCommandLine, consumed, false);
    }
    let tokens = Tokens::new(line);
    let n = tokens.len();
    let verb = tokens.get(0);
    if verb.len() == 2
        && verb[0] == b'm'
        && let Some(parsed) = super::meta::parse(line, consumed, buf, limits)
    {
        return parsed;
    }
    let request = match tokens.get(0) {
        b"get" => return parse_get(line, 1, consumed, false, None),
        b"gets" => return parse_get(line, 1, consumed, true, None),
        b"gat" | b"gats" => {
            if n < 2 {
                return error(ProtocolError::UnknownCommand, consumed, false);
            }
            let Some(exptime) = parse_i32(tokens.get(1)).map(i64::from) else {
                return error(ProtocolError::InvalidExptime, consumed, false);
            };
            let with_cas = tokens.get(0) == b"gats";
            return parse_get(line, 2, consumed, with_cas, Some(exptime));
        }
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
            return storage::parse(&tokens, consumed, buf, limits);
        }
        b"delete" => parse_delete(&tokens),
        b"incr" | b"decr" => parse_delta(&tokens),
        b"touch" => parse_touch(&tokens),
        b"flush_all" => parse_flush(&tokens),
        b"version" => Ok(Request::Version),
        b"quit" => Ok(Request::Quit),
        b"verbosity" => parse_verbosity(&tokens),
        b"shutdown" => Ok(Request::Shutdown {
            mode: match (n, tokens.get(1)) {
                (1, _) => ShutdownMode::Immediate,
                (2, b"graceful") => ShutdownMode::Graceful,
                _ => ShutdownMode::Invalid,
            },
        }),
        b"cache_memlimit" => parse_memlimit(&tokens),
        b"stats" => Ok(Request::Stats {
            args: rest_after(line, 1),
        }),
        b"lru_crawler" => Ok(Request::LruCrawler {
            args: rest_after(line, 1),
        }),
        _ => {
            // An HTTP request line: close without a word.
            if n > 0 && n <= MAX_TOKENS && tokens.get(n - 1).starts_with(b"HTTP/") {
                return Parsed::Close(Dropped::ForeignProtocol);
            }
            Err(ProtocolError::UnknownCommand)
        }
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

fn key(tokens: &Tokens<'_>) -> Result<(), ProtocolError> {
    if tokens.get(1).len() > MAX_KEY_LEN {
        Err(ProtocolError::BadCommandLine)
    } else {
        Ok(())
    }
}

fn parse_delete<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, ProtocolError> {
    let n = tokens.len();
    if !(2..=4).contains(&n) {
        return Err(ProtocolError::UnknownCommand);
    }
    key(tokens)?;
    let noreply = tokens.noreply();
    // Legacy `delete <key> 0` is accepted; any other hold time is refused.
    let valid = match n {
        2 => true,
        3 => tokens.get(2) == b"0" || noreply,
        _ => tokens.get(2) == b"0" && noreply,
    };
    if !valid {
        return Err(ProtocolError::DeleteUsage);
    }
    Ok(Request::Delete {
        key: tokens.get(1),
        noreply,
    })
}

fn parse_delta<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, ProtocolError> {
    if !(3..=4).contains(&tokens.len()) {
        return Err(ProtocolError::UnknownCommand);
    }
    key(tokens)?;
    let delta = parse_u64(tokens.get(2)).ok_or(ProtocolError::InvalidDelta)?;
    Ok(Request::Delta {
        key: tokens.get(1),
        incr: tokens.get(0) == b"incr",
        delta,
        noreply: tokens.noreply(),
    })
}

fn parse_touch<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, ProtocolError> {
    if !(3..=4).contains(&tokens.len()) {
        return Err(ProtocolError::UnknownCommand);
    }
    key(tokens)?;
    let exptime = parse_i32(tokens.get(2))
        .map(i64::from)
        .ok_or(ProtocolError::InvalidExptime)?;
    Ok(Request::Touch {
        key: tokens.get(1),
        exptime,
        noreply: tokens.noreply(),
    })
}

fn parse_flush<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, ProtocolError> {
    let n = tokens.len();
    if n > 3 {
        return Err(ProtocolError::UnknownCommand);
    }
    let noreply = tokens.noreply();
    let args = if noreply { n - 2 } else { n - 1 };
    let delay = match args {
        0 => 0,
        _ => parse_i32(tokens.get(1))
            .map(i64::from)
            .ok_or(ProtocolError::InvalidExptime)?,
    };
    Ok(Request::FlushAll { delay, noreply })
}

fn parse_verbosity<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, ProtocolError> {
    if !(2..=3).contains(&tokens.len()) {
        return Err(ProtocolError::UnknownCommand);
    }
    let level = parse_u32(tokens.get(1)).ok_or(ProtocolError::BadCommandLine)?;
    Ok(Request::Verbosity {
        level,
        noreply: tokens.noreply(),
    })
}

fn parse_memlimit<'a>(tokens: &Tokens<'a>) -> Result<Request<'a>, ProtocolError> {
    if !(2..=3).contains(&tokens.len()) {
        return Err(ProtocolError::UnknownCommand);
    }
    let megabytes = parse_u64(tokens.get(1)).ok_or(ProtocolError::UnknownCommand)?;
    Ok(Request::CacheMemlimit {
        megabytes,
        noreply: tokens.noreply(),
    })
}
