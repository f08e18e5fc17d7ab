//! What the running server measures about itself: server-wide counters, why connections
//! closed and which input was refused, the connections open now, request latencies and the
//! process's CPU time. Connections and commands write these; `stats` and the Prometheus
//! exporter read them.
//!
//! Named for what it holds, measurements, rather than for a reader: `stats` is a command
//! (and the engine keeps its own counters, `StoreStats`) and `metrics` is the exporter, one
//! of the two readers. It imports nothing else of the crate, so the server,
//! the commands and the exporter can all read it without depending on each other.

pub mod conns;
pub mod latency;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

pub use conns::ConnInfo;

/// Server-wide counters kept outside the engine. Updated once per read batch, not per request.
#[derive(Debug, Default)]
pub struct Counters {
    pub curr_connections: AtomicU64,
    pub total_connections: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub conn_yields: AtomicU64,
    pub idle_kicks: AtomicU64,
    pub listen_disabled_num: AtomicU64,
    /// Runs of the background reaper (`lru_crawler_starts`).
    pub reaper_runs: AtomicU64,
    pub meta_cmds: AtomicU64,
    /// Authentication attempts (SASL auth and step, ASCII authentication) and the failed.
    pub auth_cmds: AtomicU64,
    pub auth_errors: AtomicU64,
    /// Capacity of all connections' read and write buffers (memory outside `-m`).
    pub read_buffer_bytes: AtomicI64,
    pub write_buffer_bytes: AtomicI64,
    /// Connections closed, by [`Closed`] reason.
    pub closed: [AtomicU64; Closed::ALL.len()],
    /// Rejected input, by [`Rejected`] kind.
    pub rejected: [AtomicU64; Rejected::ALL.len()],
}
/// Input refused with an error reply or a close (`memcrab_protocol_errors_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// `ERROR`.
    UnknownCommand,
    /// A `CLIENT_ERROR` about the command line (format, flags, tokens, exptime, delta).
    BadCommandLine,
    /// `CLIENT_ERROR bad data chunk`.
    BadDataChunk,
    /// A line past the limit: the connection is closed.
    LineTooLong,
    /// An HTTP request line: the connection is closed.
    ForeignProtocol,
    /// A binary header memcached refuses (a wrong magic byte, lengths that do not add up, a
    /// key over 250 bytes, lengths an opcode does not take): the connection is closed.
    BinaryInvalid,
    /// `SERVER_ERROR object too large for cache`.
    TooLarge,
    /// `SERVER_ERROR out of memory ...`.
    OutOfMemory,
}

impl Rejected {
    pub const ALL: [Rejected; 8] = [
        Rejected::UnknownCommand,
        Rejected::BadCommandLine,
        Rejected::BadDataChunk,
        Rejected::LineTooLong,
        Rejected::ForeignProtocol,
        Rejected::BinaryInvalid,
        Rejected::TooLarge,
        Rejected::OutOfMemory,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Rejected::UnknownCommand => "unknown_command",
            Rejected::BadCommandLine => "bad_command_line",
            Rejected::BadDataChunk => "bad_data_chunk",
            Rejected::LineTooLong => "line_too_long",
            Rejected::ForeignProtocol => "foreign_protocol",
            Rejected::BinaryInvalid => "binary_invalid",
            Rejected::TooLarge => "too_large",
            Rejected::OutOfMemory => "out_of_memory",
        }
    }
}

impl Counters {
    pub fn reject(&self, kind: Rejected) {
        self.rejected[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a connection was closed (`memcrab_connections_closed_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// End of stream or reset from the peer.
    Client,
    /// `quit`.
    Quit,
    /// Input memcached also drops the connection for (an overlong line, foreign protocol).
    ProtocolError,
    /// `-o idle_timeout`.
    IdleTimeout,
    /// Server shutdown (the drain, or the `shutdown` command).
    Shutdown,
    /// A socket error.
    IoError,
    /// A request needed more buffer memory than the server-wide cap had left.
    OutOfMemory,
}

impl Closed {
    pub const ALL: [Closed; 7] = [
        Closed::Client,
        Closed::Quit,
        Closed::ProtocolError,
        Closed::IdleTimeout,
        Closed::Shutdown,
        Closed::IoError,
        Closed::OutOfMemory,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Closed::Client => "client",
            Closed::Quit => "quit",
            Closed::ProtocolError => "protocol_error",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Shutdown => "shutdown",
            Closed::IoError => "io_error",
            Closed::OutOfMemory => "out_of_memory",
        }
    }
}

/// User or system CPU time, as `getrusage` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTime {
    pub secs: libc::time_t,
    /// Microseconds past `secs`.
    pub micros: libc::suseconds_t,
}

impl CpuTime {
    pub fn as_secs_f64(self) -> f64 {
        self.secs as f64 + self.micros as f64 / 1e6
    }
}

/// The user and system CPU time the process has used.
pub fn cpu_time() -> (CpuTime, CpuTime) {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let time = |t: libc::timeval| CpuTime {
        secs: t.tv_sec,
        micros: t.tv_usec,
    };
    (time(ru.ru_utime), time(ru.ru_stime))
}
