//! memcached's classic text protocol (protocol.txt, "Commands"): one line per command,
//! tokens split on spaces only, storage commands followed by a data block.
//!
//! Where memcached 1.6.18 and 1.6.45 answer differently, this follows 1.6.45 (see
//! docs/compatibility.md).

mod storage;

use super::request::{Dropped, Limits, MAX_KEY_LEN, Parsed, ProtocolError, Request, ShutdownMode};
use super::tokens::{Tokens, command_word, rest_after, token_i32, token_u32, token_u64};

fn error<'a>(error: ProtocolError, consumed: usize, noreply: bool) -> Parsed<'a> {
    Parsed::Error {
        error,
        consumed,
        swallow: 0,
        noreply,
    }
}

/// Parses a classic command line (without its line end); `consumed` is the line's length
/// with its end, `buf` the whole input, for a storage command's data.
pub(super) fn parse<'a>(
    line: &'a [u8],
    consumed: usize,
    buf: &'a [u8],
    limits: &Limits,
) -> Parsed<'a> {
    let word = command_word(line);
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
            b"refresh_certs" => Ok(Request::RefreshCerts),
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
