//! memcrab: a memcached-compatible cache server.
pub mod protocol;
pub mod storage;
