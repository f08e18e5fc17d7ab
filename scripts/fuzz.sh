#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer with AddressSanitizer) of every target in
# fuzz/: the text/meta parser, the request pipeline on raw bytes, and the pipeline against a
# model map. Seeds come from the wire tests (scripts/fuzz-seeds.py); what a run learns is
# kept in fuzz/corpus/ (not committed). A crash stops the run with a non-zero status and
# leaves its input in fuzz/artifacts/<target>/; turn it into a regression test.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 s, every target
# Needs a nightly toolchain (cargo-fuzz builds with -Z flags); installs cargo-fuzz if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz.sh: no nightly toolchain (rustup toolchain list); cannot fuzz" >&2
    exit 2
fi
command -v cargo-fuzz >/dev/null || cargo install -q cargo-fuzz --locked
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
python3 scripts/fuzz-seeds.py "$seeds" >/dev/null
cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "$seeds/$t"
    echo "fuzz: $t for ${secs}s"
    cargo +nightly fuzz run -O "$t" "fuzz/corpus/$t" "$seeds/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=4096 -print_final_stats=1 2>&1 |
        grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss|INFO: (Running|Seed))|panicked|ERROR|SUMMARY' || true
    # grep hides the exit status: a crash leaves an artifact.
    if compgen -G "fuzz/artifacts/$t/*" >/dev/null; then
        echo "fuzz: $t found a crash: fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
