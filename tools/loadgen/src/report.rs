//! The header, the per-run lines and the per-workload tables.

use std::fmt::Write as _;
use std::process::{Command, Stdio};

use crate::Res;
use crate::machine::fmt_cpu_list;
use crate::options::Opts;
use crate::server::TARGETS;
use crate::workload::{Better, Metric, Workload};

pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v.abs() >= 1000.0 {
        let digits = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        return if v < 0.0 { format!("-{out}") } else { out };
    }
    if v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub type Runs = [Vec<Res<Vec<Metric>>>; 2];

pub type Results = [(Workload, Runs)];

/// Per server, the median over the rounds of the first metric of workload `wl` whose name
/// `is`; `None` if the workload did not run, a round failed or there is no such metric.
pub fn medians(results: &Results, wl: &str, is: impl Fn(&str) -> bool) -> Option<[f64; 2]> {
    let (_, runs) = results.iter().find(|(w, _)| w.name == wl)?;
    let mut out = [f64::NAN; 2];
    for (t, slot) in out.iter_mut().enumerate() {
        let mut vals = Vec::new();
        for r in &runs[t] {
            let m = r.as_ref().ok()?;
            vals.push(m.iter().find(|x| is(&x.name))?.value);
        }
        *slot = median(vals);
    }
    out.iter().all(|v| v.is_finite()).then_some(out)
}

pub fn is_rate(name: &str) -> bool {
    name.starts_with("requests/s") || name.starts_with("multigets/s")
}

/// A run's metrics on one line; those of an open-loop sweep's loads after it, a line per
/// load.
pub fn run_line(m: &[Metric]) -> String {
    let mut s = String::new();
    for x in m.iter().filter(|x| x.level.is_none()) {
        let _ = write!(s, "{} {}; ", x.name, fmt_num(x.value));
    }
    let mut s = s.trim_end_matches("; ").to_string();
    for pct in levels(m) {
        let _ = write!(s, "\n      {pct:>3}%:");
        for x in m.iter().filter(|x| x.level.is_some_and(|l| l.pct == pct)) {
            let head = x.level.map_or("", |l| l.head);
            let _ = write!(s, " {head} {};", fmt_num(x.value));
        }
        s.pop();
    }
    s
}

/// The offered loads of an open-loop sweep's metrics, in their order.
fn levels(m: &[Metric]) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    for l in m.iter().filter_map(|x| x.level) {
        if !out.contains(&l.pct) {
            out.push(l.pct);
        }
    }
    out
}

/// Per server: the median over its rounds of the metric `name`, or `None` when a round
/// failed.
fn server_medians(runs: &Runs, name: &str) -> [Option<f64>; 2] {
    [0, 1].map(|t| {
        let ok: Option<Vec<&Vec<Metric>>> = runs[t].iter().map(|r| r.as_ref().ok()).collect();
        ok.map(|rounds| {
            median(
                rounds
                    .iter()
                    .filter_map(|m| m.iter().find(|x| x.name == name))
                    .map(|x| x.value)
                    .collect(),
            )
        })
    })
}

fn ratio_of(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.abs() > 1e-9 && a.is_finite() && b.is_finite() => {
            format!("{:.3}", a / b)
        }
        _ => "-".into(),
    }
}

/// An open-loop sweep's table: per offered load, a row per server (medians over the
/// rounds) and one of the ratios memcrab / memcached; a column per figure.
fn print_levels(runs: &Runs) {
    let Some(first) = runs.iter().flatten().find_map(|r| r.as_ref().ok()) else {
        return;
    };
    let loads = levels(first);
    let Some(&pct0) = loads.first() else {
        return;
    };
    // The columns, from the first load's metrics: (heading, name at each load).
    let at = format!(" at {pct0}%");
    let cols: Vec<(&str, Vec<String>)> = first
        .iter()
        .filter_map(|x| x.level.filter(|l| l.pct == pct0).map(|l| (x, l.head)))
        .map(|(x, head)| {
            let names = loads
                .iter()
                .map(|p| x.name.replacen(&at, &format!(" at {p}%"), 1))
                .collect();
            (head, names)
        })
        .collect();
    // What a heading stands for, where it is not the metric's name.
    let legend: Vec<String> = cols
        .iter()
        .filter_map(|(head, names)| {
            let name = names[0].replacen(&at, "", 1);
            let bare = name.trim_end_matches(" (us)");
            (bare != *head).then(|| format!("{head} = {bare}"))
        })
        .collect();
    let widths: Vec<usize> = cols.iter().map(|(h, _)| h.len().max(7)).collect();
    println!(
        "  per offered load (% of the capacity): medians over the rounds; latencies and the \
         per-request figures in us"
    );
    let mut head = format!("  {:>5}  {:<9}", "load", "server");
    for ((h, _), w) in cols.iter().zip(&widths) {
        let _ = write!(head, "  {h:>w$}");
    }
    println!("{head}");
    for (i, pct) in loads.iter().enumerate() {
        let cells: Vec<[Option<f64>; 2]> = cols
            .iter()
            .map(|(_, names)| server_medians(runs, &names[i]))
            .collect();
        for (t, target) in TARGETS.iter().enumerate() {
            let load = if t == 0 {
                format!("{pct}%")
            } else {
                String::new()
            };
            let mut row = format!("  {load:>5}  {:<9}", target.name());
            for (c, w) in cells.iter().zip(&widths) {
                let v = c[t].map_or_else(|| "FAILED".into(), fmt_num);
                let _ = write!(row, "  {v:>w$}");
            }
            println!("{row}");
        }
        let mut row = format!("  {:>5}  {:<9}", "", "ratio");
        for (c, w) in cells.iter().zip(&widths) {
            let _ = write!(row, "  {:>w$}", ratio_of(c[0], c[1]));
        }
        println!("{row}");
    }
    if !legend.is_empty() {
        println!("  ({})", legend.join("; "));
    }
}

pub fn print_table(wl: &Workload, opts: &Opts, runs: &Runs) -> bool {
    println!();
    println!("{}: {}", wl.name, wl.describe(opts));
    let failed: Vec<bool> = runs.iter().map(|r| r.iter().any(|x| x.is_err())).collect();
    // Metric names in order, from the first successful run of either server; an open-loop
    // sweep's per-load figures go to a table of their own.
    let names: Vec<(String, Better)> = runs
        .iter()
        .flatten()
        .find_map(|r| r.as_ref().ok())
        .map(|m| {
            m.iter()
                .filter(|x| x.level.is_none())
                .map(|x| (x.name.clone(), x.better))
                .collect()
        })
        .unwrap_or_default();
    let width = names.iter().map(|(n, _)| n.len()).max().unwrap_or(6).max(6);
    println!(
        "  {:<width$}  {:>13}  {:>13}  {:>7}  {:<6}  {:>11}",
        "metric", "memcrab", "memcached", "ratio", "better", "spread mc/md"
    );
    for (name, better) in &names {
        // Per server: (median, min, max) over its rounds, or None when a round failed.
        let agg: Vec<Option<(f64, f64, f64)>> = (0..2)
            .map(|t| {
                (!failed[t]).then(|| {
                    let vals: Vec<f64> = runs[t]
                        .iter()
                        .filter_map(|r| r.as_ref().ok())
                        .filter_map(|m| m.iter().find(|x| &x.name == name))
                        .map(|x| x.value)
                        .collect();
                    let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (median(vals), min, max)
                })
            })
            .collect();
        let cell = |v: Option<(f64, f64, f64)>| {
            v.map(|(m, _, _)| fmt_num(m))
                .unwrap_or_else(|| "FAILED".into())
        };
        let spread = |v: Option<(f64, f64, f64)>| match v {
            Some((m, lo, hi)) if m.abs() > 1e-9 && m.is_finite() && opts.rounds > 1 => {
                format!("{:.0}%", (hi - lo) / m.abs() * 100.0)
            }
            _ => "-".into(),
        };
        let ratio = match (agg[0], agg[1]) {
            (Some((a, _, _)), Some((b, _, _)))
                if b.abs() > 1e-9 && a.is_finite() && b.is_finite() =>
            {
                format!("{:.3}", a / b)
            }
            _ => "-".into(),
        };
        let better = match better {
            Better::Higher => "higher",
            Better::Lower => "lower",
            Better::Neither => "",
        };
        println!(
            "  {name:<width$}  {:>13}  {:>13}  {ratio:>7}  {better:<6}  {:>5} {:>5}",
            cell(agg[0]),
            cell(agg[1]),
            spread(agg[0]),
            spread(agg[1])
        );
    }
    print_levels(runs);
    for (t, target) in TARGETS.iter().enumerate() {
        for (round, r) in runs[t].iter().enumerate() {
            if let Err(e) = r {
                println!("  {} round {} FAILED: {e}", target.name(), round + 1);
            }
        }
    }
    failed.iter().any(|&f| f)
}

fn command_output(bin: &std::path::Path, arg: &str) -> String {
    Command::new(bin)
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "(unknown)".into())
}

/// Where the client and the servers run (`--client-cpus`, `--server-cpus`), in words.
pub fn placement(opts: &Opts) -> String {
    let all = fmt_cpu_list(&opts.startup_cpus);
    match (&opts.client_cpus, &opts.server_cpus) {
        (None, None) => format!("not pinned: the load generator and the servers share CPUs {all}"),
        (client, server) => {
            let side = |cpus: &Option<Vec<usize>>| match cpus {
                Some(c) => format!("pinned to CPUs {}", fmt_cpu_list(c)),
                None => format!("not pinned (CPUs {all})"),
            };
            format!(
                "load generator (every thread of this process) {}; servers {}",
                side(client),
                side(server)
            )
        }
    }
}

pub fn print_header(opts: &Opts, args: &[String]) {
    let mut cmd = "cargo run --release -p memcrab-loadgen".to_string();
    if !args.is_empty() {
        cmd.push_str(" -- ");
        cmd.push_str(&args.join(" "));
    }
    for var in ["MEMCRAB_BIN", "MEMCACHED_BIN"] {
        if let Ok(v) = std::env::var(var) {
            cmd = format!("{var}={v} {cmd}");
        }
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "(unknown)".into());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kb| kb / 1048576.0)
        .unwrap_or(f64::NAN);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "(unknown)".into());
    println!("memcrab side-by-side load benchmark (tools/loadgen)");
    println!("command:   {cmd}");
    println!(
        "machine:   nproc {nproc}; {model}; {mem_gib:.1} GiB RAM; Linux {}",
        kernel.trim()
    );
    println!(
        "memcached: {} ({})",
        command_output(&opts.memcached_bin, "-V"),
        opts.memcached_bin.display()
    );
    println!(
        "memcrab:   {} ({}), HEAD {commit} plus any uncommitted changes",
        command_output(&opts.memcrab_bin, "-V"),
        opts.memcrab_bin.display()
    );
    println!("placement: {}", placement(opts));
    println!(
        "method:    both servers on 127.0.0.1 with the same -m/-t plus -U 0 (memcached also \
         -u nobody), a fresh server per run; {} round(s) per server per workload, alternating \
         memcrab/memcached; the client is a 2-thread tokio runtime in the bench process \
         (get-set-open: {} open-loop threads of its own), sharing the CPUs with the server \
         unless pinned; figures are medians; ratio = memcrab / memcached; \
         spread = (max - min) / median over the rounds, for memcrab / memcached",
        opts.rounds,
        opts.client_threads.min(opts.conns)
    );
}
