"""The graceful life cycle in a pod: `docker stop` (SIGTERM, then SIGKILL after the grace
period, as the kubelet does) drains the server: replies in flight are delivered, new
connections are refused, idle connections are closed, /readyz answers 503, and the
container exits 0 within the grace period.

Clients reach the container by its IP on a network the test creates (not through a
published port: Docker's port proxy would accept new connections itself).
"""

import socket
import subprocess
import threading
import time

import pytest
from support import DRAIN_TIMEOUT, GRACE_PERIOD, http_get, make_client

VALUE_SIZE = 512 * 1024
KEYS = [f"drain:{i}" for i in range(40)]  # 20 MiB of replies to one pipelined get


def value_of(key):
    return (key.encode() + b"-") * (VALUE_SIZE // (len(key) + 1)) + b"!"


class Stopper(threading.Thread):
    """`docker stop -t GRACE_PERIOD name` in the background, timed."""

    def __init__(self, name):
        super().__init__(daemon=True)
        self.name = name
        self.elapsed = None
        self.returncode = None

    def run(self):
        start = time.monotonic()
        proc = subprocess.run(
            ["docker", "stop", "-t", str(GRACE_PERIOD), self.name],
            capture_output=True,
            timeout=GRACE_PERIOD + 30,
            check=False,
        )
        self.elapsed = time.monotonic() - start
        self.returncode = proc.returncode


def wait_until(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def refused(address):
    try:
        with socket.create_connection(address, timeout=1) as sock:
            sock.settimeout(1)
            sock.sendall(b"version\r\n")
            return sock.recv(64) == b""  # accepted by nothing that serves
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def read_reply(sock, timeout, pause=0.0):
    sock.settimeout(timeout)
    data = bytearray()
    while not data.endswith(b"END\r\n"):
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            raise AssertionError(f"the reply stalled after {len(data)} bytes") from None
        if not chunk:
            break
        data += chunk
        if pause:
            time.sleep(pause)  # a slow reader
    return bytes(data)


def parse_values(data):
    values, pos = {}, 0
    while data.startswith(b"VALUE ", pos):
        eol = data.index(b"\r\n", pos)
        _, key, _flags, size = data[pos:eol].split()
        start = eol + 2
        values[key.decode()] = data[start : start + int(size)]
        pos = start + int(size) + 2
    return values, data[pos:]


def drain_scenario(containers, network, pause, keys=KEYS):
    net = network()
    c = containers(
        "-m", "256", "-t", "2", "--metrics-port", "9151", network=net, publish=False
    )
    ip = c.ip()
    client = make_client((ip, 11211))
    for key in keys:
        assert client.set(key, value_of(key), noreply=False)
    client.close()
    assert http_get(f"http://{ip}:9151/readyz")[0] == 200

    idle = socket.create_connection((ip, 11211), timeout=5)
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    busy.settimeout(5)
    busy.connect((ip, 11211))
    busy.sendall(b"get " + " ".join(keys).encode() + b"\r\n")
    time.sleep(0.5)  # the server is now blocked writing 20 MiB to a reader that waits

    stopper = Stopper(c.name)
    probed = threading.Event()
    reply = {}

    def reader():
        # The client reads its reply once the probes below are done (at most 4 s after the
        # stop, well inside the 10 s drain), so the reply is still in flight meanwhile.
        probed.wait(4)
        reply["waited"] = time.monotonic() - t0
        try:
            reply["data"] = read_reply(busy, timeout=DRAIN_TIMEOUT, pause=pause)
        except AssertionError as e:
            reply["error"] = str(e)

    t0 = time.monotonic()
    stopper.start()
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    timings = {}
    try:
        # Readiness fails at once while the reply is still being written.
        ready_503 = wait_until(
            lambda: http_get(f"http://{ip}:9151/readyz", 0.5)[0] == 503, 3
        )
        timings["readyz 503"] = time.monotonic() - t0
        # New connections are refused; idle ones are closed.
        new_refused = wait_until(lambda: refused((ip, 11211)), 3)
        timings["refused"] = time.monotonic() - t0
        idle.settimeout(3)
        try:
            idle_closed = idle.recv(64) == b""
        except OSError:
            idle_closed = False
        timings["idle closed"] = time.monotonic() - t0
        still_running = c.running()
        probed.set()
        thread.join(DRAIN_TIMEOUT + 5)
    finally:
        probed.set()
        idle.close()
        stopper.join(GRACE_PERIOD + 30)
        busy.close()
    timings["reader started"] = reply.get("waited")
    timings["stopped"] = stopper.elapsed
    assert ready_503, timings
    assert new_refused, ("a new connection was served during the drain", timings)
    assert idle_closed, ("the idle connection was not closed", timings)
    assert still_running, (
        "the server exited before its reply in flight was read",
        timings,
    )
    assert "data" in reply, (
        f"{reply.get('error')}; timings (s after docker stop): {timings}; exit code {c.exit_code()}"
    )
    data = reply["data"]
    values, rest = parse_values(data)
    assert rest == b"END\r\n", (len(data), rest[:80])
    assert values == {key: value_of(key) for key in keys}
    assert stopper.returncode == 0
    assert c.exit_code() == 0, c.logs()
    assert stopper.elapsed < GRACE_PERIOD, stopper.elapsed


def test_an_idle_server_stops_at_once(containers):
    c = containers("-m", "64")
    client = make_client(c.address)
    assert client.set("k", b"v", noreply=False)  # an open, idle connection
    start = time.monotonic()
    subprocess.run(
        ["docker", "stop", "-t", str(GRACE_PERIOD), c.name],
        check=True,
        capture_output=True,
        timeout=GRACE_PERIOD + 30,
    )
    elapsed = time.monotonic() - start
    client.close()
    assert c.exit_code() == 0, c.logs()
    assert elapsed < 3, elapsed


def test_a_reader_that_never_reads_does_not_outlast_the_grace_period(
    containers, network
):
    """The drain gives up after its timeout (10 s), before the kubelet's SIGKILL (15 s):
    the container still exits 0, not 137."""
    net = network()
    c = containers("-m", "128", "-t", "2", network=net, publish=False)
    ip = c.ip()
    client = make_client((ip, 11211))
    for key in KEYS[:8]:
        assert client.set(key, value_of(key), noreply=False)
    client.close()
    stuck = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect((ip, 11211))
    stuck.sendall(b"get " + " ".join(KEYS[:8]).encode() + b"\r\n")
    time.sleep(0.5)
    start = time.monotonic()
    try:
        subprocess.run(
            ["docker", "stop", "-t", str(GRACE_PERIOD), c.name],
            check=True,
            capture_output=True,
            timeout=GRACE_PERIOD + 30,
        )
    finally:
        stuck.close()
    elapsed = time.monotonic() - start
    assert c.exit_code() == 0, (c.exit_code(), elapsed, c.logs())
    assert DRAIN_TIMEOUT - 1 < elapsed < GRACE_PERIOD, elapsed


def test_sigterm_drains_in_flight_replies_and_exits_0(containers, network):
    """A client that reads its 20 MiB reply as fast as it can."""
    drain_scenario(containers, network, pause=0.0)


def test_a_slow_reader_gets_its_whole_reply(containers, network):
    """A client that reads its 4 MiB reply 16 KiB every 10 ms (1.6 MB/s, 2.6 s in all):
    far inside the drain timeout, so the whole reply must arrive before the server exits."""
    drain_scenario(containers, network, pause=0.01, keys=KEYS[:8])
