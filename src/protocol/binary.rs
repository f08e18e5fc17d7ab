//! The binary protocol's framing: a 24-byte header, extras, key and value, read as memcached
//! 1.6 reads them. Pure and synchronous, like the text parser: bytes in, a [`BinParsed`] out.
//!
//! Every length in the header comes from the network, so each relation is checked before a
//! byte is read or kept: the header, extras and key must be in the buffer before anything
//! is decided, as memcached reads them, and are never waited for beyond memcached's 16 KiB
//! read buffer; a value is waited for only
//! once its command is known to take one, its lengths add up, and it fits under `-I`; any
//! other declared body is never buffered, only skipped as it arrives.
//!
//! memcached's order, kept here because its replies depend on it:
//! 1. the magic byte (anything but 0x80 closes the connection without a reply), and a
//!    declared body over 1 GiB ("Invalid arguments", then close);
//! 2. key and extras longer than the declared body: "Unknown command", then close;
//! 3. (with `-S`, an unauthenticated request: "Auth failure." and close: the caller's);
//! 4. a key over 250 bytes: "Invalid arguments", then close;
//! 5. per opcode, the lengths it allows; otherwise "Invalid arguments", then close;
//! 6. an opcode it does not know: "Unknown command", and it then skips `body length`
//!    bytes *after* the key and extras it already read (memcached's count, kept so that the
//!    bytes that follow are read as it reads them).

use super::MAX_KEY_LEN;

/// The first byte of every request.
pub const REQUEST_MAGIC: u8 = 0x80;
/// The first byte of every response.
pub const RESPONSE_MAGIC: u8 = 0x81;
/// Bytes in a request or response header.
pub const HEADER_LEN: usize = 24;

/// Opcodes memcached 1.6 answers.
pub mod opcode {
    pub const GET: u8 = 0x00;
    pub const SET: u8 = 0x01;
    pub const ADD: u8 = 0x02;
    pub const REPLACE: u8 = 0x03;
    pub const DELETE: u8 = 0x04;
    pub const INCREMENT: u8 = 0x05;
    pub const DECREMENT: u8 = 0x06;
    pub const QUIT: u8 = 0x07;
    pub const FLUSH: u8 = 0x08;
    pub const GETQ: u8 = 0x09;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const GETK: u8 = 0x0c;
    pub const GETKQ: u8 = 0x0d;
    pub const APPEND: u8 = 0x0e;
    pub const PREPEND: u8 = 0x0f;
    pub const STAT: u8 = 0x10;
    pub const SETQ: u8 = 0x11;
    pub const ADDQ: u8 = 0x12;
    pub const REPLACEQ: u8 = 0x13;
    pub const DELETEQ: u8 = 0x14;
    pub const INCREMENTQ: u8 = 0x15;
    pub const DECREMENTQ: u8 = 0x16;
    pub const QUITQ: u8 = 0x17;
    pub const FLUSHQ: u8 = 0x18;
    pub const APPENDQ: u8 = 0x19;
    pub const PREPENDQ: u8 = 0x1a;
    pub const TOUCH: u8 = 0x1c;
    pub const GAT: u8 = 0x1d;
    pub const GATQ: u8 = 0x1e;
    pub const SASL_LIST_MECHS: u8 = 0x20;
    pub const SASL_AUTH: u8 = 0x21;
    pub const SASL_STEP: u8 = 0x22;
    pub const GATK: u8 = 0x23;
    pub const GATKQ: u8 = 0x24;
}

/// Response status codes, with the message memcached puts in the body.
pub mod status {
    pub const NO_ERROR: u16 = 0x00;
    pub const KEY_ENOENT: u16 = 0x01;
    pub const KEY_EEXISTS: u16 = 0x02;
    pub const E2BIG: u16 = 0x03;
    pub const EINVAL: u16 = 0x04;
    pub const NOT_STORED: u16 = 0x05;
    pub const DELTA_BADVAL: u16 = 0x06;
    pub const AUTH_ERROR: u16 = 0x20;
    pub const AUTH_CONTINUE: u16 = 0x21;
    pub const UNKNOWN_COMMAND: u16 = 0x81;
    pub const ENOMEM: u16 = 0x82;

    /// The text memcached 1.6 sends in the body of an error response.
    pub fn message(status: u16) -> &'static str {
        match status {
            KEY_ENOENT => "Not found",
            KEY_EEXISTS => "Data exists for key.",
            E2BIG => "Too large.",
            EINVAL => "Invalid arguments",
            NOT_STORED => "Not stored.",
            DELTA_BADVAL => "Non-numeric server-side value for incr or decr",
            AUTH_ERROR => "Auth failure.",
            AUTH_CONTINUE => "Auth continue",
            ENOMEM => "Out of memory",
            _ => "Unknown command",
        }
    }
}

/// A request header, fields in host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub opcode: u8,
    pub key_len: u16,
    pub extras_len: u8,
    pub body_len: u32,
    pub opaque: u32,
    pub cas: u64,
}

impl Header {
    /// Reads the header at the start of `buf` (at least [`HEADER_LEN`] bytes).
    fn read(buf: &[u8]) -> Self {
        let be16 = |i: usize| u16::from_be_bytes([buf[i], buf[i + 1]]);
        let be32 = |i: usize| u32::from_be_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
        Self {
            opcode: buf[1],
            key_len: be16(2),
            extras_len: buf[4],
            body_len: be32(8),
            opaque: be32(12),
            cas: u64::from_be_bytes(buf[16..24].try_into().expect("8 bytes")),
        }
    }
}

/// How a storage opcode treats an existing item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
}

/// A request, with its lengths checked; keys and values borrow from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// Get, GetQ, GetK, GetKQ; with `touch`, GAT, GATQ, GATK, GATKQ.
    Get {
        key: &'a [u8],
        quiet: bool,
        with_key: bool,
        touch: Option<u32>,
    },
    Touch {
        key: &'a [u8],
        exptime: u32,
    },
    /// Set, Add, Replace, Append, Prepend and their quiet forms. The header's CAS, when not
    /// 0, is compared.
    Store {
        op: StoreOp,
        key: &'a [u8],
        value: &'a [u8],
        flags: u32,
        exptime: u32,
        quiet: bool,
    },
    Delete {
        key: &'a [u8],
        quiet: bool,
    },
    /// Increment and Decrement: a miss creates `initial` unless `exptime` is 0xffffffff.
    Arithmetic {
        incr: bool,
        key: &'a [u8],
        delta: u64,
        initial: u64,
        exptime: u32,
        quiet: bool,
    },
    Quit {
        quiet: bool,
    },
    Flush {
        exptime: u32,
        quiet: bool,
    },
    Noop,
    Version,
    /// Stat with a group name (empty: the general stats).
    Stat {
        group: &'a [u8],
    },
    SaslListMechs,
    /// SASL auth and step: the mechanism in the key, the client's data in the value.
    SaslAuth {
        step: bool,
        mechanism: &'a [u8],
        data: &'a [u8],
    },
}

/// What the parser found at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinParsed<'a> {
    /// Not a whole request yet: at least this many bytes are needed (never more than 16 KiB
    /// of header, extras and key, or those and a value that fits under `-I`).
    Incomplete(usize),
    /// A request and the bytes it took.
    Request(Header, Command<'a>, usize),
    /// A storage request whose value can never fit under `-I`: answer "Too large.", take
    /// `used` bytes, then skip `skip` more as they arrive (the value, never buffered).
    TooLarge {
        header: Header,
        op: StoreOp,
        key: &'a [u8],
        quiet: bool,
        used: usize,
        skip: u64,
    },
    /// An opcode this server does not answer: "Unknown command", take `used`, skip `skip`.
    Unknown {
        header: Header,
        used: usize,
        skip: u64,
    },
    /// A SASL auth or step whose data is longer than any credential: a failed attempt;
    /// take `used`, skip `skip` (the data, never buffered).
    SaslTooLong {
        header: Header,
        mechanism: &'a [u8],
        /// Whether the data would fit an item (`-I`); memcached answers "Out of memory"
        /// when it would not.
        storable: bool,
        used: usize,
        skip: u64,
    },
    /// Answer with this error status, then close.
    Fatal { header: Header, status: u16 },
    /// Not a request (the magic byte is wrong): close without a reply.
    BadMagic,
    /// A header, extras and key longer than memcached's read buffer ([`MAX_HEAD_LEN`]):
    /// close without a reply once that much has come, as memcached does.
    HeadTooLong,
}

/// Parses one request from `buf`. `fits(key_len, value_len)` says whether an item of those
/// lengths can be stored (the store's `-I` decision).
/// `auth_required` (`-S` before the connection authenticated): every opcode but SASL's and
/// Version is answered "Auth failure." and the connection closed.
pub fn parse<'a>(
    buf: &'a [u8],
    fits: impl Fn(usize, usize) -> bool,
    auth_required: bool,
) -> BinParsed<'a> {
    if buf.len() < HEADER_LEN {
        return BinParsed::Incomplete(HEADER_LEN);
    }
    if buf[0] != REQUEST_MAGIC {
        return BinParsed::BadMagic;
    }
    let h = Header::read(buf);
    if h.body_len > MAX_BODY_LEN {
        return BinParsed::Fatal {
            header: h,
            status: status::EINVAL,
        };
    }
    let (key_len, extras_len) = (usize::from(h.key_len), usize::from(h.extras_len));
    let head = HEADER_LEN + extras_len + key_len;
    if head > MAX_HEAD_LEN {
        return if buf.len() >= MAX_HEAD_LEN {
            BinParsed::HeadTooLong
        } else {
            BinParsed::Incomplete(MAX_HEAD_LEN)
        };
    }
    if buf.len() < head {
        return BinParsed::Incomplete(head);
    }
    let body_len = u64::from(h.body_len);
    let fixed = (extras_len + key_len) as u64;
    if fixed > body_len {
        return BinParsed::Fatal {
            header: h,
            status: status::UNKNOWN_COMMAND,
        };
    }
    use opcode::*;
    if auth_required && !matches!(h.opcode, SASL_LIST_MECHS | SASL_AUTH | SASL_STEP | VERSION) {
        return BinParsed::Fatal {
            header: h,
            status: status::AUTH_ERROR,
        };
    }
    if key_len > MAX_KEY_LEN {
        return BinParsed::Fatal {
            header: h,
            status: status::EINVAL,
        };
    }
    let extras = &buf[HEADER_LEN..HEADER_LEN + extras_len];
    let key = &buf[HEADER_LEN + extras_len..head];
    let value_len = body_len - fixed;
    let invalid = BinParsed::Fatal {
        header: h,
        status: status::EINVAL,
    };
    let be32 = |at: usize| u32::from_be_bytes(extras[at..at + 4].try_into().expect("4 bytes"));
    let be64 = |at: usize| u64::from_be_bytes(extras[at..at + 8].try_into().expect("8 bytes"));
    let no_body = extras_len == 0 && key_len == 0 && body_len == 0;
    let command = match h.opcode {
        VERSION if no_body => Command::Version,
        NOOP if no_body => Command::Noop,
        QUIT | QUITQ if no_body => Command::Quit {
            quiet: h.opcode == QUITQ,
        },
        FLUSH | FLUSHQ
            if key_len == 0 && value_len == 0 && (extras_len == 0 || extras_len == 4) =>
        {
            Command::Flush {
                exptime: if extras_len == 4 { be32(0) } else { 0 },
                quiet: h.opcode == FLUSHQ,
            }
        }
        GET | GETQ | GETK | GETKQ if extras_len == 0 && key_len > 0 && value_len == 0 => {
            Command::Get {
                key,
                quiet: matches!(h.opcode, GETQ | GETKQ),
                with_key: matches!(h.opcode, GETK | GETKQ),
                touch: None,
            }
        }
        TOUCH if extras_len == 4 && key_len > 0 => Command::Touch {
            key,
            exptime: be32(0),
        },
        GAT | GATQ | GATK | GATKQ if extras_len == 4 && key_len > 0 => Command::Get {
            key,
            quiet: matches!(h.opcode, GATQ | GATKQ),
            with_key: matches!(h.opcode, GATK | GATKQ),
            touch: Some(be32(0)),
        },
        DELETE | DELETEQ if extras_len == 0 && key_len > 0 && value_len == 0 => Command::Delete {
            key,
            quiet: h.opcode == DELETEQ,
        },
        INCREMENT | DECREMENT | INCREMENTQ | DECREMENTQ
            if extras_len == 20 && key_len > 0 && value_len == 0 =>
        {
            Command::Arithmetic {
                incr: matches!(h.opcode, INCREMENT | INCREMENTQ),
                key,
                delta: be64(0),
                initial: be64(8),
                exptime: be32(16),
                quiet: matches!(h.opcode, INCREMENTQ | DECREMENTQ),
            }
        }
        STAT if extras_len == 0 => Command::Stat { group: key },
        SASL_LIST_MECHS if no_body => Command::SaslListMechs,
        SET | ADD | REPLACE | SETQ | ADDQ | REPLACEQ if extras_len == 8 && key_len > 0 => {
            let op = match h.opcode {
                SET | SETQ => StoreOp::Set,
                ADD | ADDQ => StoreOp::Add,
                _ => StoreOp::Replace,
            };
            let quiet = matches!(h.opcode, SETQ | ADDQ | REPLACEQ);
            return with_value(buf, h, key, value_len, &fits, op, quiet, |value| {
                Command::Store {
                    op,
                    key,
                    value,
                    flags: be32(0),
                    exptime: be32(4),
                    quiet,
                }
            });
        }
        APPEND | PREPEND | APPENDQ | PREPENDQ if extras_len == 0 && key_len > 0 => {
            let op = match h.opcode {
                APPEND | APPENDQ => StoreOp::Append,
                _ => StoreOp::Prepend,
            };
            let quiet = matches!(h.opcode, APPENDQ | PREPENDQ);
            return with_value(buf, h, key, value_len, &fits, op, quiet, |value| {
                Command::Store {
                    op,
                    key,
                    value,
                    flags: 0,
                    exptime: 0,
                    quiet,
                }
            });
        }
        SASL_AUTH | SASL_STEP if extras_len == 0 && key_len > 0 => {
            // A SASL exchange is a few hundred bytes: anything larger is no credential, and
            // is skipped, not buffered.
            if value_len > MAX_SASL_DATA {
                return BinParsed::SaslTooLong {
                    header: h,
                    mechanism: key,
                    storable: usize::try_from(value_len).is_ok_and(|len| fits(key_len, len)),
                    used: head,
                    skip: value_len,
                };
            }
            let end = head + value_len as usize;
            if buf.len() < end {
                return BinParsed::Incomplete(end);
            }
            let command = Command::SaslAuth {
                step: h.opcode == SASL_STEP,
                mechanism: key,
                data: &buf[head..end],
            };
            return BinParsed::Request(h, command, end);
        }
        VERSION | NOOP | QUIT | QUITQ | FLUSH | FLUSHQ | GET | GETQ | GETK | GETKQ | TOUCH
        | GAT | GATQ | GATK | GATKQ | DELETE | DELETEQ | INCREMENT | DECREMENT | INCREMENTQ
        | DECREMENTQ | STAT | SASL_LIST_MECHS | SET | ADD | REPLACE | SETQ | ADDQ | REPLACEQ
        | APPEND | PREPEND | APPENDQ | PREPENDQ | SASL_AUTH | SASL_STEP => return invalid,
        _ => {
            return BinParsed::Unknown {
                header: h,
                used: head,
                skip: body_len,
            };
        }
    };
    BinParsed::Request(h, command, head)
}

/// memcached reads a request's header, extras and key into its 16 KiB read buffer: a
/// request whose header, extras and key are longer closes the connection.
pub const MAX_HEAD_LEN: usize = 16 * 1024;

/// memcached refuses any declared body over 1 GiB at once ("Invalid arguments", close).
pub const MAX_BODY_LEN: u32 = 1 << 30;

/// The most SASL data a request may carry.
pub const MAX_SASL_DATA: u64 = 1024;

/// A storage request: the value is waited for only if it can be stored.
#[allow(clippy::too_many_arguments)]
fn with_value<'a>(
    buf: &'a [u8],
    header: Header,
    key: &'a [u8],
    value_len: u64,
    fits: &impl Fn(usize, usize) -> bool,
    op: StoreOp,
    quiet: bool,
    command: impl FnOnce(&'a [u8]) -> Command<'a>,
) -> BinParsed<'a> {
    let head = HEADER_LEN + usize::from(header.extras_len) + key.len();
    let storable = usize::try_from(value_len).is_ok_and(|len| fits(key.len(), len));
    if !storable {
        return BinParsed::TooLarge {
            header,
            op,
            key,
            quiet,
            used: head,
            skip: value_len,
        };
    }
    // `fits` bounds the value by `-I`, so this is a bounded wait.
    let end = head + value_len as usize;
    if buf.len() < end {
        return BinParsed::Incomplete(end);
    }
    BinParsed::Request(header, command(&buf[head..end]), end)
}

/// Appends the header of the response to `request`: its opcode and opaque echoed.
pub fn write_header(
    out: &mut Vec<u8>,
    request: &Header,
    status: u16,
    key_len: usize,
    extras_len: usize,
    body_len: usize,
    cas: u64,
) {
    out.push(RESPONSE_MAGIC);
    out.push(request.opcode);
    out.extend_from_slice(&(key_len as u16).to_be_bytes());
    out.push(extras_len as u8);
    out.push(0);
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&(body_len as u32).to_be_bytes());
    out.extend_from_slice(&request.opaque.to_be_bytes());
    out.extend_from_slice(&cas.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: u8, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut v = vec![REQUEST_MAGIC, op];
        v.extend_from_slice(&(key.len() as u16).to_be_bytes());
        v.push(extras.len() as u8);
        v.extend_from_slice(&[0, 0, 0]);
        v.extend_from_slice(&((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
        v.extend_from_slice(&7u32.to_be_bytes());
        v.extend_from_slice(&0u64.to_be_bytes());
        v.extend_from_slice(extras);
        v.extend_from_slice(key);
        v.extend_from_slice(value);
        v
    }

    fn fits(_: usize, v: usize) -> bool {
        v <= 1000
    }

    #[test]
    fn a_get_waits_for_its_key_then_parses() {
        let buf = req(opcode::GETK, &[], b"key", &[]);
        for cut in 0..buf.len() {
            assert!(matches!(
                parse(&buf[..cut], fits, false),
                BinParsed::Incomplete(_)
            ));
        }
        match parse(&buf, fits, false) {
            BinParsed::Request(
                h,
                Command::Get {
                    key,
                    with_key,
                    quiet,
                    touch,
                },
                used,
            ) => {
                assert_eq!(
                    (key, with_key, quiet, touch, used),
                    (&b"key"[..], true, false, None, buf.len())
                );
                assert_eq!(h.opaque, 7);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_set_waits_for_its_value_unless_it_is_too_large() {
        let mut extras = 5u32.to_be_bytes().to_vec();
        extras.extend_from_slice(&9u32.to_be_bytes());
        let buf = req(opcode::SETQ, &extras, b"k", b"value");
        assert!(
            matches!(parse(&buf[..buf.len() - 1], fits, false), BinParsed::Incomplete(n) if n == buf.len())
        );
        assert!(matches!(
            parse(&buf, fits, false),
            BinParsed::Request(
                _,
                Command::Store {
                    op: StoreOp::Set,
                    value: b"value",
                    flags: 5,
                    exptime: 9,
                    quiet: true,
                    ..
                },
                _
            )
        ));
        let big = req(opcode::SET, &extras, b"k", &[b'x'; 2000]);
        // Decided from the header and key alone: the value is never waited for.
        assert!(matches!(
            parse(&big[..HEADER_LEN + 9], fits, false),
            BinParsed::TooLarge { skip: 2000, used, .. } if used == HEADER_LEN + 9
        ));
    }

    #[test]
    fn declared_lengths_are_checked_before_use() {
        // A body shorter than key + extras.
        let mut buf = req(opcode::GET, &[], b"abc", &[]);
        buf[8..12].copy_from_slice(&2u32.to_be_bytes());
        assert!(matches!(
            parse(&buf, fits, false),
            BinParsed::Fatal {
                status: status::UNKNOWN_COMMAND,
                ..
            }
        ));
        // A large declared body on an unknown opcode is skipped, never buffered; over 1 GiB
        // it is refused.
        let mut unknown = req(0x50, &[], b"", &[]);
        unknown[8..12].copy_from_slice(&MAX_BODY_LEN.to_be_bytes());
        assert!(
            matches!(parse(&unknown, fits, false), BinParsed::Unknown { used: HEADER_LEN, skip, .. } if skip == u64::from(MAX_BODY_LEN))
        );
        unknown[8..12].copy_from_slice(&(MAX_BODY_LEN + 1).to_be_bytes());
        assert!(matches!(
            parse(&unknown, fits, false),
            BinParsed::Fatal {
                status: status::EINVAL,
                ..
            }
        ));
        // A huge declared body on a get is refused.
        let mut get = req(opcode::GET, &[], b"k", &[]);
        get[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            parse(&get, fits, false),
            BinParsed::Fatal {
                status: status::EINVAL,
                ..
            }
        ));
        // A long key.
        let long = req(opcode::GET, &[], &[b'k'; 251], &[]);
        assert!(matches!(
            parse(&long, fits, false),
            BinParsed::Fatal {
                status: status::EINVAL,
                ..
            }
        ));
        // Wrong extras for the opcode.
        assert!(matches!(
            parse(&req(opcode::SET, &[0; 4], b"k", b"v"), fits, false),
            BinParsed::Fatal {
                status: status::EINVAL,
                ..
            }
        ));
        assert!(matches!(
            parse(&req(opcode::NOOP, &[], b"k", &[]), fits, false),
            BinParsed::Fatal {
                status: status::EINVAL,
                ..
            }
        ));
        // Not a request.
        let mut bad = req(opcode::NOOP, &[], b"", &[]);
        bad[0] = 0x81;
        assert_eq!(parse(&bad, fits, false), BinParsed::BadMagic);
    }

    #[test]
    fn no_input_panics() {
        // Every header shape over a short buffer: lengths at their extremes.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut buf = seed.to_le_bytes().repeat(8);
            buf[0] = REQUEST_MAGIC;
            buf[1] = (seed >> 8) as u8 % 0x26;
            let len = (seed >> 16) as usize % buf.len();
            let _ = parse(&buf[..len], fits, false);
        }
    }
}
