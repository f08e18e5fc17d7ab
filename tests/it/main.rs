//! Black-box wire tests for memcrab.
//!
//! Each test starts its own server process(es) on free 127.0.0.1 ports and
//! talks raw bytes. Wire tests run against memcrab and memcached 1.6.45, the
//! release memcrab answers as (the "differential run"): the same request
//! bytes, the same expected reply bytes. The oracle is found as `common.rs`
//! says; another release (Debian's 1.6.18) is compared with only when named in
//! `MEMCRAB_IT_TARGETS`, and the cases where it answers differently branch on
//! `srv.legacy()`. The few places
//! where memcrab deliberately answers otherwise branch on `srv.is_memcrab()`
//! and are listed in docs/compatibility.md.

mod common;

mod ascii_admin;
mod ascii_arith;
mod ascii_errors;
mod ascii_retrieval;
mod ascii_storage;
mod auth;
mod binary;
mod cli;
mod eviction;
mod expiry;
mod limits;
mod meta;
mod noreply;
mod pipelining;
mod random_sequences;
mod stats;
mod tls;
mod tls_reload;
mod warm_restart;
