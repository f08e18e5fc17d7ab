#!/usr/bin/env bash
# The whole test suite: unit tests, wire tests (against memcrab, and against Debian's
# memcached too when it is installed: the differential run), real clients (pymemcache,
# libmemcached's memccapable, twemproxy, Prometheus), and the packaging: the container image
# under Docker (skipped, loudly, without Docker) and the Kubernetes manifests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import pytest, pymemcache' 2>/dev/null; then
    python3 -m pip install -q -r tests/clients/requirements.txt
fi
if ! command -v memcached >/dev/null; then
    echo "NOTE: memcached is not installed: the wire tests run against memcrab only" >&2
fi

cargo test --release
# The real-client tests run the binary `cargo test --release` just built, wherever the
# target directory is.
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
MEMCRAB_BIN="${MEMCRAB_BIN:-$target_dir/release/memcrab}" python3 -m pytest -q tests/clients
bash scripts/test-container.sh
