"""Fixtures for the real-client test suite.

Every test talks to server processes it starts itself, each on a free port of
127.0.0.1, with ``-p PORT -l 127.0.0.1 -U 0`` plus the test's extra arguments
(see support.py for the binary: ``$MEMCRAB_BIN``).
"""

import os
import time

import pytest

from support import DEFAULT_BIN, STOP_TIMEOUT, ServerProcess, resolve_binary


@pytest.fixture(scope="session")
def server_binary():
    binary = resolve_binary()
    if binary is None:
        wanted = os.environ.get("MEMCRAB_BIN") or str(DEFAULT_BIN)
        pytest.fail(
            f"server binary not found: {wanted} (build it with "
            "`cargo build --release`, or set MEMCRAB_BIN)",
            pytrace=False,
        )
    return binary


@pytest.fixture(scope="session")
def _reaper():
    """Servers that were sent SIGTERM; waited for (and killed if needed).

    memcached takes up to a second to exit after SIGTERM (its clock tick).
    Tests only send the signal at teardown and the waiting happens here, in
    the background of the following tests, and finally at the end of the
    session, so the suite does not spend a second per test.
    """
    stopping = []
    yield stopping
    deadline = time.monotonic() + STOP_TIMEOUT
    for server in stopping:
        server.stop(timeout=deadline - time.monotonic())


@pytest.fixture
def start_server(server_binary, tmp_path, _reaper):
    """Factory: ``start_server(*extra_args)`` starts one more server process.

    At teardown every server is sent SIGTERM by its PID (the session waits
    for it and kills it if needed); a server that died during the test
    (without ``expect_exit``) is reported as an error with its log.
    """
    servers = []

    def start(*extra_args):
        log_path = tmp_path / f"server-{len(servers)}.log"
        server = ServerProcess(server_binary, extra_args, log_path)
        servers.append(server)
        return server.start()

    yield start

    crashed = []
    for server in servers:
        status = server.proc.poll() if server.proc is not None else None
        if status is not None and not server.expect_exit:
            crashed.append(
                f"{server.command()} exited during the test with status "
                f"{status}; log:\n{server.log_tail()}"
            )
        server.close_clients()
        server.terminate()
        _reaper.append(server)
        # reap the ones that have exited meanwhile, keep the list short
        _reaper[:] = [s for s in _reaper if s.proc.poll() is None]
    if crashed:
        pytest.fail("\n".join(crashed), pytrace=False)


@pytest.fixture
def server(start_server):
    """One server with default options."""
    return start_server()


@pytest.fixture
def client(server):
    """A pymemcache Client connected to ``server`` (default noreply=True)."""
    return server.client()
