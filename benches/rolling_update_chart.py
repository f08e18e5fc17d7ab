#!/usr/bin/env python3
"""Draws the rolling-update hit ratio over time, with and without -e, as a plain SVG.

The series come from tests/container/test_warm_restart.py::test_a_rolling_update_keeps_the_hit_ratio_with_e,
which writes them to target/rolling-update.json:

    bash scripts/build-static.sh
    (cd tests/container && python3 -m pytest -q test_warm_restart.py -k rolling_update)
    python3 benches/rolling_update_chart.py     # -> docs/bench/rolling-update.svg

It also prints the figures BENCHMARKS.md quotes. No plotting library: the SVG is written
by hand (labels are SVG text, no fonts needed).
"""

import argparse
import json
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
RUNS = [("with_e", "with -e (warm restart)", "#1f77b4"), ("without_e", "without -e (cold)", "#d62728")]
W, H = 900, 440
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 50, 70


def series(run, bucket_s):
    """(seconds at the bucket's middle, hit ratio) per bucket with requests."""
    return [
        ((b + 0.5) * bucket_s, hits / gets)
        for b, (gets, hits) in enumerate(zip(run["gets"], run["hits"]))
        if gets and (b + 1) * bucket_s <= run["end"]
    ]


def chart(data):
    bucket_s = data["bucket_s"]
    runs = data["runs"]
    t_max = max(run["end"] for run in runs.values())
    y_min = 0.5
    lowest = min(r for run in runs.values() for _, r in series(run, bucket_s))
    while lowest < y_min:
        y_min -= 0.1
    y_min = max(0.0, round(y_min, 1))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(t):
        return LEFT + pw * t / t_max

    def y(r):
        return TOP + ph * (1 - (r - y_min) / (1 - y_min))

    out = [
        f'<svg width="{W}" height="{H}" viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg" '
        'font-family="sans-serif">',
        f'<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>',
        f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">'
        + escape(
            f"Hit ratio during a rolling update of {data['containers']} containers "
            f"(cache-aside, zipf({data['zipf_s']}) over {data['keys']:,} keys, "
            f"{data['rate']:,} gets/s), per {bucket_s} s"
        )
        + "</text>",
    ]
    # Restarts: from the stop to the new container serving, one band per run.
    for i, (name, _, color) in enumerate(RUNS):
        for r in runs[name]["restarts"]:
            y0 = TOP + (ph / 2) * i
            out.append(
                f'<rect x="{x(r["stopped"]):.1f}" y="{y0:.1f}" '
                f'width="{max(1.0, x(r["serving"]) - x(r["stopped"])):.1f}" height="{ph / 2:.1f}" '
                f'fill="{color}" opacity="0.12"/>'
            )
    # Grid and axes.
    steps = round((1 - y_min) / 0.1)
    for k in range(steps + 1):
        r = y_min + k * 0.1
        out.append(
            f'<line x1="{LEFT}" y1="{y(r):.1f}" x2="{W - RIGHT}" y2="{y(r):.1f}" stroke="#dddddd"/>'
        )
        out.append(
            f'<text x="{LEFT - 8}" y="{y(r) + 4:.1f}" text-anchor="end" font-size="12">{r:.0%}</text>'
        )
    t = 0
    while t <= t_max:
        out.append(
            f'<line x1="{x(t):.1f}" y1="{TOP + ph}" x2="{x(t):.1f}" y2="{TOP + ph + 5}" stroke="#000000"/>'
        )
        out.append(
            f'<text x="{x(t):.1f}" y="{TOP + ph + 19}" text-anchor="middle" font-size="12">{t}</text>'
        )
        t += 2
    out.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#000000"/>'
    )
    out.append(
        f'<text x="{LEFT + pw / 2}" y="{H - 32}" text-anchor="middle" font-size="12">'
        "seconds since the load started (shaded: a container stopped, until its successor serves)</text>"
    )
    out.append(
        f'<text x="16" y="{TOP + ph / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 16 {TOP + ph / 2})">hits / gets</text>'
    )
    for name, _, color in RUNS:
        points = " ".join(f"{x(t):.1f},{y(r):.1f}" for t, r in series(runs[name], bucket_s))
        out.append(
            f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>'
        )
    # Legend.
    for i, (name, label, color) in enumerate(RUNS):
        lx = LEFT + 10 + i * 260
        ly = H - 12
        out.append(
            f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 24}" y2="{ly - 4}" stroke="{color}" stroke-width="3"/>'
        )
        out.append(f'<text x="{lx + 30}" y="{ly}" font-size="12">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def pct(r):
    return "-" if r is None else f"{100 * r:.1f}%"


def figures_table(data):
    lines = [
        "| | with -e | without -e |",
        "| --- | --- | --- |",
    ]
    f = {name: data["runs"][name]["figures"] for name, _, _ in RUNS}
    rows = [
        ("hit ratio before the update", lambda g: pct(g["before"])),
        ("hit ratio during the update (first stop to end)", lambda g: pct(g["during_update"])),
        ("lowest 0.5 s bucket during the update", lambda g: pct(g["min_bucket"])),
        (
            f"after each restart ({data['rejoin_s']} s after serving, to the next stop)",
            lambda g: ", ".join(pct(r) for r in g["after_each_restart"]),
        ),
        (f"gets/s (offered {data['rate']:,})", lambda g: f"{g['gets_per_s']:,.0f}"),
    ]
    for label, fmt in rows:
        lines.append(f"| {label} | {fmt(f['with_e'])} | {fmt(f['without_e'])} |")
    downtime = {
        name: ", ".join(
            f"{r['serving'] - r['stopped']:.1f}" for r in data["runs"][name]["restarts"]
        )
        for name, _, _ in RUNS
    }
    lines.append(
        f"| seconds from each stop to the new container serving | {downtime['with_e']} | "
        f"{downtime['without_e']} |"
    )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=ROOT / "target/rolling-update.json")
    parser.add_argument("--output", type=Path, default=ROOT / "docs/bench/rolling-update.svg")
    args = parser.parse_args()
    data = json.loads(args.input.read_text())
    args.output.write_text(chart(data))
    print(f"wrote {args.output}")
    print(figures_table(data))


if __name__ == "__main__":
    main()
