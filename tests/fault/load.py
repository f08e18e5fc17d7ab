"""Helper processes: the latency probe and the churn load.

They run as ``python3 load.py probe|churn HOST PORT ...``, in processes of their own, so
that the test process's own work (reading a 2 GiB reply, dribbling bytes over 300
sockets) does not show up as server latency through Python's GIL. Each runs until its
stdin closes or its own limits, and prints one JSON object.
"""

import json
import random
import select
import signal
import socket
import subprocess
import sys
import time

from support import HOST, KILL_TIMEOUT, kill_process
from wire import KiB, Conn, get_line, make_value, set_line


def percentile(samples, fraction):
    ordered = sorted(samples)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Helper:
    """A ``python3 load.py MODE ...`` process: runs until its stdin closes (or its own
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
