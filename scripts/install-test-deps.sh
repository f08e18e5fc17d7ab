#!/usr/bin/env bash
# Installs what the test suite needs and is missing, on a Debian or Ubuntu machine: the apt
# packages below and the Python requirements of tests/clients and tests/container. Both
# .ci/run and scripts/test.sh call it, so CI and a developer's machine install the same set.
# When everything is there it only checks (dpkg-query, a Python import), so it is quick to
# run again. apt runs as root, or through passwordless sudo; without either it prints the
# one command that installs what is missing, and exits 3. Under CI (CI=true) anything left
# missing is a failure: exit 1.
# Everything it says goes to stderr; stdout is only the list of what is still missing (empty
# when nothing is), for scripts/test.sh's summary.
set -euo pipefail
cd "$(dirname "$0")/.."

# memcached: the oracle for the differential wire tests (Debian's 1.6.18, when the 1.6.45
#   build is not there); libmemcached-tools: memccapable; nutcracker: twemproxy, for the
#   proxy tests; prometheus: promtool and a real scraper.
# build-essential autoconf automake libevent-dev libssl-dev libsasl2-dev: what
#   ../shared/oracle/build.sh needs to build memcached 1.6.45, the release memcrab answers as.
# libsasl2-modules: the PLAIN mechanism, for the oracle's SASL (-S) and pylibmc's.
# openssl: the TLS tests' throwaway certificates and `openssl s_client` handshakes.
# libc6-dev and binutils: the static glibc build and strip for the container image
#   (scripts/build-static.sh).
APT_PACKAGES=(memcached libmemcached-tools nutcracker prometheus
    build-essential autoconf automake libevent-dev libssl-dev libsasl2-dev libsasl2-modules
    libc6-dev binutils openssl)
PIP_REQUIREMENTS=(tests/clients/requirements.txt tests/container/requirements.txt)

missing_apt() {
    local p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"
    done
}

pip_ok() {
    python3 -c 'import pytest, pymemcache, pylibmc, yaml, kubernetes_validate' 2>/dev/null &&
        command -v hadolint >/dev/null
}

still_missing=()
if ! command -v dpkg-query >/dev/null; then
    echo "install-test-deps: not a Debian or Ubuntu machine (no dpkg-query): install the" \
        "equivalents of ${APT_PACKAGES[*]} yourself" >&2
    still_missing+=("${APT_PACKAGES[@]}")
else
    mapfile -t apt_missing < <(missing_apt)
    if [ "${#apt_missing[@]}" -gt 0 ]; then
        if [ "$(id -u)" = 0 ]; then
            sudo=()
        elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            sudo=(none)
        fi
        if [ "${sudo[*]}" = none ]; then
            echo "install-test-deps: missing ${apt_missing[*]}; not root and no passwordless" \
                "sudo. Install them with:" >&2
            echo "  sudo apt-get update && sudo apt-get install -y ${apt_missing[*]}" >&2
        else
            echo "install-test-deps: installing ${apt_missing[*]}" >&2
            export DEBIAN_FRONTEND=noninteractive
            { "${sudo[@]}" apt-get update -qq >&2 &&
                "${sudo[@]}" apt-get install -y -qq "${apt_missing[@]}" >/dev/null; } ||
                echo "install-test-deps: apt-get failed" >&2
            mapfile -t apt_missing < <(missing_apt)
        fi
        still_missing+=("${apt_missing[@]}")
    fi
fi

if ! pip_ok; then
    echo "install-test-deps: installing the Python requirements (${PIP_REQUIREMENTS[*]})" >&2
    for r in "${PIP_REQUIREMENTS[@]}"; do
        python3 -m pip install -q -r "$r" >&2 || true
    done
    if ! pip_ok; then
        echo "install-test-deps: the Python requirements did not install; try:" >&2
        echo "  python3 -m pip install -r ${PIP_REQUIREMENTS[0]} -r ${PIP_REQUIREMENTS[1]}" >&2
        still_missing+=("python:${PIP_REQUIREMENTS[*]}")
    fi
fi

if [ "${#still_missing[@]}" -gt 0 ]; then
    echo "${still_missing[*]}"
    if [ "${CI:-}" = true ]; then
        echo "FAILED: CI could not install ${still_missing[*]}" >&2
        exit 1
    fi
    exit 3
fi
