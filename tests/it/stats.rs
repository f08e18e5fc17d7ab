//! stats, stats settings/items/slabs/sizes/conns, stats reset: compared by
//! shape (names present, values numeric where memcached's are, relations
//! between counters), since the values differ between servers.
//!
//! The name lists are the exporter contract: the stats names memcached_exporter reads.

use crate::common::*;

const GENERAL_REQUIRED: &[&str] = &[
    "pid",
    "uptime",
    "time",
    "version",
    "pointer_size",
    "rusage_user",
    "rusage_system",
    "max_connections",
    "curr_connections",
    "total_connections",
    "rejected_connections",
    "cmd_get",
    "cmd_set",
    "cmd_flush",
    "cmd_touch",
    "cmd_meta",
    "get_hits",
    "get_misses",
    "get_expired",
    "get_flushed",
    "delete_misses",
    "delete_hits",
    "incr_misses",
    "incr_hits",
    "decr_misses",
    "decr_hits",
    "cas_misses",
    "cas_hits",
    "cas_badval",
    "touch_hits",
    "touch_misses",
    "store_too_large",
    "store_no_memory",
    "bytes_read",
    "bytes_written",
    "limit_maxbytes",
    "accepting_conns",
    "listen_disabled_num",
    "threads",
    "conn_yields",
    "hash_power_level",
    "hash_bytes",
    "malloc_fails",
    "bytes",
    "curr_items",
    "total_items",
    "expired_unfetched",
    "evicted_unfetched",
    "evictions",
    "reclaimed",
    "crawler_reclaimed",
    "crawler_items_checked",
    "lru_crawler_starts",
    "moves_to_cold",
    "moves_to_warm",
    "moves_within_lru",
    "direct_reclaims",
    "read_buf_bytes",
    "response_obj_bytes",
];

/// Stats whose values are text in memcached too.
const GENERAL_TEXT: &[&str] = &["version", "libevent", "slab_reassign_last_busy_status"];

const SETTINGS_REQUIRED: &[&str] = &[
    "maxbytes",
    "maxconns",
    "tcpport",
    "udpport",
    "inter",
    "verbosity",
    "evictions",
    "growth_factor",
    "chunk_size",
    "num_threads",
    "reqs_per_event",
    "cas_enabled",
    "tcp_backlog",
    "binding_protocol",
    "item_size_max",
    "maxconns_fast",
    "lru_crawler",
    "lru_crawler_sleep",
    "lru_crawler_tocrawl",
    "lru_maintainer_thread",
    "hot_lru_pct",
    "warm_lru_pct",
    "hot_max_factor",
    "warm_max_factor",
    "idle_timeout",
    "read_buf_mem_limit",
    "flush_enabled",
    "shutdown_command",
];

const SLAB_CLASS_REQUIRED: &[&str] = &[
    "chunk_size",
    "chunks_per_page",
    "total_pages",
    "total_chunks",
    "used_chunks",
    "free_chunks",
    "free_chunks_end",
    "get_hits",
    "cmd_set",
    "delete_hits",
    "incr_hits",
    "decr_hits",
    "cas_hits",
    "cas_badval",
    "touch_hits",
];

const ITEM_CLASS_REQUIRED: &[&str] = &[
    "number",
    "number_hot",
    "number_warm",
    "number_cold",
    "age_hot",
    "age_warm",
    "age",
    "mem_requested",
    "evicted",
    "evicted_nonzero",
    "evicted_time",
    "outofmemory",
    "tailrepairs",
    "reclaimed",
    "expired_unfetched",
    "evicted_unfetched",
    "evicted_active",
    "crawler_reclaimed",
    "crawler_items_checked",
    "lrutail_reflocked",
    "moves_to_cold",
    "moves_to_warm",
    "moves_within_lru",
    "direct_reclaims",
    "hits_to_hot",
    "hits_to_warm",
    "hits_to_cold",
    "hits_to_temp",
];

fn num(c: &Conn, st: &[(String, String)], name: &str) -> u64 {
    let v = lookup(st, name).unwrap_or_else(|| panic!("[{}] missing stat {name}", c.label()));
    v.parse().unwrap_or_else(|_| {
        panic!(
            "[{}] stat {name} = {v:?} is not an unsigned integer",
            c.label()
        )
    })
}

#[track_caller]
fn assert_no_duplicates(c: &Conn, st: &[(String, String)], cmd: &str) {
    let mut names: Vec<&str> = st.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    for w in names.windows(2) {
        assert_ne!(w[0], w[1], "[{}] `{cmd}` lists {} twice", c.label(), w[0]);
    }
}

#[test]
fn stats_general_shape() {
    for_each_target(&[], |srv, c| {
        let st = c.stats("stats");
        assert_no_duplicates(c, &st, "stats");
        for name in GENERAL_REQUIRED {
            assert!(
                lookup(&st, name).is_some(),
                "[{}] `stats` lacks {name}",
                c.label()
            );
        }
        for (k, v) in &st {
            assert!(
                !v.contains(' '),
                "[{}] stat {k} value {v:?} has a space",
                c.label()
            );
            if k.starts_with("rusage_") {
                assert!(
                    is_sec_usec(v),
                    "[{}] {k} = {v:?} is not sec.usec",
                    c.label()
                );
            } else if !GENERAL_TEXT.contains(&k.as_str()) {
                assert!(
                    is_number(v),
                    "[{}] stat {k} = {v:?} is not numeric",
                    c.label()
                );
            }
        }
        assert_eq!(num(c, &st, "pid"), srv.pid() as u64, "[{}] pid", c.label());
        let time = num(c, &st, "time") as i64;
        assert!(
            (time - unix_now()).abs() <= 5,
            "[{}] time {time} is not now",
            c.label()
        );
        assert!(num(c, &st, "uptime") < 60, "[{}] uptime", c.label());
        assert_eq!(num(c, &st, "max_connections"), 1024, "[{}]", c.label());
        assert_eq!(
            num(c, &st, "limit_maxbytes"),
            64 * 1024 * 1024,
            "[{}]",
            c.label()
        );
        assert_eq!(num(c, &st, "pointer_size"), 64, "[{}]", c.label());
        assert_eq!(num(c, &st, "accepting_conns"), 1, "[{}]", c.label());
        assert!(num(c, &st, "curr_connections") >= 1, "[{}]", c.label());
        assert!(num(c, &st, "threads") >= 1, "[{}]", c.label());
        assert_eq!(num(c, &st, "curr_items"), 0, "[{}]", c.label());
    });
}

#[test]
fn stats_counters_follow_commands() {
    for_each_target(&[], |_, c| {
        c.table(&[
            (b"set a 0 0 1\r\n1\r\n", b"STORED\r\n"),
            (b"set b 0 0 1\r\n2\r\n", b"STORED\r\n"),
            (b"add a 0 0 1\r\n1\r\n", b"NOT_STORED\r\n"),
            (
                b"get a b c\r\n",
                b"VALUE a 0 1\r\n1\r\nVALUE b 0 1\r\n2\r\nEND\r\n",
            ),
            (b"delete b\r\n", b"DELETED\r\n"),
            (b"delete b\r\n", b"NOT_FOUND\r\n"),
            (b"incr a 1\r\n", b"2\r\n"),
            (b"incr z 1\r\n", b"NOT_FOUND\r\n"),
            (b"decr a 1\r\n", b"1\r\n"),
            (b"decr z 1\r\n", b"NOT_FOUND\r\n"),
            (b"decr z 1\r\n", b"NOT_FOUND\r\n"),
            (b"touch a 0\r\n", b"TOUCHED\r\n"),
            (b"touch z 0\r\n", b"NOT_FOUND\r\n"),
            (b"cas a 0 0 1 999999\r\nx\r\n", b"EXISTS\r\n"),
            (b"cas z 0 0 1 1\r\nx\r\n", b"NOT_FOUND\r\n"),
        ]);
        let (_, _, cas) = c.gets("a").unwrap();
        c.roundtrip(
            format!("cas a 0 0 1 {cas}\r\n5\r\n").as_bytes(),
            b"STORED\r\n",
        );
        c.roundtrip(b"flush_all 100\r\n", b"OK\r\n");
        let st = c.stats("stats");
        let want: &[(&str, u64)] = &[
            ("cmd_get", 4), // a, b, c + the gets
            ("get_hits", 3),
            ("get_misses", 1),
            ("cmd_set", 6), // 2 set + add + 3 cas
            ("delete_hits", 1),
            ("delete_misses", 1),
            ("incr_hits", 1),
            ("incr_misses", 1),
            ("decr_hits", 1),
            ("decr_misses", 2),
            ("touch_hits", 1),
            ("touch_misses", 1),
            ("cmd_touch", 2),
            ("cas_hits", 1),
            ("cas_misses", 1),
            ("cas_badval", 1),
            ("cmd_flush", 1),
            ("curr_items", 1),
        ];
        for (name, v) in want {
            assert_eq!(num(c, &st, name), *v, "[{}] stat {name}", c.label());
        }
        assert!(
            num(c, &st, "total_items") >= 3,
            "[{}] total_items",
            c.label()
        );
        assert!(num(c, &st, "bytes") > 0, "[{}] bytes", c.label());
        assert!(
            num(c, &st, "bytes_read") > 100,
            "[{}] bytes_read",
            c.label()
        );
        assert!(
            num(c, &st, "bytes_written") > 50,
            "[{}] bytes_written",
            c.label()
        );
        assert!(num(c, &st, "total_connections") >= 1, "[{}]", c.label());
    });
}

#[test]
fn stats_reset_clears_counters() {
    for_each_target(&[], |_, c| {
        store(c, "a", b"1");
        c.roundtrip(b"get a nope\r\n", b"VALUE a 0 1\r\n1\r\nEND\r\n");
        c.roundtrip(b"stats reset\r\n", b"RESET\r\n");
        let st = c.stats("stats");
        for name in [
            "cmd_get",
            "get_hits",
            "get_misses",
            "cmd_set",
            "total_items",
        ] {
            assert_eq!(num(c, &st, name), 0, "[{}] {name} after reset", c.label());
        }
        assert_eq!(
            num(c, &st, "curr_items"),
            1,
            "[{}] items survive a reset",
            c.label()
        );
        c.roundtrip(b"get a\r\n", b"VALUE a 0 1\r\n1\r\nEND\r\n");
    });
}

#[test]
fn stats_settings_shape() {
    for_each_target(&["-c", "77", "-m", "32"], |srv, c| {
        let st = c.stats("stats settings");
        assert_no_duplicates(c, &st, "stats settings");
        for name in SETTINGS_REQUIRED {
            assert!(
                lookup(&st, name).is_some(),
                "[{}] `stats settings` lacks {name}",
                c.label()
            );
        }
        let want: &[(&str, String)] = &[
            ("maxconns", "77".into()),
            ("maxbytes", (32u64 << 20).to_string()),
            ("tcpport", srv.port.to_string()),
            ("udpport", "0".into()),
            ("item_size_max", "1048576".into()),
            ("cas_enabled", "yes".into()),
            ("evictions", "on".into()),
            ("flush_enabled", "yes".into()),
            ("shutdown_command", "no".into()),
            ("verbosity", "0".into()),
            ("idle_timeout", "0".into()),
        ];
        for (name, v) in want {
            assert_eq!(
                lookup(&st, name),
                Some(v.as_str()),
                "[{}] setting {name}",
                c.label()
            );
        }
        for name in ["lru_crawler", "lru_maintainer_thread", "maxconns_fast"] {
            let v = lookup(&st, name).unwrap();
            assert!(v == "yes" || v == "no", "[{}] {name} = {v:?}", c.label());
        }
        if lookup(&st, "lru_crawler") == Some("yes") {
            for name in [
                "lru_crawler_sleep",
                "lru_crawler_tocrawl",
                "hot_lru_pct",
                "warm_lru_pct",
                "hot_max_factor",
                "warm_max_factor",
            ] {
                let v = lookup(&st, name).unwrap();
                assert!(is_number(v), "[{}] {name} = {v:?} not numeric", c.label());
            }
        }
    });
}

#[test]
fn stats_settings_reflect_flags() {
    for_each_target(
        &["-C", "-M", "-A", "-v", "-I", "2m", "-o", "idle_timeout=7"],
        |_, c| {
            let st = c.stats("stats settings");
            let want = [
                ("cas_enabled", "no"),
                ("evictions", "off"),
                ("shutdown_command", "yes"),
                ("verbosity", "1"),
                ("item_size_max", "2097152"),
                ("idle_timeout", "7"),
            ];
            for (name, v) in want {
                assert_eq!(lookup(&st, name), Some(v), "[{}] setting {name}", c.label());
            }
        },
    );
}

#[test]
fn stats_items_and_slabs_shape() {
    for_each_target(&[], |_, c| {
        store(c, "small", b"x");
        store(c, "big", &[b'b'; 5000]);
        c.roundtrip(b"get small\r\n", b"VALUE small 0 1\r\nx\r\nEND\r\n");

        let items = c.stats("stats items");
        assert_no_duplicates(c, &items, "stats items");
        let mut item_classes = Vec::new();
        let mut number_total = 0;
        for (k, v) in &items {
            let mut parts = k.split(':');
            let (pre, id, name) = (parts.next(), parts.next(), parts.next());
            assert!(
                pre == Some("items")
                    && id.is_some_and(is_int)
                    && name.is_some()
                    && parts.next().is_none(),
                "[{}] bad `stats items` name {k:?}",
                c.label()
            );
            assert!(is_number(v), "[{}] {k} = {v:?} not numeric", c.label());
            let (id, name) = (id.unwrap().to_string(), name.unwrap());
            assert!(
                name != "store_too_large" && name != "store_no_memory",
                "[{}] {k} breaks memcached_exporter",
                c.label()
            );
            if name == "number" {
                number_total += v.parse::<u64>().unwrap();
            }
            if !item_classes.contains(&id) {
                item_classes.push(id);
            }
        }
        assert!(
            !item_classes.is_empty(),
            "[{}] `stats items` empty with 2 items",
            c.label()
        );
        assert_eq!(number_total, 2, "[{}] sum of items:*:number", c.label());
        for id in &item_classes {
            for name in ITEM_CLASS_REQUIRED {
                let k = format!("items:{id}:{name}");
                assert!(
                    lookup(&items, &k).is_some(),
                    "[{}] `stats items` lacks {k}",
                    c.label()
                );
            }
        }

        let slabs = c.stats("stats slabs");
        assert_no_duplicates(c, &slabs, "stats slabs");
        let mut slab_classes = Vec::new();
        for (k, v) in &slabs {
            assert!(is_number(v), "[{}] {k} = {v:?} not numeric", c.label());
            if k == "active_slabs" || k == "total_malloced" {
                continue;
            }
            let (id, name) = k
                .split_once(':')
                .unwrap_or_else(|| panic!("[{}] bad `stats slabs` name {k:?}", c.label()));
            assert!(is_int(id), "[{}] non-integer class id in {k:?}", c.label());
            assert_ne!(
                name,
                "mem_requested",
                "[{}] {k} belongs to `stats items`",
                c.label()
            );
            if !slab_classes.contains(&id.to_string()) {
                slab_classes.push(id.to_string());
            }
        }
        for name in ["active_slabs", "total_malloced"] {
            assert!(
                lookup(&slabs, name).is_some(),
                "[{}] `stats slabs` lacks {name}",
                c.label()
            );
        }
        assert!(num(c, &slabs, "total_malloced") > 0, "[{}]", c.label());
        for id in &slab_classes {
            for name in SLAB_CLASS_REQUIRED {
                let k = format!("{id}:{name}");
                assert!(
                    lookup(&slabs, &k).is_some(),
                    "[{}] `stats slabs` lacks {k}",
                    c.label()
                );
            }
        }
        for id in &item_classes {
            assert!(
                slab_classes.contains(id),
                "[{}] class {id} in items, not in slabs",
                c.label()
            );
        }
        let hits: u64 = slab_classes
            .iter()
            .map(|id| num(c, &slabs, &format!("{id}:get_hits")))
            .sum();
        assert_eq!(hits, 1, "[{}] sum of <class>:get_hits", c.label());
    });
}

#[test]
fn stats_sizes_disabled_by_default() {
    for_each_target(&[], |_, c| {
        c.roundtrip(b"stats sizes\r\n", b"STAT sizes_status disabled\r\nEND\r\n");
    });
}

#[test]
fn stats_conns_lists_this_connection() {
    for_each_target(&[], |srv, c| {
        c.roundtrip(b"get x\r\n", b"END\r\n");
        let local = c.stream().local_addr().unwrap();
        let st = c.stats("stats conns");
        let mut found_self = false;
        for (k, v) in &st {
            let (fd, name) = k
                .split_once(':')
                .unwrap_or_else(|| panic!("[{}] bad `stats conns` name {k:?}", c.label()));
            assert!(is_int(fd), "[{}] bad fd in {k:?}", c.label());
            assert!(
                [
                    "addr",
                    "listen_addr",
                    "state",
                    "secs_since_last_cmd",
                    "resps_waiting"
                ]
                .contains(&name),
                "[{}] unexpected `stats conns` field {k:?}",
                c.label()
            );
            if name == "addr" && *v == format!("tcp:{local}") {
                found_self = true;
            }
            if name == "listen_addr" {
                assert_eq!(*v, format!("tcp:127.0.0.1:{}", srv.port), "[{}]", c.label());
            }
            if name == "secs_since_last_cmd" {
                assert!(is_int(v), "[{}] {k} = {v:?}", c.label());
            }
        }
        assert!(
            found_self,
            "[{}] `stats conns` lacks tcp:{local}: {st:?}",
            c.label()
        );
    });
}
