//! Workloads and their results.

pub mod fill;
pub mod idle;
pub mod latency;
pub mod open;
pub mod throughput;
pub mod zipf;

use std::time::Duration;

use crate::machine::Sched;
use crate::options::Opts;
use crate::report::{Results, fmt_num, is_rate, medians};
use crate::tls::{self, Tls};

/// Requests per pipelined batch in the fill and preload phases.
pub const FILL_BATCH: usize = 100;

#[derive(Clone, Debug)]
pub enum Kind {
    /// Write `items` distinct items of random key and value lengths (one connection, batches
    /// of [`FILL_BATCH`] sets, each reply read), then multi-get every written key back.
    Fill {
        items: usize,
        key_len: (usize, usize),
        value_len: (usize, usize),
    },
    /// Timed load from `--conns` connections over `keys` preloaded items: closed loop, or with
    /// `rate` > 0 paced to `rate` requests/s in all (the same offered load for both servers).
    Throughput {
        keys: u64,
        value_len: usize,
        mode: Mode,
        rate: u64,
        duration: Duration,
    },
    /// [`Kind::Fill`] with 20-40 B keys once per value size `(value_len, items)`, each size on
    /// a fresh server.
    FillSizes { sizes: Vec<(usize, usize)> },
    /// Cache-aside clients over `keys` keys drawn by zipf(`theta`): `get`, and on a miss `set`
    /// the key's value (length in `value_len`, derived from the key). `warmup` then `measured`
    /// gets in all, split evenly over the `--conns` connections.
    Zipf {
        keys: u64,
        theta: f64,
        value_len: (usize, usize),
        warmup: u64,
        measured: u64,
    },
    /// `conns` idle connections; the server's RSS before and after.
    Idle { conns: usize },
    /// Open loop: Poisson arrivals at offered loads from a fraction of memcached's capacity
    /// to near it, one server per round running them all ([`open`]).
    OpenLoop(open::Sweep),
}

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// `get_pct`% get, the rest set, `depth` requests written at once then `depth` replies
    /// read (depth 1: one request in flight per connection).
    Mixed { get_pct: u64, depth: usize },
    /// One `get` naming `keys` random keys per request.
    Multiget { keys: usize },
    /// As `Mixed`, in the binary protocol: Get and Set one at a time (depth 1), or a batch of
    /// quiet GetKQ and SetQ closed by a NoOp (libmemcached's pipelined form).
    Binary { get_pct: u64, depth: usize },
    /// As `Mixed` with depth 1, on a new connection (and TLS handshake) every `per_conn`
    /// requests: the connection is opened, used for `per_conn` requests, then closed.
    Reconnect { get_pct: u64, per_conn: usize },
}

#[derive(Clone, Debug)]
pub struct Workload {
    pub name: &'static str,
    pub mem_mb: usize,
    pub threads: usize,
    /// More server options, the same for both servers.
    pub extra: &'static [&'static str],
    /// TLS for both servers (and the client), or plaintext.
    pub tls: Tls,
    pub kind: Kind,
}

impl Workload {
    pub fn describe(&self, opts: &Opts) -> String {
        let mut server = format!("-m {} -t {}", self.mem_mb, self.threads);
        for a in self.extra {
            server.push(' ');
            server.push_str(a);
        }
        server.push_str(tls::describe(self.tls));
        match &self.kind {
            Kind::Fill {
                items,
                key_len,
                value_len,
            } => format!(
                "{server}; {items} sets of {}-{} B keys and {}-{} B random printable values \
                 (uniform lengths, fixed seed), 1 connection, batches of {FILL_BATCH} sets with \
                 replies; then get every key back in {FILL_BATCH}-key multigets",
                key_len.0, key_len.1, value_len.0, value_len.1
            ),
            Kind::FillSizes { sizes } => {
                let list: Vec<String> = sizes
                    .iter()
                    .map(|(v, n)| format!("{} x {n}", size_label(*v)))
                    .collect();
                format!(
                    "{server}; per value size, on a fresh server: sets of 20-40 B keys and \
                     values of that size (~3x what fits), 1 connection, batches of \
                     {FILL_BATCH} with replies, then every key read back; sizes x sets: {}",
                    list.join(", ")
                )
            }
            Kind::Zipf {
                keys,
                theta,
                value_len,
                warmup,
                measured,
            } => format!(
                "{server}; cache-aside over {keys} keys drawn by zipf({theta}) (fixed seed, one \
                 sequence per connection, the same for both servers): get, and on a miss set \
                 the key's {}-{} B value (length derived from the key); {} connections, one \
                 request in flight each; {warmup} gets of warm-up, then {measured} gets measured",
                value_len.0, value_len.1, opts.conns
            ),
            Kind::Idle { conns } => format!(
                "{server}; open {conns} connections and leave them idle; VmRSS before, with \
                 them open, and after one `version` on each"
            ),
            Kind::OpenLoop(sweep) => {
                let levels: Vec<String> = sweep.levels.iter().map(|l| format!("{l}%")).collect();
                let dur = sweep.level_duration;
                format!(
                    "{server}; {} keys preloaded with {} B values; open loop: {}% get / {}% \
                     set arriving as a Poisson process (fixed seed, the same for both servers) \
                     at {} of 100% = {}; {} connections on {} client threads (epoll and a \
                     timerfd each), {:.1} s per load in ascending order on one server, the \
                     first {:.1} s of each a warm-up; latency from each request's due time, \
                     not its send (no coordinated omission); at most {} requests waiting per \
                     connection, arrivals past that dropped",
                    sweep.keys,
                    sweep.value_len,
                    sweep.get_pct,
                    100 - sweep.get_pct,
                    levels.join(", "),
                    sweep.capacity.describe(),
                    opts.conns,
                    opts.client_threads.min(opts.conns),
                    dur.as_secs_f64(),
                    open::warmup(dur).as_secs_f64(),
                    open::MAX_IN_FLIGHT,
                )
            }
            Kind::Throughput {
                keys,
                value_len,
                mode,
                rate,
                duration,
            } => {
                let what = match mode {
                    Mode::Mixed { get_pct, depth: 1 } => format!(
                        "{get_pct}% get / {}% set, one request in flight per connection",
                        100 - get_pct
                    ),
                    Mode::Mixed { get_pct, depth } => format!(
                        "{get_pct}% get / {}% set, pipelined: {depth} requests per write, then \
                         {depth} replies read",
                        100 - get_pct
                    ),
                    Mode::Multiget { keys } => {
                        format!("{keys}-key multiget, one request in flight per connection")
                    }
                    Mode::Binary { get_pct, depth: 1 } => format!(
                        "binary protocol: {get_pct}% Get / {}% Set, one request in flight per \
                         connection",
                        100 - get_pct
                    ),
                    Mode::Binary { get_pct, depth } => format!(
                        "binary protocol: {get_pct}% GetKQ / {}% SetQ, {depth} per write closed \
                         by a NoOp, then the replies up to the NoOp's read",
                        100 - get_pct
                    ),
                    Mode::Reconnect { get_pct, per_conn } => format!(
                        "{get_pct}% get / {}% set, one request in flight per connection, a new \
                         connection every {per_conn} requests (connect, handshake, \
                         {per_conn} requests, close_notify and close){}",
                        100 - get_pct,
                        if self.tls == Tls::Resume {
                            ", resuming the session of an earlier connection where the server \
                             gave one"
                        } else {
                            ", a full handshake each"
                        }
                    ),
                };
                let paced = if *rate > 0 {
                    format!(
                        "; paced: {} requests/s offered in all (each connection on its own \
                         schedule), latency from the actual send",
                        fmt_num(*rate as f64)
                    )
                } else {
                    String::new()
                };
                let negotiated = if self.tls == Tls::Off {
                    String::new()
                } else {
                    format!("; {}", tls::negotiated(opts.tls_key))
                };
                format!(
                    "{server}; {keys} keys preloaded with {value_len} B values; {} connections \
                     on a 2-thread tokio client for {:.1} s; {what}{paced}{negotiated}",
                    opts.conns,
                    duration.as_secs_f64()
                )
            }
        }
    }
}

/// Value sizes of fill-sizes.
pub const FILL_SIZES: [usize; 6] = [10, 100, 1024, 10 * 1024, 100 * 1024, 512 * 1024];

/// The closed-loop throughput workloads, whose requests/s and CPU per request the targets
/// compare.
pub const THROUGHPUT_WORKLOADS: [&str; 5] = [
    "get-set",
    "get-set-pipe16",
    "multiget-10",
    "value-4k",
    "set-heavy",
];

/// The TLS workloads, whose requests/s and CPU per request the TLS targets compare.
pub const TLS_WORKLOADS: [&str; 4] = [
    "tls-get-set",
    "tls-get-set-pipe16",
    "tls-resume",
    "tls-handshake",
];

/// Requests per connection in tls-resume and tls-handshake.
pub const TLS_REQUESTS_PER_CONN: usize = 10;

pub fn size_label(v: usize) -> String {
    if v >= 1024 && v.is_multiple_of(1024) {
        format!("{} KiB", v / 1024)
    } else {
        format!("{v} B")
    }
}

pub fn workloads(opts: &Opts) -> Vec<Workload> {
    let fill_mem = (opts.mem_mb / opts.fill_divisor).max(1);
    let fill = |name, items: usize, key_len, value_len| Workload {
        name,
        mem_mb: fill_mem,
        threads: opts.fill_threads,
        extra: &[],
        tls: Tls::Off,
        kind: Kind::Fill {
            items: ((items as f64 * opts.items_scale) as usize / opts.fill_divisor).max(1),
            key_len,
            value_len,
        },
    };
    // The workloads added later run for half of --duration in the quick run, which keeps it
    // near 30 s.
    let short = if opts.quick { 0.5 } else { 1.0 };
    let load = |name, keys, value_len, mode, rate, scale: f64| Workload {
        name,
        mem_mb: opts.mem_mb,
        threads: opts.threads,
        extra: &[],
        tls: Tls::Off,
        kind: Kind::Throughput {
            keys,
            value_len,
            mode,
            rate,
            duration: opts.duration.mul_f64(scale),
        },
    };
    let mixed = |get_pct, depth| Mode::Mixed { get_pct, depth };
    let over_tls = |w: Workload, tls| Workload { tls, ..w };
    let reconnect = Mode::Reconnect {
        get_pct: 90,
        per_conn: TLS_REQUESTS_PER_CONN,
    };
    // fill-sizes: ~3x what fits in -m, assuming ~80 B of key and overhead per item; the
    // quick run writes half of that (1.5x, still overflowing) at half the quick -m.
    let sizes_mem = if opts.quick { fill_mem / 2 } else { fill_mem }.max(2);
    let sizes = FILL_SIZES
        .iter()
        .map(|&v| {
            let fits = sizes_mem as f64 * 1048576.0 / (v + 80) as f64;
            let times = if opts.quick { 1.5 } else { 3.0 };
            (v, ((fits * times * opts.items_scale) as usize).max(8))
        })
        .collect();
    // zipf: ten times the keys that fit (~300 B values: ~220k items in 64 MiB); the quick run
    // at a quarter of the quick -m.
    let zipf_mem = if opts.quick { fill_mem / 4 } else { fill_mem }.max(2);
    let zipf_keys = 2_200_000 * zipf_mem as u64 / 64;
    let (warmup, measured) = if opts.quick {
        (zipf_keys / 4, zipf_keys / 4)
    } else {
        (
            1_000_000 * zipf_mem as u64 / 64,
            1_000_000 * zipf_mem as u64 / 64,
        )
    };
    vec![
        fill("fill-mixed", 800_000, (20, 40), (50, 300)),
        fill("fill-tiny", 3_000_000, (10, 10), (10, 10)),
        Workload {
            name: "fill-sizes",
            mem_mb: sizes_mem,
            threads: opts.fill_threads,
            extra: &["-I", "1m"],
            tls: Tls::Off,
            kind: Kind::FillSizes { sizes },
        },
        load("get-set", 100_000, 100, mixed(90, 1), 0, 1.0),
        load("get-set-pipe16", 100_000, 100, mixed(90, 16), 0, 1.0),
        load(
            "multiget-10",
            100_000,
            100,
            Mode::Multiget { keys: 10 },
            0,
            1.0,
        ),
        // 8,000 x 4 KiB = 32 MiB: fits in -m 64 on both.
        load(
            "value-4k",
            8_000 * opts.mem_mb as u64 / 64,
            4096,
            mixed(90, 1),
            0,
            short,
        ),
        load("set-heavy", 100_000, 100, mixed(10, 1), 0, short),
        load(
            "bin-get-set",
            100_000,
            100,
            Mode::Binary {
                get_pct: 90,
                depth: 1,
            },
            0,
            short,
        ),
        load(
            "bin-get-set-quiet16",
            100_000,
            100,
            Mode::Binary {
                get_pct: 90,
                depth: 16,
            },
            0,
            short,
        ),
        load("get-set-rate", 100_000, 100, mixed(90, 1), opts.rate, short),
        Workload {
            name: "get-set-open",
            mem_mb: opts.mem_mb,
            threads: opts.threads,
            extra: &[],
            tls: Tls::Off,
            kind: Kind::OpenLoop(open::Sweep {
                keys: 100_000,
                value_len: 100,
                get_pct: 90,
                levels: if opts.quick {
                    vec![10, 50, 90]
                } else {
                    (1..=9).map(|l| l * 10).collect()
                },
                level_duration: opts.duration.mul_f64(short),
                capacity: open::Capacity::Unknown,
            }),
        },
        over_tls(
            load("tls-get-set", 100_000, 100, mixed(90, 1), 0, short),
            Tls::On,
        ),
        over_tls(
            load("tls-get-set-pipe16", 100_000, 100, mixed(90, 16), 0, short),
            Tls::On,
        ),
        over_tls(
            load("tls-resume", 100_000, 100, reconnect, 0, short),
            Tls::Resume,
        ),
        over_tls(
            load("tls-handshake", 100_000, 100, reconnect, 0, short),
            Tls::On,
        ),
        Workload {
            name: "zipf-cache-aside",
            mem_mb: zipf_mem,
            threads: opts.threads,
            extra: &[],
            tls: Tls::Off,
            kind: Kind::Zipf {
                keys: zipf_keys,
                theta: 0.99,
                value_len: (200, 400),
                warmup,
                measured,
            },
        },
        Workload {
            name: "idle-5000",
            mem_mb: opts.mem_mb,
            threads: opts.threads,
            extra: &["-c", "6000"],
            tls: Tls::Off,
            kind: Kind::Idle {
                conns: if opts.quick { 1000 } else { 5000 },
            },
        },
    ]
}

/// Offered load of get-set-rate, requests/s in all, when neither `--rate` nor a get-set run
/// in the same invocation gives one: well under what either server does closed-loop on the
/// 2-core machine (50-140k, depending on the machine), so that both keep up.
pub const PACED_RATE: u64 = 25_000;

/// The offered load for get-set-rate: `--rate`, else half of the slower server's median
/// closed-loop get-set rate in this run (so that neither is saturated on any machine), in
/// thousands, else [`PACED_RATE`].
pub fn paced_rate(opts: &Opts, results: &Results) -> u64 {
    if opts.rate > 0 {
        return opts.rate;
    }
    match medians(results, "get-set", is_rate) {
        Some(m) => ((m[0].min(m[1]) / 2.0 / 1000.0).floor() as u64).max(1) * 1000,
        None => PACED_RATE,
    }
}

/// The offered load get-set-rate ran at, if it ran.
pub fn ran_rate(results: &Results) -> Option<u64> {
    results.iter().find_map(|(w, _)| match w.kind {
        Kind::Throughput { rate, .. } if w.name == "get-set-rate" => Some(rate),
        _ => None,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    Neither,
}

#[derive(Clone, Debug)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub better: Better,
    /// One figure of an offered load of an open-loop sweep ([`open`]): the reports show
    /// these as a table, a row per load and a column per figure (`name` still tells them
    /// all apart, as "p99 at 30% (us)").
    pub level: Option<Level>,
}

/// Where a [`Metric`] of an open-loop sweep goes in its table.
#[derive(Clone, Copy, Debug)]
pub struct Level {
    /// The offered load, percent of the capacity.
    pub pct: u32,
    /// The column heading.
    pub head: &'static str,
}

pub fn metric(name: impl Into<String>, value: f64, better: Better) -> Metric {
    Metric {
        name: name.into(),
        value,
        better,
        level: None,
    }
}

/// The scheduler's figures of a timed phase per request (`unit`: "request", or "multiget"
/// where a multiget is the unit of the other figures): for the server, its threads' time
/// runnable but waiting for a CPU, their wakeups (voluntary context switches: each a block in
/// epoll_wait, on a lock, ... and the wakeup after it) and their preemptions (involuntary
/// ones); for the load generator, its run-queue wait, to tell the two apart.
pub fn sched_metrics(server: Sched, own: Sched, requests: u64, unit: &str) -> Vec<Metric> {
    let per = |v: f64| {
        if requests > 0 {
            v / requests as f64
        } else {
            f64::NAN
        }
    };
    vec![
        metric(
            format!("server run-queue wait per {unit} (us)"),
            per(server.wait_ns as f64 / 1000.0),
            Better::Lower,
        ),
        metric(
            format!("server wakeups per {unit}"),
            per(server.voluntary as f64),
            Better::Neither,
        ),
        metric(
            format!("server preemptions per {unit}"),
            per(server.involuntary as f64),
            Better::Neither,
        ),
        metric(
            format!("load generator run-queue wait per {unit} (us)"),
            per(own.wait_ns as f64 / 1000.0),
            Better::Neither,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::parse_args;

    #[test]
    fn the_targets_name_workloads_that_exist_and_tls_ones_run_over_tls() {
        for quick in [false, true] {
            let args: Vec<String> = if quick {
                vec!["--quick".into()]
            } else {
                vec![]
            };
            let all = workloads(&parse_args(&args).expect("defaults"));
            let find = |name: &str| all.iter().find(|w| w.name == name);
            for name in THROUGHPUT_WORKLOADS {
                assert_eq!(find(name).expect(name).tls, Tls::Off, "{name}");
            }
            for name in TLS_WORKLOADS {
                assert_ne!(find(name).expect(name).tls, Tls::Off, "{name}");
            }
            let Kind::OpenLoop(sweep) = &find("get-set-open").expect("get-set-open").kind else {
                panic!("get-set-open is an open-loop sweep");
            };
            let want: Vec<u32> = if quick {
                vec![10, 50, 90]
            } else {
                (1..=9).map(|l| l * 10).collect()
            };
            assert_eq!(sweep.levels, want);
            let resume = find("tls-resume").expect("tls-resume");
            assert_eq!(resume.tls, Tls::Resume);
            assert!(
                resume
                    .describe(&parse_args(&args).expect("defaults"))
                    .contains("ssl_session_cache")
            );
        }
    }
}
