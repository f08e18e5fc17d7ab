//! memcrab: a memcached-compatible cache server.
//!
//! Module map (dependencies point down the list; none points up):
//! - [`server`]: listeners, `-t` worker threads each polling its own connections; shutdown
//!   and draining; the HTTP endpoint that serves [`metrics`].
//! - [`metrics`]: the Prometheus exporter, reading what `stats` reads.
//! - [`command`]: runs a request on the store and writes memcached's reply; stats.
//! - [`config`]: memcached's command line, validated into a [`config::Config`].
//! - [`telemetry`]: what the server measures about itself (counters, open connections,
//!   latency histograms), written by connections and commands, read by `stats` and
//!   [`metrics`]; imports no other module.
//! - [`protocol`]: bytes to requests, pure and synchronous.
//! - [`storage`]: the engine, synchronous and sharded, under the `-m` budget.
//! - [`number`]: numbers read as memcached reads them.
//!
//! Life of a request: a worker thread's poller reports the socket readable and the worker
//! reads into the connection's buffer; [`protocol::parse`]
//! returns a [`protocol::Request`] borrowing the key and value from that buffer;
//! [`command::Context::execute`] calls the [`storage::Store`], which hashes the key, locks one
//! shard, and for a hit copies the value straight into the connection's output buffer; once
//! every complete request in the read buffer has run, the connection writes all replies
//! with one write.

pub mod auth;
pub mod command;
pub mod config;
pub mod metrics;
pub mod number;
pub mod protocol;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod tls;
