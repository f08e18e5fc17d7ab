//! memcrab: a memcached-compatible cache server.
//!
//! Module map (dependencies point down the list):
//! - [`config`]: memcached's command line, validated into a [`config::Config`].
//! - [`server`]: listeners, `-t` worker threads each polling its own connections; shutdown
//!   and draining.
//! - [`command`]: runs a request on the store and writes memcached's reply; stats.
//! - [`protocol`]: bytes to requests, pure and synchronous.
//! - [`storage`]: the engine, synchronous and sharded, under the `-m` budget.
//!
//! Life of a request: a worker thread's poller reports the socket readable and the worker
//! reads into the connection's buffer; [`protocol::parse`]
//! returns a [`protocol::Request`] borrowing the key and value from that buffer;
//! [`command::Context::execute`] calls the [`storage::Store`], which hashes the key, locks one
//! shard, and for a hit copies the value straight into the connection's output buffer; once
//! every complete request in the read buffer has run, the connection writes all replies
//! with one write.

pub mod command;
pub mod config;
pub mod metrics;
pub mod number;
pub mod protocol;
pub mod server;
pub mod storage;
