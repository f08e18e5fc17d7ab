"""``stats``, ``stats settings`` and ``shutdown`` through pymemcache.

The counters are the ones memcached_exporter reads from ``stats``: they must be
present and parse as integers.
"""

import re
import time

import pytest
from pymemcache.exceptions import MemcacheError

# `stats` keys memcached_exporter needs, each a plain decimal integer.
EXPORTER_INTEGER_STATS = [
    "uptime", "time", "bytes_read", "bytes_written", "curr_connections",
    "total_connections", "rejected_connections", "conn_yields",
    "listen_disabled_num", "accepting_conns", "bytes", "limit_maxbytes",
    "curr_items", "total_items", "evictions", "reclaimed", "store_too_large",
    "store_no_memory", "direct_reclaims", "cmd_set", "cmd_flush",
    "get_hits", "get_misses", "delete_hits", "delete_misses", "incr_hits",
    "incr_misses", "decr_hits", "decr_misses", "cas_hits", "cas_misses",
    "cas_badval", "touch_hits", "touch_misses",
]  # fmt: skip
# Other integer keys every memcached-compatible server reports.
OTHER_INTEGER_STATS = [
    "pid", "pointer_size", "max_connections", "threads", "cmd_get",
    "cmd_touch", "get_expired", "get_flushed",
]  # fmt: skip


def raw_stats_lines(client, arg=b""):
    """The raw ``stats`` reply, as the list of lines before END."""
    command = b"stats" + (b" " + arg if arg else b"")
    reply = client.raw_command(command, b"END\r\n")
    return reply.decode().split("\r\n")[:-1]


def test_stats_parsed_by_pymemcache(client, server):
    client.set("k", b"v", noreply=False)
    stats = client.stats()
    for name in EXPORTER_INTEGER_STATS + OTHER_INTEGER_STATS:
        key = name.encode()
        assert key in stats, f"stats has no {name}"
        assert type(stats[key]) is int, f"{name} = {stats[key]!r} is not an integer"
        assert stats[key] >= 0, name
    assert isinstance(stats[b"rusage_user"], float)
    assert isinstance(stats[b"rusage_system"], float)
    assert re.fullmatch(rb"\d+\.\d+\.\d+.*", stats[b"version"])
    assert stats[b"version"] == client.version()
    assert stats[b"pid"] == server.pid
    assert abs(stats[b"time"] - time.time()) <= 5
    assert stats[b"curr_connections"] >= 1
    assert stats[b"total_connections"] >= stats[b"curr_connections"]
    assert stats[b"accepting_conns"] == 1
    assert stats[b"curr_items"] == 1 and stats[b"total_items"] == 1
    assert stats[b"bytes"] > 0
    assert stats[b"bytes_read"] > 0 and stats[b"bytes_written"] > 0


def test_stats_raw_format_for_the_exporter(client):
    client.set("k", b"v", noreply=False)
    lines = raw_stats_lines(client)
    names = []
    for line in lines:
        fields = line.split(" ")
        assert len(fields) == 3 and fields[0] == "STAT", f"bad stats line {line!r}"
        names.append(fields[1])
        if fields[1] not in ("version", "libevent", "slab_reassign_last_busy_status"):
            assert re.fullmatch(r"\d+(\.\d+)?", fields[2]), f"bad value in {line!r}"
    assert len(names) == len(set(names)), "duplicate stats keys"
    for line in lines:
        if line.startswith(("STAT rusage_user ", "STAT rusage_system ")):
            assert re.fullmatch(r"STAT rusage_\w+ \d+\.\d{6}", line), line


def test_stats_counters_follow_commands(client):
    before = client.stats()
    client.set("a", b"1", noreply=False)  # cmd_set
    assert client.get("a") == b"1"  # get hit
    assert client.get("nope") is None  # get miss
    assert client.get_many(["a", "nope"]) == {"a": b"1"}  # hit + miss
    assert client.delete("a", noreply=False)  # delete hit
    assert not client.delete("a", noreply=False)  # delete miss
    client.set("n", b"5", noreply=False)  # cmd_set
    assert client.incr("n", 1, noreply=False) == 6  # incr hit
    assert client.incr("nope", 1, noreply=False) is None  # incr miss
    assert client.decr("n", 1, noreply=False) == 5  # decr hit
    assert client.decr("nope", 1, noreply=False) is None  # decr miss
    assert client.touch("n", 100, noreply=False)  # touch hit
    assert not client.touch("nope", 100, noreply=False)  # touch miss
    _, token = client.gets("n")  # get hit
    assert client.cas("n", b"7", token, noreply=False) is True  # cas hit
    assert client.cas("n", b"8", token, noreply=False) is False  # cas badval
    assert client.cas("nope", b"8", token, noreply=False) is None  # cas miss
    assert client.add("n", b"x", noreply=False) is False  # cmd_set too
    client.flush_all(noreply=False)  # cmd_flush
    after = client.stats()

    def delta(name):
        return after[name.encode()] - before[name.encode()]

    expected = {
        "cmd_get": 5, "get_hits": 3, "get_misses": 2,
        "delete_hits": 1, "delete_misses": 1,
        "incr_hits": 1, "incr_misses": 1, "decr_hits": 1, "decr_misses": 1,
        "cmd_touch": 2, "touch_hits": 1, "touch_misses": 1,
        "cas_hits": 1, "cas_badval": 1, "cas_misses": 1,
        "cmd_set": 6,  # set, set, 3 cas, add: cas attempts count in cmd_set
        "cmd_flush": 1,
    }  # fmt: skip
    assert {name: delta(name) for name in expected} == expected
    # memcached_exporter's derivation of "set" commands
    sets = (
        after[b"cmd_set"]
        - after[b"cas_misses"]
        - after[b"cas_hits"]
        - after[b"cas_badval"]
    )
    assert sets == 3
    assert after[b"total_items"] - before[b"total_items"] >= 3


def test_stats_settings(start_server):
    server = start_server("-m", "32", "-c", "500")
    c = server.client()
    settings = c.stats("settings")
    assert settings[b"maxconns"] == 500
    assert settings[b"maxbytes"] == 32 * 1024 * 1024
    assert settings[b"tcpport"] == server.port
    assert settings[b"udpport"] == 0
    assert settings[b"inter"] == b"127.0.0.1"
    assert type(settings[b"item_size_max"]) is int
    assert type(settings[b"num_threads"]) is int and settings[b"num_threads"] >= 1
    assert settings[b"evictions"] == b"on"
    assert settings[b"cas_enabled"] in (True, b"yes")
    assert settings[b"lru_crawler"] in (b"yes", b"no")
    assert settings[b"lru_maintainer_thread"] in (b"yes", b"no")
    assert settings[b"shutdown_command"] == b"no"  # started without -A
    if settings[b"lru_crawler"] == b"yes":
        for name in (
            "lru_crawler_sleep",
            "lru_crawler_tocrawl",
            "hot_lru_pct",
            "warm_lru_pct",
        ):
            assert type(settings[name.encode()]) is int, name
        for name in ("hot_max_factor", "warm_max_factor"):
            float(settings[name.encode()])
    for line in raw_stats_lines(c, b"settings"):
        assert line.startswith("STAT "), f"bad settings line {line!r}"

    stats = c.stats()
    assert stats[b"limit_maxbytes"] == 32 * 1024 * 1024
    assert stats[b"max_connections"] == 500


def test_stats_slabs_and_items_parse(client):
    client.set_many({f"k{i}": b"x" * (i * 37) for i in range(50)}, noreply=False)
    # pymemcache parses the per-class lines too; no exception, integer values
    slabs = client.stats("slabs")
    items = client.stats("items")
    assert type(slabs[b"active_slabs"]) is int and slabs[b"active_slabs"] >= 1
    assert type(slabs[b"total_malloced"]) is int
    assert any(re.fullmatch(rb"items:\d+:number", k) for k in items)
    for key, value in list(slabs.items()) + list(items.items()):
        assert type(value) is int, f"{key!r} = {value!r}"


def test_shutdown_without_enable_is_refused(server):
    c = server.client()
    c.set("survivor", b"yes", noreply=False)
    with pytest.raises(MemcacheError):
        c.shutdown()
    with pytest.raises(MemcacheError):
        server.client().shutdown(graceful=True)
    time.sleep(0.2)
    assert server.is_running()
    fresh = server.client()
    assert fresh.get("survivor") == b"yes"
    assert fresh.version()
