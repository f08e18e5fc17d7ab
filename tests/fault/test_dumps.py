"""Streaming dumps (issue 12, case 3): ``lru_crawler metadump all`` and ``lru_crawler
mgdump all`` over 200,000 items are complete, cost a bounded amount of memory while the
client does not read, and do not stall other clients.
"""

import re
import socket
import time

import pytest

from load import LatencyProbe
from support import RssSampler
from wire import Conn, MiB, load_items

ITEMS = 200_000
UNREAD_SECONDS = 1.5
READ_TIMEOUT = 30.0
METADUMP_LINE = re.compile(
    rb"key=(\S+) exp=-?\d+ la=\d+ cas=\d+ fetch=(?:yes|no) cls=\d+ size=\d+(?: flags=\d+)? ?"
)
DUMPS = {
    # command: (terminator line, the key in a line)
    "metadump": (b"END", lambda line: METADUMP_LINE.fullmatch(line).group(1)),
    "mgdump": (b"EN", lambda line: re.fullmatch(rb"mg (\S+)", line).group(1)),
}


def read_dump(conn, terminator):
    """All lines of a dump up to its terminator line (lines end in \\n or \\r\\n)."""
    tail = b"\n" + terminator + b"\r\n"
    deadline = time.monotonic() + READ_TIMEOUT
    while not (b"\n" + conn.buf).endswith(tail):
        assert time.monotonic() < deadline, f"no {terminator!r} after {len(conn.buf)} bytes"
        conn.fill()
    lines = bytes(conn.buf).split(b"\n")[:-2]  # the terminator line and the empty rest
    return [line.rstrip(b"\r") for line in lines]


@pytest.mark.parametrize("dump", list(DUMPS))
def test_dump_of_200k_items_streams(kind, start_server, figures, dump):
    server = start_server("-m", 64, "-t", 4)
    load_items(server, ITEMS, "d", 10)
    terminator, key_of = DUMPS[dump]
    conn = Conn(server.connect(timeout=READ_TIMEOUT))
    with RssSampler(server.pid) as rss:
        probe = LatencyProbe(server, interval_ms=2)
        time.sleep(0.2)  # the probe is running
        conn.send(f"lru_crawler {dump} all\r\n".encode())
        time.sleep(UNREAD_SECONDS)
        unread_growth = rss.sample() - rss.baseline
        if conn.sock.recv(5, socket.MSG_PEEK) == b"ERROR":
            probe.finish()
            pytest.skip(f"this {kind} has no lru_crawler {dump}")
        lines = read_dump(conn, terminator)
        latency = probe.finish()
    if lines and lines[0] == b"OK":  # memcached 1.6.45 acknowledges the command first
        lines = lines[1:]
    bad = [line for line in lines if _key(key_of, line) is None]
    assert not bad, f"{len(bad)} malformed lines, first: {bad[0][:100]!r}"
    seen = {key_of(line) for line in lines}
    missing = [n for n in range(ITEMS) if b"d%d" % n not in seen]
    figures("dump lines", len(lines))
    figures("RSS growth while unread", unread_growth / MiB, "MiB")
    figures("RSS peak growth", rss.growth / MiB, "MiB")
    figures("probe max latency", latency["max"] * 1000, "ms")
    figures("probe requests", latency["count"])
    figures("keys missing", len(missing))
    # memcached's crawler walks LRU lists its maintainer thread rearranges meanwhile, so
    # an item moved during the walk can be missed (its dump is not a snapshot).
    allowed_missing = 0 if kind == "memcrab" else ITEMS // 1000
    assert len(missing) <= allowed_missing, f"{len(missing)} keys missing, e.g. d{missing[0]}"
    assert rss.growth < 6 * MiB, f"RSS grew {rss.growth / MiB:.1f} MiB during the dump"
    assert not latency["errors"], latency["errors"][:5]
    # The bound is memcrab's promise (its slices hold a shard lock microseconds); memcached's
    # figure is recorded for comparison (64 ms was seen on a busy machine).
    if kind == "memcrab":
        assert latency["max"] < 0.050, f"a request took {latency['max'] * 1000:.0f} ms"
    server.check_healthy()


def _key(key_of, line):
    try:
        return key_of(line)
    except AttributeError:  # the pattern did not match
        return None
