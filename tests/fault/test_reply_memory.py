"""Bounded connection-buffer memory (issue 12, cases 1 and 2).

A multi-key get streams: a connection whose unsent replies pass ~256 KiB stops running
requests until its socket drains, so a client that never reads costs bounded memory.
All connections' buffers beyond small per-connection floors are capped server-wide by
``-o read_buf_mem_limit=MB`` (memcached's option); past the cap a get answers
``SERVER_ERROR out of memory writing get response`` (or waits for its own socket) and a
request that needs a larger read buffer answers ``SERVER_ERROR out of memory reading
request`` and is closed. The bound: support.rss_bound().
"""

import time

import pytest

from load import LatencyProbe
from support import RssSampler, default_buf_cap_mb, rss_bound
from wire import OOM_READING, Conn, KiB, MiB, answer_or_close, get_line, make_value

M_MB = 64
B_MB = 32
THREADS = 4
SERVER_ARGS = ("-m", M_MB, "-t", THREADS, "-o", f"read_buf_mem_limit={B_MB}")
UNREAD_SECONDS = 3.0


def store_values(server, prefix, count, size):
    values = {f"{prefix}{i}": make_value(f"{prefix}{i}", size) for i in range(count)}
    for key, value in values.items():
        server.store(key, value)
    return values


def record_rss(figures, rss, bound=None):
    figures("RSS baseline", rss.baseline / MiB, "MiB")
    figures("RSS peak growth", rss.growth / MiB, "MiB")
    if bound is not None:
        figures("RSS peak / bound", f"{rss.peak / MiB:.1f} / {bound / MiB:.1f}", "MiB")


def test_one_get_naming_a_big_item_4000_times(kind, start_server, figures):
    """Case 1: ``get big big ...`` (4,000 times one 512 KiB item, a 2 GiB reply) not read
    for a few seconds costs a few MiB, then arrives whole and correct."""
    server = start_server(*SERVER_ARGS)
    big = make_value("big", 512 * KiB)
    server.store("big", big)
    keys = ["big"] * 4000
    conn = Conn(server.connect(timeout=30))
    with RssSampler(server.pid) as rss:
        conn.send(get_line(keys))
        time.sleep(UNREAD_SECONDS)
        unread_growth = rss.sample() - rss.baseline
        conn.expect_get(keys, {"big": big}, send=False)
    bound = rss_bound(M_MB, B_MB, 1, THREADS)
    figures("RSS growth while unread", unread_growth / MiB, "MiB")
    record_rss(figures, rss, bound)
    assert rss.growth < 16 * MiB, f"RSS grew {rss.growth / MiB:.0f} MiB for one get"
    assert rss.peak <= bound
    server.check_healthy()


def test_unread_gets_on_200_connections(kind, start_server, figures):
    """Case 2: 200 connections each send one 100-key get of 100 KiB values (10 MiB
    replies, 2 GiB in all) and do not read. RSS stays within the bound, a normal client
    keeps its latency (p99 under 100 ms) and correct replies, and every attacker finally
    reads a whole correct reply or memcached's out-of-memory error."""
    server = start_server(*SERVER_ARGS, "-c", 1024)
    values = store_values(server, "v", 100, 100 * KiB)
    keys = list(values)
    oom_before = server.stats()["response_obj_oom"]
    attackers = []
    with RssSampler(server.pid) as rss:
        for _ in range(200):
            attacker = Conn(server.connect(timeout=30))
            attacker.send(get_line(keys))
            attackers.append(attacker)
        probe = LatencyProbe(server, interval_ms=5)
        time.sleep(UNREAD_SECONDS)
        latency = probe.finish()
        # A get beyond the reply floor from a fresh client: its value or the OOM error.
        fresh = Conn(server.connect())
        fresh_outcome = fresh.expect_get(keys[:3], values, allow_oom=True)
        outcomes = [a.expect_get(keys, values, allow_oom=True, send=False) for a in attackers]
    ooms = outcomes.count("oom") + (fresh_outcome == "oom")
    bound = rss_bound(M_MB, B_MB, 202, THREADS)
    record_rss(figures, rss, bound)
    figures("probe p99", latency["p99"] * 1000, "ms")
    figures("probe max", latency["max"] * 1000, "ms")
    figures("probe requests", latency["count"])
    figures("attacker replies ok / oom", f"{outcomes.count('ok')} / {outcomes.count('oom')}")
    assert not latency["errors"], latency["errors"][:5]
    assert latency["count"] >= 200, f"only {latency['count']} probe requests in {UNREAD_SECONDS}s"
    assert latency["p99"] < 0.100, f"probe p99 {latency['p99'] * 1000:.0f} ms"
    assert rss.peak <= bound, f"RSS {rss.peak / MiB:.0f} MiB over the bound {bound / MiB:.0f}"
    assert server.stats()["response_obj_oom"] - oom_before >= ooms
    server.check_healthy()


@pytest.mark.memcrab_only(
    "memcached reads a value straight into its item and grows a long get line outside "
    "read_buf_mem_limit: the cap on read buffers is memcrab's"
)
@pytest.mark.parametrize("request_kind", ["long-get-line", "big-value"])
def test_read_buffers_beyond_the_cap(kind, start_server, figures, request_kind):
    """With ``-o read_buf_mem_limit=1``, 40 connections each send 300 KB of a 600 KB
    request, then the rest: a request whose read buffer does not fit under the cap gets
    ``SERVER_ERROR out of memory reading request`` and a close (counted in
    ``read_buf_oom``); the others complete normally, and at least one does (each refused
    connection gives its memory back)."""
    server = start_server("-m", M_MB, "-t", THREADS, "-o", "read_buf_mem_limit=1")
    oom_before = server.stats()["read_buf_oom"]
    if request_kind == "long-get-line":
        request, answer = b"get " + (b"x" * 199 + b" ") * 3000 + b"\r\n", b"END"
    else:
        request, answer = b"set big 0 0 600000\r\n" + b"x" * 600000 + b"\r\n", b"STORED"
    half = len(request) // 2
    outcomes = {"answered": 0, "oom": 0, "reset": 0}
    with RssSampler(server.pid) as rss:
        conns = [Conn(server.connect()) for _ in range(40)]
        for part in (request[:half], request[half:]):
            for conn in conns:
                if conn.sock.fileno() >= 0 and not send_or_refused(conn, part, outcomes):
                    conn.close()
                time.sleep(0.01)  # the server reads it before the next one's
        for conn in conns:
            if conn.sock.fileno() >= 0:
                reply = conn.line()
                if reply == answer:
                    outcomes["answered"] += 1
                else:
                    assert reply == OOM_READING, reply[:80]
                    assert conn.eof_within(2.0), "not closed after the read OOM error"
                    outcomes["oom"] += 1
    figures("answered / oom error / reset", "{answered} / {oom} / {reset}".format(**outcomes))
    record_rss(figures, rss)
    refused = outcomes["oom"] + outcomes["reset"]
    assert outcomes["answered"] >= 1 and refused >= 1, outcomes
    assert server.stats()["read_buf_oom"] - oom_before >= refused
    assert rss.peak <= rss_bound(M_MB, 1, 41, THREADS)
    server.check_healthy()


def send_or_refused(conn, data, outcomes):
    """Sends ``data`` unless the server has already answered (it may only answer the
    read OOM error, then close). False (and counted) if the connection was refused."""
    early = answer_or_close(conn.sock, 0)
    if early is None:
        try:
            conn.send(data)
            return True
        except (ConnectionResetError, BrokenPipeError):
            early = answer_or_close(conn.sock, 1.0) or b""
    if early.startswith(OOM_READING + b"\r\n"):
        outcomes["oom"] += 1
    else:
        assert early == b"", f"unexpected answer mid-request: {early[:80]!r}"
        outcomes["reset"] += 1
    return False


def test_buffer_cap_counters_and_setting(kind, start_server):
    """``stats`` has memcached's two OOM counters; ``stats settings`` shows the cap in
    bytes, as memcached does."""
    server = start_server(*SERVER_ARGS)
    stats = server.stats()
    assert stats["read_buf_oom"] == 0 and stats["response_obj_oom"] == 0
    assert server.stats("settings")["read_buf_mem_limit"] == B_MB * MiB


@pytest.mark.memcrab_only("memcached's default read_buf_mem_limit is 0 (unlimited)")
@pytest.mark.parametrize("m_mb,item_mb", [(64, 1), (1024, 1), (64, 16)])
def test_default_buffer_cap(kind, start_server, m_mb, item_mb):
    """Without the option the cap is max(32 MiB, -m/8, 4 x -I)."""
    server = start_server("-m", m_mb, "-I", f"{item_mb}m")
    limit = server.stats("settings")["read_buf_mem_limit"]
    assert limit == default_buf_cap_mb(m_mb, item_mb) * MiB
