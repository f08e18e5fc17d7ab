#!/usr/bin/env bash
# The packaging tests (tests/container): the image built from docker/Dockerfile.prebuilt
# around static binaries built on the host (scripts/build-static.sh), run for real under
# Docker (argument shapes of the charts, read-only/no-capability runtime, drain on
# `docker stop`, a three-container "StatefulSet" behind HashClient and twemproxy, warm
# restarts on a Docker volume and a rolling update with and without -e, Bitnami's scripts
# and variables), and the Kubernetes manifests in k8s/ (kustomize, kubernetes-validate; no
# Docker needed).
#
# Without a working Docker (`docker info` fails) it says so loudly, runs only the tests that
# need no Docker (k8s/, hadolint, the Dockerfiles) and exits 0 when they pass; under CI
# (CI=true), where Docker is part of the machine, it fails instead.
# Every container, network and image tag it creates is named memcrab-pkgtest-<pid>-<random>
# and removed by name.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import pytest, pymemcache, yaml, kubernetes_validate' 2>/dev/null ||
    ! command -v hadolint >/dev/null; then
    python3 -m pip install -q -r tests/container/requirements.txt
fi

if ! docker info >/dev/null 2>&1; then
    cat >&2 <<'NOTICE'
##########################################################################################
##  NOTICE: Docker is not available (`docker info` failed).                             ##
##  The container image is NOT built and NOT tested. Only the tests that need no Docker ##
##  run: the Kubernetes manifests (k8s/), hadolint and the Dockerfiles.                  ##
##########################################################################################
NOTICE
    python3 -m pytest -q tests/container
    if [ "${CI:-}" = true ]; then
        echo "FAILED: CI has no working Docker: the container tests cannot run" >&2
        exit 1
    fi
    echo "NOTICE: container tests skipped: Docker is not available" >&2
    exit 0
fi

bash scripts/build-static.sh
MEMCRAB_REQUIRE_DOCKER=1 python3 -m pytest -q tests/container "$@"
