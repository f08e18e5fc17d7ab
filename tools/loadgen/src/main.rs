//! Side-by-side load benchmark: memcrab against Debian's memcached, both started here on
//! 127.0.0.1 with the same `-m` and `-t`, driven by a load generator of our own.
//!
//! ```text
//! cargo run --release -p memcrab-loadgen -- [--quick] [--rounds N] [--duration SECS]
//!                             [--conns N] [--threads N] [--fill-threads N] [--mem MB]
//!                             [--only NAME,...] [--items-scale F] [--wait-quiet SECS]
//!                             [--rate N] [--capacity N] [--client-threads N]
//!                             [--client-cpus LIST] [--server-cpus LIST]
//!                             [--metrics] [--no-charts] [--charts] [--tls-key rsa|ecdsa]
//! ```
//!
//! Each workload runs against the two servers alternately (memcrab, memcached, memcrab, ...),
//! each run on a freshly started server, and the summary reports per-server medians and the
//! ratio memcrab/memcached, then the targets judged from those medians; full runs (no
//! `--quick`, no `--only`) also write SVG charts to the workspace's `docs/bench/` with
//! plotters. Servers: `MEMCRAB_BIN` (default: the workspace's `memcrab`, built first with
//! `cargo build --release --bin memcrab`, `target/release/memcrab`) and `MEMCACHED_BIN`
//! (default `/usr/bin/memcached`).
//!
//! The client of most workloads is a 2-thread tokio runtime in this process. Every latency
//! goes into an HDR histogram ([`workload::latency`]); the throughput workloads also report
//! the scheduler's view of each run from `/proc/<pid>/task/*/schedstat` ([`machine::Sched`]):
//! the server's run-queue wait, wakeups and preemptions per request. `--client-cpus` and
//! `--server-cpus` pin this process and the servers to CPU lists; the header records the
//! placement.
//!
//! `get-set-open` is an open-loop sweep ([`workload::open`]): Poisson arrivals at 10% to 90%
//! of memcached's closed-loop get-set rate, sent by plain threads on epoll and a timerfd (not
//! tokio, whose 1 ms timer would add its own latency), each request's latency counted from
//! when it was due; its summary is a table per offered load, its targets compare the p99 and
//! p99.9 at every load, and full runs chart them (`latency-vs-load.svg`).
//!
//! The `tls-*` workloads start both servers with `-Z` and a throwaway certificate made with
//! the `openssl` command ([`tls`]) and speak TLS 1.3 to them with rustls.
//!
//! All traffic goes only to the two servers started here on 127.0.0.1; every loop is bounded
//! by a count or a deadline, and every read by a timeout.
//!
//! To add a workload: add a variant to [`workload::Kind`] (or reuse one with new
//! parameters), an entry in [`workload::workloads`], and a branch in [`run_async`] returning
//! its [`workload::Metric`]s (in [`run_once`] for a workload with a client of its own, as
//! get-set-open's threads).

mod charts;
mod machine;
mod options;
mod report;
mod rng;
mod server;
mod targets;
mod tls;
mod wire;
mod workload;

use std::time::Instant;

use charts::write_charts;
use machine::{BUSY_OTHERS, CpuSnapshot, cpu_set, raise_fd_limit, set_affinity, wait_quiet};
use options::{Opts, parse_args};
use report::{Results, Runs, is_rate, medians, print_header, print_table, run_line};
use server::{Server, TARGETS, Target};
use targets::print_targets;
use workload::fill::{run_fill, run_fill_sizes};
use workload::idle::run_idle;
use workload::open::{CAPACITY_RUN, Capacity, run_open};
use workload::throughput::{ThroughputRun, run_throughput};
use workload::zipf::{ZipfRun, run_zipf};
use workload::{Better, Kind, Metric, Workload, metric, paced_rate, ran_rate, workloads};

/// Every fallible step reports what failed, in words, for the run's FAILED line.
type Res<T> = Result<T, String>;

fn run_once(
    rt: &tokio::runtime::Runtime,
    opts: &Opts,
    wl: &Workload,
    target: Target,
) -> Res<Vec<Metric>> {
    if let Kind::FillSizes { sizes } = &wl.kind {
        return run_fill_sizes(rt, opts, wl, target, sizes);
    }
    let mut server = Server::start(target, opts, wl.mem_mb, wl.threads, wl.extra, wl.tls)?;
    let before = CpuSnapshot::take(&server)?;
    let mut result = match &wl.kind {
        // Its own client threads, outside the runtime.
        Kind::OpenLoop(sweep) => run_open(rt, &server, sweep, opts.conns, opts.client_threads),
        _ => run_async(rt, opts, wl, &server),
    };
    if let (Ok(metrics), Ok(after)) = (&mut result, CpuSnapshot::take(&server)) {
        metrics.push(metric(
            "other processes' CPU (cores)",
            before.others_since(&after),
            Better::Neither,
        ));
    }
    let exited = server.child.try_wait().ok().flatten();
    drop(server);
    match (result, exited) {
        (Ok(_), Some(status)) => Err(format!("server exited during the run: {status}")),
        (Err(e), Some(status)) => Err(format!("{e} (server exited: {status})")),
        (result, None) => result,
    }
}

/// The workloads whose client is the tokio runtime, on a started `server`.
fn run_async(
    rt: &tokio::runtime::Runtime,
    opts: &Opts,
    wl: &Workload,
    server: &Server,
) -> Res<Vec<Metric>> {
    rt.block_on(async {
        match &wl.kind {
            Kind::Fill {
                items,
                key_len,
                value_len,
            } => run_fill(server, *items, *key_len, *value_len).await,
            Kind::Throughput {
                keys,
                value_len,
                mode,
                rate,
                duration,
            } => {
                let t = ThroughputRun {
                    keys: *keys,
                    value_len: *value_len,
                    mode: *mode,
                    rate: *rate,
                    duration: *duration,
                };
                run_throughput(server, opts, t).await
            }
            Kind::Zipf {
                keys,
                theta,
                value_len,
                warmup,
                measured,
            } => {
                let z = ZipfRun {
                    keys: *keys,
                    theta: *theta,
                    value_len: *value_len,
                    warmup: *warmup,
                    measured: *measured,
                };
                run_zipf(server, opts, z).await
            }
            Kind::Idle { conns } => run_idle(server, *conns).await,
            Kind::FillSizes { .. } | Kind::OpenLoop(_) => unreachable!("run by run_once"),
        }
    })
}

/// 100% of get-set-open's offered loads: memcached's median closed-loop get-set rate if
/// get-set ran earlier in this invocation, else `--capacity`, else measured now with a
/// [`CAPACITY_RUN`] get-set run against memcached.
fn open_capacity(rt: &tokio::runtime::Runtime, opts: &Opts, results: &Results) -> Res<Capacity> {
    if let Some(m) = medians(results, "get-set", is_rate) {
        return Ok(Capacity::GetSet(m[1]));
    }
    if let Some(c) = opts.capacity {
        return Ok(Capacity::Given(c as f64));
    }
    let mut wl = workloads(opts)
        .into_iter()
        .find(|w| w.name == "get-set")
        .ok_or("no get-set workload")?;
    if let Kind::Throughput { duration, .. } = &mut wl.kind {
        *duration = CAPACITY_RUN;
    }
    let m = run_once(rt, opts, &wl, Target::Memcached)?;
    m.iter()
        .find(|x| is_rate(&x.name))
        .map(|x| Capacity::Measured(x.value))
        .ok_or_else(|| "get-set reported no requests/s".into())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            let names: Vec<_> = workloads(&parse_args(&[]).expect("defaults"))
                .iter()
                .map(|w| w.name)
                .collect();
            eprintln!("workloads: {}", names.join(", "));
            std::process::exit(2);
        }
    };
    let all = workloads(&opts);
    for name in &opts.only {
        if !all.iter().any(|w| w.name == name) {
            let names: Vec<_> = all.iter().map(|w| w.name).collect();
            eprintln!(
                "--only: no workload {name}; workloads: {}",
                names.join(", ")
            );
            std::process::exit(2);
        }
    }
    let selected: Vec<Workload> = all
        .into_iter()
        .filter(|w| opts.only.is_empty() || opts.only.iter().any(|n| n == w.name))
        .collect();
    if opts.build_memcrab {
        match server::build_memcrab() {
            Ok(bin) => opts.memcrab_bin = bin,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        }
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "note: this load generator is a debug build; its client is slow and the figures \
             mean little (run it with --release)"
        );
    }
    print_header(&opts, &args);
    raise_fd_limit(16_384);
    // Before any thread starts: every thread of this process inherits the mask.
    if let Some(cpus) = &opts.client_cpus
        && let Err(e) = set_affinity(&cpu_set(cpus))
    {
        eprintln!("--client-cpus: sched_setaffinity: {e}");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the client runtime");
    let started = Instant::now();
    let mut results = Vec::new();
    let mut noisy = 0;
    println!();
    for mut wl in selected {
        if let Kind::Throughput { rate, .. } = &mut wl.kind
            && wl.name == "get-set-rate"
        {
            *rate = paced_rate(&opts, &results);
        }
        let mut runs: Runs = [Vec::new(), Vec::new()];
        if let Kind::OpenLoop(sweep) = &mut wl.kind {
            let t0 = Instant::now();
            match open_capacity(&rt, &opts, &results) {
                Ok(c) => sweep.capacity = c,
                Err(e) => {
                    println!("running {}: capacity FAILED: {e}", wl.name);
                    let failed = || Err(format!("no capacity to offer loads of: {e}"));
                    runs = [vec![failed()], vec![failed()]];
                    results.push((wl, runs));
                    continue;
                }
            }
            if let Capacity::Measured(_) = sweep.capacity {
                println!(
                    "{} capacity: memcached's get-set ({:.1} s)",
                    wl.name,
                    t0.elapsed().as_secs_f64()
                );
            }
        }
        println!("running {}: {}", wl.name, wl.describe(&opts));
        for round in 1..=opts.rounds {
            for (t, target) in TARGETS.iter().enumerate() {
                if let Some(max) = opts.wait_quiet {
                    wait_quiet(max);
                }
                let t0 = Instant::now();
                let r = run_once(&rt, &opts, &wl, *target);
                let secs = t0.elapsed().as_secs_f64();
                match &r {
                    Ok(m) => println!(
                        "  round {round} {:<9} ({secs:5.1} s): {}",
                        target.name(),
                        run_line(m)
                    ),
                    Err(e) => println!(
                        "  round {round} {:<9} ({secs:5.1} s): FAILED: {e}",
                        target.name()
                    ),
                }
                let busy = r
                    .as_ref()
                    .ok()
                    .and_then(|m| m.iter().find(|x| x.name.starts_with("other processes")))
                    .map(|x| x.value)
                    .filter(|&v| v > BUSY_OTHERS);
                if let Some(v) = busy {
                    noisy += 1;
                    println!(
                        "    !! other processes used {v:.2} cores during this run: its figures \
                         are disturbed"
                    );
                }
                runs[t].push(r);
            }
        }
        results.push((wl, runs));
    }
    println!();
    println!("==== summary ====");
    let mut any_failed = false;
    for (wl, runs) in &results {
        any_failed |= print_table(wl, &opts, runs);
    }
    let rate = ran_rate(&results).unwrap_or(0);
    print_targets(&results, rate);
    if opts.force_charts || (opts.charts && opts.only.is_empty()) {
        println!();
        if let Err(e) = write_charts(&results, rate) {
            println!("charts not written: {e}");
        }
    }
    tls::remove();
    println!();
    println!("total wall time: {:.0} s", started.elapsed().as_secs_f64());
    if noisy > 0 {
        println!(
            "WARNING: in {noisy} run(s) other processes used more than {BUSY_OTHERS} cores \
             (see the \"other processes' CPU\" rows): rerun on a quiet machine"
        );
    }
    if any_failed {
        println!("some runs FAILED (see above)");
        std::process::exit(1);
    }
}
