//! SVG charts of a full run (plotters).

use plotters::style::RGBColor;

use crate::Res;
use crate::report::{Results, fmt_num, is_rate, medians};
use crate::workload::open::{P99, P999, Sweep, level_name};
use crate::workload::{FILL_SIZES, Kind, THROUGHPUT_WORKLOADS, size_label};

/// Where full runs write their SVG charts, relative to the workspace root.
pub const CHART_DIR: &str = "docs/bench";

const MEMCRAB_COLOR: RGBColor = RGBColor(222, 98, 34);
const MEMCACHED_COLOR: RGBColor = RGBColor(52, 101, 164);

struct BarChart<'a> {
    pub file: &'a str,
    pub title: String,
    pub y_desc: &'a str,
    /// Per group: its label and (memcrab, memcached).
    pub groups: Vec<(String, [f64; 2])>,
    /// log10 y axis (values spanning decades).
    pub log: bool,
    /// Label above each bar.
    pub fmt: fn(f64) -> String,
}

/// Draws a grouped bar chart, memcrab's bar left of memcached's. Labels are SVG `<text>`
/// elements (plotters without its `ttf` feature measures text with a fixed estimate and needs
/// no fonts), so the output is the same on every machine.
fn draw_bars(dir: &std::path::Path, c: &BarChart) -> Res<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let path = dir.join(c.file);
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let groups: Vec<&(String, [f64; 2])> = c
        .groups
        .iter()
        .filter(|g| g.1.iter().all(|v| v.is_finite() && *v > 0.0))
        .collect();
    if groups.is_empty() {
        return Ok(());
    }
    let vals = groups.iter().flat_map(|g| g.1);
    let (min, max) = vals.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let tr = |v: f64| if c.log { v.log10() } else { v };
    let (lo, hi) = if c.log {
        (min.log10().floor().min(0.0), (max * 3.0).log10().ceil())
    } else {
        (0.0, max * 1.15)
    };
    let width = (180 + 170 * groups.len() as u32).max(11 * c.title.len() as u32 + 60);
    let root = SVGBackend::new(&path, (width, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(34)
        .y_label_area_size(84)
        .build_cartesian_2d(0f64..groups.len() as f64, lo..hi)
        .map_err(|e| err(&e))?;
    let y_fmt = |v: &f64| {
        if c.log {
            fmt_num(10f64.powf(*v))
        } else {
            fmt_num(*v)
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_label_formatter(&|_| String::new())
        .y_labels(if c.log { (hi - lo) as usize + 1 } else { 8 })
        .y_label_formatter(&y_fmt)
        .y_desc(c.y_desc)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| err(&e))?;
    let value_style =
        TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (t, (name, color)) in [("memcrab", MEMCRAB_COLOR), ("memcached", MEMCACHED_COLOR)]
        .into_iter()
        .enumerate()
    {
        let x0 = |i: usize| i as f64 + 0.1 + 0.41 * t as f64;
        chart
            .draw_series(groups.iter().enumerate().map(|(i, g)| {
                Rectangle::new([(x0(i), lo), (x0(i) + 0.39, tr(g.1[t]))], color.filled())
            }))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        chart
            .draw_series(groups.iter().enumerate().map(|(i, g)| {
                Text::new(
                    (c.fmt)(g.1[t]),
                    (x0(i) + 0.195, tr(g.1[t])),
                    value_style.clone(),
                )
            }))
            .map_err(|e| err(&e))?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight).map_err(|e| err(&e))?;
    let label_style =
        TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, g) in groups.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, lo));
        root.draw(&Text::new(g.0.clone(), (px, py + 8), label_style.clone()))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Writes the charts of a full run to [`CHART_DIR`].
pub fn write_charts(results: &Results, rate: u64) -> Res<()> {
    let dir = crate::server::workspace_root().join(CHART_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let groups = |names: &[&str], is: &dyn Fn(&str) -> bool| -> Vec<(String, [f64; 2])> {
        names
            .iter()
            .filter_map(|w| {
                let m = medians(results, w, is)?;
                let label = match *w {
                    "multiget-10" => "multiget-10 (multigets)".to_string(),
                    "get-set-pipe16" => "get-set-pipe16 (batch)".to_string(),
                    "get-set-rate" => format!("get-set-rate ({}k/s)", rate / 1000),
                    w => w.to_string(),
                };
                Some((label, m))
            })
            .collect()
    };
    let sizes_mem = results
        .iter()
        .find(|(w, _)| w.name == "fill-sizes")
        .map(|(w, _)| w.mem_mb)
        .unwrap_or(0);
    let mut latency_wls = THROUGHPUT_WORKLOADS.to_vec();
    latency_wls.push("get-set-rate");
    let charts = [
        BarChart {
            file: "throughput.svg",
            title: "Requests/s (closed loop, one request in flight per connection; median)".into(),
            y_desc: "requests/s",
            groups: groups(&THROUGHPUT_WORKLOADS, &is_rate),
            log: false,
            fmt: fmt_num,
        },
        BarChart {
            file: "p99-latency.svg",
            title: "p99 latency (per request; pipelined: per batch of 16; median)".into(),
            y_desc: "microseconds (log scale)",
            groups: groups(&latency_wls, &|n: &str| n.starts_with("p99 latency")),
            log: true,
            fmt: fmt_num,
        },
        BarChart {
            file: "fill-sizes.svg",
            title: format!("Items retained at -m {sizes_mem} by value size (20-40 B keys)"),
            y_desc: "items retained (log scale)",
            groups: FILL_SIZES
                .iter()
                .filter_map(|&v| {
                    let label = size_label(v);
                    let want = format!("items retained, {label}");
                    medians(results, "fill-sizes", |n| n == want).map(|m| (label, m))
                })
                .collect(),
            log: true,
            fmt: fmt_num,
        },
        BarChart {
            file: "zipf-hit-ratio.svg",
            title: "Hit ratio, zipf(0.99) cache-aside, 10x the keys that fit (measured phase)"
                .into(),
            y_desc: "hit ratio (%)",
            groups: groups(&["zipf-cache-aside"], &|n: &str| {
                n == "hit ratio, measured (%)"
            }),
            log: false,
            fmt: |v| format!("{v:.2}%"),
        },
    ];
    for c in &charts {
        draw_bars(&dir, c)?;
    }
    if let Some((name, sweep)) = results.iter().find_map(|(w, _)| match &w.kind {
        Kind::OpenLoop(s) => Some((w.name, s)),
        _ => None,
    }) {
        draw_latency_vs_load(&dir, results, name, sweep)?;
    }
    Ok(())
}

/// latency-vs-load.svg: the open-loop sweep's p99 and p99.9 (medians) of both servers
/// against the offered load, on a log scale.
fn draw_latency_vs_load(
    dir: &std::path::Path,
    results: &Results,
    wl: &str,
    sweep: &Sweep,
) -> Res<()> {
    use plotters::prelude::*;
    let path = dir.join("latency-vs-load.svg");
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    // Per percentile: the loads it has medians at, (load %, [memcrab, memcached]) in us.
    type Points = Vec<(f64, [f64; 2])>;
    let series: Vec<(&str, Points)> = [(P99, "p99"), (P999, "p99.9")]
        .into_iter()
        .map(|(col, label)| {
            let points = sweep
                .levels
                .iter()
                .filter_map(|&pct| {
                    let name = level_name(col, pct);
                    let m = medians(results, wl, |n| n == name)?;
                    m.iter().all(|v| *v > 0.0).then_some((pct as f64, m))
                })
                .collect();
            (label, points)
        })
        .collect();
    let all: Vec<f64> = series
        .iter()
        .flat_map(|(_, p)| p.iter().flat_map(|(_, m)| *m))
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    let (min, max) = all
        .iter()
        .fold((f64::INFINITY, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let (lo, hi) = (
        min.log10().floor(),
        max.log10().ceil().max(min.log10().floor() + 1.0),
    );
    let capacity = sweep
        .capacity
        .rate()
        .map(|r| format!(" = {} req/s", fmt_num(r)))
        .unwrap_or_default();
    let root = SVGBackend::new(&path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Open-loop latency against offered load ({wl}; median)"),
            ("sans-serif", 20),
        )
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(84)
        .build_cartesian_2d(0f64..100f64, lo..hi)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_labels(11)
        .light_line_style(WHITE)
        .x_label_formatter(&|v| format!("{v:.0}%"))
        .x_desc(format!(
            "offered load, % of memcached's closed-loop get-set capacity (100%{capacity})"
        ))
        .y_labels((hi - lo) as usize + 1)
        .y_label_formatter(&|v| fmt_num(10f64.powf(*v)))
        .y_desc("microseconds (log scale)")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| err(&e))?;
    for (label, points) in &series {
        for (t, (server, color)) in [("memcrab", MEMCRAB_COLOR), ("memcached", MEMCACHED_COLOR)]
            .into_iter()
            .enumerate()
        {
            let xy: Vec<(f64, f64)> = points.iter().map(|(x, m)| (*x, m[t].log10())).collect();
            let name = format!("{server} {label}");
            if *label == "p99" {
                let style = color.stroke_width(2);
                chart
                    .draw_series(LineSeries::new(xy, style).point_size(3))
                    .map_err(|e| err(&e))?
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
            } else {
                let style = color.stroke_width(1);
                chart
                    .draw_series(DashedLineSeries::new(xy, 6, 4, style))
                    .map_err(|e| err(&e))?
                    .label(name)
                    .legend(move |(x, y)| {
                        EmptyElement::at((x, y))
                            + PathElement::new(vec![(0, 0), (6, 0)], style)
                            + PathElement::new(vec![(10, 0), (16, 0)], style)
                    });
            }
        }
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperLeft).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The series legend every chart draws: boxed, at `position`.
fn draw_legend<'a, DB, CT>(
    chart: &mut plotters::prelude::ChartContext<'a, DB, CT>,
    position: plotters::prelude::SeriesLabelPosition,
) -> Result<(), String>
where
    DB: plotters::prelude::DrawingBackend + 'a,
    CT: plotters::coord::CoordTranslate,
{
    use plotters::prelude::*;
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .margin(12)
        .draw()
        .map_err(|e| e.to_string())
}
