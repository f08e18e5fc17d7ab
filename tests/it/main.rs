//! Black-box wire tests for memcrab.
//!
//! Each test starts its own server process(es) on free 127.0.0.1 ports and
//! talks raw bytes. Wire tests run against memcrab and, when `memcached` is on
//! PATH, against memcached too (the "differential run"): the same request
//! bytes, the same expected reply bytes. Where Debian's memcached 1.6.18 and
//! upstream 1.6.45 differ, memcrab follows 1.6.45; those cases branch on
//! `srv.is_memcrab()` and are listed at the top of the module that holds them
//! (see `ascii_errors.rs` for the full list).

mod common;

mod ascii_admin;
mod ascii_arith;
mod ascii_errors;
mod ascii_retrieval;
mod ascii_storage;
mod cli;
mod eviction;
mod expiry;
mod limits;
mod meta;
mod noreply;
mod pipelining;
mod random_sequences;
mod stats;
