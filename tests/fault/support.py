"""Servers, raw clients and measurements for the fault-test suite (tests/fault).

Every test starts its own server processes on free ports of 127.0.0.1 and talks to them
over raw sockets, as a hostile or buggy client would: no client library hides what the
server sends or when.

Binaries: memcrab is ``$MEMCRAB_BIN`` (default ``target/release/memcrab``); memcached, the
comparison, is ``$MEMCRAB_FAULT_MEMCACHED``, else /tmp/memcached-1.6.45, else the
``memcached`` on PATH.

The module is also a small program (``python3 support.py probe|churn ...``): the latency
probe and the churn load run in processes of their own, so that the test process's own
work (reading a 2 GiB reply, dribbling bytes over 300 sockets) does not show up as server
latency through Python's GIL.
"""

import importlib.util
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MEMCRAB = REPO_ROOT / "target" / "release" / "memcrab"
MEMCACHED_CANDIDATES = ["/tmp/memcached-1.6.45", "memcached"]


def _load_clients_support():
    """tests/clients/support.py, whose server process this suite's extends (loaded under
    another name: both suites call their module ``support``)."""
    path = REPO_ROOT / "tests" / "clients" / "support.py"
    spec = importlib.util.spec_from_file_location("clients_support", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


clients_support = _load_clients_support()
HOST = clients_support.HOST
free_port = clients_support.free_port
KiB = 1024
MiB = 1024 * KiB

CLIENT_TIMEOUT = 10.0  # any single socket operation of a test
KILL_TIMEOUT = 5.0  # waiting for a SIGKILLed process
DRAIN_TIMEOUT = 10.0  # memcrab's shutdown drain (server/mod.rs DRAIN_TIMEOUT)
MAX_REPLY_LINE = 64 * 1024  # no reply line of these tests is longer
MAX_STATS_LINES = 10_000

# memcached's answers this suite looks for.
OOM_WRITING_GET = b"SERVER_ERROR out of memory writing get response"
OOM_READING = b"SERVER_ERROR out of memory reading request"
TOO_MANY_CONNECTIONS = b"ERROR Too many open connections"
RLIMIT_MESSAGE = (
    "failed to set rlimit for open files. Try starting as root or requesting "
    "smaller maxconns value."
)


# --- the documented memory bound ------------------------------------------------------


def rss_bound(m_mb, b_mb, busy_conns, threads):
    """The RSS (bytes) a server with ``-m m_mb`` and a connection-buffer cap of ``b_mb``
    MiB may use with ``busy_conns`` busy connections and ``threads`` worker threads.

    RSS <= M + B + busy_connections x 48 KiB + threads x 1 MiB + 24 MiB
    (48 KiB: the per-connection floors, 32 KiB read + 16 KiB reply.)
    """
    return (
        (m_mb + b_mb) * MiB
        + busy_conns * 48 * KiB
        + threads * MiB
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


# --- the wire -------------------------------------------------------------------------


def make_value(key, size):
    """A value that names its key and size, so any slice of it in the wrong place shows."""
    pattern = f"<{key}:{size}>".encode()
    return (pattern * (size // len(pattern) + 1))[:size]


def set_line(key, value, flags=0, noreply=False):
    tail = b" noreply" if noreply else b""
    header = b"set %s %d 0 %d%s\r\n" % (key.encode(), flags, len(value), tail)
    return header + value + b"\r\n"


def get_line(keys, command="get"):
    return (command + " " + " ".join(keys) + "\r\n").encode()


def get_reply(keys, values):
    """The bytes memcached answers ``get keys`` with (flags 0; a key not in ``values``
    misses)."""
    parts = [
        b"VALUE %s 0 %d\r\n%s\r\n" % (k.encode(), len(values[k]), values[k])
        for k in keys
        if k in values
    ]
    return b"".join(parts) + b"END\r\n"


def slow_read(sock, size, chunk, pause, timeout=60.0):
    """Reads exactly ``size`` bytes, at most ``chunk`` bytes a read, ``pause`` s between
    reads: a slow client."""
    data = bytearray()
    deadline = time.monotonic() + timeout
    while len(data) < size:
        assert time.monotonic() < deadline, f"slow read: {len(data)} of {size} in {timeout}s"
        part = sock.recv(min(chunk, size - len(data)))
        if not part:
            raise EOFError(f"closed after {len(data)} of {size} bytes")
        data += part
        time.sleep(pause)
    return bytes(data)


class Conn:
    """A buffered reader/writer over one socket, with memcached's reply shapes."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.pos = 0

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def fill(self, size=1 * MiB):
        if self.pos and self.pos >= len(self.buf) // 2:
            del self.buf[: self.pos]
            self.pos = 0
        chunk = self.sock.recv(size)
        if not chunk:
            raise EOFError("connection closed by the server")
        self.buf += chunk

    def pending(self):
        """Bytes received but not consumed yet."""
        return len(self.buf) - self.pos

    def line(self, limit=MAX_REPLY_LINE):
        """The next line, without its CRLF (at most ``limit`` bytes)."""
        while True:
            end = self.buf.find(b"\r\n", self.pos)
            if end >= 0:
                line = bytes(self.buf[self.pos : end])
                self.pos = end + 2
                return line
            assert self.pending() <= limit, f"no CRLF in {self.pending()} bytes"
            self.fill()

    def exact(self, size):
        while self.pending() < size:
            self.fill(max(size - self.pending(), 64 * KiB))
        data = bytes(self.buf[self.pos : self.pos + size])
        self.pos += size
        return data

    def expect_bytes(self, expected, what):
        """Consumes len(expected) bytes and asserts they are ``expected``."""
        while self.pending() < len(expected):
            self.fill(max(len(expected) - self.pending(), 64 * KiB))
        got = memoryview(self.buf)[self.pos : self.pos + len(expected)]
        equal = got == expected
        got.release()
        if not equal:
            data = bytes(self.buf[self.pos : self.pos + len(expected)])
            at = next(i for i, (a, b) in enumerate(zip(data, expected)) if a != b)
            raise AssertionError(
                f"{what}: bytes differ at offset {at}: got {data[at : at + 40]!r}, "
                f"expected {expected[at : at + 40]!r}"
            )
        self.pos += len(expected)

    def eof_within(self, timeout):
        """True if the server closes the connection within ``timeout`` s (any unread
        bytes before the close are dropped), False if it stays open."""
        deadline = time.monotonic() + timeout
        old = self.sock.gettimeout()
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
                try:
                    if not self.sock.recv(1 * MiB):
                        return True
                except TimeoutError:
                    return False
                except ConnectionResetError:
                    return True
            return False
        finally:
            self.sock.settimeout(old)

    def request(self, line):
        self.send(line)
        return self.line()

    def stats(self, sub=""):
        self.send(b"stats" + (b" " + sub.encode() if sub else b"") + b"\r\n")
        stats = {}
        for _ in range(MAX_STATS_LINES):
            line = self.line()
            if line == b"END":
                return stats
            parts = line.decode().split(" ", 2)
            assert parts[0] == "STAT" and len(parts) == 3, f"bad stats line {line!r}"
            stats[parts[1]] = int(parts[2]) if re.fullmatch(r"-?\d+", parts[2]) else parts[2]
        raise AssertionError(f"no END after {MAX_STATS_LINES} stats lines")

    def store(self, key, value, flags=0):
        reply = self.request(set_line(key, value, flags))
        assert reply == b"STORED", f"set {key}: {reply!r}"

    def expect_get(self, keys, values, allow_oom=False, send=True):
        """Sends ``get keys`` (unless ``send`` is False: already sent) and checks the reply
        against ``values`` (key -> value; a key not in it must miss), byte by byte.

        With ``allow_oom``, the reply may stop (after a correct prefix of values) at
        ``SERVER_ERROR out of memory writing get response``. Returns "ok" or "oom".
        """
        if send:
            self.send(get_line(keys))
        hits = [k for k in keys if k in values]
        for index, key in enumerate(hits):
            header = self.line()
            if allow_oom and header == OOM_WRITING_GET:
                return "oom"
            value = values[key]
            expected = b"VALUE %s 0 %d" % (key.encode(), len(value))
            assert header == expected, f"value {index} of {len(hits)}: {header[:80]!r}"
            self.expect_bytes(value + b"\r\n", f"value {index} ({key})")
        end = self.line()
        if allow_oom and end == OOM_WRITING_GET:
            return "oom"
        assert end == b"END", f"after {len(hits)} values: {end[:80]!r}"
        return "ok"


def load_items(server, count, prefix, size, batch=2000):
    """Stores ``count`` items ``<prefix><n>`` of ``size`` bytes, pipelined: batches of
    ``set ... noreply`` each closed by a ``version`` whose answer paces the loader."""
    conn = Conn(server.connect())
    for start in range(0, count, batch):
        lines = [
            set_line(f"{prefix}{n}", make_value(prefix, size), noreply=True)
            for n in range(start, min(start + batch, count))
        ]
        conn.send(b"".join(lines) + b"version\r\n")
        reply = conn.line()
        assert reply.startswith(b"VERSION"), f"loading at {start}: {reply[:80]!r}"
    conn.close()


def answer_or_close(sock, timeout):
    """What a socket gets within ``timeout`` s: its first bytes, b"" for a close (FIN or
    RST), or None for silence."""
    old = sock.gettimeout()
    sock.settimeout(timeout)
    try:
        return sock.recv(64 * KiB)
    except (TimeoutError, BlockingIOError):
        return None
    except ConnectionResetError:
        return b""
    finally:
        sock.settimeout(old)


def open_many(server, count, batch=500, timeout=CLIENT_TIMEOUT):
    """Opens ``count`` connections and checks each is served: ``version`` is sent on all
    of a batch, then every answer is collected (epoll, so 10,000 sockets are fine).

    Returns (sockets, outcomes) where outcomes counts "version", "too_many", "closed" and
    "silent" answers.
    """
    socks = []
    outcomes = {"version": 0, "too_many": 0, "closed": 0, "silent": 0}
    deadline = time.monotonic() + timeout + count / 100
    for start in range(0, count, batch):
        group = []
        for _ in range(min(batch, count - start)):
            sock = server.connect(timeout=timeout)
            sock.sendall(b"version\r\n")
            sock.setblocking(False)
            group.append(sock)
        socks += group
        for outcome in collect_answers(group, deadline).values():
            outcomes[outcome] += 1
    return socks, outcomes


def collect_answers(socks, deadline):
    """Reads one answer line from each non-blocking socket until ``deadline``."""
    poller = select.epoll()
    received = {}
    by_fd = {}
    for sock in socks:
        poller.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock
        received[sock.fileno()] = b""
    outcomes = {}
    try:
        while len(outcomes) < len(socks) and time.monotonic() < deadline:
            for fd, _ in poller.poll(min(0.5, max(deadline - time.monotonic(), 0))):
                try:
                    chunk = by_fd[fd].recv(4096)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    chunk = b""
                received[fd] += chunk
                if not chunk or b"\r\n" in received[fd]:
                    poller.unregister(fd)
                    outcomes[fd] = classify_answer(received[fd])
    finally:
        poller.close()
    for fd in received:
        outcomes.setdefault(fd, "silent")
    return outcomes


def classify_answer(data):
    if data.startswith(b"VERSION "):
        return "version"
    if data.startswith(TOO_MANY_CONNECTIONS):
        return "too_many"
    if data == b"":
        return "closed"
    raise AssertionError(f"unexpected answer to version: {data[:80]!r}")


def percentile(samples, fraction):
    ordered = sorted(samples)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


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


# --- helper processes: the latency probe and the churn load -----------------------------


class Helper:
    """A ``python3 support.py MODE ...`` process: runs until its stdin closes (or its own
    limits) and prints one JSON object."""

    def __init__(self, mode, server, *args):
        server.helpers.append(self)
        self.proc = subprocess.Popen(
            [sys.executable, __file__, mode, HOST, str(server.port)] + [str(a) for a in args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def result(self, timeout=30.0):
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=KILL_TIMEOUT)
            raise AssertionError(f"helper did not finish: {err.decode()[-2000:]}")
        if self.proc.returncode != 0:
            raise AssertionError(f"helper failed: {err.decode()[-2000:]}")
        return json.loads(out)

    def stop(self):
        """Tells the helper to finish (closes its stdin) without waiting."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
            self.proc.stdin = None  # so communicate() leaves it alone

    def kill(self):
        kill_process(self.proc)


class LatencyProbe(Helper):
    """A normal client doing small ``set`` and ``get`` round trips every ``interval_ms``,
    each timed, until stopped; its result has "latencies" (seconds) and "errors"."""

    def __init__(self, server, interval_ms=5, max_seconds=60, max_requests=100000):
        super().__init__("probe", server, interval_ms, max_seconds, max_requests)

    def finish(self):
        self.stop()
        result = self.result()
        latencies = result["latencies"]
        result["count"] = len(latencies)
        result["p99"] = percentile(latencies, 0.99)
        result["max"] = max(latencies, default=0.0)
        return result


def stdin_closed(wait):
    """Waits up to ``wait`` s for stdin to close (the parent's stop); True once it has."""
    readable, _, _ = select.select([sys.stdin], [], [], wait)
    return bool(readable) and not sys.stdin.buffer.read1(1)


def probe_main(host, port, interval_ms, max_seconds, max_requests):
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = Conn(sock)
    latencies, errors = [], []
    value = make_value("probe", 100)
    deadline = time.monotonic() + float(max_seconds)
    while len(latencies) < int(max_requests) and time.monotonic() < deadline:
        for line, check in (
            (set_line("probe", value), lambda: conn.line() == b"STORED"),
            (get_line(["probe"]), lambda: conn.expect_get(["probe"], {"probe": value}, send=False) == "ok"),
        ):
            started = time.monotonic()
            try:
                conn.send(line)
                ok = check()
            except (AssertionError, OSError, EOFError) as e:
                errors.append(repr(e))
                return {"latencies": latencies, "errors": errors}
            latencies.append(time.monotonic() - started)
            if not ok:
                errors.append(f"wrong reply to {line[:40]!r}")
        if stdin_closed(int(interval_ms) / 1000):
            break
    return {"latencies": latencies, "errors": errors}


def churn_size(rng):
    """10 B to 512 KiB, log-uniform: as many small values as large ones per decade."""
    return min(int(10 * (512 * KiB / 10) ** rng.random()), 512 * KiB)


def churn_main(host, port, seed, keys, max_seconds):
    """Sets values of random sizes and reads random keys back, checking every hit is a
    whole value of its key (misses are fine: the cache evicts)."""
    rng = random.Random(int(seed))
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = Conn(sock)
    counts = {"set": 0, "set_oom": 0, "hit": 0, "miss": 0, "bytes": 0}
    errors = []
    deadline = time.monotonic() + float(max_seconds)
    while time.monotonic() < deadline and not errors:
        key = f"churn{seed}-{rng.randrange(int(keys))}"
        try:
            if rng.random() < 0.7:
                value = make_value(key, churn_size(rng))
                reply = conn.request(set_line(key, value))
                if reply.startswith(b"SERVER_ERROR out of memory"):
                    counts["set_oom"] += 1
                elif reply != b"STORED":
                    errors.append(f"set {key}: {reply[:80]!r}")
                counts["set"] += 1
                counts["bytes"] += len(value)
            else:
                header = conn.request(get_line([key]))
                if header == b"END":
                    counts["miss"] += 1
                    continue
                size = int(header.split()[3])
                assert header == b"VALUE %s 0 %d" % (key.encode(), size), header[:80]
                conn.expect_bytes(make_value(key, size) + b"\r\nEND\r\n", f"get {key}")
                counts["hit"] += 1
        except (AssertionError, OSError, EOFError, ValueError, IndexError) as e:
            errors.append(repr(e))
        if stdin_closed(0):
            break
    return {"counts": counts, "errors": errors}


if __name__ == "__main__":
    modes = {"probe": probe_main, "churn": churn_main}
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    print(json.dumps(modes[sys.argv[1]](*sys.argv[2:])))
