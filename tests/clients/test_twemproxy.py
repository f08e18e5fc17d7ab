"""twemproxy (nutcracker) in front of three servers, configured as Kubernetes setups
configure it: ``hash: fnv1a_64``, ``distribution: ketama``, ``auto_eject_hosts: true``.

Every process is started here on 127.0.0.1 and stopped by its PID.
"""

import shutil
import subprocess
import time

import pytest
from pymemcache.exceptions import MemcacheError

from support import HOST, free_port, make_client

NUTCRACKER = shutil.which("nutcracker") or shutil.which("/usr/sbin/nutcracker")
pytestmark = pytest.mark.skipif(
    NUTCRACKER is None, reason="nutcracker (Debian package) is not installed"
)

KEYS = [f"session:{i}" for i in range(600)]


@pytest.fixture
def proxy(start_server, tmp_path):
    """Three servers behind one nutcracker; yields (proxy address, servers)."""
    servers = [start_server() for _ in range(3)]
    port, stats_port = free_port(), free_port()
    lines = [
        "pool:",
        f"  listen: {HOST}:{port}",
        "  hash: fnv1a_64",
        "  distribution: ketama",
        "  auto_eject_hosts: true",
        "  timeout: 400",
        "  server_retry_timeout: 2000",
        "  server_failure_limit: 1",
        "  servers:",
    ]
    lines += [f"    - {HOST}:{s.port}:1 memcrab-{i}" for i, s in enumerate(servers)]
    conf = tmp_path / "nutcracker.yml"
    conf.write_text("\n".join(lines) + "\n")
    log = open(tmp_path / "nutcracker.log", "wb")
    proc = subprocess.Popen(
        [NUTCRACKER, "-c", str(conf), "-s", str(stats_port), "-a", HOST],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 5
        while True:
            assert proc.poll() is None, (tmp_path / "nutcracker.log").read_text()
            try:
                c = make_client((HOST, port))
                c.version()
                c.close()
                break
            except (OSError, MemcacheError):
                assert time.monotonic() < deadline, "nutcracker did not start"
                time.sleep(0.05)
        yield (HOST, port), servers
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def test_commands_work_through_the_proxy(proxy):
    address, _ = proxy
    c = make_client(address)
    assert c.set("k", b"v1", noreply=False)
    assert c.get("k") == b"v1"
    value, token = c.gets("k")
    assert value == b"v1"
    assert c.cas("k", b"v2", token, noreply=False) is True
    assert c.cas("k", b"v3", token, noreply=False) is False
    assert c.get("k") == b"v2"
    assert c.add("k", b"x", noreply=False) is False
    assert c.replace("k", b"v4", noreply=False) is True
    assert c.append("k", b"+", noreply=False) is True
    assert c.prepend("k", b"-", noreply=False) is True
    assert c.get("k") == b"-v4+"
    assert c.set("n", b"10", noreply=False)
    assert c.incr("n", 5) == 15
    assert c.decr("n", 20) == 0
    assert c.touch("n", 100, noreply=False) is True
    assert c.touch("absent", 100, noreply=False) is False
    assert c.delete("k", noreply=False) is True
    assert c.delete("k", noreply=False) is False
    assert c.get("k") is None
    assert c.set_many({k: k.encode() for k in KEYS[:50]}, noreply=False) == []
    assert c.get_many(KEYS[:50]) == {k: k.encode() for k in KEYS[:50]}
    c.close()


def test_keys_land_on_every_backend(proxy):
    address, servers = proxy
    c = make_client(address)
    for key in KEYS:
        assert c.set(key, key.encode(), noreply=False)
    counts = [int(s.client().stats()[b"curr_items"]) for s in servers]
    assert sum(counts) == len(KEYS)
    for count in counts:
        assert count >= len(KEYS) // 6, counts
    c.close()


def test_a_lost_backend_is_ejected_and_the_rest_keep_serving(proxy):
    address, servers = proxy
    c = make_client(address)
    for key in KEYS:
        assert c.set(key, key.encode(), noreply=False)
    victim = servers[1]
    victim.expect_exit = True
    victim.stop()
    survivors = {
        key
        for s in (servers[0], servers[2])
        for key in s.client().get_many(KEYS[:300]) | s.client().get_many(KEYS[300:])
    }
    # Until nutcracker ejects the dead server, requests for its keys fail; after that
    # (server_failure_limit 1) they are rehashed over the survivors.
    errors = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            for key in KEYS:
                c.set(key, b"again", noreply=False)
            break
        except (MemcacheError, OSError):
            errors += 1
            c.close()
            c = make_client(address)
            time.sleep(0.1)
    else:
        pytest.fail("the proxy kept failing after the backend was killed")
    assert all(c.get(key) == b"again" for key in KEYS)
    # Keys that lived on the survivors were still there before the rewrite.
    assert len(survivors) >= len(KEYS) // 2
    c.close()
