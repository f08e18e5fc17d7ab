#!/usr/bin/env bash
# The whole test suite: unit tests, wire tests (against memcrab, and against memcached
# 1.6.45 too, built from ../shared/oracle, or else the memcached on PATH: the differential
# run), real clients (pymemcache, libmemcached's memccapable, twemproxy, Prometheus), hostile
# and faulty clients (tests/fault), and the packaging: the container image under Docker
# (skipped, loudly, without Docker) and the Kubernetes manifests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import pytest, pymemcache' 2>/dev/null; then
    python3 -m pip install -q -r tests/clients/requirements.txt
fi
if [ -z "${MEMCRAB_IT_MEMCACHED:-}" ]; then
    # The oracle: memcached 1.6.45 built from ../shared/oracle (a minute, once; reused).
    if oracle=$(bash ../shared/oracle/build.sh 2>/tmp/memcrab-oracle-build.log | tail -1) &&
        [ -x "$oracle" ]; then
        export MEMCRAB_IT_MEMCACHED="$oracle"
    else
        echo "NOTE: memcached 1.6.45 could not be built (../shared/oracle/build.sh:" \
            "$(tail -1 /tmp/memcrab-oracle-build.log)); the differential tests use the" \
            "memcached on PATH, if any" >&2
    fi
fi
if [ -n "${MEMCRAB_IT_MEMCACHED:-}" ]; then
    export MEMCRAB_FAULT_MEMCACHED="${MEMCRAB_FAULT_MEMCACHED:-$MEMCRAB_IT_MEMCACHED}"
elif [ "${CI:-}" = true ]; then
    # CI installs the build tools: a differential run without the 1.6.45 oracle is no run.
    echo "FAILED: no memcached 1.6.45 oracle under CI (see /tmp/memcrab-oracle-build.log)" >&2
    exit 1
elif ! command -v memcached >/dev/null; then
    echo "NOTE: memcached is not installed: the wire tests run against memcrab only" >&2
fi

cargo test --release --workspace
# The real-client tests run the binary `cargo test` just built, wherever the
# target directory is.
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export MEMCRAB_BIN="${MEMCRAB_BIN:-$target_dir/release/memcrab}"
python3 -m pytest -q tests/clients
# Hostile and faulty clients: memory bounds, streaming, descriptors, signals, slowloris.
python3 -m pytest -q tests/fault
bash scripts/test-container.sh
