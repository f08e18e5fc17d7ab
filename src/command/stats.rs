//! `stats` and its sub-commands, in memcached 1.6's names and order. Tools parse these
//! (memcached_exporter fails a scrape on a non-numeric value), so every line memcached sends
//! is sent, with a constant where memcrab has no such mechanism (documented in
//! docs/compatibility.md).

use std::sync::atomic::{AtomicU64, Ordering};

use super::reply::Admit;
use super::{Context, Progress, Resume, Room, line, stat};
use crate::config::Binding;
use crate::storage::StoreStats;
use crate::telemetry::conns::{state, state_name};
use crate::telemetry::{ConnInfo, CpuTime, cpu_time};

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// User and system CPU time as memcached prints them: `<seconds>.<6-digit microseconds>`.
fn rusage() -> (String, String) {
    let (user, system) = cpu_time();
    let tv = |t: CpuTime| format!("{}.{:06}", t.secs, t.micros);
    (tv(user), tv(system))
}

/// Classes shown by `stats items` and `stats slabs`: those holding items or with events.
pub fn active_classes(s: &StoreStats) -> impl Iterator<Item = usize> + '_ {
    s.classes.iter().enumerate().skip(1).filter_map(|(id, c)| {
        let active = c.number > 0 || c.cmd_set > 0 || c.evicted > 0 || c.get_hits > 0;
        active.then_some(id)
    })
}

/// Upper bounds of reply sizes, to ask the reply budget before writing: one connection's
/// lines of `stats conns`, one class's lines of `stats items`/`slabs`/`sizes`, one prefix of
/// `stats detail dump`, and any other `stats` page.
const CONN_STATS_BYTES: usize = 256;
const CLASS_STATS_BYTES: usize = 2048;
const DETAIL_LINE_BYTES: usize = 320;
const STATS_BYTES: usize = 8192;

/// Items `stats sizes` counts per shard lock hold.
const SIZES_SLICE_ITEMS: usize = 4096;

impl Context {
    pub(super) fn stats(
        &self,
        args: &[u8],
        conn: &ConnInfo,
        out: &mut Vec<u8>,
        room: &mut Room<'_>,
        resume: &mut Resume,
    ) -> Progress {
        let mut words = args.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let sub = words.next().unwrap_or(b"");
        // Room for the whole reply first (dumps stream and ask as they go): `stats conns`
        // grows with the connections, and every connection may ask at once.
        let estimate = match sub {
            b"conns" => self.conns.lock().len() * CONN_STATS_BYTES,
            b"items" | b"slabs" => self.store.classes().len() * CLASS_STATS_BYTES,
            // One line per 32-byte size that items have.
            b"sizes" if self.config.track_sizes => self.store.config().item_size_max / 32 * 24,
            b"detail" => self.detail_len() * DETAIL_LINE_BYTES,
            _ => STATS_BYTES,
        };
        match room.admit(out, estimate) {
            Admit::Fits => {}
            Admit::Pause => return Progress::Paused,
            Admit::Refuse => {
                line(out, "SERVER_ERROR out of memory writing stats");
                return Progress::DONE;
            }
        }
        match sub {
            b"reset" => {
                self.reset_stats();
                line(out, "RESET");
                return Progress::DONE;
            }
            b"conns" => self.stats_conns(conn, out),
            b"detail" => {
                self.stats_detail(words.next().unwrap_or(b""), out);
                return Progress::DONE;
            }
            b"cachedump" => {
                let rest: Vec<&[u8]> = words.collect();
                return self.stats_cachedump(&rest, out, room, resume);
            }
            page => {
                if !self.stats_page(page, out) {
                    line(out, "ERROR");
                    return Progress::DONE;
                }
            }
        }
        line(out, "END");
        Progress::DONE
    }

    /// The `STAT name value` lines of one of the groups both protocols serve (the general
    /// stats, `settings`, `items`, `slabs`, `sizes`); false for any other group.
    pub(super) fn stats_page(&self, group: &[u8], out: &mut Vec<u8>) -> bool {
        match group {
            b"" => self.stats_general(out),
            b"settings" => self.stats_settings(out),
            b"items" => self.stats_items(out),
            b"slabs" => self.stats_slabs(out),
            b"sizes" => self.stats_sizes(out),
            _ => return false,
        }
        true
    }

    /// `stats reset`: the counters memcached resets.
    pub(super) fn reset_stats(&self) {
        self.store.reset_stats();
        for c in [
            &self.counters.total_connections,
            &self.counters.rejected_connections,
            &self.counters.bytes_read,
            &self.counters.bytes_written,
            &self.counters.conn_yields,
            &self.counters.idle_kicks,
            &self.counters.listen_disabled_num,
            &self.counters.meta_cmds,
            &self.counters.auth_cmds,
            &self.counters.auth_errors,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn stats_general(&self, out: &mut Vec<u8>) {
        let s = self.store.stats();
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let time = self.store.time();
        let now = time.unix_now();
        let (user, system) = rusage();
        let curr_conns = load(&c.curr_connections);
        let cmd_set = s.totals.cmd_set;
        let buckets = s.index_buckets.max(1);
        stat(out, "pid", std::process::id());
        stat(out, "uptime", self.started.elapsed().as_secs());
        stat(out, "time", now);
        stat(out, "version", crate::protocol::VERSION);
        stat(out, "libevent", "none");
        stat(out, "pointer_size", usize::BITS);
        stat(out, "rusage_user", user);
        stat(out, "rusage_system", system);
        stat(out, "max_connections", self.config.max_conns);
        stat(out, "curr_connections", curr_conns);
        stat(out, "total_connections", load(&c.total_connections));
        if self.config.maxconns_fast {
            stat(out, "rejected_connections", load(&c.rejected_connections));
        }
        stat(out, "connection_structures", curr_conns);
        let buffers = &self.buffers;
        let gauge = |g: &std::sync::atomic::AtomicI64| g.load(Ordering::Relaxed).max(0);
        stat(out, "response_obj_oom", load(&buffers.reply_oom));
        stat(out, "response_obj_count", 0);
        stat(out, "response_obj_bytes", gauge(&c.write_buffer_bytes));
        stat(out, "read_buf_count", curr_conns);
        stat(out, "read_buf_bytes", gauge(&c.read_buffer_bytes));
        stat(out, "read_buf_bytes_free", 0);
        stat(out, "read_buf_oom", load(&buffers.read_oom));
        stat(out, "reserved_fds", 0);
        stat(out, "cmd_get", s.totals.get_hits + s.ops.get_misses);
        stat(out, "cmd_set", cmd_set);
        stat(out, "cmd_flush", s.ops.flush_cmds);
        stat(out, "cmd_touch", s.ops.touch_cmds);
        stat(out, "cmd_meta", load(&c.meta_cmds));
        stat(out, "get_hits", s.totals.get_hits);
        stat(out, "get_misses", s.ops.get_misses);
        stat(out, "get_expired", s.ops.get_expired);
        stat(out, "get_flushed", s.ops.get_flushed);
        stat(out, "delete_misses", s.ops.delete_misses);
        stat(out, "delete_hits", s.totals.delete_hits);
        stat(out, "incr_misses", s.ops.incr_misses);
        stat(out, "incr_hits", s.totals.incr_hits);
        stat(out, "decr_misses", s.ops.decr_misses);
        stat(out, "decr_hits", s.totals.decr_hits);
        stat(out, "cas_misses", s.ops.cas_misses);
        stat(out, "cas_hits", s.totals.cas_hits);
        stat(out, "cas_badval", s.totals.cas_badval);
        stat(out, "touch_hits", s.totals.touch_hits);
        stat(out, "touch_misses", s.ops.touch_misses);
        stat(out, "store_too_large", s.ops.store_too_large);
        stat(out, "store_no_memory", s.ops.store_no_memory);
        stat(out, "auth_cmds", load(&c.auth_cmds));
        stat(out, "auth_errors", load(&c.auth_errors));
        if self.config.idle_timeout > 0 {
            stat(out, "idle_kicks", load(&c.idle_kicks));
        }
        stat(out, "bytes_read", load(&c.bytes_read));
        stat(out, "bytes_written", load(&c.bytes_written));
        stat(out, "limit_maxbytes", s.limit);
        stat(
            out,
            "accepting_conns",
            u8::from(!self.draining.load(Ordering::Relaxed)),
        );
        stat(out, "listen_disabled_num", load(&c.listen_disabled_num));
        stat(out, "time_in_listen_disabled_us", 0);
        stat(out, "threads", self.config.threads);
        stat(out, "conn_yields", load(&c.conn_yields));
        stat(out, "hash_power_level", buckets.ilog2());
        stat(out, "hash_bytes", s.index_bytes);
        stat(out, "hash_is_expanding", u8::from(s.index_expanding > 0));
        for name in [
            "slab_reassign_rescues",
            "slab_reassign_chunk_rescues",
            "slab_reassign_inline_reclaim",
            "slab_reassign_busy_items",
            "slab_reassign_busy_deletes",
            "slab_reassign_busy_nomem",
        ] {
            stat(out, name, 0);
        }
        stat(out, "slab_reassign_last_busy_status", "none");
        stat(out, "slab_reassign_running", 0);
        stat(out, "slabs_moved", 0);
        stat(out, "lru_crawler_running", 0);
        stat(out, "lru_crawler_starts", load(&c.reaper_runs));
        stat(out, "lru_maintainer_juggles", 0);
        stat(out, "malloc_fails", 0);
        for name in [
            "log_worker_dropped",
            "log_worker_written",
            "log_watcher_skipped",
            "log_watcher_sent",
            "log_watchers",
        ] {
            stat(out, name, 0);
        }
        if let Some(tls) = &self.config.tls {
            let t = &tls.counters;
            if tls.settings.session_cache {
                stat(out, "ssl_new_sessions", load(&t.new_sessions));
            }
            stat(out, "ssl_handshake_errors", load(&t.handshake_errors));
            stat(out, "ssl_proto_errors", load(&t.proto_errors));
            stat(out, "time_since_server_cert_refresh", tls.since_refresh());
            // memcrab's own: failed refreshes (refresh_certs, or files that changed), and
            // the certificate's expiry (unix seconds), for an alert before it lapses.
            stat(out, "ssl_cert_refresh_errors", load(&t.refresh_errors));
            stat(
                out,
                "ssl_cert_not_after",
                t.not_after.load(Ordering::Relaxed),
            );
        }
        for name in ["unexpected_napi_ids", "round_robin_fallback"] {
            stat(out, name, 0);
        }
        stat(out, "bytes", s.totals.bytes);
        stat(out, "curr_items", s.totals.number);
        stat(out, "total_items", s.ops.total_items);
        stat(out, "slab_global_page_pool", 0);
        stat(out, "expired_unfetched", s.totals.expired_unfetched);
        stat(out, "evicted_unfetched", s.totals.evicted_unfetched);
        stat(out, "evicted_active", s.totals.evicted_active);
        stat(out, "evictions", s.totals.evicted);
        stat(out, "reclaimed", s.totals.reclaimed);
        stat(out, "crawler_reclaimed", s.totals.crawler_reclaimed);
        stat(out, "crawler_items_checked", s.ops.crawler_items_checked);
        stat(out, "lrutail_reflocked", 0);
        stat(out, "moves_to_cold", 0);
        stat(out, "moves_to_warm", 0);
        stat(out, "moves_within_lru", 0);
        stat(
            out,
            "direct_reclaims",
            s.totals.evicted + s.totals.reclaimed,
        );
        stat(out, "lru_bumps_dropped", 0);
    }

    fn stats_settings(&self, out: &mut Vec<u8>) {
        let cfg = &self.config;
        let st = &cfg.store;
        stat(out, "maxbytes", self.store.limit());
        stat(out, "maxconns", cfg.max_conns);
        stat(out, "tcpport", cfg.port);
        stat(out, "udpport", 0);
        stat(out, "inter", cfg.listen_display());
        stat(out, "verbosity", self.verbosity.load(Ordering::Relaxed));
        stat(out, "oldest", 0);
        stat(out, "evictions", if st.evictions { "on" } else { "off" });
        stat(
            out,
            "domain_socket",
            cfg.unix_socket
                .as_ref()
                .map_or("NULL".to_string(), |p| p.display().to_string()),
        );
        stat(out, "umask", format!("{:o}", cfg.unix_mask));
        stat(out, "shutdown_command", yes_no(cfg.shutdown_enabled));
        stat(out, "growth_factor", format!("{:.2}", st.growth_factor));
        stat(out, "chunk_size", st.min_chunk);
        stat(out, "num_threads", cfg.threads);
        stat(out, "num_threads_per_udp", cfg.threads);
        stat(out, "stat_key_prefix", cfg.stat_key_prefix);
        stat(
            out,
            "detail_enabled",
            yes_no(self.detail_on.load(Ordering::Relaxed)),
        );
        stat(out, "reqs_per_event", cfg.reqs_per_event);
        stat(out, "cas_enabled", yes_no(st.cas_enabled));
        stat(out, "tcp_backlog", cfg.backlog);
        stat(
            out,
            "binding_protocol",
            match cfg.protocol {
                Binding::Auto => "auto-negotiate",
                Binding::Ascii => "ascii",
                Binding::Binary => "binary",
            },
        );
        stat(out, "auth_enabled_sasl", yes_no(cfg.sasl_pwdb.is_some()));
        match &cfg.ascii_auth {
            Some((path, _)) => stat(out, "auth_enabled_ascii", path.display()),
            None => stat(out, "auth_enabled_ascii", "no"),
        }
        stat(out, "item_size_max", st.item_size_max);
        stat(out, "maxconns_fast", yes_no(cfg.maxconns_fast));
        stat(out, "hashpower_init", cfg.hashpower);
        stat(out, "slab_reassign", "yes");
        stat(out, "slab_automove", 1);
        stat(out, "slab_automove_ratio", "0.80");
        stat(out, "slab_automove_window", 30);
        stat(out, "slab_chunk_max", st.slab_chunk_max);
        stat(out, "lru_crawler", yes_no(cfg.lru_crawler));
        stat(out, "lru_crawler_sleep", cfg.lru_crawler_sleep);
        stat(out, "lru_crawler_tocrawl", cfg.lru_crawler_tocrawl);
        stat(out, "tail_repair_time", 0);
        stat(out, "flush_enabled", yes_no(cfg.flush_enabled));
        stat(out, "dump_enabled", yes_no(cfg.dump_enabled));
        stat(out, "hash_algorithm", "foldhash");
        stat(out, "lru_maintainer_thread", "no");
        stat(out, "lru_segmented", "no");
        stat(out, "hot_lru_pct", 20);
        stat(out, "warm_lru_pct", 40);
        stat(out, "hot_max_factor", "0.20");
        stat(out, "warm_max_factor", "2.00");
        stat(out, "temp_lru", "no");
        stat(out, "temporary_ttl", 61);
        stat(out, "idle_timeout", cfg.idle_timeout);
        stat(out, "watcher_logbuf_size", 262_144);
        stat(out, "worker_logbuf_size", 65_536);
        let limit = self.buffers.limit();
        stat(
            out,
            "read_buf_mem_limit",
            if limit == usize::MAX { 0 } else { limit },
        );
        stat(out, "track_sizes", yes_no(cfg.track_sizes));
        stat(out, "inline_ascii_response", "no");
        // memcached built with TLS (the oracle, Debian's) prints these with or without -Z.
        let t = &cfg.tls_settings;
        let path = |p: &Option<std::path::PathBuf>, none: &str| {
            p.as_ref()
                .map_or(none.to_string(), |p| p.display().to_string())
        };
        stat(out, "ssl_enabled", yes_no(cfg.tls.is_some()));
        stat(out, "ssl_chain_cert", path(&t.chain_cert, "(null)"));
        stat(out, "ssl_key", path(&t.key, "(null)"));
        stat(out, "ssl_verify_mode", t.verify_flags());
        stat(out, "ssl_keyformat", t.keyformat);
        stat(out, "ssl_ciphers", t.ciphers.as_deref().unwrap_or("NULL"));
        stat(out, "ssl_ca_cert", path(&t.ca_cert, "NULL"));
        stat(out, "ssl_wbuf_size", t.wbuf_size);
        stat(out, "ssl_session_cache", yes_no(t.session_cache));
        stat(out, "ssl_kernel_tls", yes_no(t.kernel_tls));
        stat(out, "ssl_min_version", t.min_version_text());
        // 1.6.45 prints 0 (1.6.18: "(null)").
        stat(out, "num_napi_ids", 0);
        match &self.config.memory_file {
            Some(path) => stat(out, "memory_file", path.display()),
            None => stat(out, "memory_file", "(null)"),
        }
        stat(out, "client_flags_size", 4);
    }

    fn stats_items(&self, out: &mut Vec<u8>) {
        let s = self.store.stats();
        for id in active_classes(&s) {
            let c = &s.classes[id];
            let mut item = |name: &str, value: u64| stat(out, &format!("items:{id}:{name}"), value);
            item("number", c.number);
            item("number_hot", 0);
            item("number_warm", 0);
            item("number_cold", c.number);
            item("age_hot", 0);
            item("age_warm", 0);
            item("age", 0);
            item("mem_requested", c.bytes);
            item("evicted", c.evicted);
            item("evicted_nonzero", c.evicted_nonzero);
            item("evicted_time", c.evicted_time);
            item("outofmemory", c.outofmemory);
            item("tailrepairs", 0);
            item("reclaimed", c.reclaimed);
            item("expired_unfetched", c.expired_unfetched);
            item("evicted_unfetched", c.evicted_unfetched);
            item("evicted_active", c.evicted_active);
            item("crawler_reclaimed", c.crawler_reclaimed);
            item("crawler_items_checked", 0);
            item("lrutail_reflocked", 0);
            item("moves_to_cold", 0);
            item("moves_to_warm", 0);
            item("moves_within_lru", 0);
            item("direct_reclaims", c.evicted + c.reclaimed);
            item("hits_to_hot", 0);
            item("hits_to_warm", 0);
            item("hits_to_cold", c.get_hits);
            item("hits_to_temp", 0);
        }
    }

    fn stats_slabs(&self, out: &mut Vec<u8>) {
        let s = self.store.stats();
        let classes = self.store.classes();
        let mut active = 0;
        for id in active_classes(&s) {
            active += 1;
            let c = &s.classes[id];
            let chunk = classes.chunk_size(id);
            let (per_page, pages) = classes.pages(id, c.number);
            let mut slab = |name: &str, value: u64| stat(out, &format!("{id}:{name}"), value);
            slab("chunk_size", chunk as u64);
            slab("chunks_per_page", per_page);
            slab("total_pages", pages);
            slab("total_chunks", pages * per_page);
            slab("used_chunks", c.number);
            slab("free_chunks", pages * per_page - c.number);
            slab("free_chunks_end", 0);
            slab("get_hits", c.get_hits);
            slab("cmd_set", c.cmd_set);
            slab("delete_hits", c.delete_hits);
            slab("incr_hits", c.incr_hits);
            slab("decr_hits", c.decr_hits);
            slab("cas_hits", c.cas_hits);
            slab("cas_badval", c.cas_badval);
            slab("touch_hits", c.touch_hits);
        }
        stat(out, "active_slabs", active);
        stat(out, "total_malloced", s.malloced);
    }

    fn stats_sizes(&self, out: &mut Vec<u8>) {
        if !self.config.track_sizes {
            stat(out, "sizes_status", "disabled");
            return;
        }
        let mut buckets = std::collections::BTreeMap::<usize, u64>::new();
        let mut cursor = crate::storage::DumpCursor::default();
        while !self
            .store
            .dump_slice(&mut cursor, 0, SIZES_SLICE_ITEMS, |it| {
                *buckets.entry(it.total_len().div_ceil(32) * 32).or_default() += 1;
            })
        {}
        for (size, count) in buckets {
            stat(out, &size.to_string(), count);
        }
    }

    fn stats_conns(&self, me: &ConnInfo, out: &mut Vec<u8>) {
        let now = self.store.time().unix_now();
        me.state.store(state::PARSE_CMD, Ordering::Relaxed);
        let conns: Vec<_> = self.conns.lock().values().cloned().collect();
        for c in conns {
            let fd = c.fd;
            stat(out, &format!("{fd}:addr"), &c.addr);
            if let Some(listen) = &c.listen_addr {
                stat(out, &format!("{fd}:listen_addr"), listen);
            }
            stat(
                out,
                &format!("{fd}:state"),
                state_name(c.state.load(Ordering::Relaxed)),
            );
            let idle = now.saturating_sub(c.last_cmd.load(Ordering::Relaxed));
            stat(out, &format!("{fd}:secs_since_last_cmd"), idle);
        }
    }
}

impl Context {
    /// `refresh_certs`: memcached's reply, `OK` or the loading error (the previous
    /// certificate keeps serving).
    pub(super) fn refresh_certs(&self, out: &mut Vec<u8>) {
        match &self.config.tls {
            None => line(out, "Error TLS not enabled"),
            Some(tls) => match tls.refresh() {
                Ok(()) => line(out, "OK"),
                Err(e) => {
                    eprintln!(
                        "refresh_certs failed, still serving the previous certificate: {}",
                        e.0
                    );
                    line(out, &e.0);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::command::BufferBudget;
    use crate::config::Config;
    use crate::protocol::Request;
    use crate::storage::{ManualClock, Store};

    fn stats(ctx: &Context, args: &[u8], budget: &BufferBudget, sent: usize) -> Vec<u8> {
        let me = ConnInfo::new(5, "tcp:127.0.0.1:2".into(), None, 0);
        let mut out = vec![b'x'; sent];
        let mut charged = 0;
        let mut room = Room {
            budget,
            charged: &mut charged,
            sent,
        };
        let req = Request::Stats { args };
        let progress = ctx.execute(&req, &me, &mut out, &mut room, &mut Resume::Start);
        assert_eq!(progress, Progress::DONE);
        out.split_off(sent)
    }

    #[test]
    fn a_stats_reply_that_finds_no_memory_is_refused_with_memcacheds_message() {
        let config = Config::default();
        let store = Arc::new(Store::new(config.store.clone(), ManualClock::new(1)));
        let ctx = Context::new(store, config);
        for fd in 0..200 {
            let addr = format!("tcp:127.0.0.1:{fd}");
            ctx.register(Arc::new(ConnInfo::new(fd, addr, None, 0)));
        }
        let roomy = BufferBudget::new(usize::MAX);
        assert!(stats(&ctx, b"conns", &roomy, 0).starts_with(b"STAT 0:addr"));
        // 200 connections' lines do not fit the reply floor, and the budget is spent.
        let spent = BufferBudget::new(0);
        assert_eq!(
            stats(&ctx, b"conns", &spent, 0),
            b"SERVER_ERROR out of memory writing stats\r\n"
        );
        // A small page fits the floor all the same.
        assert!(stats(&ctx, b"", &spent, 0).starts_with(b"STAT pid "));
    }
}
