"""Fixtures for the fault-test suite.

Tests take ``kind`` (parametrized: memcrab, then memcached as the comparison) and
``start_server``. A test marked ``@pytest.mark.memcrab_only("why")`` skips its memcached
variant with that reason: the behaviour it checks is memcrab's (its shutdown drain, say)
and memcached does something else by design.

Each server is stopped by its PID at teardown (SIGKILL: the tests that care about how a
server exits stop it themselves), its clients' sockets and helper processes first; a server that died during a
test without the test expecting it fails the test with its log.

Figures (RSS, latencies) go through the ``figures`` fixture and are printed at the end
of the run, and written as JSON to ``$MEMCRAB_FAULT_FIGURES`` when that is set.
"""

import json
import os

import pytest

from support import DEFAULT_MEMCRAB, Server, memcached_binary, memcrab_binary

KINDS = ["memcrab", "memcached"]
_FIGURES = []


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "memcrab_only(reason): the memcached variant is skipped for this reason"
    )


@pytest.fixture(params=KINDS)
def kind(request):
    if request.param == "memcached":
        marker = request.node.get_closest_marker("memcrab_only")
        if marker is not None:
            pytest.skip(f"memcached: {marker.args[0]}")
        if memcached_binary() is None:
            why = "memcached not found (set MEMCRAB_FAULT_MEMCACHED)"
            if os.environ.get("CI") == "true":  # CI has the oracle: its absence is a failure
                pytest.fail(f"CI=true and {why}", pytrace=False)
            pytest.skip(why)
    elif memcrab_binary() is None:
        wanted = os.environ.get("MEMCRAB_BIN") or str(DEFAULT_MEMCRAB)
        pytest.fail(f"memcrab not found: {wanted} (cargo build --release)", pytrace=False)
    return request.param


@pytest.fixture
def binary(kind):
    return memcrab_binary() if kind == "memcrab" else memcached_binary()


@pytest.fixture
def start_server(kind, binary, tmp_path):
    """Factory: ``start_server(*args, nofile=None)`` starts one more server and waits
    until it accepts connections. ``nofile``: the RLIMIT_NOFILE to start it under, as
    (soft, hard); hard "" keeps the current hard limit.
    """
    servers = []

    def start(*args, nofile=None):
        log_path = tmp_path / f"{kind}-{len(servers)}.log"
        server = Server(kind, binary, args, log_path, nofile=nofile)
        servers.append(server)
        return server.start()

    yield start

    crashed = []
    for server in servers:
        server.release_clients()
        if server.proc is None:
            continue
        status = server.proc.poll()
        if status is not None and not server.expect_exit:
            crashed.append(
                f"{server.command()} exited during the test with status {status}; "
                f"log:\n{server.log_tail()}"
            )
        server.kill()
    if crashed:
        pytest.fail("\n".join(crashed), pytrace=False)


@pytest.fixture
def figures(request):
    """``figures(name, value, unit="")``: a measurement shown at the end of the run."""

    def record(name, value, unit=""):
        _FIGURES.append({"test": request.node.nodeid, "name": name, "value": value, "unit": unit})

    return record


def pytest_terminal_summary(terminalreporter):
    if not _FIGURES:
        return
    terminalreporter.section("fault-suite figures")
    for f in _FIGURES:
        value = f"{f['value']:.1f}" if isinstance(f["value"], float) else f["value"]
        terminalreporter.write_line(f"{f['test']}: {f['name']} = {value} {f['unit']}".rstrip())
    path = os.environ.get("MEMCRAB_FAULT_FIGURES")
    if path:
        with open(path, "w") as out:
            json.dump(_FIGURES, out, indent=1)
