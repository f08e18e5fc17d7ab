//! Bytes to requests. Pure and synchronous: no I/O, no storage. A parser looks at the
//! buffered input and answers with a [`Parsed`]: a request and the bytes it used, a need for
//! more bytes, an error to reply with, or an order to close the connection.
//!
//! Requests borrow keys and values from the input buffer, so parsing copies nothing.
//!
//! [`parse`] finds a request's line and picks its dialect; [`ascii`] (the classic text
//! commands) and [`meta`] (the meta commands) are siblings that share the request types
//! (`request`) and one tokenizer (`tokens`), and never call each other.

pub mod ascii;
pub mod binary;
pub mod meta;
mod request;
#[cfg(test)]
mod tests;
mod tokens;

pub use request::{
    Dropped, Limits, MAX_KEY_LEN, Meta, MetaCommand, MetaFlags, Parsed, ProtocolError, Request,
    ShutdownMode, StoreMode,
};
use tokens::command_word;

/// The version memcrab reports on the wire: the memcached release whose behaviour it follows.
pub const VERSION: &str = "1.6.45";

/// Without a newline in this many buffered bytes, a line is too long and the connection is
/// closed (memcached's rule), unless it is a `get`/`gets`, whose key lists may be long.
pub const MAX_LINE: usize = 2048;
/// A line whose newline did arrive is still refused past this length (memcached reads 16 KB
/// at a time, so it never sees a longer one complete).
pub const MAX_LINE_COMPLETE: usize = 16 * 1024;
/// The longest `get`/`gets` line: about 4,000 keys of 250 bytes.
pub const MAX_GET_LINE: usize = 1 << 20;

/// Parses the first request in `buf`: finds its line, then hands the line to the meta parser
/// when its command word is a meta command's, to the classic text parser otherwise.
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    let Some(nl) = tokens::find_short(b'\n', buf) else {
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
        return Parsed::Error {
            error: ProtocolError::BadCommandLine,
            consumed: nl + 1,
            swallow: 0,
            noreply: false,
        };
    }
    let end = if buf[nl - 1] == b'\r' { nl - 1 } else { nl };
    let line = &buf[..end];
    if let Some(command) = meta::command(command_word(line)) {
        return meta::parse(command, line, nl + 1, buf, limits);
    }
    ascii::parse(line, nl + 1, buf, limits)
}

/// memcached lets only `get ` and `gets ` lines grow past [`MAX_LINE`].
fn is_multiget(buf: &[u8]) -> bool {
    let start = buf.iter().take(100).take_while(|&&b| b == b' ').count();
    let rest = &buf[start..];
    rest.starts_with(b"get ") || rest.starts_with(b"gets ")
}
