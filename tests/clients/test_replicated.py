"""Two independent replica pools, as memcached's proxy runs them with ``route_allsync``
writes and ``route_allfastest`` reads: every write and delete goes to both pools, a read is
answered by whichever pool answers, and failing over happens on errors, not on misses.
Killing one pool must lose no reads.

Each pool is itself a HashClient over two servers (two StatefulSets of two pods).
"""

import pytest
from pymemcache.client.rendezvous import RendezvousHash
from pymemcache.exceptions import MemcacheError

from support import make_client

KEYS = [f"user:{i}" for i in range(1000)]


class ReplicatedClient:
    """allsync writes, first-answer reads with failover on errors."""

    def __init__(self, pools):
        self.pools = pools

    def set(self, key, value):
        return all(p.set(key, value, noreply=False) for p in self.pools)

    def delete(self, key):
        return [p.delete(key, noreply=False) for p in self.pools]

    def get(self, key):
        last_error = None
        for pool in self.pools:
            try:
                return pool.get(key)
            except (MemcacheError, OSError) as e:
                last_error = e
        raise last_error


class Pool:
    """One replica pool: keys hashed over its servers. Unlike pymemcache's HashClient,
    which answers a miss for a server it has marked failed, a dead server raises here,
    as a proxy's backend error does."""

    def __init__(self, servers):
        self.clients = {f"{s.address[0]}:{s.address[1]}": make_client(s.address) for s in servers}
        self.ring = RendezvousHash(list(self.clients))

    def _client(self, key):
        return self.clients[self.ring.get_node(key)]

    def set(self, key, value, noreply=False):
        return self._client(key).set(key, value, noreply=noreply)

    def get(self, key):
        return self._client(key).get(key)

    def get_many(self, keys):
        found = {}
        for key in keys:
            value = self.get(key)
            if value is not None:
                found[key] = value
        return found

    def delete(self, key, noreply=False):
        return self._client(key).delete(key, noreply=noreply)

    def close(self):
        for c in self.clients.values():
            c.close()


def pool_client(servers):
    return Pool(servers)


@pytest.fixture
def pools(start_server):
    pool_a = [start_server(), start_server()]
    pool_b = [start_server(), start_server()]
    yield pool_a, pool_b


def test_writes_reach_both_pools_and_either_answers(pools):
    pool_a, pool_b = pools
    a, b = pool_client(pool_a), pool_client(pool_b)
    client = ReplicatedClient([a, b])
    for key in KEYS:
        assert client.set(key, key.encode())
    assert a.get_many(KEYS[:100]) == {k: k.encode() for k in KEYS[:100]}
    assert b.get_many(KEYS[:100]) == {k: k.encode() for k in KEYS[:100]}
    assert client.delete(KEYS[0]) == [True, True]
    assert a.get(KEYS[0]) is None and b.get(KEYS[0]) is None
    a.close()
    b.close()


def test_losing_a_whole_pool_loses_no_reads(pools):
    pool_a, pool_b = pools
    a, b = pool_client(pool_a), pool_client(pool_b)
    client = ReplicatedClient([a, b])
    for key in KEYS:
        assert client.set(key, key.encode())
    for server in pool_a:
        server.expect_exit = True
        server.stop()
    with pytest.raises((MemcacheError, OSError)):
        a.get(KEYS[1])
    missing = [key for key in KEYS if client.get(key) != key.encode()]
    assert missing == []
    a.close()
    b.close()
