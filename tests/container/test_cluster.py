"""A three-container "StatefulSet" on a private Docker network.

Containers get the per-pod DNS names of the StatefulSet as network aliases
(`memcrab-N.memcrab`, and `memcrab` for all three, like the headless Service), so inside the
network they are addressed by name exactly as pods are; pod 1 even listens on its own name
(`-l memcrab-1.memcrab`, resolved by the static binary through Docker's DNS). Clients on the
host (pymemcache's HashClient, twemproxy) cannot use Docker's DNS and use the containers' IPs
on that network instead. Failures: one container killed (`docker kill`), another cut off
(`docker network disconnect`).
"""

import shutil
import socket
import subprocess
import time

import pytest
from pymemcache.client.hash import HashClient
from pymemcache.exceptions import MemcacheError
from support import docker, make_client

NUTCRACKER = shutil.which("nutcracker") or (
    "/usr/sbin/nutcracker" if shutil.os.path.exists("/usr/sbin/nutcracker") else None
)
KEYS = [f"user:{i}" for i in range(600)]


@pytest.fixture
def pods(containers, network):
    """Three containers memcrab-0..2 on a new network; returns (network, containers)."""
    net = network()
    started = []
    for i in range(3):
        args = ["-m", "64", "-t", "2"]
        if i == 1:
            args += ["-l", "memcrab-1.memcrab"]
        started.append(
            containers(
                *args,
                network=net,
                publish=False,
                name=f"memcrab-{i}",
                docker_opts=[
                    "--network-alias",
                    f"memcrab-{i}.memcrab",
                    "--network-alias",
                    "memcrab",
                    "--read-only",
                    "--cap-drop",
                    "ALL",
                ],
            )
        )
    return net, started


def items(container):
    c = make_client(container.address, connect_timeout=1, timeout=1)
    try:
        return int(c.stats()[b"curr_items"])
    finally:
        c.close()


def test_pods_are_addressed_by_per_pod_names(pods):
    net, started = pods
    for i, c in enumerate(started):
        aliases = docker(
            "inspect",
            "-f",
            f'{{{{json (index .NetworkSettings.Networks "{net}").Aliases}}}}',
            c.name,
        )
        assert f'"memcrab-{i}.memcrab"' in aliases and '"memcrab"' in aliases, aliases
    # memcrab-1 resolved its own per-pod name and listens on that address only.
    out = docker("exec", started[1].name, "memcrab", "-V")  # exec works without a shell
    assert out.startswith("memcrab ")
    assert items(started[1]) == 0


def test_hashclient_over_three_pods_survives_a_kill_and_a_network_cut(pods):
    net, (p0, p1, p2) = pods
    servers = [c.address for c in (p0, p1, p2)]
    # retry_attempts=0: a pod that fails once leaves the ring for dead_timeout, so its keys
    # are rehashed over the others at once (no requests are spent retrying it).
    client = HashClient(
        servers,
        connect_timeout=0.5,
        timeout=0.5,
        retry_attempts=0,
        dead_timeout=60,
        ignore_exc=True,
        no_delay=True,
    )
    for key in KEYS:
        assert client.set(key, key.encode(), noreply=False)
    counts = [items(c) for c in (p0, p1, p2)]
    assert sum(counts) == len(KEYS) and min(counts) >= len(KEYS) // 6, counts

    docker("kill", p1.name)
    hits = {key for key in KEYS if client.get(key) == key.encode()}
    # The lost pod's keys miss (no error reaches the application); the others still hit.
    assert len(hits) >= len(KEYS) - counts[1] - 5, (len(hits), counts)
    # Writes after the loss land on the survivors and are read back.
    for key in KEYS[:100]:
        client.set(key, b"after-kill", noreply=False)
    assert sum(client.get(key) == b"after-kill" for key in KEYS[:100]) >= 95

    docker("network", "disconnect", "-f", net, p2.name)
    start = time.monotonic()
    got = {key: client.get(key) for key in KEYS[:100]}
    assert time.monotonic() - start < 30, "the cut pod stalled the client"
    # Only pod 0 is left; keys written to it are still served.
    on_p0 = [k for k, v in got.items() if v is not None]
    assert on_p0, got
    for key in KEYS[100:200]:
        client.set(key, b"after-cut", noreply=False)
    assert sum(client.get(key) == b"after-cut" for key in KEYS[100:200]) >= 95
    assert p2.running(), "a network cut does not stop the server"
    client.close()


@pytest.fixture
def twemproxy(pods, tmp_path):
    """nutcracker on the host (127.0.0.1) over the three containers' IPs, configured as
    k8s/overlays/twemproxy's ConfigMap (names memcrab-N fix the ketama points)."""
    if NUTCRACKER is None:
        pytest.fail(
            "nutcracker is not installed (apt-get install nutcracker)", pytrace=False
        )
    net, started = pods
    with socket.socket() as s1, socket.socket() as s2:
        s1.bind(("127.0.0.1", 0))
        s2.bind(("127.0.0.1", 0))
        port, stats_port = s1.getsockname()[1], s2.getsockname()[1]
    lines = [
        "memcrab:",
        f"  listen: 127.0.0.1:{port}",
        "  hash: fnv1a_64",
        "  distribution: ketama",
        "  auto_eject_hosts: true",
        "  timeout: 400",
        "  server_retry_timeout: 2000",
        "  server_failure_limit: 1",
        "  servers:",
    ] + [f"    - {c.ip()}:11211:1 memcrab-{i}" for i, c in enumerate(started)]
    conf = tmp_path / "nutcracker.yml"
    conf.write_text("\n".join(lines) + "\n")
    log = open(tmp_path / "nutcracker.log", "wb")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(
        [NUTCRACKER, "-c", str(conf), "-s", str(stats_port), "-a", "127.0.0.1"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 5
        while True:
            assert proc.poll() is None, (tmp_path / "nutcracker.log").read_text()
            try:
                c = make_client(("127.0.0.1", port))
                c.version()
                c.close()
                break
            except (OSError, MemcacheError):
                assert time.monotonic() < deadline, "nutcracker did not start"
                time.sleep(0.05)
        yield ("127.0.0.1", port), started, net
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def write_all_through(address, keys, value, within=15):
    """Writes every key through the proxy, retrying while it has not ejected a lost
    backend yet (bounded); returns the number of failed attempts."""
    errors = 0
    deadline = time.monotonic() + within
    c = make_client(address, connect_timeout=2, timeout=2)
    while True:
        try:
            for key in keys:
                assert c.set(key, value, noreply=False)
            c.close()
            return errors
        except (MemcacheError, OSError):
            errors += 1
            c.close()
            if time.monotonic() > deadline:
                pytest.fail(f"the proxy kept failing for {within} s")
            c = make_client(address, connect_timeout=2, timeout=2)
            time.sleep(0.1)


def test_twemproxy_over_three_pods_survives_a_kill_and_a_network_cut(twemproxy):
    address, (p0, p1, p2), net = twemproxy
    write_all_through(address, KEYS, b"v0")
    counts = [items(c) for c in (p0, p1, p2)]
    assert sum(counts) == len(KEYS) and min(counts) >= len(KEYS) // 6, counts

    docker("kill", p1.name)
    write_all_through(address, KEYS, b"v1")  # pod 1 ejected, its keys rehashed
    c = make_client(address, connect_timeout=2, timeout=2)
    assert all(c.get(key) == b"v1" for key in KEYS)
    c.close()

    docker("network", "disconnect", "-f", net, p2.name)
    write_all_through(address, KEYS, b"v2", within=30)  # pod 2 times out and is ejected
    c = make_client(address, connect_timeout=2, timeout=2)
    assert all(c.get(key) == b"v2" for key in KEYS)
    c.close()
    assert items(p0) == len(KEYS)
