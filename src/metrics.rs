//! Prometheus metrics under the names, types and labels memcached_exporter gives them (the
//! `memcached_*` families: `memcached_commands_total{command,status}`,
//! `memcached_slab_current_items{slab}` and the rest), so its dashboards and alerts work
//! unchanged, plus memcrab's own under the `memcrab_` prefix.
//!
//! Nothing is recorded on the request path for these: at each scrape, [`Exporter::render`]
//! reads the same counters `stats` reads (one engine snapshot, one shard lock at a time), sets
//! them on a private `metrics-exporter-prometheus` recorder, renders it, and appends the
//! request latency histograms, which connections keep in their own fixed-size buckets.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{counter, describe_counter, describe_gauge, gauge, with_local_recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::command::{Context, active_classes};
use crate::protocol;
use crate::storage::ClassStats;
use crate::telemetry::latency::{BUCKETS, CommandClass};
use crate::telemetry::{Closed, Rejected, cpu_time};

/// Families and their help texts. Counters end in `_total` except where memcached_exporter's
/// names do not (kept for compatibility).
const COUNTERS: &[(&str, &str)] = &[
    (
        "memcached_uptime_seconds",
        "Seconds since the server started.",
    ),
    (
        "memcached_read_bytes_total",
        "Bytes read from client connections.",
    ),
    (
        "memcached_written_bytes_total",
        "Bytes written to client connections.",
    ),
    (
        "memcached_connections_total",
        "Connections accepted since start.",
    ),
    (
        "memcached_connections_rejected_total",
        "Connections refused at the -c limit.",
    ),
    (
        "memcached_connections_yielded_total",
        "Times a connection yielded after -R requests.",
    ),
    (
        "memcached_connections_listener_disabled_total",
        "Times the listener paused at the limit.",
    ),
    (
        "memcached_commands_total",
        "Requests by command and outcome.",
    ),
    ("memcached_items_total", "Items stored since start."),
    (
        "memcached_items_evicted_total",
        "Unexpired items evicted to make room.",
    ),
    (
        "memcached_items_reclaimed_total",
        "Expired items whose memory was reused.",
    ),
    (
        "memcached_item_too_large_total",
        "Stores refused for exceeding -I.",
    ),
    (
        "memcached_item_no_memory_total",
        "Stores refused for lack of memory.",
    ),
    (
        "memcached_direct_reclaims_total",
        "Evictions and reclaims done inline by writers.",
    ),
    (
        "memcached_lru_crawler_starts_total",
        "Runs of the background reaper.",
    ),
    (
        "memcached_lru_crawler_reclaimed_total",
        "Expired items freed by the reaper.",
    ),
    (
        "memcached_lru_crawler_items_checked_total",
        "Items examined by the reaper.",
    ),
    (
        "memcached_lru_crawler_moves_to_cold_total",
        "Always 0: memcrab has one queue.",
    ),
    (
        "memcached_lru_crawler_moves_to_warm_total",
        "Always 0: memcrab has one queue.",
    ),
    (
        "memcached_lru_crawler_moves_within_lru_total",
        "Always 0: memcrab has one queue.",
    ),
    (
        "memcached_slab_items_crawler_reclaimed_total",
        "Items of the class freed by the reaper.",
    ),
    (
        "memcached_slab_items_evicted_total",
        "Unexpired items of the class evicted.",
    ),
    (
        "memcached_slab_items_evicted_nonzero_total",
        "Evicted items that had an expiry.",
    ),
    (
        "memcached_slab_items_evicted_time_seconds",
        "Idle seconds of the last evicted item.",
    ),
    (
        "memcached_slab_items_evicted_unfetched_total",
        "Evicted items never read.",
    ),
    (
        "memcached_slab_items_expired_unfetched_total",
        "Expired items never read.",
    ),
    (
        "memcached_slab_items_outofmemory_total",
        "Stores into the class refused for memory.",
    ),
    (
        "memcached_slab_items_reclaimed_total",
        "Expired items of the class reclaimed.",
    ),
    ("memcached_slab_items_tailrepairs_total", "Always 0."),
    (
        "memcached_slab_items_moves_to_cold",
        "Always 0: memcrab has one queue.",
    ),
    (
        "memcached_slab_items_moves_to_warm",
        "Always 0: memcrab has one queue.",
    ),
    (
        "memcached_slab_items_moves_within_lru",
        "Always 0: memcrab has one queue.",
    ),
    (
        "memcached_slab_lru_hits_total",
        "Get hits by queue segment.",
    ),
    (
        "memcached_slab_mem_requested_bytes",
        "Bytes of the items in the class.",
    ),
    (
        "memcached_slab_commands_total",
        "Per-class hits by command.",
    ),
    (
        "memcrab_evictions_total",
        "Items removed before a client deleted them, by reason.",
    ),
    (
        "memcrab_reaper_items_checked_total",
        "Items the background reaper has examined.",
    ),
    (
        "memcrab_reaper_runs_total",
        "Runs of the background reaper (each visits every shard).",
    ),
    ("memcrab_meta_commands_total", "Meta commands processed."),
    (
        "memcrab_auth_commands_total",
        "Authentication attempts: SASL auth and step (-S), ASCII authentication (-Y) (stats auth_cmds).",
    ),
    (
        "memcrab_auth_errors_total",
        "Failed authentication attempts (stats auth_errors).",
    ),
    (
        "memcrab_connections_closed_total",
        "Connections closed, by reason (client, quit, protocol_error, idle_timeout, shutdown, io_error, out_of_memory).",
    ),
    (
        "memcrab_protocol_errors_total",
        "Rejected input, by kind (unknown_command, bad_command_line, bad_data_chunk, line_too_long, foreign_protocol, binary_invalid, too_large, out_of_memory).",
    ),
    (
        "memcrab_connection_buffer_oom_total",
        "Requests refused for want of connection buffer memory, by direction (read: stats read_buf_oom, write: response_obj_oom).",
    ),
    (
        "memcrab_get_expired_total",
        "Gets that found only an expired item (stats get_expired).",
    ),
    (
        "memcrab_get_flushed_total",
        "Gets that found an item invalidated by flush_all (stats get_flushed).",
    ),
    (
        "memcrab_tls_handshake_errors_total",
        "TLS handshakes that failed (stats ssl_handshake_errors).",
    ),
    (
        "memcrab_tls_protocol_errors_total",
        "TLS errors after the handshake (stats ssl_proto_errors).",
    ),
    (
        "memcrab_tls_new_sessions_total",
        "TLS sessions stored for resumption (stats ssl_new_sessions; with ssl_session_cache).",
    ),
    (
        "memcrab_tls_cert_refreshes_total",
        "Certificate reloads, by result (ok, error): refresh_certs and changed files.",
    ),
];

const GAUGES: &[(&str, &str)] = &[
    ("memcached_up", "1: the server answered this scrape."),
    ("memcached_time_seconds", "Server time, unix seconds."),
    (
        "memcached_version",
        "The version the server reports, as a label.",
    ),
    (
        "memcached_current_connections",
        "Client connections open now.",
    ),
    ("memcached_max_connections", "The -c connection limit."),
    ("memcached_current_bytes", "Bytes of the items stored now."),
    (
        "memcached_limit_bytes",
        "The -m item memory limit in bytes.",
    ),
    ("memcached_current_items", "Items stored now."),
    (
        "memcached_malloced_bytes",
        "Item memory charged against the limit.",
    ),
    (
        "memcached_accepting_connections",
        "1 while new connections are accepted.",
    ),
    (
        "memcached_lru_crawler_enabled",
        "1 if the background reaper runs.",
    ),
    (
        "memcached_lru_crawler_sleep",
        "Reaper sleep setting, microseconds.",
    ),
    (
        "memcached_lru_crawler_to_crawl",
        "Reaper items-per-run setting.",
    ),
    (
        "memcached_lru_crawler_maintainer_thread",
        "0: no segmented LRU maintainer.",
    ),
    (
        "memcached_lru_crawler_hot_percent",
        "Setting kept for compatibility.",
    ),
    (
        "memcached_lru_crawler_warm_percent",
        "Setting kept for compatibility.",
    ),
    (
        "memcached_lru_crawler_hot_max_factor",
        "Setting kept for compatibility.",
    ),
    (
        "memcached_lru_crawler_warm_max_factor",
        "Setting kept for compatibility.",
    ),
    ("memcached_slab_current_items", "Items in the class."),
    (
        "memcached_slab_items_age_seconds",
        "Always 0: memcrab keeps no per-class queue.",
    ),
    ("memcached_slab_hot_items", "Always 0: one queue."),
    ("memcached_slab_warm_items", "Always 0: one queue."),
    (
        "memcached_slab_cold_items",
        "Items in the class (one queue).",
    ),
    ("memcached_slab_temporary_items", "Always 0: one queue."),
    ("memcached_slab_hot_age_seconds", "Always 0: one queue."),
    ("memcached_slab_warm_age_seconds", "Always 0: one queue."),
    (
        "memcached_slab_chunk_size_bytes",
        "Chunk size of the class.",
    ),
    (
        "memcached_slab_chunks_per_page",
        "Chunks per 1 MiB page of the class.",
    ),
    (
        "memcached_slab_current_pages",
        "Pages the class's items would fill.",
    ),
    ("memcached_slab_current_chunks", "Chunks in those pages."),
    ("memcached_slab_chunks_used", "Chunks holding items."),
    ("memcached_slab_chunks_free", "Chunks free in those pages."),
    ("memcached_slab_chunks_free_end", "Always 0."),
    (
        "memcrab_connection_buffer_bytes",
        "Bytes held in connection buffers, outside -m.",
    ),
    (
        "memcrab_connection_buffer_limit_bytes",
        "The cap on connection buffers beyond their floors (-o read_buf_mem_limit; 0: none).",
    ),
    (
        "memcrab_hash_table_bytes",
        "Bytes of the key index, outside -m.",
    ),
    ("memcrab_threads", "Worker threads."),
    ("memcrab_draining", "1 from the shutdown signal until exit."),
    (
        "memcrab_build_info",
        "Constant 1, labelled with memcrab's version.",
    ),
    (
        "memcrab_tls_cert_expiry_timestamp_seconds",
        "When the server certificate expires (notAfter), unix seconds.",
    ),
    (
        "memcrab_tls_cert_last_refresh_timestamp_seconds",
        "When the certificates were last loaded, unix seconds (stats time_since_server_cert_refresh).",
    ),
];

/// Unix time at which the process started, from /proc (boot time + start ticks).
static PROCESS_START: std::sync::LazyLock<f64> = std::sync::LazyLock::new(process_start_time);

fn process_start_time() -> f64 {
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) start after the last ')'.
            let rest = &s[s.rfind(')')? + 2..];
            rest.split_whitespace().nth(19)?.parse::<f64>().ok()
        });
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    match (boot, ticks) {
        (Some(boot), Some(ticks)) if hz > 0.0 => boot + ticks / hz,
        _ => 0.0,
    }
}

/// The request latency family, rendered by hand (see the module doc).
const LATENCY: &str = "memcrab_request_duration_seconds";

pub struct Exporter {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    ctx: Arc<Context>,
}

impl Exporter {
    pub fn new(ctx: Arc<Context>) -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        with_local_recorder(&recorder, || {
            for &(name, help) in COUNTERS {
                describe_counter!(name, help);
            }
            for &(name, help) in GAUGES {
                describe_gauge!(name, help);
            }
        });
        Self {
            recorder,
            handle,
            ctx,
        }
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The Prometheus text for one scrape.
    pub fn render(&self) -> String {
        with_local_recorder(&self.recorder, || self.publish());
        let mut text = self.handle.render();
        self.render_latency(&mut text);
        render_process(&mut text);
        text
    }

    fn publish(&self) {
        let ctx = &self.ctx;
        let s = ctx.store.stats();
        let c = &ctx.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge!("memcached_up").set(1.0);
        counter!("memcached_uptime_seconds").absolute(ctx.started.elapsed().as_secs());
        gauge!("memcached_time_seconds").set(ctx.store.time().unix_now() as f64);
        gauge!("memcached_version", "version" => protocol::VERSION).set(1.0);
        gauge!(
            "memcrab_build_info",
            "version" => env!("CARGO_PKG_VERSION"),
            "revision" => option_env!("MEMCRAB_REVISION").unwrap_or("unknown")
        )
        .set(1.0);
        counter!("memcached_read_bytes_total").absolute(load(&c.bytes_read));
        counter!("memcached_written_bytes_total").absolute(load(&c.bytes_written));
        gauge!("memcached_current_connections").set(load(&c.curr_connections) as f64);
        gauge!("memcached_max_connections").set(ctx.config.max_conns as f64);
        counter!("memcached_connections_total").absolute(load(&c.total_connections));
        counter!("memcached_connections_rejected_total").absolute(load(&c.rejected_connections));
        counter!("memcached_connections_yielded_total").absolute(load(&c.conn_yields));
        counter!("memcached_connections_listener_disabled_total")
            .absolute(load(&c.listen_disabled_num));
        gauge!("memcached_current_bytes").set(s.totals.bytes as f64);
        gauge!("memcached_limit_bytes").set(s.limit as f64);
        gauge!("memcached_current_items").set(s.totals.number as f64);
        counter!("memcached_items_total").absolute(s.ops.total_items);
        counter!("memcached_items_evicted_total").absolute(s.totals.evicted);
        counter!("memcached_items_reclaimed_total").absolute(s.totals.reclaimed);
        counter!("memcached_item_too_large_total").absolute(s.ops.store_too_large);
        counter!("memcached_item_no_memory_total").absolute(s.ops.store_no_memory);
        counter!("memcached_direct_reclaims_total").absolute(s.totals.evicted + s.totals.reclaimed);
        gauge!("memcached_malloced_bytes").set(s.malloced as f64);
        let draining = ctx.draining.load(Ordering::Relaxed);
        gauge!("memcached_accepting_connections").set(if draining { 0.0 } else { 1.0 });

        let cmd_set = s.totals.cmd_set;
        let commands: [(&str, &str, u64); 15] = [
            ("get", "hit", s.totals.get_hits),
            ("get", "miss", s.ops.get_misses),
            ("delete", "hit", s.totals.delete_hits),
            ("delete", "miss", s.ops.delete_misses),
            ("incr", "hit", s.totals.incr_hits),
            ("incr", "miss", s.ops.incr_misses),
            ("decr", "hit", s.totals.decr_hits),
            ("decr", "miss", s.ops.decr_misses),
            ("cas", "hit", s.totals.cas_hits),
            ("cas", "miss", s.ops.cas_misses),
            ("cas", "badval", s.totals.cas_badval),
            ("touch", "hit", s.totals.touch_hits),
            ("touch", "miss", s.ops.touch_misses),
            (
                "set",
                "hit",
                cmd_set.saturating_sub(s.ops.cas_misses + s.totals.cas_hits + s.totals.cas_badval),
            ),
            ("flush", "hit", s.ops.flush_cmds),
        ];
        for (command, status, value) in commands {
            counter!("memcached_commands_total", "command" => command, "status" => status)
                .absolute(value);
        }

        let cfg = &ctx.config;
        gauge!("memcached_lru_crawler_enabled").set(f64::from(u8::from(cfg.lru_crawler)));
        if cfg.lru_crawler {
            gauge!("memcached_lru_crawler_sleep").set(cfg.lru_crawler_sleep as f64);
            gauge!("memcached_lru_crawler_to_crawl").set(cfg.lru_crawler_tocrawl as f64);
            gauge!("memcached_lru_crawler_maintainer_thread").set(0.0);
            gauge!("memcached_lru_crawler_hot_percent").set(20.0);
            gauge!("memcached_lru_crawler_warm_percent").set(40.0);
            gauge!("memcached_lru_crawler_hot_max_factor").set(0.2);
            gauge!("memcached_lru_crawler_warm_max_factor").set(2.0);
        }
        let passes = load(&c.reaper_runs);
        counter!("memcached_lru_crawler_starts_total").absolute(passes);
        counter!("memcached_lru_crawler_reclaimed_total").absolute(s.totals.crawler_reclaimed);
        counter!("memcached_lru_crawler_items_checked_total").absolute(s.ops.crawler_items_checked);
        counter!("memcached_lru_crawler_moves_to_cold_total").absolute(0);
        counter!("memcached_lru_crawler_moves_to_warm_total").absolute(0);
        counter!("memcached_lru_crawler_moves_within_lru_total").absolute(0);

        let classes = ctx.store.classes();
        for id in active_classes(&s) {
            let (per_page, pages) = classes.pages(id, s.classes[id].number);
            publish_class(id, &s.classes[id], classes.chunk_size(id), per_page, pages);
        }

        for (reason, value) in [
            ("capacity", s.totals.evicted),
            ("expired", s.totals.reclaimed),
            ("reaper", s.totals.crawler_reclaimed),
            ("flush", s.ops.flushed_items),
        ] {
            counter!("memcrab_evictions_total", "reason" => reason).absolute(value);
        }
        counter!("memcrab_reaper_items_checked_total").absolute(s.ops.crawler_items_checked);
        counter!("memcrab_reaper_runs_total").absolute(passes);
        counter!("memcrab_meta_commands_total").absolute(load(&c.meta_cmds));
        counter!("memcrab_auth_commands_total").absolute(load(&c.auth_cmds));
        counter!("memcrab_auth_errors_total").absolute(load(&c.auth_errors));
        for why in Closed::ALL {
            counter!("memcrab_connections_closed_total", "reason" => why.name())
                .absolute(load(&c.closed[why as usize]));
        }
        for kind in Rejected::ALL {
            counter!("memcrab_protocol_errors_total", "kind" => kind.name())
                .absolute(load(&c.rejected[kind as usize]));
        }
        counter!("memcrab_get_expired_total").absolute(s.ops.get_expired);
        counter!("memcrab_get_flushed_total").absolute(s.ops.get_flushed);
        gauge!("memcrab_connection_buffer_bytes", "direction" => "read")
            .set(c.read_buffer_bytes.load(Ordering::Relaxed).max(0) as f64);
        gauge!("memcrab_connection_buffer_bytes", "direction" => "write")
            .set(c.write_buffer_bytes.load(Ordering::Relaxed).max(0) as f64);
        let buffers = &self.ctx.buffers;
        let limit = buffers.limit();
        gauge!("memcrab_connection_buffer_limit_bytes").set(if limit == usize::MAX {
            0.0
        } else {
            limit as f64
        });
        counter!("memcrab_connection_buffer_oom_total", "direction" => "read")
            .absolute(load(&buffers.read_oom));
        counter!("memcrab_connection_buffer_oom_total", "direction" => "write")
            .absolute(load(&buffers.reply_oom));
        gauge!("memcrab_hash_table_bytes").set(s.index_bytes as f64);
        gauge!("memcrab_threads").set(cfg.threads as f64);
        gauge!("memcrab_draining").set(if draining { 1.0 } else { 0.0 });
        if let Some(tls) = &cfg.tls {
            let t = &tls.counters;
            counter!("memcrab_tls_handshake_errors_total").absolute(load(&t.handshake_errors));
            counter!("memcrab_tls_protocol_errors_total").absolute(load(&t.proto_errors));
            if tls.settings.session_cache {
                counter!("memcrab_tls_new_sessions_total").absolute(load(&t.new_sessions));
            }
            counter!("memcrab_tls_cert_refreshes_total", "result" => "ok")
                .absolute(load(&t.refreshes));
            counter!("memcrab_tls_cert_refreshes_total", "result" => "error")
                .absolute(load(&t.refresh_errors));
            gauge!("memcrab_tls_cert_expiry_timestamp_seconds")
                .set(t.not_after.load(Ordering::Relaxed) as f64);
            gauge!("memcrab_tls_cert_last_refresh_timestamp_seconds")
                .set(t.refreshed_at.load(Ordering::Relaxed) as f64);
        }
    }

    fn render_latency(&self, out: &mut String) {
        let latency = &self.ctx.latency;
        let _ = writeln!(
            out,
            "# HELP {LATENCY} Time from a request parsed to its reply queued.\n# TYPE {LATENCY} histogram"
        );
        for class in CommandClass::ALL {
            let snap = latency.snapshot(class);
            let label = class.label();
            for (bound, count) in BUCKETS.iter().zip(snap.cumulative) {
                let _ = writeln!(
                    out,
                    "{LATENCY}_bucket{{command=\"{label}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "{LATENCY}_bucket{{command=\"{label}\",le=\"+Inf\"}} {}",
                snap.count
            );
            let _ = writeln!(
                out,
                "{LATENCY}_sum{{command=\"{label}\"}} {}",
                snap.sum_seconds
            );
            let _ = writeln!(out, "{LATENCY}_count{{command=\"{label}\"}} {}", snap.count);
        }
    }
}

fn publish_class(id: usize, c: &ClassStats, chunk: usize, per_page: u64, pages: u64) {
    let slab = id.to_string();
    let g = |name: &'static str, v: u64| gauge!(name, "slab" => slab.clone()).set(v as f64);
    g("memcached_slab_current_items", c.number);
    g("memcached_slab_items_age_seconds", 0);
    g("memcached_slab_hot_items", 0);
    g("memcached_slab_warm_items", 0);
    g("memcached_slab_cold_items", c.number);
    g("memcached_slab_temporary_items", 0);
    g("memcached_slab_hot_age_seconds", 0);
    g("memcached_slab_warm_age_seconds", 0);
    g("memcached_slab_chunk_size_bytes", chunk as u64);
    g("memcached_slab_chunks_per_page", per_page);
    g("memcached_slab_current_pages", pages);
    g("memcached_slab_current_chunks", pages * per_page);
    g("memcached_slab_chunks_used", c.number);
    g("memcached_slab_chunks_free", pages * per_page - c.number);
    g("memcached_slab_chunks_free_end", 0);
    let k = |name: &'static str, v: u64| counter!(name, "slab" => slab.clone()).absolute(v);
    k(
        "memcached_slab_items_crawler_reclaimed_total",
        c.crawler_reclaimed,
    );
    k("memcached_slab_items_evicted_total", c.evicted);
    k(
        "memcached_slab_items_evicted_nonzero_total",
        c.evicted_nonzero,
    );
    k("memcached_slab_items_evicted_time_seconds", c.evicted_time);
    k(
        "memcached_slab_items_evicted_unfetched_total",
        c.evicted_unfetched,
    );
    k(
        "memcached_slab_items_expired_unfetched_total",
        c.expired_unfetched,
    );
    k("memcached_slab_items_outofmemory_total", c.outofmemory);
    k("memcached_slab_items_reclaimed_total", c.reclaimed);
    k("memcached_slab_items_tailrepairs_total", 0);
    k("memcached_slab_items_moves_to_cold", 0);
    k("memcached_slab_items_moves_to_warm", 0);
    k("memcached_slab_items_moves_within_lru", 0);
    k("memcached_slab_mem_requested_bytes", c.bytes);
    for (lru, v) in [
        ("hot", 0),
        ("warm", 0),
        ("cold", c.get_hits),
        ("temporary", 0),
    ] {
        counter!("memcached_slab_lru_hits_total", "slab" => slab.clone(), "lru" => lru).absolute(v);
    }
    for (command, status, v) in [
        ("get", "hit", c.get_hits),
        ("delete", "hit", c.delete_hits),
        ("incr", "hit", c.incr_hits),
        ("decr", "hit", c.decr_hits),
        ("cas", "hit", c.cas_hits),
        ("cas", "badval", c.cas_badval),
        ("touch", "hit", c.touch_hits),
        (
            "set",
            "hit",
            c.cmd_set.saturating_sub(c.cas_hits + c.cas_badval),
        ),
    ] {
        counter!(
            "memcached_slab_commands_total",
            "slab" => slab.clone(),
            "command" => command,
            "status" => status
        )
        .absolute(v);
    }
}

/// Float-valued counters and the standard process metrics, which the recorder (whole-number
/// counters) cannot carry: CPU seconds with microsecond precision, memory from /proc.
fn render_process(out: &mut String) {
    let (user, system) = cpu_time();
    let (user, system) = (user.as_secs_f64(), system.as_secs_f64());
    let mut family = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    family(
        "memcached_process_user_cpu_seconds_total",
        "counter",
        "User CPU seconds used by the server.",
        user,
    );
    family(
        "memcached_process_system_cpu_seconds_total",
        "counter",
        "System CPU seconds used by the server.",
        system,
    );
    family(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU seconds.",
        user + system,
    );
    let page = 4096.0;
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let mut fields = statm
            .split_whitespace()
            .map(|f| f.parse::<f64>().unwrap_or(0.0));
        let virt = fields.next().unwrap_or(0.0) * page;
        let rss = fields.next().unwrap_or(0.0) * page;
        family(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size.",
            virt,
        );
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size.",
            rss,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        family(
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            fds.count() as f64,
        );
    }
    // SAFETY: getrlimit writes into the struct we pass; RLIMIT_NOFILE is always valid.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        family(
            "process_max_fds",
            "gauge",
            "Maximum open file descriptors.",
            limit.rlim_cur as f64,
        );
    }
    family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process, unix seconds.",
        *PROCESS_START,
    );
}
