"""Servers, measurements and the memory bound for the fault-test suite (tests/fault).

Every test starts its own server processes on free ports of 127.0.0.1 and talks to them
over raw sockets, as a hostile or buggy client would: no client library hides what the
server sends or when.

Binaries: memcrab is ``$MEMCRAB_BIN`` (default ``target/release/memcrab``); memcached, the
comparison, is ``$MEMCRAB_FAULT_MEMCACHED``, else /tmp/memcached-1.6.45, else the
``memcached`` on PATH.

The wire protocol is in wire.py, the helper processes (latency probe, churn load) in
load.py.
"""

import importlib.util
import os
import resource
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from wire import CLIENT_TIMEOUT, KiB, MiB, Conn, make_value

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MEMCRAB = REPO_ROOT / "target" / "release" / "memcrab"
MEMCACHED_CANDIDATES = ["/tmp/memcached-1.6.45", "memcached"]


def _load_clients_support():
    """tests/clients/support.py, whose server process class this suite extends (loaded
    under another name: both suites call their module ``support``)."""
    path = REPO_ROOT / "tests" / "clients" / "support.py"
    spec = importlib.util.spec_from_file_location("clients_support", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


clients_support = _load_clients_support()
HOST = clients_support.HOST
free_port = clients_support.free_port
KILL_TIMEOUT = 5.0  # waiting for a SIGKILLed process
DRAIN_TIMEOUT = 10.0  # memcrab's shutdown drain (server/mod.rs DRAIN_TIMEOUT)
RLIMIT_MESSAGE = (
    "failed to set rlimit for open files. Try starting as root or requesting "
    "smaller maxconns value."
)


# --- the documented memory bound ------------------------------------------------------


def rss_bound(m_mb, b_mb, busy_conns, threads, conns=None):
    """The RSS (bytes) ARCHITECTURE.md promises for a server with ``-m m_mb`` and a
    connection-buffer cap of ``b_mb`` MiB, ``busy_conns`` busy connections (``conns`` in
    all, the busy ones if not given) and ``threads`` worker threads:

    RSS <= M + B + busy x 48 KiB + connections x 0.4 KiB + threads x 5 MiB + 24 MiB

    (48 KiB: a busy connection's floors, 32 KiB read + 16 KiB reply; 0.4 KiB: any
    connection's state; 5 MiB: a worker's free buffers, 1 MiB of small read buffers and
    2 MiB each of large read and reply buffers; 24 MiB: code, runtime, stacks.)
    """
    conns = busy_conns if conns is None else conns
    return int(
        (m_mb + b_mb) * MiB
        + busy_conns * 48 * KiB
        + conns * 0.4 * KiB
        + threads * 5 * MiB
        + 24 * MiB
    )


def default_buf_cap_mb(m_mb, item_max_mb=1):
    """memcrab's ``read_buf_mem_limit`` when ``-o read_buf_mem_limit`` is absent:
    max(32 MiB, -m/8, 4 x -I)."""
    return max(32, m_mb / 8, 4 * item_max_mb)


# --- binaries and processes -------------------------------------------------------------


def _resolve(value):
    if not value:
        return None
    if os.sep not in value:
        return shutil.which(value)
    for candidate in (Path(value), REPO_ROOT / value):
        if candidate.is_file():
            return os.path.abspath(candidate)
    return None


def memcrab_binary():
    return _resolve(os.environ.get("MEMCRAB_BIN") or str(DEFAULT_MEMCRAB))


def memcached_binary():
    wanted = os.environ.get("MEMCRAB_FAULT_MEMCACHED")
    if wanted:
        return _resolve(wanted)
    for candidate in MEMCACHED_CANDIDATES:
        found = _resolve(candidate)
        if found:
            return found
    return None


def can_raise_hard_limits():
    """CAP_SYS_RESOURCE (bit 24 of CapEff): root in a container may lack it."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> 24 & 1)
    return False


def raise_own_nofile(wanted):
    """Raises this process's RLIMIT_NOFILE to at least ``wanted``; False if it cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return True
    try:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):
        return False
    return True


def proc_status_kib(pid, field):
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM, ...), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_bytes(pid):
    return proc_status_kib(pid, "VmRSS") * KiB


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def nofile_limit(pid):
    """The soft RLIMIT_NOFILE of a process (from /proc: prlimit needs privileges over a
    process of another user, such as memcached after ``-u nobody``)."""
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise KeyError("Max open files")


def kill_process(proc):
    """SIGKILL to a child process by its PID (if it still runs), and reap it."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(timeout=KILL_TIMEOUT)


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Server(clients_support.ServerProcess):
    """One server process on 127.0.0.1 (tests/clients' ServerProcess: a free port,
    started and stopped by its PID), with raw clients, RSS and an RLIMIT_NOFILE to start
    under: ``nofile`` is (soft, hard), hard "" to keep the current one."""

    def __init__(self, kind, binary, args, log_path, nofile=None):
        super().__init__(binary, [str(a) for a in args], log_path)
        self.kind = kind
        self.nofile = nofile
        self.sockets = []  # closed at teardown
        self.helpers = []  # helper processes, killed at teardown
        self._admin = None

    def command(self):
        cmd = super().command()
        if self.kind == "memcached" and not clients_support.is_memcached(self.binary):
            cmd[1:1] = ["-u", "nobody"]  # memcached refuses to run as root without it
        if self.nofile:
            cmd = ["prlimit", "--nofile={}:{}".format(*self.nofile), "--"] + cmd
        return cmd

    def wait_exit(self, timeout):
        """The exit status, or None if the process still runs after ``timeout`` s."""
        try:
            return self.proc.wait(timeout=max(timeout, 0))
        except subprocess.TimeoutExpired:
            return None

    def signal(self, signum):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def kill(self):
        kill_process(self.proc)

    def release_clients(self):
        """Kills the helper processes and closes the sockets of this server's clients."""
        for helper in self.helpers:
            helper.kill()
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()
        self._admin = None

    # -- clients --

    def connect(self, timeout=CLIENT_TIMEOUT, rcvbuf=None):
        """A raw TCP client socket (TCP_NODELAY), closed at teardown."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sockets.append(sock)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        sock.connect(self.address)
        return sock

    def admin(self):
        """One long-lived connection for stats and checks (counted in curr_connections)."""
        if self._admin is None:
            self._admin = Conn(self.connect())
        return self._admin

    def stats(self, sub=""):
        return self.admin().stats(sub)

    def rss(self):
        return rss_bytes(self.pid)

    def store(self, key, value, flags=0):
        self.admin().store(key, value, flags)

    def check_healthy(self):
        """The server still runs and answers a fresh client's set and get correctly."""
        assert self.proc.poll() is None, f"server exited: {self.log_tail()}"
        conn = Conn(self.connect())
        value = make_value("health", 100)
        conn.store("health", value)
        conn.expect_get(["health"], {"health": value})
        conn.close()

    def settled_connections(self, timeout=2.0):
        """``stats`` curr_connections once it stops changing (a connection closed just
        before may not be counted out yet), read three times 50 ms apart."""
        deadline = time.monotonic() + timeout
        readings = [self.stats()["curr_connections"]]
        while len(set(readings[-3:])) > 1 or len(readings) < 3:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
            readings.append(self.stats()["curr_connections"])
        return readings[-1]

    def wait_connections(self, wanted, timeout=5.0):
        """Waits until ``stats`` curr_connections is ``wanted``; returns the last value."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.stats()["curr_connections"]
            if current == wanted or time.monotonic() > deadline:
                return current
            time.sleep(0.05)


def run_to_exit(cmd, timeout, preexec=None):
    """Runs a command that should exit by itself: (status or None if killed, output)."""
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=preexec,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=KILL_TIMEOUT)
        return None, out.decode(errors="replace")


class RssSampler:
    """The largest RSS of a process, sampled every ``interval`` s by a thread while the
    ``with`` block runs (and by explicit sample() calls)."""

    def __init__(self, pid, interval=0.05):
        self.pid = pid
        self.interval = interval
        self.baseline = rss_bytes(pid)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = None

    def sample(self):
        try:
            self.peak = max(self.peak, rss_bytes(self.pid))
        except (FileNotFoundError, ProcessLookupError):
            pass  # the process has exited
        return self.peak

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=KILL_TIMEOUT)
        self.sample()
        return False

    @property
    def growth(self):
        return self.peak - self.baseline
