"""The usual deployment patterns, with pymemcache: cache-aside with a TTL, a CAS counter,
a FallbackClient migrating from an old pool, a telnet health check."""

import json
import socket
import time

from pymemcache import serde
from pymemcache.fallback import FallbackClient

from support import CLIENT_TIMEOUT


class FakeDatabase:
    """The slow backing store of a cache-aside application."""

    def __init__(self):
        self.queries = 0

    def load_user(self, user_id):
        self.queries += 1
        return {"id": user_id, "name": f"user {user_id}"}


def cached_user(cache, db, user_id, ttl):
    """Cache-aside: get; on a miss query the database and set with a TTL."""
    key = f"user:{user_id}"
    cached = cache.get(key)
    if cached is not None:
        return json.loads(cached)
    user = db.load_user(user_id)
    cache.set(key, json.dumps(user).encode(), expire=ttl)
    return user


def test_cache_aside_with_ttl(client):
    db = FakeDatabase()
    for _ in range(3):
        for user_id in range(10):
            assert cached_user(client, db, user_id, ttl=300)["id"] == user_id
    assert db.queries == 10  # one miss per user, then hits
    stats = client.stats()
    assert stats[b"get_misses"] == 10
    assert stats[b"get_hits"] == 20

    # every miss is normal: after a flush (or eviction, expiry, cold start)
    # the application simply reloads
    client.flush_all(noreply=False)
    assert cached_user(client, db, 3, ttl=300)["name"] == "user 3"
    assert db.queries == 11


def test_cache_aside_real_ttl_expiry(client):
    db = FakeDatabase()
    cached_user(client, db, 1, ttl=2)
    cached_user(client, db, 2, ttl=300)
    time.sleep(0.5)
    cached_user(client, db, 1, ttl=2)  # still cached (granularity is 1 s)
    assert db.queries == 2

    deadline = time.monotonic() + 4.0
    while client.get("user:1") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get("user:1") is None, "the 2 s TTL did not expire the entry"
    cached_user(client, db, 1, ttl=2)  # reloaded after expiry
    cached_user(client, db, 2, ttl=300)  # still cached
    assert db.queries == 3


def test_cas_visit_counter(server):
    # The CAS retry loop of the visit counter, with a serde'd integer value.
    clients = [server.client(serde=serde.pickle_serde) for _ in range(4)]
    clients[0].set("visits", 0, noreply=False)

    def visit(c, max_attempts=100):
        for _ in range(max_attempts):
            count, token = c.gets("visits")
            if c.cas("visits", count + 1, token, noreply=False):
                return
        raise AssertionError("cas never succeeded")

    # interleave the clients so that some cas calls meet EXISTS
    stale = []
    for c in clients:
        stale.append(c.gets("visits"))
    clients[0].cas("visits", stale[0][0] + 1, stale[0][1], noreply=False)
    for c, (count, token) in zip(clients[1:], stale[1:]):
        assert c.cas("visits", count + 1, token, noreply=False) is False  # EXISTS
    for i in range(99):
        visit(clients[i % 4])
    assert clients[1].get("visits") == 100
    assert isinstance(clients[2].get("visits"), int)  # the serde's int flag


def test_fallback_client_reads_new_then_old(start_server):
    old_server, new_server = start_server(), start_server()
    old = old_server.client(ignore_exc=True)
    new = new_server.client()
    old.set_many({"legacy": b"from-old", "both": b"old-copy"}, noreply=False)
    new.set("both", b"new-copy", noreply=False)

    fb = FallbackClient((new, old))
    assert fb.get("both") == b"new-copy"  # the new server answers first
    assert fb.get("legacy") == b"from-old"  # a miss on new falls back to old
    assert fb.get("nowhere") is None

    fb.set("fresh", b"written")  # writes go to the new server only
    fb.set("legacy", b"refreshed")
    fb.delete("both")
    assert new.get("fresh") == b"written"
    assert old.get("fresh") is None
    assert fb.get("legacy") == b"refreshed"
    assert old.get("legacy") == b"from-old"
    assert fb.get("both") == b"old-copy"  # deleted on new only
    assert old_server.client().stats()[b"cmd_set"] == 2  # only the setup's

    # retire the old server: with ignore_exc a dead old server reads as a miss
    old_server.expect_exit = True
    old_server.stop()
    assert fb.get("fresh") == b"written"
    assert fb.get("legacy") == b"refreshed"
    assert fb.get("never-set") is None
    fb.close()


def test_telnet_check(server):
    # What operators type in `telnet HOST 11211`, byte for byte.
    with socket.create_connection(server.address, timeout=CLIENT_TIMEOUT) as sock:
        reader = sock.makefile("rb")
        sock.sendall(b"set mykey 0 0 5\r\n")
        sock.sendall(b"hello\r\n")
        assert reader.readline() == b"STORED\r\n"
        sock.sendall(b"get mykey\r\n")
        assert reader.readline() == b"VALUE mykey 0 5\r\n"
        assert reader.readline() == b"hello\r\n"
        assert reader.readline() == b"END\r\n"
        sock.sendall(b"quit\r\n")
        assert reader.read() == b""  # the server closes the connection
