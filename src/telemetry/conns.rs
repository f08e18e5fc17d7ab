//! The connections and listeners open now, one [`ConnInfo`] each, with their states named
//! as memcached names them (`stats conns`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64};

/// One connection or listener, as `stats conns` shows it.
#[derive(Debug)]
pub struct ConnInfo {
    pub fd: i32,
    /// `tcp:<ip>:<port>` or `unix:<path>`.
    pub addr: String,
    /// For client connections, the listener's address.
    pub listen_addr: Option<Arc<str>>,
    /// Unix time of the last command.
    pub last_cmd: AtomicU64,
    pub state: AtomicU8,
}

impl ConnInfo {
    pub fn new(fd: i32, addr: String, listen_addr: Option<Arc<str>>, now: u64) -> Self {
        Self {
            fd,
            addr,
            listen_addr,
            last_cmd: AtomicU64::new(now),
            state: AtomicU8::new(state::NEW_CMD),
        }
    }
}

/// Connection states, named as memcached names them.
pub mod state {
    pub const LISTENING: u8 = 0;
    pub const NEW_CMD: u8 = 1;
    pub const WAITING: u8 = 2;
    pub const READ: u8 = 3;
    pub const PARSE_CMD: u8 = 4;
    pub const WRITE: u8 = 5;
    pub const NREAD: u8 = 6;
    pub const SWALLOW: u8 = 7;
    pub const CLOSING: u8 = 8;
}

/// memcached's name of a [`state`].
pub fn state_name(s: u8) -> &'static str {
    match s {
        state::LISTENING => "conn_listening",
        state::NEW_CMD => "conn_new_cmd",
        state::WAITING => "conn_waiting",
        state::READ => "conn_read",
        state::PARSE_CMD => "conn_parse_cmd",
        state::WRITE => "conn_write",
        state::NREAD => "conn_nread",
        state::SWALLOW => "conn_swallow",
        _ => "conn_closing",
    }
}
