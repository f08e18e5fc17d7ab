"""Warm restart (`-e`/`--memory-file`) in containers, and the image run as Bitnami's chart
runs it.

- A Docker volume at /cache-state: a container is filled, `docker stop`ped (SIGTERM: it
  saves), and a NEW container on the same volume serves every item again with its value,
  flags, CAS and remaining TTL; once with `-e`, once with the chart's arguments
  `/run.sh --memory-file=/cache-state/memory_file` under its security context. Controls: a
  container without `-e` on that volume starts empty, and after a restore the file is gone,
  so a container killed later (no save) comes back empty.
- Bitnami's scripts (`/run.sh`, `/opt/bitnami/scripts/memcached/{run,entrypoint}.sh`) with
  the chart's MEMCACHED_* variables, as uid 1001 with a read-only root, the chart's two
  emptyDirs and no capabilities: the server's `stats settings`, SASL from a password,
  and `pgrep` for the chart's liveness probe.
- A rolling update of three containers behind pymemcache's HashClient under a cache-aside
  load, with and without `-e`: the hit ratio per 0.5 s over the whole update, written to
  target/rolling-update.json (benches/rolling_update_chart.py draws it).
"""

import bisect
import ipaddress
import itertools
import json
import os
import random
import re
import socket
import subprocess
import threading
import time

import pytest
from pymemcache.client.hash import HashClient
from support import (
    CLIENT_TIMEOUT,
    GRACE_PERIOD,
    REPO_ROOT,
    START_TIMEOUT,
    docker,
    make_client,
    memcached_version,
)

MiB = 1024 * 1024
MEMORY_FILE = "/cache-state/memory_file"
# Bitnami's chart: podSecurityContext fsGroup 1001, containerSecurityContext runAsUser and
# runAsGroup 1001, readOnlyRootFilesystem, drop ALL; emptyDirs at /tmp and at the
# configuration directory.
BITNAMI_RUNTIME = [
    "--read-only",
    "--tmpfs",
    "/tmp",
    "--tmpfs",
    "/opt/bitnami/memcached/conf",
    "--cap-drop",
    "ALL",
]
BITNAMI_USER = ["--user", "1001:1001"]

SAVED = re.compile(
    r"saved (\d+) items \(([\d.]+) MiB\) to " + re.escape(MEMORY_FILE) + r" in ([\d.]+) s"
)
RESTORED = re.compile(
    r"restored (\d+) items from " + re.escape(MEMORY_FILE) + r" in ([\d.]+) s"
)
EMPTY = f"no saved cache at {MEMORY_FILE}: starting empty"


def stop(container):
    """`docker stop` with the pod's grace period (SIGTERM, as the kubelet sends); the
    server must exit 0 on its own. Returns the seconds it took."""
    start = time.monotonic()
    docker("stop", "-t", str(GRACE_PERIOD), container.name, timeout=GRACE_PERIOD + 30)
    elapsed = time.monotonic() - start
    assert container.exit_code() == 0, (container.exit_code(), container.logs())
    assert elapsed < GRACE_PERIOD, (
        f"{container.name} needed SIGKILL ({elapsed:.1f} s)",
        container.logs(),
    )
    return elapsed


def stats(address, *args):
    c = make_client(address)
    try:
        return {k.decode(): v for k, v in c.stats(*args).items()}
    finally:
        c.close()


def wait_listening(container, address, timeout=START_TIMEOUT, text=True):
    """Polls until `address` serves: a `version` reply, or (text=False, for a server that
    speaks only the binary protocol) an accepted connection."""
    deadline = time.monotonic() + timeout
    while True:
        if not container.running():
            raise AssertionError(
                f"{container.name} exited ({container.state()}):\n{container.logs()}"
            )
        if text:
            reply = memcached_version(address)
            if reply and reply.startswith("VERSION "):
                return
        else:
            try:
                socket.create_connection(address, timeout=1).close()
                return
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{container.name} does not serve:\n{container.logs()}")
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------
# Items across a new container on the same volume


class Wire:
    """A raw text-protocol connection: `gets` for value, flags and CAS exactly as the
    server sends them, and `mg KEY t` for the remaining TTL (pymemcache has no meta
    commands)."""

    def __init__(self, address):
        self.sock = socket.create_connection(address, timeout=CLIENT_TIMEOUT)
        self.buf = bytearray()

    def close(self):
        self.sock.close()

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise AssertionError("the server closed the connection")
        self.buf += chunk

    def line(self):
        while (end := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return line

    def data(self, size):
        while len(self.buf) < size + 2:
            self._fill()
        assert self.buf[size : size + 2] == b"\r\n", "a value without its \\r\\n"
        value = bytes(self.buf[:size])
        del self.buf[: size + 2]
        return value

    def gets(self, keys):
        """{key: (value, flags, cas)} of the keys that hit."""
        self.sock.sendall(b"gets " + " ".join(keys).encode() + b"\r\n")
        found = {}
        while (line := self.line()) != b"END":
            word, key, flags, size, cas = line.split()
            assert word == b"VALUE", line
            found[key.decode()] = (self.data(int(size)), int(flags), int(cas))
        return found

    def ttls(self, keys):
        """{key: remaining TTL} (-1: never expires) of the keys that hit, from `mg KEY t`."""
        self.sock.sendall(b"".join(f"mg {k} t\r\n".encode() for k in keys))
        found = {}
        for key in keys:
            line = self.line()
            if line == b"EN":
                continue
            word, flag = line.split()
            assert word == b"HD" and flag.startswith(b"t"), line
            found[key] = int(flag[1:])
        return found


class Item:
    def __init__(self, value, flags, exptime, absolute):
        self.value = value
        self.flags = flags
        self.exptime = exptime
        self.absolute = absolute  # an exptime over 30 days is a unix time (protocol.txt)
        self.expires = None  # (earliest, latest) unix time, known once set

    def remaining(self, before, after):
        """The TTL `mg t` may report between unix times `before` and `after`: the server's
        clock has a one-second tick, so it may differ from the exact value by 1."""
        if self.exptime == 0:
            return (-1, -1)
        lo, hi = self.expires
        return (lo - after - 1, hi - before + 1)


def make_items(count=3000, seed=11):
    """Keys of 8 to 230 bytes; values of 0 B to 300 KB (mostly under 1.5 KB, some larger);
    flags over the whole 32 bits; no TTL, relative TTLs up to 30 days, and unix-time
    exptimes 31 to 60 days ahead."""
    rng = random.Random(seed)
    now = int(time.time())
    items = {}
    for i in range(count):
        if i % 500 == 7:
            size = rng.randint(100_000, 300_000)
        elif i % 50 == 3:
            size = rng.randint(5_000, 50_000)
        elif i % 97 == 0:
            size = 0
        else:
            size = rng.randint(1, 1500)
        flags = rng.choice([0, 1, 0xFFFF, 0xFFFFFFFF, rng.getrandbits(32)])
        kind = i % 4
        if kind == 0:
            exptime, absolute = 0, False
        elif kind == 1:
            exptime, absolute = rng.randint(60, 86_400), False
        elif kind == 2:
            exptime, absolute = rng.randint(86_400, 30 * 86_400), False
        else:
            exptime, absolute = now + rng.randint(31 * 86_400, 60 * 86_400), True
        key = f"warm:{i}:" + "k" * rng.randint(0, 220)
        items[key] = Item(rng.randbytes(size), flags, exptime, absolute)
    return items


def fill(address, items):
    c = make_client(address)
    try:
        for key, item in items.items():
            before = time.time()
            assert c.set(
                key, item.value, expire=item.exptime, flags=item.flags, noreply=False
            ), key
            after = time.time()
            if item.absolute:
                item.expires = (item.exptime, item.exptime)
            elif item.exptime:
                item.expires = (before + item.exptime, after + item.exptime)
    finally:
        c.close()


def read_back(address, items, batch=100):
    """{key: (value, flags, cas)} and {key: (ttl, (lowest, highest) allowed)}."""
    wire = Wire(address)
    got, ttls = {}, {}
    try:
        keys = list(items)
        for i in range(0, len(keys), batch):
            got.update(wire.gets(keys[i : i + batch]))
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            before = time.time()
            found = wire.ttls(chunk)
            after = time.time()
            for key, ttl in found.items():
                ttls[key] = (ttl, items[key].remaining(before, after))
    finally:
        wire.close()
    return got, ttls


def check_ttls(ttls, items, when):
    missing = [k for k in items if k not in ttls]
    assert not missing, f"{when}: {len(missing)} items miss in mg, e.g. {missing[:3]}"
    wrong = [
        f"{k[:16]}...: {t} not in [{lo:.1f}, {hi:.1f}]"
        for k, (t, (lo, hi)) in ttls.items()
        if not lo <= t <= hi
    ]
    assert not wrong, f"{when}: {len(wrong)} TTLs off by more than a second: {wrong[:5]}"


FORMS = {
    # args of the container, with and without the memory file
    "e": (["-e", MEMORY_FILE], []),
    # Bitnami's chart with persistence: no command, these args (the image's entrypoint runs
    # /run.sh), under its read-only, capability-less runtime. The image's own user owns the
    # new volume; in Kubernetes the chart's fsGroup makes the claim writable for uid 1001.
    "bitnami-run-sh": (["/run.sh", f"--memory-file={MEMORY_FILE}"], ["/run.sh"]),
}


@pytest.mark.parametrize("form", list(FORMS))
def test_items_come_back_in_a_new_container_on_the_same_volume(
    containers, volume, form
):
    with_file, without_file = FORMS[form]
    vol = volume()
    opts = ["-v", f"{vol}:/cache-state"]
    if form.startswith("bitnami"):
        opts += BITNAMI_RUNTIME
    items = make_items()

    first = containers(*with_file, docker_opts=opts)
    assert EMPTY in first.logs(), first.logs()
    assert stats(first.address, "settings")["memory_file"] == MEMORY_FILE.encode()
    fill(first.address, items)
    before, ttls_before = read_back(first.address, items)
    wrong = [k for k, i in items.items() if before.get(k, (None,))[:2] != (i.value, i.flags)]
    assert not wrong, f"{len(wrong)} items not as set before the stop, e.g. {wrong[:3]}"
    check_ttls(ttls_before, items, "before the stop")
    stop(first)
    saved = SAVED.search(first.logs())
    assert saved, f"no save line in the log:\n{first.logs()}"
    assert int(saved.group(1)) == len(items), saved.group(0)
    stored_mib = sum(len(k) + len(i.value) for k, i in items.items()) / MiB
    assert float(saved.group(2)) >= round(stored_mib, 1) - 0.1, (saved.group(0), stored_mib)

    # Control: without the file's flag a new container on the same volume starts empty
    # (and leaves the file alone).
    control = containers(*without_file, docker_opts=opts)
    assert int(stats(control.address)["curr_items"]) == 0
    stop(control)
    assert "restored" not in control.logs() and "saved" not in control.logs(), (
        control.logs()
    )

    second = containers(*with_file, docker_opts=opts)
    restored = RESTORED.search(second.logs())
    assert restored, f"no restore line in the log:\n{second.logs()}"
    assert int(restored.group(1)) == len(items), restored.group(0)
    after, ttls_after = read_back(second.address, items)
    lost = sorted(set(before) - set(after))
    assert not lost, f"{len(lost)} of {len(before)} items lost, e.g. {lost[:3]}"
    changed = [k for k in before if after[k] != before[k]]
    assert not changed, (
        f"{len(changed)} items differ in value, flags or CAS after the restore, e.g. "
        + ", ".join(f"{k}: {before[k][1:]} -> {after[k][1:]}" for k in changed[:3])
    )
    check_ttls(ttls_after, items, "after the restore")
    assert int(stats(second.address)["curr_items"]) == len(items)
    # CAS values keep increasing across the restart.
    c = make_client(second.address)
    assert c.set("warm:new", b"after the restart", noreply=False)
    _, cas = c.gets("warm:new")
    c.close()
    assert int(cas) > max(cas for _, _, cas in before.values()), cas

    # The restore removed the file: a container killed now (no save) comes back empty,
    # never with the items as they were before the restart.
    docker("kill", second.name)
    third = containers(*with_file, docker_opts=opts)
    assert EMPTY in third.logs(), third.logs()
    assert int(stats(third.address)["curr_items"]) == 0


# ---------------------------------------------------------------------------------------
# Bitnami's invocations and variables


def bitnami_case(tmp_path):
    """(args, entrypoint, env, mounts, port, expected `stats settings`) per case."""
    secret = tmp_path / "cache-size"
    secret.write_text("96\n")
    secret.chmod(0o644)  # read by uid 1001 in the container
    return {
        # Every variable of the chart's run.sh.
        "run-sh": (
            ["/run.sh"],
            None,
            {
                "MEMCACHED_PORT_NUMBER": "11311",
                "MEMCACHED_LISTEN_ADDRESS": "0.0.0.0",
                "MEMCACHED_CACHE_SIZE": "128",
                "MEMCACHED_MAX_CONNECTIONS": "2000",
                "MEMCACHED_THREADS": "2",
                "MEMCACHED_MAX_ITEM_SIZE": "2097152",
                "MEMCACHED_EXTRA_FLAGS": "-R 30  -o track_sizes",
            },
            [],
            11311,
            {
                "tcpport": "11311",
                "inter": "0.0.0.0",
                "maxbytes": str(128 * MiB),
                "maxconns": "2000",
                "num_threads": "2",
                "item_size_max": str(2 * MiB),
                "reqs_per_event": "30",
                "track_sizes": "yes",
                "verbosity": "1",
            },
        ),
        # A *_FILE variable (a Kubernetes secret) wins over the plain one, an empty value
        # is unset, and the arguments after the script win over the variables.
        "scripts-run-sh": (
            ["/opt/bitnami/scripts/memcached/run.sh", "-c", "3000"],
            None,
            {
                "MEMCACHED_CACHE_SIZE_FILE": "/run/secrets/cache-size",
                "MEMCACHED_CACHE_SIZE": "999",
                "MEMCACHED_MAX_CONNECTIONS": "500",
                "MEMCACHED_MAX_ITEM_SIZE": "4m",
                "MEMCACHED_THREADS": "",
            },
            ["-v", f"{secret}:/run/secrets/cache-size:ro"],
            11211,
            {
                "tcpport": "11211",
                "maxbytes": str(96 * MiB),
                "maxconns": "3000",
                "num_threads": "4",
                "item_size_max": str(4 * MiB),
                "verbosity": "1",
            },
        ),
        # Bitnami's image's own ENTRYPOINT and CMD.
        "entrypoint-sh": (
            ["/opt/bitnami/scripts/memcached/run.sh"],
            "/opt/bitnami/scripts/memcached/entrypoint.sh",
            {"MEMCACHED_PORT_NUMBER": "11211"},
            [],
            11211,
            {"tcpport": "11211", "maxbytes": str(64 * MiB), "verbosity": "1"},
        ),
    }


BITNAMI_CASES = ["run-sh", "scripts-run-sh", "entrypoint-sh"]


def env_opts(env):
    return [opt for name, value in env.items() for opt in ("-e", f"{name}={value}")]


def check_pgrep(container):
    """The chart's liveness probe: `pgrep memcached` finds the server (PID 1)."""
    found = subprocess.run(
        ["docker", "exec", container.name, "pgrep", "memcached"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert found.returncode == 0 and found.stdout.split() == ["1"], found
    none = subprocess.run(
        ["docker", "exec", container.name, "pgrep", "nosuchthing"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert none.returncode == 1 and none.stdout == "", none


@pytest.mark.parametrize("case", BITNAMI_CASES)
def test_bitnami_scripts_and_variables(containers, network, tmp_path, case):
    args, entrypoint, env, mounts, port, expected = bitnami_case(tmp_path)[case]
    net = network()
    opts = BITNAMI_USER + BITNAMI_RUNTIME + env_opts(env) + mounts
    if entrypoint:
        opts += ["--entrypoint", entrypoint]
    c = containers(*args, docker_opts=opts, network=net, publish=False, wait=False)
    address = (c.ip(), port)
    wait_listening(c, address)
    settings = {
        k: v.decode() if isinstance(v, bytes) else str(v)  # pymemcache converts a few
        for k, v in stats(address, "settings").items()
    }
    differ = {k: (settings.get(k), v) for k, v in expected.items() if settings.get(k) != v}
    assert not differ, f"stats settings (got, want): {differ}"
    assert int(stats(address)["pid"]) == 1  # the scripts exec the server
    client = make_client(address)
    assert client.set("bitnami", b"value", noreply=False)
    assert client.get("bitnami") == b"value"
    client.close()
    check_pgrep(c)
    stop(c)


SASL_USER, SASL_PASSWORD = "app", "s3cret"
# pylibmc's SASL library, initialised when pylibmc is imported, finds its PLAIN plugin here
# (Debian's libsasl2-modules); the wheel's own copy of libsasl2 does not know the path.
SASL_PLUGINS = "/usr/lib/x86_64-linux-gnu/sasl2"
if os.path.isdir(SASL_PLUGINS):
    os.environ.setdefault("SASL_PATH", SASL_PLUGINS)


@pytest.fixture
def sasl_container(containers, network):
    """Bitnami's chart with auth: MEMCACHED_USERNAME and MEMCACHED_PASSWORD (uid 1001, the
    password database written into the configuration emptyDir)."""
    net = network()
    env = {"MEMCACHED_USERNAME": SASL_USER, "MEMCACHED_PASSWORD": SASL_PASSWORD}
    c = containers(
        "/run.sh",
        docker_opts=BITNAMI_USER + BITNAMI_RUNTIME + env_opts(env),
        network=net,
        publish=False,
        wait=False,
    )
    address = (c.ip(), 11211)
    wait_listening(c, address, text=False)  # -S: binary protocol only
    return c, address


def test_bitnami_password_refuses_the_text_protocol(sasl_container):
    c, address = sasl_container
    # As memcached with -S: the connection is binary; a text request is a bad magic byte
    # once a header's 24 bytes have arrived, and the connection is closed without a reply.
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(b"get " + b"k" * 40 + b"\r\n")
        assert sock.recv(1024) == b"", "a text request was answered under -S"
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(b"set bitnami 0 0 1\r\nx\r\nget bitnami\r\n")
        assert sock.recv(1024) == b"", "a text request was answered under -S"
    check_pgrep(c)


def test_bitnami_password_authenticates_binary_sasl(sasl_container):
    pylibmc = pytest.importorskip("pylibmc")  # after SASL_PATH is set (above)
    if not pylibmc.support_sasl:
        pytest.skip("this pylibmc has no SASL support")
    _, (ip, port) = sasl_container

    def client(**credentials):
        return pylibmc.Client(
            [f"{ip}:{port}"],
            binary=True,
            behaviors={"connect_timeout": 2000, "receive_timeout": 2_000_000},
            **credentials,
        )

    good = client(username=SASL_USER, password=SASL_PASSWORD)
    assert good.set("bitnami", "value")
    assert good.get("bitnami") == "value"
    with pytest.raises(pylibmc.Error):
        client(username=SASL_USER, password="wrong").set("bitnami", "other")
    with pytest.raises(pylibmc.Error):
        client(username="mallory", password=SASL_PASSWORD).set("bitnami", "other")
    # Without credentials nothing is served (pylibmc reports the refused get as a miss).
    assert client().get("bitnami") is None
    assert good.get("bitnami") == "value"


# ---------------------------------------------------------------------------------------
# A rolling update under a cache-aside load

ROLL_KEYS = 20_000
ZIPF_S = 0.9
RATE = 3000  # gets/s offered
BUCKET_S = 0.5
BEFORE_S = 2.0  # load before the first restart
SETTLE_S = 3.5  # load after each restarted container serves, before the next restart
# HashClient takes a failed server out of its ring at once (its keys go to the others)
# and tries it again after DEAD_S (checked every DEAD_S, so up to twice that after the
# last refusal): the comparison starts REJOIN_S after the new container serves.
DEAD_S = 0.5
REJOIN_S = 1.5
RESULTS = REPO_ROOT / "target" / "rolling-update.json"

KEYS = [f"row:{i}" for i in range(ROLL_KEYS)]
CUM_WEIGHTS = list(itertools.accumulate(1 / (i + 1) ** ZIPF_S for i in range(ROLL_KEYS)))


def row(i):
    """The database's row for key i: 100-700 bytes derived from the key."""
    return (f"row {i} ".encode() * 100)[: 100 + (i * 7919) % 600]


ROWS = [row(i) for i in range(ROLL_KEYS)]


def hash_client(servers):
    return HashClient(
        servers,
        connect_timeout=0.1,
        timeout=1,
        retry_attempts=0,
        dead_timeout=DEAD_S,
        ignore_exc=True,
        no_delay=True,
    )


class CacheAside(threading.Thread):
    """An application: draws a key (zipf), `get`s it, and on a miss loads the row from the
    database and `set`s it. Counts gets and hits per BUCKET_S from `t0`.

    Paced at RATE gets/s (a late batch goes at once): how fast a cold cache fills again
    depends on the requests it sees, so a fixed rate makes the curve the same on a fast
    and on a busy machine."""

    def __init__(self, servers, limit_s):
        super().__init__(daemon=True)
        self.servers = servers
        self.limit_s = limit_s  # a bound in case the test never stops it
        self.done = threading.Event()
        self.gets, self.hits = [], []
        self.wrong = 0
        self.error = None
        self.t0 = time.monotonic()

    def now(self):
        return time.monotonic() - self.t0

    def run(self):
        try:
            client = hash_client(self.servers)
            rng = random.Random(5)
            sent = 0
            while not self.done.is_set() and self.now() < self.limit_s:
                ahead = sent / RATE - self.now()
                if ahead > 0:
                    time.sleep(ahead)  # pacing, not waiting for a condition
                sent += 32
                for r in [rng.random() * CUM_WEIGHTS[-1] for _ in range(32)]:
                    i = bisect.bisect_left(CUM_WEIGHTS, r)
                    value = client.get(KEYS[i])
                    bucket = int(self.now() / BUCKET_S)
                    while len(self.gets) <= bucket:
                        self.gets.append(0)
                        self.hits.append(0)
                    self.gets[bucket] += 1
                    if value is None:
                        client.set(KEYS[i], ROWS[i])  # loaded from the database
                    elif value == ROWS[i]:
                        self.hits[bucket] += 1
                    else:
                        self.wrong += 1
            client.close()
        except BaseException as e:  # reported by the test
            self.error = e

    def finish(self):
        self.done.set()
        self.join(30)
        assert not self.is_alive(), "the load did not stop"
        if self.error is not None:
            raise self.error


def fixed_ip_network(network):
    """A network with a subnet of its own (containers keep their --ip across restarts,
    as HashClient needs): the subnet Docker picks for a probe network, made explicit."""
    last = None
    for _ in range(3):
        probe = network()
        subnet = docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", probe)
        docker("network", "rm", probe)
        try:
            return network("--subnet", subnet), ipaddress.ip_network(subnet)
        except RuntimeError as e:  # another network took the subnet meanwhile
            last = e
    raise last


def rolling_update(containers, net, ips, vols, warm):
    extra = ["-e", MEMORY_FILE] if warm else []

    def start(i):
        return containers(
            "-m",
            "64",
            "-t",
            "2",
            *extra,
            network=net,
            publish=False,
            name=f"roll-{i}",
            docker_opts=["--ip", ips[i], "-v", f"{vols[i]}:/cache-state"],
        )

    pods = [start(i) for i in range(3)]
    servers = [(ip, 11211) for ip in ips]
    # A cluster that has been serving for a while: every row is cached.
    client = hash_client(servers)
    assert client.set_many(dict(zip(KEYS, ROWS)), noreply=False) == []
    client.close()

    limit = BEFORE_S + 3 * (SETTLE_S + 2 * GRACE_PERIOD) + 10
    load = CacheAside(servers, limit)
    load.start()
    restarts = []
    try:
        # The load runs meanwhile: these waits are the time being measured.
        time.sleep(BEFORE_S)
        for i in range(3):
            stopped = load.now()
            stop(pods[i])
            log = pods[i].logs()
            saved = SAVED.search(log)
            assert bool(saved) == warm, log
            pods[i].remove()
            pods[i] = start(i)
            serving = load.now()
            restored = RESTORED.search(pods[i].logs())
            assert bool(restored) == warm, pods[i].logs()
            if warm:
                assert restored.group(1) == saved.group(1), (saved[0], restored[0])
            restarts.append(
                {
                    "container": i,
                    "stopped": round(stopped, 3),
                    "serving": round(serving, 3),
                    "saved": saved[0] if saved else None,
                    "restored": restored[0] if restored else None,
                }
            )
            time.sleep(SETTLE_S)
    finally:
        end = load.now()
        load.finish()
        for pod in pods:
            pod.remove()  # frees the addresses for the next run
    assert load.wrong == 0, f"{load.wrong} gets returned another key's value"
    return {"gets": load.gets, "hits": load.hits, "restarts": restarts, "end": round(end, 3)}


def ratio(run, start, end):
    """Hits / gets over the buckets that lie wholly in [start, end)."""
    first = int(-(-start // BUCKET_S))
    last = int(end // BUCKET_S)
    gets = sum(run["gets"][first:last])
    return sum(run["hits"][first:last]) / gets if gets else None


def figures(run):
    r = run["restarts"]
    after = [
        (x["serving"] + REJOIN_S, (r[n + 1]["stopped"] if n + 1 < len(r) else run["end"]))
        for n, x in enumerate(r)
    ]
    during = (r[0]["stopped"], run["end"])
    buckets = [
        h / g
        for b, (g, h) in enumerate(zip(run["gets"], run["hits"]))
        if g and during[0] <= b * BUCKET_S and (b + 1) * BUCKET_S <= during[1]
    ]
    return {
        "before": ratio(run, 0, r[0]["stopped"]),
        "during_update": ratio(run, *during),
        "min_bucket": min(buckets),
        "after_each_restart": [ratio(run, a, b) for a, b in after],
        "gets_per_s": sum(run["gets"]) / run["end"],
    }


def test_a_rolling_update_keeps_the_hit_ratio_with_e(containers, network, volume):
    net, subnet = fixed_ip_network(network)
    hosts = list(itertools.islice(subnet.hosts(), 10, 13))
    ips = [str(h) for h in hosts]
    runs = {}
    for warm in (False, True):
        vols = [volume() for _ in range(3)]
        runs["with_e" if warm else "without_e"] = rolling_update(
            containers, net, ips, vols, warm
        )
    for run in runs.values():
        run["figures"] = figures(run)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "bucket_s": BUCKET_S,
                "rejoin_s": REJOIN_S,
                "settle_s": SETTLE_S,
                "dead_timeout_s": DEAD_S,
                "keys": ROLL_KEYS,
                "zipf_s": ZIPF_S,
                "rate": RATE,
                "containers": 3,
                "server_args": "-m 64 -t 2 [-e /cache-state/memory_file]",
                "runs": runs,
            },
            indent=1,
        )
    )
    warm, cold = runs["with_e"]["figures"], runs["without_e"]["figures"]
    summary = f"with -e: {warm}; without: {cold}; series in {RESULTS}"
    print(summary)
    for f in (warm, cold):
        # The offered rate was kept (a machine too busy for it recovers a cold cache more
        # slowly), and the cache was warm before the update.
        assert f["gets_per_s"] > 0.8 * RATE, f"the load fell behind its rate: {summary}"
        assert f["before"] > 0.99, f"the cache was not warm before the update: {summary}"
    # After each restart the restored container serves its keys: the misses are a small
    # fraction of those after a cold restart.
    for n, (w, c) in enumerate(zip(warm["after_each_restart"], cold["after_each_restart"])):
        assert w > 0.97, f"restart {n}: hit ratio {w:.3f} with -e: {summary}"
        assert 1 - w < (1 - c) / 3, f"restart {n}: {w:.3f} with -e, {c:.3f} without: {summary}"
    assert warm["during_update"] > cold["during_update"], summary
