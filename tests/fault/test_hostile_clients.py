"""Clients that read slowly, vanish mid-request or mid-reply, or dribble bytes: each
gets correct bytes or costs nothing lasting, and other clients keep being served.
"""

import socket
import struct
import time

import pytest

from load import LatencyProbe
from support import RssSampler
from wire import KiB, MiB, get_line, get_reply, make_value, slow_read


def close_as(sock, how):
    """Closes a client socket with a FIN, or (``reset``) with an RST."""
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def assert_recovered(server, baseline_connections):
    """The server is back to its connections before the attack and serves new clients."""
    assert server.wait_connections(baseline_connections) == baseline_connections
    server.check_healthy()


def test_slow_reader_gets_every_byte(kind, start_server, figures):
    """A client reading a 1 MiB multiget 1 KiB at a time, every 2 ms, gets it exactly;
    other clients are served meanwhile."""
    server = start_server("-m", 64)
    values = {f"s{i}": make_value(f"s{i}", 64 * KiB + i) for i in range(16)}
    for key, value in values.items():
        server.store(key, value)
    expected = get_reply(list(values), values)
    sock = server.connect(rcvbuf=16 * KiB)
    sock.sendall(get_line(list(values)))
    started = time.monotonic()
    head = slow_read(sock, len(expected) // 2, 1 * KiB, 0.002)
    server.check_healthy()
    rest = slow_read(sock, len(expected) - len(head), 1 * KiB, 0.002)
    figures("seconds to read", time.monotonic() - started, "s")
    assert head + rest == expected


@pytest.mark.parametrize("how", ["fin", "reset"])
def test_disconnect_mid_value(kind, start_server, how):
    """``set k 0 0 100000`` and half its data, then the client goes away: no item k, the
    connection is released, other clients are fine."""
    server = start_server("-m", 64)
    baseline = server.settled_connections()
    sock = server.connect()
    sock.sendall(b"set k 0 0 100000\r\n" + b"x" * 50000)
    time.sleep(0.1)
    close_as(sock, how)
    assert_recovered(server, baseline)
    server.admin().expect_get(["k"], {})


@pytest.mark.parametrize("how", ["fin", "reset"])
def test_disconnect_mid_response(kind, start_server, figures, how):
    """A client asks for a 100 MiB reply, reads 1 MiB of it and goes away: the
    connection and its memory are released, other clients are fine."""
    server = start_server("-m", 64)
    big = make_value("big", 512 * KiB)
    server.store("big", big)
    baseline = server.settled_connections()
    with RssSampler(server.pid) as rss:
        sock = server.connect()
        sock.sendall(get_line(["big"] * 200))
        head = slow_read(sock, 1 * MiB, 1 * MiB, 0)
        assert head.startswith(b"VALUE big 0 %d\r\n" % len(big))
        close_as(sock, how)
        assert_recovered(server, baseline)
    figures("RSS peak growth", rss.growth / MiB, "MiB")
    assert rss.growth < 16 * MiB


SLOWLORIS_CONNECTIONS = 300
SLOWLORIS_TICKS = 40  # one byte per connection per tick
SLOWLORIS_TICK = 0.1  # seconds
SLOWLORIS_COMMAND = b"get slowloris\r\n"


def test_slowloris(kind, start_server, figures):
    """300 connections each send a byte of ``get slowloris`` every 100 ms for 4 s; a
    normal client's p99 stays under 50 ms and every dribbled command is answered."""
    server = start_server("-c", 1024)
    socks = [server.connect() for _ in range(SLOWLORIS_CONNECTIONS)]
    received = {sock: bytearray() for sock in socks}
    for sock in socks:
        sock.setblocking(False)
    probe = LatencyProbe(server, interval_ms=5)
    next_tick = time.monotonic()
    for tick in range(SLOWLORIS_TICKS):
        byte = SLOWLORIS_COMMAND[tick % len(SLOWLORIS_COMMAND)]
        for sock in socks:
            sock.send(bytes([byte]))
            drain_nonblocking(sock, received[sock])
        next_tick += SLOWLORIS_TICK
        time.sleep(max(next_tick - time.monotonic(), 0))
    latency = probe.finish()
    answers = SLOWLORIS_TICKS // len(SLOWLORIS_COMMAND) * b"END\r\n"
    deadline = time.monotonic() + 2.0
    for sock in socks:
        while len(received[sock]) < len(answers) and time.monotonic() < deadline:
            drain_nonblocking(sock, received[sock])
            time.sleep(0.001)
    wrong = [bytes(r) for r in received.values() if r != answers]
    figures("probe p99", latency["p99"] * 1000, "ms")
    figures("probe max", latency["max"] * 1000, "ms")
    figures("probe requests", latency["count"])
    assert not latency["errors"], latency["errors"][:5]
    assert latency["p99"] < 0.050, f"probe p99 {latency['p99'] * 1000:.0f} ms"
    assert not wrong, f"{len(wrong)} dribblers got other answers, e.g. {wrong[0][:80]!r}"
    server.check_healthy()


def drain_nonblocking(sock, into):
    try:
        data = sock.recv(64 * KiB)
    except BlockingIOError:
        return
    assert data, "the server closed a dribbling connection"
    into += data

