//! What the parsers hand back and what they are given: [`Request`] and its parts, the
//! [`Parsed`] answer for the bytes buffered so far, the errors, and the [`Limits`] to enforce.
//! Shared by both dialects ([`super::ascii`] and [`super::meta`]); imports neither.

use std::borrow::Cow;

/// Longest key memcached accepts ("the key must not exceed 250 characters", protocol.txt, Keys).
pub const MAX_KEY_LEN: usize = 250;

/// How a storage command treats an existing item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas(u64),
}

/// `shutdown [graceful]`; anything else is refused once shutdown is enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    Immediate,
    Graceful,
    Invalid,
}

/// One classic command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// get, gets, gat, gats. `keys` is the space-separated rest of the line, already checked.
    Get {
        keys: &'a [u8],
        with_cas: bool,
        touch: Option<i64>,
    },
    Store {
        mode: StoreMode,
        key: &'a [u8],
        flags: u32,
        exptime: i64,
        value: &'a [u8],
        noreply: bool,
    },
    /// A storage command whose data exceeds the item size limit. The connection skips the
    /// `swallow` bytes of data and terminator that follow the line.
    TooLarge {
        mode: StoreMode,
        key: Cow<'a, [u8]>,
        swallow: usize,
        noreply: bool,
    },
    Delete {
        key: &'a [u8],
        noreply: bool,
    },
    Delta {
        key: &'a [u8],
        incr: bool,
        delta: u64,
        noreply: bool,
    },
    Touch {
        key: &'a [u8],
        exptime: i64,
        noreply: bool,
    },
    FlushAll {
        delay: i64,
        noreply: bool,
    },
    Version,
    Verbosity {
        level: u32,
        noreply: bool,
    },
    Quit,
    Shutdown {
        mode: ShutdownMode,
        noreply: bool,
    },
    CacheMemlimit {
        megabytes: u64,
        noreply: bool,
    },
    /// `stats` and its sub-commands; `args` is the rest of the line.
    Stats {
        args: &'a [u8],
    },
    /// mg, ms, md, ma, mn, me.
    Meta(Meta<'a>),
    /// `lru_crawler <subcommand> ...`; `args` is the rest of the line.
    LruCrawler {
        args: &'a [u8],
    },
    /// `refresh_certs`: reload the TLS certificates (`-Z`).
    RefreshCerts,
}

impl Request<'_> {
    /// Whether the client asked for no reply.
    pub fn noreply(&self) -> bool {
        match *self {
            Request::Store { noreply, .. }
            | Request::TooLarge { noreply, .. }
            | Request::Delete { noreply, .. }
            | Request::Delta { noreply, .. }
            | Request::Touch { noreply, .. }
            | Request::FlushAll { noreply, .. }
            | Request::Verbosity { noreply, .. }
            | Request::Shutdown { noreply, .. }
            | Request::CacheMemlimit { noreply, .. } => noreply,
            _ => false,
        }
    }

    /// Bytes of data after the request that must be skipped unread (a refused value).
    pub fn swallow(&self) -> usize {
        match self {
            Request::TooLarge { swallow, .. } => *swallow,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaCommand {
    Get,
    Set,
    Delete,
    Arithmetic,
    Debug,
    Noop,
}

/// The flags of one meta request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaFlags<'a> {
    /// The flags as sent (the rest of the line), for return flags in request order.
    pub(super) raw: &'a [u8],
    pub base64: bool,
    pub quiet: bool,
    pub value: bool,
    pub no_bump: bool,
    pub invalidate: bool,
    pub drop_value: bool,
    pub ttl: Option<i64>,
    pub vivify: Option<i64>,
    pub recache: Option<i64>,
    pub compare_cas: Option<u64>,
    pub new_cas: Option<u64>,
    pub client_flags: u32,
    pub mode: Option<u8>,
    pub delta: u64,
    pub initial: u64,
}

impl Default for MetaFlags<'_> {
    fn default() -> Self {
        Self {
            raw: b"",
            base64: false,
            quiet: false,
            value: false,
            no_bump: false,
            invalidate: false,
            drop_value: false,
            ttl: None,
            vivify: None,
            recache: None,
            compare_cas: None,
            new_cas: None,
            client_flags: 0,
            mode: None,
            delta: 1,
            initial: 0,
        }
    }
}

impl<'a> MetaFlags<'a> {
    /// The flag tokens in request order (`O123`, `t`, `k`, ...).
    pub fn tokens(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.raw.split(|&b| b == b' ').filter(|t| !t.is_empty())
    }
}

/// One meta request. `key` is decoded when the `b` flag was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta<'a> {
    pub command: MetaCommand,
    pub key: Cow<'a, [u8]>,
    pub flags: MetaFlags<'a>,
    /// `ms` data.
    pub value: &'a [u8],
}

/// A malformed request. Each variant is one reply line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// Unknown command or wrong shape: `ERROR`.
    UnknownCommand,
    BadCommandLine,
    BadDataChunk,
    InvalidExptime,
    InvalidDelta,
    DeleteUsage,
    DuplicateFlag,
    InvalidFlag,
    InvalidOrDuplicateFlag,
    BadToken,
    FlagsAreTooLong,
    OpaqueTooLong,
    KeyDecode,
    MsMode,
    MaMode,
    BadInitial,
    BadDeltaValue,
}

impl ProtocolError {
    /// The reply line, without its `\r\n`.
    pub fn message(self) -> &'static str {
        match self {
            ProtocolError::UnknownCommand => "ERROR",
            ProtocolError::BadCommandLine => "CLIENT_ERROR bad command line format",
            ProtocolError::BadDataChunk => "CLIENT_ERROR bad data chunk",
            ProtocolError::InvalidExptime => "CLIENT_ERROR invalid exptime argument",
            ProtocolError::InvalidDelta => "CLIENT_ERROR invalid numeric delta argument",
            ProtocolError::DeleteUsage => {
                "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"
            }
            ProtocolError::DuplicateFlag => "CLIENT_ERROR duplicate flag",
            ProtocolError::InvalidFlag => "CLIENT_ERROR invalid flag",
            ProtocolError::InvalidOrDuplicateFlag => "CLIENT_ERROR invalid or duplicate flag",
            ProtocolError::BadToken => "CLIENT_ERROR bad token in command line format",
            ProtocolError::FlagsAreTooLong => "CLIENT_ERROR options flags are too long",
            ProtocolError::OpaqueTooLong => "CLIENT_ERROR opaque token too long",
            ProtocolError::KeyDecode => "CLIENT_ERROR error decoding key",
            ProtocolError::MsMode => "CLIENT_ERROR invalid mode for ms M token",
            ProtocolError::MaMode => "CLIENT_ERROR invalid mode for ma M token",
            ProtocolError::BadInitial => "CLIENT_ERROR invalid numeric initial value",
            ProtocolError::BadDeltaValue => "CLIENT_ERROR invalid numeric delta value",
        }
    }
}

/// Why a connection is dropped without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// A line past the limit (memcached closes too).
    LineTooLong,
    /// An HTTP request line.
    ForeignProtocol,
}

/// The parser's answer for the bytes buffered so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A request and the input bytes it used.
    Request(Request<'a>, usize),
    /// Not enough input yet.
    Incomplete,
    /// Reply with the error (unless `noreply`), then drop `consumed` bytes of input and
    /// `swallow` more that have not necessarily arrived yet.
    Error {
        error: ProtocolError,
        consumed: usize,
        swallow: usize,
        noreply: bool,
    },
    /// Close the connection without a reply.
    Close(Dropped),
}

/// Limits the parser enforces, given by whoever runs it (the parser knows no store).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `-I`: the largest item. A storage command whose item would be larger is answered
    /// without buffering its data.
    item_size_max: usize,
    /// What an item of a key and a value of these lengths counts against `item_size_max`.
    item_len: fn(usize, usize) -> usize,
}

impl Limits {
    pub const fn new(item_size_max: usize, item_len: fn(usize, usize) -> usize) -> Self {
        Self {
            item_size_max,
            item_len,
        }
    }

    /// Whether an item of a key and a value of these lengths is larger than `-I`: such a
    /// storage request parses as [`Request::TooLarge`].
    pub fn too_large(&self, key_len: usize, value_len: usize) -> bool {
        (self.item_len)(key_len, value_len) > self.item_size_max
    }
}
