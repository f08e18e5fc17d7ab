"""pymemcache ``HashClient`` over several server processes.

The StatefulSet topology: the application hashes keys over N pods. Keys must
spread over all servers, and adding or removing a server must move only
about 1/N of them. Where a key lives is measured by asking each server.
"""

import pytest
from pymemcache.client.hash import HashClient

from support import client_options

KEY_COUNT = 3000
BATCH = 100
KEYS = [f"user:{i}:profile" for i in range(KEY_COUNT)]


def hash_client(servers):
    return HashClient([s.address for s in servers], **client_options())


def write_all(servers, phase):
    """Write every key through a HashClient over ``servers``.

    The value names the phase, so that copies left on a server by an earlier
    phase are not mistaken for this phase's placement.
    """
    hc = hash_client(servers)
    values = {key: f"{phase}:{key}".encode() for key in KEYS}
    assert hc.set_many(values, noreply=False) == []
    # the client reads back what it wrote
    for start in range(0, KEY_COUNT, 500):
        chunk = KEYS[start : start + 500]
        assert hc.get_many(chunk) == {k: values[k] for k in chunk}
    hc.close()


def placement(servers, phase):
    """{key: index of the server that holds the key's value of ``phase``}."""
    where = {}
    for index, server in enumerate(servers):
        c = server.client()
        for start in range(0, KEY_COUNT, BATCH):
            chunk = KEYS[start : start + BATCH]
            for key, value in c.get_many(chunk).items():
                if value == f"{phase}:{key}".encode():
                    assert key not in where, f"{key} stored on two servers"
                    where[key] = index
        c.close()
    assert len(where) == KEY_COUNT, "some keys were not found on any server"
    return where


def moved_fraction(before, before_servers, after, after_servers):
    moved = sum(
        1
        for key in KEYS
        if before_servers[before[key]] is not after_servers[after[key]]
    )
    return moved / KEY_COUNT


@pytest.fixture
def three_servers(start_server):
    return [start_server() for _ in range(3)]


def test_keys_spread_over_all_servers(three_servers):
    write_all(three_servers, "p1")
    where = placement(three_servers, "p1")
    for index, server in enumerate(three_servers):
        count = sum(1 for i in where.values() if i == index)
        share = count / KEY_COUNT
        assert share >= 0.20, f"server {index} holds only {share:.1%} of the keys"
        assert server.client().stats()[b"curr_items"] == count


def test_adding_a_server_moves_about_a_quarter(start_server, three_servers):
    write_all(three_servers, "p1")
    before = placement(three_servers, "p1")

    four = three_servers + [start_server()]
    write_all(four, "p2")
    after = placement(four, "p2")

    moved = moved_fraction(before, three_servers, after, four)
    assert moved <= 0.35, f"{moved:.1%} of the keys moved (expected about 25%)"
    new_share = sum(1 for i in after.values() if i == 3) / KEY_COUNT
    assert new_share >= 0.15, f"the new server got only {new_share:.1%}"
    # keys that moved went to the new server only
    for key in KEYS:
        if four[after[key]] is not three_servers[before[key]]:
            assert after[key] == 3


def test_removing_a_server_moves_about_a_third(three_servers):
    write_all(three_servers, "p1")
    before = placement(three_servers, "p1")

    removed = three_servers[2]
    removed.expect_exit = True
    removed.stop()  # the pod is gone
    remaining = three_servers[:2]
    write_all(remaining, "p2")
    after = placement(remaining, "p2")

    moved = moved_fraction(before, three_servers, after, remaining)
    assert moved <= 0.45, f"{moved:.1%} of the keys moved (expected about 33%)"
    # keys of the surviving servers stayed where they were
    for key in KEYS:
        if before[key] != 2:
            assert remaining[after[key]] is three_servers[before[key]]
