//! Targets, judged from the medians of a run.

use crate::report::{Results, fmt_num, is_rate, medians};
use crate::workload::open::{P99, P999, level_name};
use crate::workload::{FILL_SIZES, Kind, THROUGHPUT_WORKLOADS, TLS_WORKLOADS, size_label};

fn geomean(v: &[f64]) -> f64 {
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
}

/// The open-loop targets: memcrab's p99 no higher than memcached's at every offered load,
/// its p99.9 at most 1.2x, each judged at its worst load. Judged only when every load of the
/// full sweep (10-90%) ran.
fn open_loop_rows(results: &Results, rows: &mut Vec<(String, String, Option<bool>)>) {
    let Some((wl, sweep)) = results.iter().find_map(|(w, _)| match &w.kind {
        Kind::OpenLoop(s) => Some((w, s)),
        _ => None,
    }) else {
        return;
    };
    for (col, label, max) in [(P99, "p99", 1.0), (P999, "p99.9", 1.2)] {
        let at: Vec<(u32, [f64; 2])> = sweep
            .levels
            .iter()
            .filter_map(|&pct| {
                let name = level_name(col, pct);
                medians(results, wl.name, |n| n == name).map(|m| (pct, m))
            })
            .collect();
        let Some(&(pct, worst)) = at
            .iter()
            .max_by(|a, b| (a.1[0] / a.1[1]).total_cmp(&(b.1[0] / b.1[1])))
        else {
            continue;
        };
        let all: Vec<String> = at
            .iter()
            .map(|(p, m)| format!("{p}% {:.2}x", m[0] / m[1]))
            .collect();
        let full = at.len() == 9 && at.len() == sweep.levels.len();
        let what = if max == 1.0 {
            format!(
                "open loop: {label} ≤ 1.0x memcached's at every offered load 10-90% ({})",
                wl.name
            )
        } else {
            format!("open loop: {label} ≤ {max:.1}x at every load")
        };
        rows.push((
            what,
            format!(
                "worst {:.3}x at {pct}% ({} against {} us); {}",
                worst[0] / worst[1],
                fmt_num(worst[0]),
                fmt_num(worst[1]),
                all.join(", ")
            ),
            full.then_some(at.iter().all(|(_, m)| m[0] <= max * m[1])),
        ));
    }
}

/// Prints the targets with met / missed and the measured value.
pub fn print_targets(results: &Results, rate: u64) {
    let mut rows: Vec<(String, String, Option<bool>)> = Vec::new();
    let ratio = |m: [f64; 2]| m[0] / m[1];
    let per_wl = |is: &dyn Fn(&str) -> bool| -> Vec<(&str, f64)> {
        THROUGHPUT_WORKLOADS
            .iter()
            .filter_map(|w| medians(results, w, is).map(|m| (*w, ratio(m))))
            .collect()
    };
    let list = |v: &[(&str, f64)]| {
        v.iter()
            .map(|(w, r)| format!("{w} {r:.2}x"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rates = per_wl(&is_rate);
    let all = rates.len() == THROUGHPUT_WORKLOADS.len();
    if !rates.is_empty() {
        let g = geomean(&rates.iter().map(|x| x.1).collect::<Vec<_>>());
        rows.push((
            format!(
                "requests/s, geometric mean over {} ≥ 1.25x",
                THROUGHPUT_WORKLOADS.join(", ")
            ),
            format!("{g:.3}x ({})", list(&rates)),
            all.then_some(g >= 1.25),
        ));
        let (w, lo) = rates
            .iter()
            .copied()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("not empty");
        rows.push((
            "requests/s, no throughput workload below 1.0x".into(),
            format!("lowest {lo:.3}x ({w})"),
            all.then_some(lo >= 1.0),
        ));
    }
    let binary: Vec<(&str, f64)> = ["bin-get-set", "bin-get-set-quiet16"]
        .into_iter()
        .filter_map(|w| medians(results, w, is_rate).map(|m| (w, ratio(m))))
        .collect();
    if !binary.is_empty() {
        let lo = binary.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
        rows.push((
            "requests/s, binary protocol ≥ 1.0x (bin-get-set, bin-get-set-quiet16)".into(),
            list(&binary),
            (binary.len() == 2).then_some(lo >= 1.0),
        ));
    }
    if let Some(m) = medians(results, "get-set-pipe16", is_rate) {
        rows.push((
            "requests/s, pipelined get-set-pipe16 ≥ 2x".into(),
            format!("{:.3}x", ratio(m)),
            Some(ratio(m) >= 2.0),
        ));
    }
    let cpu = per_wl(&|n: &str| n.starts_with("server CPU per"));
    if !cpu.is_empty() {
        let g = geomean(&cpu.iter().map(|x| x.1).collect::<Vec<_>>());
        let (w, hi) = cpu
            .iter()
            .copied()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("not empty");
        rows.push((
            "server CPU per request ≤ 0.8x (every throughput workload)".into(),
            format!(
                "geometric mean {g:.3}x; highest {hi:.3}x ({w}); {}",
                list(&cpu)
            ),
            all.then_some(hi <= 0.8),
        ));
    }
    // TLS: each workload at least memcached's rate, at no more CPU per request (for the
    // reconnecting ones: per connection, its handshake and requests).
    let tls_rows = |is: &dyn Fn(&str) -> bool| -> Vec<(&str, f64)> {
        TLS_WORKLOADS
            .iter()
            .filter_map(|w| medians(results, w, is).map(|m| (*w, ratio(m))))
            .collect()
    };
    let tls_rates = tls_rows(&is_rate);
    if !tls_rates.is_empty() {
        let (w, lo) = tls_rates
            .iter()
            .copied()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("not empty");
        rows.push((
            format!("TLS throughput ≥ 1.0x ({})", TLS_WORKLOADS.join(", ")),
            format!("lowest {lo:.3}x ({w}); {}", list(&tls_rates)),
            (tls_rates.len() == TLS_WORKLOADS.len()).then_some(lo >= 1.0),
        ));
    }
    let tls_cpu = tls_rows(&|n: &str| n.starts_with("server CPU per"));
    if !tls_cpu.is_empty() {
        let (w, hi) = tls_cpu
            .iter()
            .copied()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("not empty");
        rows.push((
            "TLS CPU per request ≤ 1.0x (per connection for tls-resume, tls-handshake)".into(),
            format!("highest {hi:.3}x ({w}); {}", list(&tls_cpu)),
            (tls_cpu.len() == TLS_WORKLOADS.len()).then_some(hi <= 1.0),
        ));
    }
    if let Some(m) = medians(results, "get-set-rate", |n| n.starts_with("p99 latency")) {
        rows.push((
            format!(
                "p99 latency at the same offered load ({} req/s, get-set-rate) ≤ 1.0x",
                fmt_num(rate as f64)
            ),
            format!(
                "{:.3}x ({} against {} us)",
                ratio(m),
                fmt_num(m[0]),
                fmt_num(m[1])
            ),
            Some(m[0] <= m[1]),
        ));
    }
    open_loop_rows(results, &mut rows);
    let fill = |wl: &str, want: f64, rows: &mut Vec<(String, String, Option<bool>)>| {
        let items = medians(results, wl, |n| n == "items retained");
        let rss = medians(results, wl, |n| n == "RSS after fill (MiB)");
        if let (Some(i), Some(r)) = (items, rss) {
            rows.push((
                format!("{wl}: items retained ≥ {want}x with RSS ≤ memcached's"),
                format!(
                    "{:.3}x items ({} against {}), RSS {:.3}x ({:.1} against {:.1} MiB)",
                    ratio(i),
                    fmt_num(i[0]),
                    fmt_num(i[1]),
                    ratio(r),
                    r[0],
                    r[1]
                ),
                Some(ratio(i) >= want && r[0] <= r[1]),
            ));
        }
    };
    fill("fill-mixed", 1.25, &mut rows);
    fill("fill-tiny", 2.0, &mut rows);
    let sizes: Vec<(usize, [f64; 2], Option<[f64; 2]>)> = FILL_SIZES
        .iter()
        .filter_map(|&v| {
            let label = size_label(v);
            let items = medians(results, "fill-sizes", |n| {
                n == format!("items retained, {label}")
            })?;
            let rss = medians(results, "fill-sizes", |n| {
                n == format!("RSS after fill (MiB), {label}")
            });
            Some((v, items, rss))
        })
        .collect();
    if sizes.len() == FILL_SIZES.len() {
        let fewer: Vec<String> = sizes
            .iter()
            .filter(|(_, i, _)| i[0] < i[1])
            .map(|(v, i, _)| format!("{} {:.3}x", size_label(*v), ratio(*i)))
            .collect();
        let higher_rss: Vec<String> = sizes
            .iter()
            .filter_map(|(v, _, r)| {
                let r = (*r)?;
                (r[0] > r[1]).then(|| format!("{} {:.3}x", size_label(*v), ratio(r)))
            })
            .collect();
        let all: Vec<String> = sizes
            .iter()
            .map(|(v, i, _)| format!("{} {:.3}x", size_label(*v), ratio(*i)))
            .collect();
        rows.push((
            "fill-sizes: never fewer items than memcached, 10 B..512 KiB, RSS no higher".into(),
            format!(
                "{}; fewer at: {}; RSS higher at: {}",
                all.join(", "),
                if fewer.is_empty() {
                    "none".into()
                } else {
                    fewer.join(", ")
                },
                if higher_rss.is_empty() {
                    "none".into()
                } else {
                    higher_rss.join(", ")
                }
            ),
            Some(fewer.is_empty() && higher_rss.is_empty()),
        ));
    }
    let idle_conns = results
        .iter()
        .find_map(|(w, _)| match w.kind {
            Kind::Idle { conns } => Some(conns),
            _ => None,
        })
        .unwrap_or(0);
    if let Some(m) = medians(results, "idle-5000", |n| n.starts_with("RSS with")) {
        let per = medians(results, "idle-5000", |n| n == "RSS per idle conn (KiB)");
        rows.push((
            format!(
                "RSS with {} idle connections ≤ memcached's",
                fmt_num(idle_conns as f64)
            ),
            format!(
                "{:.3}x ({:.1} against {:.1} MiB{})",
                ratio(m),
                m[0],
                m[1],
                per.map(|p| format!("; {:.2} against {:.2} KiB per connection", p[0], p[1]))
                    .unwrap_or_default()
            ),
            Some(m[0] <= m[1]),
        ));
    }
    if let Some(m) = medians(results, "zipf-cache-aside", |n| {
        n == "hit ratio, measured (%)"
    }) {
        let pp = m[0] - m[1];
        rows.push((
            "zipf cache-aside hit ratio ≥ memcached's + 2 percentage points".into(),
            format!("{:.2}% against {:.2}%: {pp:+.2} pp", m[0], m[1]),
            Some(pp >= 2.0),
        ));
    }
    if rows.is_empty() {
        return;
    }
    println!();
    println!("==== targets (from the medians above) ====");
    println!();
    for (what, value, ok) in rows {
        let verdict = match ok {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "(partial run)",
        };
        println!("  [{verdict}] {what}: {value}");
    }
}
