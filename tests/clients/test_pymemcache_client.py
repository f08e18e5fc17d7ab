"""pymemcache ``Client``: every classic command, with and without noreply."""

import json
import re
import time

import pytest
from pymemcache import serde
from pymemcache.exceptions import MemcacheClientError, MemcacheIllegalInputError

from support import make_client


def wait_until(predicate, timeout, interval=0.05):
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def test_set_get_reply(client):
    assert client.set("k", b"v1", noreply=False) is True
    assert client.get("k") == b"v1"
    assert client.get("missing") is None
    assert client.get("missing", default=b"dflt") == b"dflt"


def test_set_noreply_then_get(client):
    # noreply=True is pymemcache's default: nothing comes back, the next
    # request on the same connection must still see the write.
    assert client.set("k", b"quiet") is True
    assert client.set("k2", b"quiet2", noreply=True) is True
    assert client.get("k") == b"quiet"
    assert client.get("k2") == b"quiet2"


def test_set_many_get_many(client):
    values = {f"key:{i}": f"value-{i}".encode() for i in range(100)}
    assert client.set_many(values, noreply=False) == []
    got = client.get_many(list(values) + ["absent:1", "absent:2"])
    assert got == values
    assert client.set_many({"a": b"1", "b": b"2"}) == []  # noreply
    assert client.get_many(["a", "b"]) == {"a": b"1", "b": b"2"}
    assert client.get_many([]) == {}


def test_add(client):
    assert client.add("k", b"first", noreply=False) is True
    assert client.add("k", b"second", noreply=False) is False
    assert client.get("k") == b"first"
    assert client.add("k", b"third", noreply=True) is True  # noreply: no answer
    assert client.get("k") == b"first"


def test_replace(client):
    assert client.replace("k", b"x", noreply=False) is False
    assert client.get("k") is None
    client.set("k", b"old", noreply=False)
    assert client.replace("k", b"new", noreply=False) is True
    assert client.get("k") == b"new"
    client.replace("k", b"newer", noreply=True)
    assert client.get("k") == b"newer"


def test_append_prepend(client):
    assert client.append("k", b"x", noreply=False) is False
    assert client.prepend("k", b"x", noreply=False) is False
    assert client.get("k") is None
    client.set("k", b"mid", noreply=False)
    assert client.append("k", b"_end", noreply=False) is True
    assert client.prepend("k", b"start_", noreply=False) is True
    client.append("k", b"!", noreply=True)
    client.prepend("k", b"<", noreply=True)
    assert client.get("k") == b"<start_mid_end!"


def test_append_keeps_flags(server):
    # append/prepend ignore their own flags: the value keeps the set's flags.
    writer = server.client(serde=serde.pickle_serde)
    raw = server.client()
    writer.set("s", "text", noreply=False)  # str -> FLAG_TEXT
    assert raw.append("s", b"+more", noreply=False) is True
    assert writer.get("s") == "text+more"
    assert raw.raw_command(b"get s", b"END\r\n") == (
        b"VALUE s %d 9\r\ntext+more\r\n" % serde.FLAG_TEXT
    )


def test_delete(client):
    client.set("k", b"v", noreply=False)
    assert client.delete("k", noreply=False) is True
    assert client.delete("k", noreply=False) is False
    assert client.get("k") is None
    client.set("k", b"v", noreply=False)
    assert client.delete("k") is True  # noreply
    assert client.get("k") is None
    client.set_many({"d1": b"1", "d2": b"2"}, noreply=False)
    assert client.delete_many(["d1", "d2", "d3"], noreply=False) is True
    assert client.get_many(["d1", "d2"]) == {}


def test_incr_decr(client):
    assert client.incr("n", 1, noreply=False) is None  # missing key
    assert client.decr("n", 1, noreply=False) is None
    client.set("n", b"10", noreply=False)
    assert client.incr("n", 5, noreply=False) == 15
    assert client.decr("n", 3, noreply=False) == 12
    assert client.decr("n", 100, noreply=False) == 0  # decr stops at 0
    assert client.incr("n", 2**64 - 1, noreply=False) == 2**64 - 1
    assert client.incr("n", 2, noreply=False) == 1  # wraps around 2**64
    assert client.incr("n", 1, noreply=True) is None
    assert int(client.get("n")) == 2
    client.set("text", b"abc", noreply=False)
    with pytest.raises(MemcacheClientError):
        client.incr("text", 1, noreply=False)


def test_decr_result_keeps_length(client):
    # memcached pads a shrinking decr result with spaces (same length).
    client.set("n", b"100", noreply=False)
    assert client.decr("n", 1, noreply=False) == 99
    assert int(client.get("n")) == 99


def test_gets_cas(client):
    assert client.gets("k") == (None, None)
    client.set("k", b"v1", noreply=False)
    value, token = client.gets("k")
    assert value == b"v1"
    assert token.isdigit()
    assert client.cas("k", b"v2", token, noreply=False) is True
    assert client.cas("k", b"v3", token, noreply=False) is False  # EXISTS
    assert client.get("k") == b"v2"
    assert client.cas("missing", b"v", token, noreply=False) is None  # NOT_FOUND
    value2, token2 = client.gets("k")
    assert value2 == b"v2" and token2 != token
    # every mutation gives a new CAS unique; touch keeps it
    client.touch("k", 100, noreply=False)
    assert client.gets("k") == (b"v2", token2)
    client.append("k", b"+", noreply=False)
    assert client.gets("k")[1] != token2


def test_gets_many(client):
    client.set_many({"a": b"1", "b": b"2"}, noreply=False)
    got = client.gets_many(["a", "b", "c"])
    assert set(got) == {"a", "b"}
    assert got["a"][0] == b"1" and got["b"][0] == b"2"
    assert got["a"][1] != got["b"][1]


def test_touch_and_ttl_expiry(client):
    # One real wait covers three TTL cases. The server's clock ticks once a second, so a
    # TTL of 1 s can end at the very next tick, a moment after the set; 2 s leaves at least
    # a whole second to see the item before it goes.
    client.set("short", b"s", expire=2, noreply=False)
    client.set("extended", b"e", expire=2, noreply=False)
    client.set("shortened", b"x", expire=100, noreply=False)
    client.set("forever", b"f", noreply=False)
    assert client.touch("extended", expire=100, noreply=False) is True
    assert client.touch("shortened", expire=2, noreply=False) is True
    assert client.touch("missing", expire=2, noreply=False) is False
    assert client.get("short") == b"s"

    def both_expired():
        return client.get_many(["short", "shortened"]) == {}

    assert wait_until(both_expired, timeout=5.0), "TTL of 2 s not honoured"
    assert client.get("extended") == b"e"
    assert client.get("forever") == b"f"


def test_flush_all(client):
    client.set_many({"a": b"1", "b": b"2"}, noreply=False)
    assert client.flush_all(noreply=False) is True
    assert client.get_many(["a", "b"]) == {}
    client.set("a", b"after", noreply=False)  # writes after a flush are kept
    assert client.get("a") == b"after"
    assert client.add("b", b"added", noreply=False) is True
    assert client.flush_all() is True  # noreply
    assert client.get_many(["a", "b"]) == {}


def test_version(client):
    version = client.version()
    assert re.fullmatch(rb"\d+\.\d+\.\d+.*", version), version


def test_unicode_keys_rejected_client_side(client):
    with pytest.raises(MemcacheIllegalInputError):
        client.set("ключ", b"v", noreply=False)
    with pytest.raises(MemcacheIllegalInputError):
        client.get("caf\u00e9")
    with pytest.raises(MemcacheIllegalInputError):
        client.set("has space", b"v", noreply=False)
    with pytest.raises(MemcacheIllegalInputError):
        client.set("x" * 251, b"v", noreply=False)
    # the connection is still usable, and the longest legal key works
    assert client.set("x" * 250, b"v", noreply=False) is True
    assert client.get("x" * 250) == b"v"


def test_unicode_keys_allowed_as_utf8(server):
    c = server.client(allow_unicode_keys=True)
    assert c.set("ключ", b"v", noreply=False) is True
    assert c.get("ключ") == b"v"
    assert server.client().get("ключ".encode()) == b"v"


def test_binary_values(client):
    blob = bytes(range(256)) * 64  # every byte value, including \r\n and NUL
    tricky = b"\r\nEND\r\nVALUE k 0 3\r\n"
    client.set_many({"blob": blob, "tricky": tricky, "empty": b""}, noreply=False)
    assert client.get("blob") == blob
    assert client.get("tricky") == tricky
    assert client.get("empty") == b""
    big = bytes(range(256)) * 4000  # ~1 MB
    assert client.set("big", big, noreply=False) is True
    assert client.get("big") == big


def test_pickle_serde_round_trip(server):
    c = server.client(serde=serde.pickle_serde)
    values = {
        "bytes": b"\x00raw",
        "str": "h\u00e9llo",
        "int": 42,
        "bigint": 2**70,
        "dict": {"a": [1, 2.5, None]},
    }
    assert c.set_many(values, noreply=False) == []
    assert c.get_many(list(values)) == values
    # the type travels in the 32-bit client flags
    raw = server.client()
    expected_flags = {
        "bytes": 0,
        "str": serde.FLAG_TEXT,
        "int": serde.FLAG_INTEGER,
        "bigint": serde.FLAG_INTEGER,
        "dict": serde.FLAG_PICKLE,
    }
    for key, flags in expected_flags.items():
        header = raw.raw_command(b"get " + key.encode(), b"END\r\n").split(b"\r\n")[0]
        assert header.split()[:3] == [b"VALUE", key.encode(), str(flags).encode()]


class JsonSerde:
    """A custom serde using the whole 32-bit flags range."""

    FLAG_JSON = 0xFFFFFFFF

    def serialize(self, key, value):
        if isinstance(value, bytes):
            return value, 0
        return json.dumps(value).encode(), self.FLAG_JSON

    def deserialize(self, key, value, flags):
        if flags == self.FLAG_JSON:
            return json.loads(value)
        assert flags == 0, flags
        return value


def test_custom_serde_flags_32_bit(server):
    c = server.client(serde=JsonSerde())
    doc = {"user": 7, "tags": ["a", "b"]}
    assert c.set("doc", doc, noreply=False) is True
    assert c.set("plain", b"raw", noreply=False) is True
    assert c.get("doc") == doc
    assert c.get("plain") == b"raw"
    assert c.gets("doc")[0] == doc


def test_noreply_pipeline_then_reply(client):
    # Many noreply writes followed by one request with a reply: the reply
    # must be the answer to that request, not a stray one.
    for i in range(200):
        client.set(f"p{i}", str(i).encode())
        client.incr(f"p{i}", 1)
        client.delete(f"p{i - 1}")
    assert client.get("p199") == b"200"
    assert client.get("p198") is None
    assert client.version()


def test_many_connections(server):
    clients = [make_client(server.address) for _ in range(50)]
    try:
        for i, c in enumerate(clients):
            c.set(f"c{i}", str(i).encode(), noreply=False)
        for i, c in enumerate(clients):
            assert c.get(f"c{(i + 1) % 50}") == str((i + 1) % 50).encode()
    finally:
        for c in clients:
            c.close()
