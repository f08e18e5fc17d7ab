"""Many threads through pymemcache: PooledClient, CAS retry loops, incr."""

import threading

from pymemcache.client.base import PooledClient

from support import client_options, make_client

JOIN_TIMEOUT = 30.0


def run_threads(count, target):
    """Run ``target(index)`` in ``count`` threads; re-raise the first error."""
    errors = []

    def wrapper(index):
        try:
            target(index)
        except Exception as exc:  # noqa: BLE001 (re-raised by the test below)
            errors.append(exc)

    threads = [threading.Thread(target=wrapper, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "threads did not finish"
    if errors:
        raise errors[0]


def test_pooled_client_many_threads(server):
    threads, keys_per_thread = 16, 100
    pool = PooledClient(server.address, **client_options(max_pool_size=threads))

    def worker(index):
        values = {
            f"t{index}:k{i}": f"{index}-{i}".encode() for i in range(keys_per_thread)
        }
        for key, value in values.items():
            assert pool.set(key, value, noreply=False) is True
        for key, value in values.items():
            assert pool.get(key) == value
        assert pool.get_many(list(values)) == values
        assert pool.incr("shared", 1, noreply=False) is not None

    pool.set("shared", b"0", noreply=False)
    run_threads(threads, worker)
    assert int(pool.get("shared")) == threads

    # every key written by every thread is there, through a plain client
    check = server.client()
    for index in range(threads):
        keys = [f"t{index}:k{i}" for i in range(keys_per_thread)]
        assert len(check.get_many(keys)) == keys_per_thread
    stats = check.stats()
    assert stats[b"curr_items"] == threads * keys_per_thread + 1
    # the pool never opened more connections than its size (+ the checker)
    assert stats[b"curr_connections"] <= threads + 1
    pool.close()


def test_cas_retry_loop_is_exact(server):
    threads, increments = 8, 200
    max_attempts = 10_000  # per increment; bounds the loop on a broken server
    retries = []

    setup = server.client()
    setup.set("counter", b"0", noreply=False)

    def worker(index):
        c = make_client(server.address)
        mine = 0
        for _ in range(increments):
            for _attempt in range(max_attempts):
                value, token = c.gets("counter")
                if c.cas("counter", str(int(value) + 1).encode(), token, noreply=False):
                    break
                mine += 1
            else:
                raise AssertionError("cas never succeeded")
        retries.append(mine)
        c.close()

    run_threads(threads, worker)
    assert int(setup.get("counter")) == threads * increments
    stats = setup.stats()
    assert stats[b"cas_hits"] == threads * increments
    assert stats[b"cas_badval"] == sum(retries)
    assert stats[b"cas_misses"] == 0


def test_incr_from_many_threads_is_exact(server):
    threads, increments = 16, 250
    results = [[] for _ in range(threads)]

    setup = server.client()
    setup.set("hits", b"0", noreply=False)

    def worker(index):
        c = make_client(server.address)
        for _ in range(increments):
            results[index].append(c.incr("hits", 1, noreply=False))
        c.close()

    run_threads(threads, worker)
    total = threads * increments
    assert int(setup.get("hits")) == total
    # each incr saw its own new value: all of 1..total exactly once
    seen = sorted(v for per_thread in results for v in per_thread)
    assert seen == list(range(1, total + 1))
    assert setup.stats()[b"incr_hits"] == total


def test_noreply_writes_from_many_threads(server):
    threads, keys_per_thread = 8, 200

    def worker(index):
        c = make_client(server.address)
        for i in range(keys_per_thread):
            c.set(f"nr{index}:{i}", b"x", noreply=True)
        # a request with a reply flushes this connection's pipeline
        assert c.version()
        c.close()

    run_threads(threads, worker)
    check = server.client()
    assert check.stats()[b"curr_items"] == threads * keys_per_thread


def test_concurrent_readers_and_writers_see_whole_values(server):
    # Writers replace a value with a longer or shorter one; readers must see
    # one complete version, never a mix or a torn value.
    versions = [bytes([65 + v]) * (1000 * (v + 1)) for v in range(5)]
    setup = server.client()
    setup.set("doc", versions[0], noreply=False)

    def worker(index):
        c = make_client(server.address)
        for i in range(200):
            if index % 2:
                c.set("doc", versions[(index + i) % len(versions)], noreply=False)
            else:
                assert c.get("doc") in versions
        c.close()

    run_threads(8, worker)
    assert setup.get("doc") in versions
