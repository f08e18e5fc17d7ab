"""Server processes and clients for the real-client test suite.

The binary is ``$MEMCRAB_BIN`` (default: ``target/release/memcrab`` under the
repository root). ``MEMCRAB_BIN=memcached`` (or any path whose file name is
``memcached``) runs the suite against memcached itself, the oracle; ``-u nobody``
is then added because memcached refuses to run as root without it.
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from pymemcache.client.base import Client

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "release" / "memcrab"

HOST = "127.0.0.1"
START_TIMEOUT = 5.0  # seconds until the server must accept connections
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
CLIENT_TIMEOUT = 5.0  # socket timeout for every client, so no test hangs


def resolve_binary():
    """The server binary to test, as an absolute path (or None if missing)."""
    value = os.environ.get("MEMCRAB_BIN")
    if not value:
        return str(DEFAULT_BIN) if DEFAULT_BIN.is_file() else None
    if os.sep not in value:  # a bare name such as "memcached": look in PATH
        return shutil.which(value)
    for candidate in (Path(value), REPO_ROOT / value):
        if candidate.is_file():
            return os.path.abspath(candidate)
    return None


def is_memcached(binary):
    # Debian's `memcached` or a build such as `memcached-1.6.45`.
    return os.path.basename(binary).startswith("memcached")


def free_port():
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def client_options(**kwargs):
    """pymemcache options for every client of the suite.

    Bounded timeouts, so that no test can hang on a silent server, and
    TCP_NODELAY: without it a noreply write followed by a request waits for
    a delayed ACK (about 40 ms each time), which only makes the suite slow.
    """
    kwargs.setdefault("connect_timeout", CLIENT_TIMEOUT)
    kwargs.setdefault("timeout", CLIENT_TIMEOUT)
    kwargs.setdefault("no_delay", True)
    return kwargs


def make_client(address, **kwargs):
    """A pymemcache Client with the suite's options."""
    return Client(address, **client_options(**kwargs))


class ServerProcess:
    """One server process on 127.0.0.1, stopped by its own PID."""

    def __init__(self, binary, extra_args, log_path):
        self.binary = binary
        self.extra_args = list(extra_args)
        self.log_path = log_path
        self.port = None
        self.proc = None
        self.expect_exit = False  # set by tests that stop the server on purpose
        self.clients = []  # clients made by client(), closed at teardown

    @property
    def address(self):
        return (HOST, self.port)

    @property
    def pid(self):
        return self.proc.pid

    def command(self):
        cmd = [self.binary, "-p", str(self.port), "-l", HOST, "-U", "0"]
        if is_memcached(self.binary):
            cmd += ["-u", "nobody"]
        return cmd + self.extra_args

    def log_tail(self, limit=2000):
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def start(self, attempts=3):
        # Another process may grab the free port between the probe and the
        # server's bind: retry with a new port if the server exits early.
        for _ in range(attempts):
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_accepting():
                return self
            if self.proc.poll() is None:
                self.stop()
                raise RuntimeError(
                    f"{self.command()} did not accept connections within "
                    f"{START_TIMEOUT}s; log:\n{self.log_tail()}"
                )
        raise RuntimeError(
            f"{self.command()} exited with status {self.proc.returncode} "
            f"at startup; log:\n{self.log_tail()}"
        )

    def _wait_accepting(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(self.address, timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def is_running(self):
        return self.proc is not None and self.proc.poll() is None

    def terminate(self):
        """Send SIGTERM to the process (by its PID) without waiting."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def stop(self, timeout=STOP_TIMEOUT):
        """Stop the process: SIGTERM, wait up to ``timeout`` s, then SIGKILL.

        Returns its exit status.
        """
        if self.proc is None:
            return None
        self.terminate()
        try:
            self.proc.wait(timeout=max(timeout, 0))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
        return self.proc.returncode

    def client(self, **kwargs):
        """A pymemcache Client for this server, closed at teardown."""
        c = make_client(self.address, **kwargs)
        self.clients.append(c)
        return c

    def close_clients(self):
        for c in self.clients:
            c.close()
        self.clients.clear()
