#!/usr/bin/env bash
# The whole test suite: unit tests, wire tests (against memcrab, and against memcached
# 1.6.45 too, built from ../shared/oracle, or else the memcached on PATH: the differential
# run), real clients (pymemcache, libmemcached's memccapable, twemproxy, Prometheus), hostile
# and faulty clients (tests/fault), and the packaging: the container image under Docker and
# the Kubernetes manifests.
#
# First it installs what the tests need and is missing (scripts/install-test-deps.sh: apt
# packages as root or with passwordless sudo, else it prints the command; the Python
# requirements), then builds the oracle. What cannot run is skipped, loudly, and listed
# in a summary at the end. Under CI (CI=true) a missing oracle or Docker fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

skips=$(mktemp /tmp/memcrab-test-skips.XXXXXX)
by_design=$(mktemp /tmp/memcrab-test-by-design.XXXXXX)
stage_log=$(mktemp /tmp/memcrab-test-stage.XXXXXX)
summary() {
    local status=$?
    echo >&2
    if [ -s "$by_design" ]; then
        echo "==== scripts/test.sh: left out by design (memcached's side of memcrab-only" \
            "checks) ====" >&2
        sed 's/^/  /' "$by_design" >&2
    fi
    if [ -s "$skips" ]; then
        echo "==== scripts/test.sh: SKIPPED ($(wc -l <"$skips") notices) ====" >&2
        sed 's/^/  /' "$skips" >&2
    else
        echo "==== scripts/test.sh: nothing skipped ====" >&2
    fi
    [ "$status" = 0 ] || echo "==== scripts/test.sh: FAILED (exit status $status) ====" >&2
    rm -f "$skips" "$by_design" "$stage_log"
}
trap summary EXIT

# `skipped WHAT`: one line of the summary, and a notice now.
skipped() {
    echo "$*" >>"$skips"
    echo "SKIPPED: $*" >&2
}

# `stage NAME COMMAND...`: runs COMMAND with its output shown and kept, then adds the skip
# notices it printed to the summary: pytest's short summary (`-ra`: "SKIPPED [n] file:line:
# reason") and the "SKIPPED:" / "NOTICE: ... skipped" lines of the wire tests and of
# scripts/test-container.sh. The memcached variants of tests/fault's memcrab-only checks
# (reason "memcached: ...") are listed apart: they are left out on every machine.
stage() {
    local name=$1 status=0
    shift
    "$@" 2>&1 | tee "$stage_log" || status=$?
    grep -E '^(SKIPPED[: ]|NOTICE: .*skipped)' "$stage_log" |
        awk -v stage="[$name]" -v skips="$skips" -v by_design="$by_design" '
            { line = stage " " $0 }
            /^SKIPPED \[[0-9]+\] [^ ]+:[0-9]+: memcached: / { print line >>by_design; next }
            { print line >>skips }' || true
    return "$status"
}

if missing=$(bash scripts/install-test-deps.sh); then
    :
else
    status=$?
    [ "$status" = 3 ] || exit "$status"
    skipped "test dependencies not installed: $missing (the tests that need them skip)"
fi

if [ -z "${MEMCRAB_IT_MEMCACHED:-}" ]; then
    # The oracle: memcached 1.6.45 built from ../shared/oracle (a minute, once; reused).
    if oracle=$(bash ../shared/oracle/build.sh 2>/tmp/memcrab-oracle-build.log | tail -1) &&
        [ -x "$oracle" ]; then
        export MEMCRAB_IT_MEMCACHED="$oracle"
    else
        echo "NOTE: memcached 1.6.45 could not be built (../shared/oracle/build.sh:" \
            "$(tail -1 /tmp/memcrab-oracle-build.log 2>/dev/null)); the differential tests" \
            "use the memcached on PATH, if any" >&2
    fi
fi
if [ -n "${MEMCRAB_IT_MEMCACHED:-}" ]; then
    export MEMCRAB_FAULT_MEMCACHED="${MEMCRAB_FAULT_MEMCACHED:-$MEMCRAB_IT_MEMCACHED}"
elif [ "${CI:-}" = true ]; then
    # CI installs the build tools: a differential run without the 1.6.45 oracle is no run.
    echo "FAILED: no memcached 1.6.45 oracle under CI (see /tmp/memcrab-oracle-build.log)" >&2
    exit 1
else
    skipped "the memcached 1.6.45 oracle is not built ($(tail -1 /tmp/memcrab-oracle-build.log \
        2>/dev/null)): see the wire tests' notices"
fi
# Python's output through a pipe, as it comes.
export PYTHONUNBUFFERED=1

stage "cargo test" cargo test --release --workspace
# The real-client tests run the binary `cargo test` just built, wherever the
# target directory is.
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export MEMCRAB_BIN="${MEMCRAB_BIN:-$target_dir/release/memcrab}"
stage "tests/clients" python3 -m pytest -q -ra tests/clients
# Hostile and faulty clients: memory bounds, streaming, descriptors, signals, slowloris.
stage "tests/fault" python3 -m pytest -q -ra tests/fault
stage "tests/container" bash scripts/test-container.sh
