"""The Prometheus endpoint (``--metrics-port``) and the ``stats`` it mirrors.

The contract is memcached_exporter's: its metric names, types and labels
(sections 2, 3, 6, 9 of the metrics reference), promtool's lint allow-list
(section 7), the ``stats`` format the exporter sidecar relies on (section 8).
Here:

- promtool accepts the scrape, with exactly the allowed lint findings;
- every tier-A name is there with its type, tier B once an item is stored,
  no tier C; the 15 ``memcached_commands_total`` label pairs;
- the values equal what ``stats`` says at the same moment (derivations of
  section 2), after a scripted mix of commands;
- the request latency histogram counts requests;
- a real Prometheus server scrapes the endpoint;
- /healthz, /readyz and the SIGTERM drain; ``MEMCRAB_METRICS_PORT``; nothing
  listens for HTTP without it;
- ``stats``, ``stats settings``, ``stats items``, ``stats slabs`` print every
  name Debian's memcached prints, in the same order.

Every process is started here on 127.0.0.1 and stopped by its PID; every wait
is bounded. The Prometheus tests skip only when ``prometheus``/``promtool``
are not installed.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from support import HOST, REPO_ROOT, ServerProcess, free_port, is_memcached

HTTP_TIMEOUT = 2.0  # seconds, every HTTP request of this file
METRICS_START_TIMEOUT = 3.0  # until /healthz answers after the cache port does
PROMETHEUS_TIMEOUT = 20.0  # until Prometheus has scraped what we stored
DRAIN_TIMEOUT = 5.0  # SIGTERM until exit

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# memcached_exporter's metrics as the metrics reference lists them (section 9), verbatim:
# tier, name, type, labels. (When the reference is beside the repository, at REFERENCE,
# a test checks this copy against it.)
SECTION_9 = """
A memcached_up gauge -
A memcached_uptime_seconds counter -
A memcached_time_seconds gauge -
A memcached_version gauge version
A memcached_process_user_cpu_seconds_total counter -
A memcached_process_system_cpu_seconds_total counter -
A memcached_read_bytes_total counter -
A memcached_written_bytes_total counter -
A memcached_current_connections gauge -
A memcached_max_connections gauge -
A memcached_connections_total counter -
A memcached_connections_rejected_total counter -
A memcached_connections_yielded_total counter -
A memcached_connections_listener_disabled_total counter -
A memcached_current_bytes gauge -
A memcached_limit_bytes gauge -
A memcached_commands_total counter command,status
A memcached_current_items gauge -
A memcached_items_total counter -
A memcached_items_evicted_total counter -
A memcached_items_reclaimed_total counter -
A memcached_item_too_large_total counter -
A memcached_item_no_memory_total counter -
A memcached_direct_reclaims_total counter -
B memcached_lru_crawler_enabled gauge -
B memcached_lru_crawler_sleep gauge -
B memcached_lru_crawler_to_crawl gauge -
B memcached_lru_crawler_maintainer_thread gauge -
B memcached_lru_crawler_hot_percent gauge -
B memcached_lru_crawler_warm_percent gauge -
B memcached_lru_crawler_hot_max_factor gauge -
B memcached_lru_crawler_warm_max_factor gauge -
B memcached_lru_crawler_starts_total counter -
B memcached_lru_crawler_reclaimed_total counter -
B memcached_lru_crawler_items_checked_total counter -
B memcached_lru_crawler_moves_to_cold_total counter -
B memcached_lru_crawler_moves_to_warm_total counter -
B memcached_lru_crawler_moves_within_lru_total counter -
A memcached_malloced_bytes gauge -
B memcached_slab_current_items gauge slab
B memcached_slab_items_age_seconds gauge slab
B memcached_slab_items_crawler_reclaimed_total counter slab
B memcached_slab_items_evicted_total counter slab
B memcached_slab_items_evicted_nonzero_total counter slab
B memcached_slab_items_evicted_time_seconds counter slab
B memcached_slab_items_evicted_unfetched_total counter slab
B memcached_slab_items_expired_unfetched_total counter slab
B memcached_slab_items_outofmemory_total counter slab
B memcached_slab_items_reclaimed_total counter slab
B memcached_slab_items_tailrepairs_total counter slab
B memcached_slab_items_moves_to_cold counter slab
B memcached_slab_items_moves_to_warm counter slab
B memcached_slab_items_moves_within_lru counter slab
B memcached_slab_hot_items gauge slab
B memcached_slab_warm_items gauge slab
B memcached_slab_cold_items gauge slab
B memcached_slab_temporary_items gauge slab
B memcached_slab_hot_age_seconds gauge slab
B memcached_slab_warm_age_seconds gauge slab
B memcached_slab_lru_hits_total counter slab,lru
B memcached_slab_chunk_size_bytes gauge slab
B memcached_slab_chunks_per_page gauge slab
B memcached_slab_current_pages gauge slab
B memcached_slab_current_chunks gauge slab
B memcached_slab_chunks_used gauge slab
B memcached_slab_chunks_free gauge slab
B memcached_slab_chunks_free_end gauge slab
B memcached_slab_mem_requested_bytes counter slab
B memcached_slab_commands_total counter slab,command,status
C memcached_extstore_compact_lost_total counter -
C memcached_extstore_compact_rescued_total counter -
C memcached_extstore_compact_skipped_total counter -
C memcached_extstore_pages_allocated_total counter -
C memcached_extstore_pages_evicted_total counter -
C memcached_extstore_pages_reclaimed_total counter -
C memcached_extstore_pages_free gauge -
C memcached_extstore_pages_used gauge -
C memcached_extstore_objects_evicted_total counter -
C memcached_extstore_objects_read_total counter -
C memcached_extstore_objects_written_total counter -
C memcached_extstore_objects_used gauge -
C memcached_extstore_bytes_evicted_total counter -
C memcached_extstore_bytes_written_total counter -
C memcached_extstore_bytes_read_total counter -
C memcached_extstore_bytes_used counter -
C memcached_extstore_bytes_fragmented gauge -
C memcached_extstore_bytes_limit gauge -
C memcached_extstore_io_queue_depth gauge -
A memcached_accepting_connections gauge -
C memcached_proxy_conn_requests_total counter -
C memcached_proxy_conn_errors_total counter -
C memcached_proxy_conn_oom_total counter -
C memcached_proxy_req_active gauge -
C memcached_proxy_config_reloads_total counter -
C memcached_proxy_config_reload_fails_total counter -
C memcached_proxy_config_cron_runs_total counter -
C memcached_proxy_config_cron_fails_total counter -
C memcached_proxy_backend_total gauge -
C memcached_proxy_backend_marked_bad_total counter -
C memcached_proxy_backend_failed gauge -
C memcached_proxy_request_failed_depth_total counter -
C memcached_round_robin_fallback_total counter -
C memcached_unexpected_napi_ids_total counter -
"""
REFERENCE = REPO_ROOT.parent / "shared" / "reference" / "metrics.md"

# Section 6: exactly these (command, status) pairs.
COMMAND_PAIRS = {
    ("get", "hit"), ("get", "miss"), ("delete", "hit"), ("delete", "miss"),
    ("incr", "hit"), ("incr", "miss"), ("decr", "hit"), ("decr", "miss"),
    ("cas", "hit"), ("cas", "miss"), ("cas", "badval"),
    ("touch", "hit"), ("touch", "miss"), ("set", "hit"), ("flush", "hit"),
}  # fmt: skip
SLAB_COMMAND_PAIRS = {
    ("get", "hit"), ("delete", "hit"), ("incr", "hit"), ("decr", "hit"),
    ("cas", "hit"), ("cas", "badval"), ("touch", "hit"), ("set", "hit"),
}  # fmt: skip
LRU_SEGMENTS = {"hot", "warm", "cold", "temporary"}

# Section 7: what `promtool check metrics` may say, and nothing else.
SUFFIX_FINDING = 'counter metrics should have "_total" suffix'
PROMTOOL_ALLOWED = {
    "memcached_uptime_seconds", "memcached_slab_items_evicted_time_seconds",
    "memcached_slab_items_moves_to_cold", "memcached_slab_items_moves_to_warm",
    "memcached_slab_items_moves_within_lru", "memcached_slab_mem_requested_bytes",
}  # fmt: skip
PROMTOOL_ALLOWED_ANY = {
    "memcached_extstore_bytes_used",
    "memcached_proxy_backend_total",
}

# memcrab's own families (name: type, label names) and the standard process_*.
HISTOGRAM_COMMANDS = {"get", "set", "delete", "arith", "touch", "meta", "other"}
HISTOGRAM_BUCKETS = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
]  # fmt: skip
EXTRAS = {
    "memcrab_request_duration_seconds": ("histogram", {"command"}),
    "memcrab_connection_buffer_bytes": ("gauge", {"direction"}),
    "memcrab_evictions_total": ("counter", {"reason"}),
    "memcrab_reaper_items_checked_total": ("counter", set()),
    "memcrab_reaper_runs_total": ("counter", set()),
    "memcrab_hash_table_bytes": ("gauge", set()),
    "memcrab_threads": ("gauge", set()),
    "memcrab_draining": ("gauge", set()),
    "memcrab_connections_closed_total": ("counter", {"reason"}),
    "memcrab_protocol_errors_total": ("counter", {"kind"}),
    "memcrab_get_expired_total": ("counter", set()),
    "memcrab_get_flushed_total": ("counter", set()),
    # section 5: labels version and revision
    "memcrab_build_info": ("gauge", {"version", "revision"}),
    # section 5, standard process metrics
    "process_cpu_seconds_total": ("counter", set()),
    "process_resident_memory_bytes": ("gauge", set()),
    "process_virtual_memory_bytes": ("gauge", set()),
    "process_open_fds": ("gauge", set()),
    "process_max_fds": ("gauge", set()),
    "process_start_time_seconds": ("gauge", set()),
}


@pytest.fixture(autouse=True)
def _memcrab_only(server_binary):
    if is_memcached(server_binary):
        pytest.skip("memcached (the oracle) has no --metrics-port endpoint")


# --------------------------------------------------------------------------
# HTTP and the text format


def http_get(port, path, timeout=HTTP_TIMEOUT):
    """(status, headers, body text) of GET http://127.0.0.1:port/path."""
    url = f"http://{HOST}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read().decode(errors="replace")


def scrape_text(port):
    status, headers, body = http_get(port, "/metrics")
    assert status == 200, f"/metrics answered {status}: {body[:200]!r}"
    return headers, body


LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"\s*(,|$)')
SAMPLE_RE = re.compile(
    r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*"
)


def parse_labels(text):
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        assert m, f"bad label set {{{text}}}"
        assert m.group(1) not in labels, f"duplicate label in {{{text}}}"
        labels[m.group(1)] = m.group(2)
        pos = m.end()
    return labels


class Scrape:
    """One /metrics body: families (TYPE, HELP) and samples."""

    def __init__(self, text):
        self.text = text
        self.types = {}
        self.helps = {}
        self.samples = []  # (name, labels dict, float value)
        for line in text.split("\n"):
            if not line.strip():
                continue
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                assert name not in self.types, f"second TYPE for {name}"
                self.types[name] = kind.strip()
            elif line.startswith("# HELP "):
                name = line.split(" ", 3)[2]
                self.helps[name] = line
            elif line.startswith("#"):
                continue
            else:
                m = SAMPLE_RE.fullmatch(line)
                assert m, f"bad sample line {line!r}"
                labels = parse_labels(m.group(2) or "")
                self.samples.append((m.group(1), labels, float(m.group(3))))

    def family(self, sample_name):
        """The family a sample belongs to (histogram suffixes resolved)."""
        if sample_name in self.types:
            return sample_name
        for suffix in ("_bucket", "_count", "_sum"):
            base = sample_name[: -len(suffix)]
            if sample_name.endswith(suffix) and self.types.get(base) == "histogram":
                return base
        return None

    def series(self, name):
        """{frozenset(labels.items()): value} of one sample name."""
        out = {}
        for sname, labels, value in self.samples:
            if sname == name:
                key = frozenset(labels.items())
                assert key not in out, f"duplicate series {name}{labels}"
                out[key] = value
        return out

    def value(self, name, **labels):
        found = self.series(name)
        key = frozenset(labels.items())
        assert key in found, f"no series {name}{labels} in the scrape"
        return found[key]

    def names(self):
        return {s[0] for s in self.samples}


def scrape(port):
    return Scrape(scrape_text(port)[1])


def wait_http(port, path="/healthz", timeout=METRICS_START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, _, _ = http_get(port, path, timeout=0.5)
            return status
        except OSError:
            time.sleep(0.02)
    return None


def start_with_metrics(start_server, *args):
    """start_server(--metrics-port M, *args), once /healthz answers and the start-up probe's
    connection has been counted closed: (server, M)."""
    for _ in range(3):
        mport = free_port()
        server = start_server("--metrics-port", str(mport), *args)
        if wait_http(mport) is not None:
            wait_probe_closed(mport)
            return server, mport
        # the port was taken meanwhile (memcrab logs it and serves on): again
        server.expect_exit = True
        server.stop()
    pytest.fail(f"/healthz never answered; log:\n{server.log_tail()}")


def wait_probe_closed(mport, timeout=5.0):
    """The server's start-up check opened and closed one connection (support.py,
    `_wait_accepting`); the server counts that close when it gets to it, which on a busy
    machine can be after a test has read its baseline. Wait until it is counted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        closed = scrape(mport).series("memcrab_connections_closed_total")
        if sum(closed.values()) >= 1:
            return
        time.sleep(0.02)
    pytest.fail("the start-up probe's connection was never counted closed")


def listening_ports(pid):
    """TCP ports the process listens on (from /proc, Linux)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


# --------------------------------------------------------------------------
# stats over the cache port


def stats_lines(client, arg=b""):
    """``stats [arg]`` as (name, value) pairs; every line must be a STAT line."""
    command = b"stats" + (b" " + arg if arg else b"")
    # pymemcache returns the reply up to END\r\n, without it
    reply = client.raw_command(command, b"END\r\n").decode()
    pairs = []
    for line in reply.split("\r\n")[:-1]:
        assert line.startswith("STAT "), f"`{command.decode()}`: bad line {line!r}"
        _, name, value = (line.split(" ", 2) + [""])[:3]
        pairs.append((name, value))
    return pairs


def stats_dict(client, arg=b""):
    return dict(stats_lines(client, arg))


def is_int(text):
    return re.fullmatch(r"-?\d+", text) is not None


def number(text):
    """A stats value as a number (yes/no/on/off as 1/0)."""
    words = {"yes": 1.0, "no": 0.0, "on": 1.0, "off": 0.0}
    return words[text] if text in words else float(text)


def store_some(client, count=3):
    """Items in two size classes; returns the keys."""
    keys = []
    for i in range(count):
        keys.append(f"small{i}")
        client.set(keys[-1], b"v" * 10, noreply=False)
    keys.append("large")
    client.set("large", b"x" * 3000, noreply=False)
    return keys


# --------------------------------------------------------------------------
# 1. promtool


def promtool_or_skip():
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`)")
    return path


def test_promtool_check_metrics(start_server):
    promtool = promtool_or_skip()
    server, mport = start_with_metrics(start_server)
    c = server.client()
    store_some(c)
    c.get("small0")
    c.get("missing")
    c.incr("counter", 1, noreply=False)
    c.raw_command(b"mn", b"MN\r\n")
    headers, text = scrape_text(mport)
    assert headers["Content-Type"] == CONTENT_TYPE
    proc = subprocess.run(
        [promtool, "check", "metrics"],
        check=False,
        input=text.encode(),
        capture_output=True,
        timeout=10,
    )
    output = (proc.stdout + proc.stderr).decode()
    # exit 0: clean; 3: lint findings only; anything else: the text did not parse
    assert proc.returncode in (0, 3), f"promtool failed ({proc.returncode}):\n{output}"
    unexpected = []
    for line in output.splitlines():
        if not line.strip():
            continue
        name, _, finding = line.partition(" ")
        if name in PROMTOOL_ALLOWED and finding == SUFFIX_FINDING:
            continue
        if name in PROMTOOL_ALLOWED_ANY:
            continue
        unexpected.append(line)
    assert not unexpected, "promtool findings outside section 7:\n" + "\n".join(
        unexpected
    )


# --------------------------------------------------------------------------
# 2. names, types, labels


def section_9():
    """[(tier, name, type, label names)] of the exporter contract's metric table."""
    rows = []
    for line in SECTION_9.strip().splitlines():
        tier, name, kind, labels = line.split()
        rows.append(
            (tier, name, kind, set() if labels == "-" else set(labels.split(",")))
        )
    return rows


def test_embedded_section_9_matches_reference():
    if not REFERENCE.is_file():
        pytest.skip(f"{REFERENCE} is not there to compare with")
    text = REFERENCE.read_text()
    block = text.split("## 9.", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    assert block.strip().splitlines() == SECTION_9.strip().splitlines()


def test_exporter_names_types_and_labels(start_server):
    server, mport = start_with_metrics(start_server)
    rows = section_9()

    # Before any item: tier A, with the right types and label names.
    empty = scrape(mport)
    for tier, name, kind, labels in rows:
        if tier == "A":
            assert empty.types.get(name) == kind, (
                f"{name}: TYPE {empty.types.get(name)}"
            )
            series = empty.series(name)
            assert series, f"tier-A {name} has no sample"
            for key in series:
                assert {k for k, _ in key} == labels, f"{name} labels {dict(key)}"

    c = server.client()
    store_some(c)
    c.get("small0")
    full = scrape(mport)
    slab_ids = {int(k.split(":")[1]) for k in stats_dict(c, b"items")}
    assert slab_ids, "stats items lists no class after storing items"

    missing, wrong = [], []
    for tier, name, kind, labels in rows:
        if tier == "C":
            assert name not in full.types and name not in full.names(), (
                f"tier-C {name} is emitted"
            )
            continue
        if full.types.get(name) != kind:
            wrong.append(f"{name}: TYPE {full.types.get(name)}, want {kind}")
        series = full.series(name)
        if not series:
            missing.append(name)
            continue
        for key in series:
            got = dict(key)
            if set(got) != labels:
                wrong.append(f"{name}{got}: label names, want {sorted(labels)}")
            if "slab" in got and not re.fullmatch(r"[1-9][0-9]?", got["slab"]):
                wrong.append(f"{name}{got}: slab is not an id 1..63")
            if "lru" in got and got["lru"] not in LRU_SEGMENTS:
                wrong.append(f"{name}{got}: lru value")
        if "slab" in labels:
            ids = {int(dict(k)["slab"]) for k in series}
            if not slab_ids <= ids:
                wrong.append(
                    f"{name}: slabs {sorted(ids)}, stats items has {sorted(slab_ids)}"
                )
    assert not missing, f"not emitted: {missing}"
    assert not wrong, "\n".join(wrong)

    # memcached_commands_total: exactly the 15 pairs of section 6
    pairs = [
        (dict(k)["command"], dict(k)["status"])
        for k in full.series("memcached_commands_total")
    ]
    assert sorted(pairs) == sorted(COMMAND_PAIRS)
    for slab in slab_ids:
        per_class = {
            (d["command"], d["status"])
            for d in map(dict, full.series("memcached_slab_commands_total"))
            if d["slab"] == str(slab)
        }
        assert per_class == SLAB_COMMAND_PAIRS, f"slab {slab}"
        lrus = {
            d["lru"]
            for d in map(dict, full.series("memcached_slab_lru_hits_total"))
            if d["slab"] == str(slab)
        }
        assert lrus == LRU_SEGMENTS, f"slab {slab}"
    assert full.value("memcached_up") == 1
    assert full.value("memcached_version", version=c.version().decode()) == 1


def test_every_family_has_help_and_type(start_server):
    server, mport = start_with_metrics(start_server)
    store_some(server.client())
    result = scrape(mport)
    for name, _, _ in result.samples:
        family = result.family(name)
        assert family is not None, f"sample {name} has no # TYPE"
        assert family in result.helps, f"family {family} has no # HELP"
    # no label carries a key or an address (section 6)
    for name, labels, _ in result.samples:
        for value in labels.values():
            assert "small" not in value and HOST not in value, (name, labels)


def test_memcrab_extras_and_process_metrics(start_server):
    server, mport = start_with_metrics(start_server)
    store_some(server.client())
    result = scrape(mport)
    problems = []
    for name, (kind, labels) in EXTRAS.items():
        if result.types.get(name) != kind:
            problems.append(f"{name}: TYPE {result.types.get(name)}, want {kind}")
        suffix = "_count" if kind == "histogram" else ""
        series = result.series(name + suffix)
        if not series:
            problems.append(f"{name}: no sample")
        for key in series:
            if {k for k, _ in key} != labels:
                problems.append(
                    f"{name}{dict(key)}: label names, want {sorted(labels)}"
                )
    commands = {
        dict(k).get("command")
        for k in result.series("memcrab_request_duration_seconds_count")
    }
    if commands != HISTOGRAM_COMMANDS:
        problems.append(f"histogram commands {sorted(commands)}")
    directions = {
        dict(k).get("direction")
        for k in result.series("memcrab_connection_buffer_bytes")
    }
    if directions != {"read", "write"}:
        problems.append(f"buffer directions {sorted(directions)}")
    assert not problems, "\n".join(problems)
    assert result.value("memcrab_draining") == 0
    assert result.value("memcrab_threads") == float(
        stats_dict(server.client())["threads"]
    )
    assert result.value("process_open_fds") > 0


CLOSE_REASONS = {
    "client",
    "quit",
    "protocol_error",
    "idle_timeout",
    "shutdown",
    "io_error",
    "out_of_memory",
}


def closed_by_reason(port):
    result = scrape(port)
    return {
        dict(k)["reason"]: v
        for k, v in result.series("memcrab_connections_closed_total").items()
    }


def wait_closed(port, base, reason, timeout=5.0):
    """The closes since `base`, once `reason` has one more (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        got = {k: v - base[k] for k, v in closed_by_reason(port).items()}
        if got[reason] >= 1 or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_connections_closed_by_reason_and_get_expired(start_server):
    server, mport = start_with_metrics(start_server, "-o", "idle_timeout=1")
    base = closed_by_reason(mport)
    assert set(base) == CLOSE_REASONS
    # client: end of stream
    s = socket.create_connection((HOST, server.port))
    s.sendall(b"version\r\n")
    assert s.recv(100).startswith(b"VERSION")
    s.close()
    assert wait_closed(mport, base, "client")["client"] == 1
    base = closed_by_reason(mport)
    # quit
    s = socket.create_connection((HOST, server.port))
    s.sendall(b"quit\r\n")
    assert s.recv(100) == b""
    s.close()
    assert wait_closed(mport, base, "quit") == dict.fromkeys(CLOSE_REASONS, 0) | {"quit": 1}
    base = closed_by_reason(mport)
    # protocol_error: a line past the limit with no end, which memcached drops too
    s = socket.create_connection((HOST, server.port))
    s.sendall(b"x" * 8192)
    s.settimeout(5)
    assert s.recv(1000) == b""
    s.close()
    got = wait_closed(mport, base, "protocol_error")
    assert got == dict.fromkeys(CLOSE_REASONS, 0) | {"protocol_error": 1}
    base = closed_by_reason(mport)
    # idle_timeout
    s = socket.create_connection((HOST, server.port))
    s.sendall(b"version\r\n")
    s.recv(100)
    s.settimeout(10)
    assert s.recv(100) == b""
    s.close()
    got = wait_closed(mport, base, "idle_timeout")
    assert got == dict.fromkeys(CLOSE_REASONS, 0) | {"idle_timeout": 1}


ERROR_KINDS = {
    "unknown_command", "bad_command_line", "bad_data_chunk", "line_too_long",
    "foreign_protocol", "binary_invalid", "too_large", "out_of_memory",
}  # fmt: skip


def protocol_errors(port):
    return {
        dict(k)["kind"]: v
        for k, v in scrape(port).series("memcrab_protocol_errors_total").items()
    }


def exchange(port, data):
    """Sends `data`, returns what comes back until the server closes or goes quiet."""
    s = socket.create_connection((HOST, port))
    s.sendall(data)
    s.settimeout(0.5)
    got = b""
    try:
        while chunk := s.recv(4096):
            got += chunk
    except socket.timeout:
        pass
    s.close()
    return got


def test_protocol_errors_by_kind(start_server):
    # -m 2 with evictions off: a second large value finds no memory.
    server, mport = start_with_metrics(start_server, "-m", "2", "-M")
    assert set(protocol_errors(mport)) == ERROR_KINDS
    base = protocol_errors(mport)
    cases = [
        (b"bogus\r\n", b"ERROR\r\n", "unknown_command"),
        (b"set k 0 0\r\n", b"CLIENT_ERROR bad command line format\r\n", "bad_command_line"),
        (b"set k 0 0 1\r\nxyz\r\n", b"CLIENT_ERROR bad data chunk\r\n", "bad_data_chunk"),
        (b"set k 0 0 2000000\r\n" + b"x" * 2_000_000 + b"\r\n", b"SERVER_ERROR object too large for cache\r\n", "too_large"),
        (b"GET / HTTP/1.1\r\n", b"", "foreign_protocol"),
        # A binary Get with extras, which it does not take: "Invalid arguments", closed.
        (b"\x80\x00\x00\x01\x04\x00\x00\x00\x00\x00\x00\x05" + bytes(12) + bytes(4) + b"k",
         b"\x81\x00\x00\x00\x00\x00\x00\x04", "binary_invalid"),
        (b"x" * 8192, b"", "line_too_long"),
    ]
    for request, reply, kind in cases:
        got = exchange(server.port, request)
        assert got.startswith(reply), (request[:20], got)
        now = protocol_errors(mport)
        assert now[kind] - base[kind] >= 1, (kind, now)
        base = now
    s = socket.create_connection((HOST, server.port))
    reader = s.makefile("rb")
    for i in range(100):
        s.sendall(b"set big%d 0 0 60000\r\n%s\r\n" % (i, b"v" * 60_000))
        reply = reader.readline()
        if reply.startswith(b"SERVER_ERROR out of memory"):
            break
        assert reply == b"STORED\r\n", reply
    else:
        pytest.fail("-M never ran out of memory")
    s.close()
    assert protocol_errors(mport)["out_of_memory"] - base["out_of_memory"] >= 1


def test_connection_buffer_limit_and_refusals(start_server):
    # A 1 MiB cap: a client that reads nothing while its get names a 600 KB value 20 times
    # fills its socket and then holds a value's worth of the cap, so the next client's get of
    # it is refused with memcached's message and counted.
    server, mport = start_with_metrics(start_server, "-o", "read_buf_mem_limit=1")
    first = scrape(mport)
    assert first.value("memcrab_connection_buffer_limit_bytes") == 1 << 20
    for direction in ("read", "write"):
        assert first.value("memcrab_connection_buffer_oom_total", direction=direction) == 0
    value = b"v" * 600_000
    setter = socket.create_connection((HOST, server.port))
    setter.sendall(b"set big 0 0 %d\r\n%s\r\n" % (len(value), value))
    assert setter.makefile("rb").readline() == b"STORED\r\n"
    holder = socket.create_connection((HOST, server.port))
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    holder.sendall(b"get" + b" big" * 20 + b"\r\n")
    time.sleep(0.5)
    refused = exchange(server.port, b"get big\r\n")
    assert refused == b"SERVER_ERROR out of memory writing get response\r\n", refused[:80]
    assert scrape(mport).value("memcrab_connection_buffer_oom_total", direction="write") >= 1
    holder.close()
    setter.close()


def test_get_expired_total_follows_stats(start_server):
    # Without the reaper, the expired item is still there for the get to find.
    server, mport = start_with_metrics(start_server, "-o", "no_lru_crawler")
    c = server.client()
    c.set("soon", b"v", expire=1, noreply=False)
    time.sleep(2.2)
    assert c.get("soon") is None
    assert scrape(mport).value("memcrab_get_expired_total") == float(
        stats_dict(c)["get_expired"]
    ) == 1.0


# --------------------------------------------------------------------------
# 3. values agree with stats


def run_script(c):
    """The scripted commands; returns the expected memcached_commands_total."""
    for i in range(5):
        assert c.set(f"k{i}", b"v" * 10, noreply=False)
    assert c.set("big", b"x" * 3000, noreply=False)
    assert c.add("k0", b"z", noreply=False) is False  # NOT_STORED, still a set
    assert c.replace("nokey", b"z", noreply=False) is False
    assert c.append("k1", b"+", noreply=False)
    assert c.prepend("k2", b"-", noreply=False)
    assert c.get("k0") == b"v" * 10
    assert c.get("k1") == b"v" * 10 + b"+"
    assert c.get("miss1") is None
    assert c.get("miss2") is None
    assert c.get_many(["k3", "miss3"]) == {"k3": b"v" * 10}  # hit + miss
    assert c.delete("k4", noreply=False)
    assert not c.delete("nokey", noreply=False)
    assert c.set("n", b"10", noreply=False)
    assert c.incr("n", 5, noreply=False) == 15
    assert c.incr("nokey", 1, noreply=False) is None
    assert c.decr("n", 3, noreply=False) == 12
    assert c.decr("nokey", 1, noreply=False) is None
    assert c.touch("k0", 100, noreply=False)
    assert not c.touch("nokey", 100, noreply=False)
    _, token = c.gets("k1")  # get hit
    assert c.cas("k1", b"new", token, noreply=False) is True
    assert c.cas("k1", b"again", token, noreply=False) is False  # EXISTS
    assert c.cas("nokey", b"x", token, noreply=False) is None  # NOT_FOUND
    assert c.flush_all(noreply=False)
    assert c.get("k0") is None  # flushed: a miss
    assert c.set("after1", b"1", noreply=False)
    assert c.set("after2", b"2", noreply=False)
    # cmd_set = 6 sets + add + replace + append + prepend + set n + 3 cas + 2 sets = 16
    return {
        ("get", "hit"): 4, ("get", "miss"): 4,
        ("delete", "hit"): 1, ("delete", "miss"): 1,
        ("incr", "hit"): 1, ("incr", "miss"): 1,
        ("decr", "hit"): 1, ("decr", "miss"): 1,
        ("touch", "hit"): 1, ("touch", "miss"): 1,
        ("cas", "hit"): 1, ("cas", "miss"): 1, ("cas", "badval"): 1,
        ("set", "hit"): 13, ("flush", "hit"): 1,
    }  # fmt: skip


def commands_from_stats(stats):
    """memcached_exporter's derivation of memcached_commands_total (section 2)."""
    s = {k: int(v) for k, v in stats.items() if is_int(v)}
    out = {}
    for op in ("get", "delete", "incr", "decr", "cas", "touch"):
        out[(op, "hit")] = s[f"{op}_hits"]
        out[(op, "miss")] = s[f"{op}_misses"]
    out[("cas", "badval")] = s["cas_badval"]
    out[("set", "hit")] = (
        s["cmd_set"] - s["cas_misses"] - s["cas_hits"] - s["cas_badval"]
    )
    out[("flush", "hit")] = s["cmd_flush"]
    return out


# metric: (stats command, key); compared within [before, after] of the scrape
STATS_OF_METRIC = {
    "memcached_uptime_seconds": (b"", "uptime"),
    "memcached_time_seconds": (b"", "time"),
    "memcached_process_user_cpu_seconds_total": (b"", "rusage_user"),
    "memcached_process_system_cpu_seconds_total": (b"", "rusage_system"),
    "memcached_read_bytes_total": (b"", "bytes_read"),
    "memcached_written_bytes_total": (b"", "bytes_written"),
    "memcached_current_connections": (b"", "curr_connections"),
    "memcached_max_connections": (b"settings", "maxconns"),
    "memcached_connections_total": (b"", "total_connections"),
    "memcached_connections_rejected_total": (b"", "rejected_connections"),
    "memcached_connections_yielded_total": (b"", "conn_yields"),
    "memcached_connections_listener_disabled_total": (b"", "listen_disabled_num"),
    "memcached_current_bytes": (b"", "bytes"),
    "memcached_limit_bytes": (b"", "limit_maxbytes"),
    "memcached_current_items": (b"", "curr_items"),
    "memcached_items_total": (b"", "total_items"),
    "memcached_items_evicted_total": (b"", "evictions"),
    "memcached_items_reclaimed_total": (b"", "reclaimed"),
    "memcached_item_too_large_total": (b"", "store_too_large"),
    "memcached_item_no_memory_total": (b"", "store_no_memory"),
    "memcached_direct_reclaims_total": (b"", "direct_reclaims"),
    "memcached_accepting_connections": (b"", "accepting_conns"),
    "memcached_malloced_bytes": (b"slabs", "total_malloced"),
    "memcached_lru_crawler_enabled": (b"settings", "lru_crawler"),
    "memcached_lru_crawler_sleep": (b"settings", "lru_crawler_sleep"),
    "memcached_lru_crawler_to_crawl": (b"settings", "lru_crawler_tocrawl"),
    "memcached_lru_crawler_maintainer_thread": (b"settings", "lru_maintainer_thread"),
    "memcached_lru_crawler_hot_percent": (b"settings", "hot_lru_pct"),
    "memcached_lru_crawler_warm_percent": (b"settings", "warm_lru_pct"),
    "memcached_lru_crawler_hot_max_factor": (b"settings", "hot_max_factor"),
    "memcached_lru_crawler_warm_max_factor": (b"settings", "warm_max_factor"),
    "memcached_lru_crawler_starts_total": (b"", "lru_crawler_starts"),
    "memcached_lru_crawler_reclaimed_total": (b"", "crawler_reclaimed"),
    "memcached_lru_crawler_items_checked_total": (b"", "crawler_items_checked"),
    "memcached_lru_crawler_moves_to_cold_total": (b"", "moves_to_cold"),
    "memcached_lru_crawler_moves_to_warm_total": (b"", "moves_to_warm"),
    "memcached_lru_crawler_moves_within_lru_total": (b"", "moves_within_lru"),
}
# per-class metric: (stats command, field of <id> / items:<id>)
SLAB_STATS_OF_METRIC = {
    "memcached_slab_current_items": (b"items", "number"),
    "memcached_slab_items_age_seconds": (b"items", "age"),
    "memcached_slab_items_crawler_reclaimed_total": (b"items", "crawler_reclaimed"),
    "memcached_slab_items_evicted_total": (b"items", "evicted"),
    "memcached_slab_items_evicted_nonzero_total": (b"items", "evicted_nonzero"),
    "memcached_slab_items_evicted_time_seconds": (b"items", "evicted_time"),
    "memcached_slab_items_evicted_unfetched_total": (b"items", "evicted_unfetched"),
    "memcached_slab_items_expired_unfetched_total": (b"items", "expired_unfetched"),
    "memcached_slab_items_outofmemory_total": (b"items", "outofmemory"),
    "memcached_slab_items_reclaimed_total": (b"items", "reclaimed"),
    "memcached_slab_items_tailrepairs_total": (b"items", "tailrepairs"),
    "memcached_slab_items_moves_to_cold": (b"items", "moves_to_cold"),
    "memcached_slab_items_moves_to_warm": (b"items", "moves_to_warm"),
    "memcached_slab_items_moves_within_lru": (b"items", "moves_within_lru"),
    "memcached_slab_hot_items": (b"items", "number_hot"),
    "memcached_slab_warm_items": (b"items", "number_warm"),
    "memcached_slab_cold_items": (b"items", "number_cold"),
    "memcached_slab_hot_age_seconds": (b"items", "age_hot"),
    "memcached_slab_warm_age_seconds": (b"items", "age_warm"),
    "memcached_slab_mem_requested_bytes": (b"items", "mem_requested"),
    "memcached_slab_chunk_size_bytes": (b"slabs", "chunk_size"),
    "memcached_slab_chunks_per_page": (b"slabs", "chunks_per_page"),
    "memcached_slab_current_pages": (b"slabs", "total_pages"),
    "memcached_slab_current_chunks": (b"slabs", "total_chunks"),
    "memcached_slab_chunks_used": (b"slabs", "used_chunks"),
    "memcached_slab_chunks_free": (b"slabs", "free_chunks"),
    "memcached_slab_chunks_free_end": (b"slabs", "free_chunks_end"),
}
LRU_HITS = {"hot": "hits_to_hot", "warm": "hits_to_warm", "cold": "hits_to_cold",
            "temporary": "hits_to_temp"}  # fmt: skip
SLAB_COUNTERS = ("get_hits", "delete_hits", "incr_hits", "decr_hits", "cas_hits",
                 "cas_badval", "touch_hits", "cmd_set")  # fmt: skip


def all_stats(c):
    return {arg: stats_dict(c, arg) for arg in (b"", b"settings", b"items", b"slabs")}


def slab_key(arg, slab, field):
    return f"items:{slab}:{field}" if arg == b"items" else f"{slab}:{field}"


def within(metric, before, after, name, slack=0.0):
    low, high = min(before, after), max(before, after)
    assert low - slack <= metric <= high + slack, (
        f"{name} = {metric}, stats said {before} before the scrape and {after} after"
    )


def test_values_agree_with_stats(start_server):
    server, mport = start_with_metrics(start_server, "-m", "32", "-c", "100")
    c = server.client()
    start = scrape(mport)
    expected_commands = run_script(c)
    others = [server.client() for _ in range(2)]
    for other in others:
        assert other.version()

    # curr_connections: this client and the two others (the start-up probe of
    # the harness has gone; allow it a moment to be noticed)
    deadline = time.monotonic() + 2
    while stats_dict(c)["curr_connections"] != "3" and time.monotonic() < deadline:
        time.sleep(0.02)

    before = all_stats(c)
    result = scrape(mport)
    after = all_stats(c)

    # memcached_commands_total: the script, stats, and the metric agree
    from_stats = commands_from_stats(before[b""])
    assert commands_from_stats(after[b""]) == from_stats
    assert from_stats == expected_commands
    metric = {
        (dict(k)["command"], dict(k)["status"]): v
        for k, v in result.series("memcached_commands_total").items()
    }
    assert metric == {pair: float(n) for pair, n in from_stats.items()}

    # section 2: exactly equal
    assert result.value("memcached_current_items") == int(before[b""]["curr_items"])
    assert before[b""]["curr_connections"] == "3"
    assert result.value("memcached_current_connections") == 3
    assert result.value("memcached_limit_bytes") == 32 * 1024 * 1024
    assert before[b""]["limit_maxbytes"] == str(32 * 1024 * 1024)
    assert result.value("memcached_max_connections") == 100
    assert before[b"settings"]["maxconns"] == "100"

    # every tier-A/B scalar against its stats key, within the scrape's window
    problems = []
    for name, (arg, key) in STATS_OF_METRIC.items():
        if key not in before[arg]:
            problems.append(f"{name}: stats {arg.decode()} has no {key}")
            continue
        slack = 1e-6 if "cpu" in name else 0.0
        try:
            low, high = number(before[arg][key]), number(after[arg][key])
            within(result.value(name), low, high, name, slack)
        except AssertionError as err:
            problems.append(str(err))
    version = c.version().decode()
    assert result.series("memcached_version") == {
        frozenset({("version", version)}): 1.0
    }
    assert before[b""]["version"] == version

    # per class
    slab_ids = sorted({int(k.split(":")[1]) for k in before[b"items"]})
    assert len(slab_ids) >= 2, "the script stores items of two sizes"
    for slab in slab_ids:
        for name, (arg, field) in SLAB_STATS_OF_METRIC.items():
            key = slab_key(arg, slab, field)
            try:
                low, high = number(before[arg][key]), number(after[arg][key])
                within(result.value(name, slab=str(slab)), low, high, name)
            except (AssertionError, KeyError) as err:
                problems.append(f"{name}{{slab={slab}}}: {err}")
        for lru, field in LRU_HITS.items():
            key = slab_key(b"items", slab, field)
            got = result.value("memcached_slab_lru_hits_total", slab=str(slab), lru=lru)
            if got != number(before[b"items"][key]):
                problems.append(
                    f"lru_hits_total{{slab={slab},lru={lru}}} = {got}, {key} = {before[b'items'][key]}"
                )
        slabs = {
            field: int(before[b"slabs"][f"{slab}:{field}"]) for field in SLAB_COUNTERS
        }
        want = {
            ("get", "hit"): slabs["get_hits"], ("delete", "hit"): slabs["delete_hits"],
            ("incr", "hit"): slabs["incr_hits"], ("decr", "hit"): slabs["decr_hits"],
            ("cas", "hit"): slabs["cas_hits"], ("cas", "badval"): slabs["cas_badval"],
            ("touch", "hit"): slabs["touch_hits"],
            ("set", "hit"): slabs["cmd_set"] - slabs["cas_hits"] - slabs["cas_badval"],
        }  # fmt: skip
        got = {}
        for key, value in result.series("memcached_slab_commands_total").items():
            labels = dict(key)
            if labels["slab"] == str(slab):
                got[(labels["command"], labels["status"])] = value
        if got != {p: float(n) for p, n in want.items()}:
            problems.append(
                f"slab_commands_total{{slab={slab}}} {got}, stats slabs {want}"
            )
    assert not problems, "\n".join(problems)

    # bytes read/written are monotonic and grow with traffic
    for _ in range(5):
        c.set("grow", b"g" * 100, noreply=False)
        c.get("grow")
    later = scrape(mport)
    for name in ("memcached_read_bytes_total", "memcached_written_bytes_total"):
        assert start.value(name) <= result.value(name) < later.value(name), name
    for name in ("memcached_connections_total", "memcached_items_total",
                 "memcached_uptime_seconds"):  # fmt: skip
        assert start.value(name) <= result.value(name) <= later.value(name), name


# --------------------------------------------------------------------------
# 4. latency histogram


def histogram(result, command):
    buckets = []
    for key, value in result.series("memcrab_request_duration_seconds_bucket").items():
        labels = dict(key)
        if labels["command"] == command:
            buckets.append((float(labels["le"]), labels["le"], value))
    buckets.sort()
    count = result.value("memcrab_request_duration_seconds_count", command=command)
    total = result.value("memcrab_request_duration_seconds_sum", command=command)
    return buckets, count, total


def test_latency_histogram_counts_requests(start_server):
    server, mport = start_with_metrics(start_server)
    c = server.client()
    c.set("here", b"1", noreply=False)
    first = scrape(mport)
    n = 40
    for i in range(n):
        c.get("here" if i % 2 else f"absent{i}")
    second = scrape(mport)

    _, count0, sum0 = histogram(first, "get")
    buckets, count1, sum1 = histogram(second, "get")
    assert count1 - count0 == n
    assert sum1 > sum0
    for command in sorted(HISTOGRAM_COMMANDS):
        buckets, count, total = histogram(second, command)
        assert [b[0] for b in buckets] == HISTOGRAM_BUCKETS + [float("inf")], command
        assert buckets[-1][1] == "+Inf", command
        values = [b[2] for b in buckets]
        assert values == sorted(values), f"{command}: buckets not cumulative {values}"
        assert values[-1] == count, f"{command}: +Inf {values[-1]} != count {count}"
        assert total >= 0
    assert histogram(second, "set")[1] >= 1


# --------------------------------------------------------------------------
# 5. a real Prometheus server


@pytest.fixture
def prometheus(tmp_path):
    """start(target_port) -> Prometheus API port; stopped by PID at teardown."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian package `prometheus`)")
    procs = []

    def start(target_port, job):
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            f"  - job_name: {job}\n"
            "    scrape_interval: 1s\n"
            "    scrape_timeout: 1s\n"
            "    static_configs:\n"
            f"      - targets: ['{HOST}:{target_port}']\n"
        )
        port = free_port()
        with open(tmp_path / "prometheus.log", "ab") as log:
            proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address={HOST}:{port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        procs.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            log_text = (tmp_path / "prometheus.log").read_text(errors="replace")
            assert proc.poll() is None, f"Prometheus exited:\n{log_text[-2000:]}"
            if wait_http(port, "/-/ready", timeout=0.5) == 200:
                return port
            time.sleep(0.05)
        pytest.fail("Prometheus was not ready within 10 s")

    yield start

    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def prom_query(port, query):
    path = "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    status, _, body = http_get(port, path)
    assert status == 200, body
    data = json.loads(body)
    assert data["status"] == "success", data
    return data["data"]["result"]


def test_prometheus_scrapes_memcrab(start_server, prometheus):
    server, mport = start_with_metrics(start_server)
    api = prometheus(mport, "memcrab")
    k = 7
    c = server.client()
    for i in range(k):
        c.set(f"item{i}", b"v" * i, noreply=False)

    deadline = time.monotonic() + PROMETHEUS_TIMEOUT
    seen = None
    while time.monotonic() < deadline:
        result = prom_query(api, "memcached_current_items")
        seen = [r["value"][1] for r in result]
        if seen == [str(k)]:
            break
        time.sleep(0.25)
    _, _, body = http_get(api, "/api/v1/targets")
    targets = json.loads(body)["data"]["activeTargets"]
    assert seen == [str(k)], f"memcached_current_items {seen}; targets {targets}"

    up = prom_query(api, 'up{job="memcrab"}')
    assert [r["value"][1] for r in up] == ["1"]
    assert [t["health"] for t in targets] == ["up"], targets
    assert targets[0]["lastError"] == ""
    instance = up[0]["metric"]["instance"]
    assert instance == f"{HOST}:{mport}"
    commands = prom_query(api, 'memcached_commands_total{command="set",status="hit"}')
    assert [r["value"][1] for r in commands] == [str(k)]


# --------------------------------------------------------------------------
# 6. health, readiness, drain, configuration


def test_healthz_and_readyz(start_server):
    _, mport = start_with_metrics(start_server)
    status, _, body = http_get(mport, "/healthz")
    assert (status, body.strip()) == (200, "ok")
    status, _, _ = http_get(mport, "/readyz")
    assert status == 200


SIGNAL_GRACE = 0.2  # seconds for the server to see SIGTERM


def test_sigterm_drains_and_exits_zero(start_server):
    server, mport = start_with_metrics(start_server)
    idle = socket.create_connection(server.address, timeout=DRAIN_TIMEOUT)
    try:
        idle.sendall(b"version\r\n")
        assert idle.recv(100).startswith(b"VERSION ")
        assert http_get(mport, "/readyz")[0] == 200

        server.expect_exit = True
        os.kill(server.pid, signal.SIGTERM)
        killed = time.monotonic()
        ready, draining = [], []
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while server.proc.poll() is None and time.monotonic() < deadline:
            try:
                status = http_get(mport, "/readyz", timeout=0.5)[0]
                # The signal reaches the server asynchronously: allow a short window.
                if time.monotonic() - killed > SIGNAL_GRACE:
                    ready.append(status)
                status, _, text = http_get(mport, "/metrics", timeout=0.5)
                if status == 200 and time.monotonic() - killed > SIGNAL_GRACE:
                    result = Scrape(text)
                    draining.append(
                        (
                            result.value("memcrab_draining"),
                            result.value("memcached_accepting_connections"),
                        )
                    )
            except OSError:
                ready.append("refused")
            time.sleep(0.02)
        try:
            code = server.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"still running {DRAIN_TIMEOUT}s after SIGTERM with an idle client"
            )
        assert code == 0, f"exit status {code}; log:\n{server.log_tail()}"
        assert 200 not in ready, f"/readyz during the drain: {ready}"
        assert all(d == (1, 0) for d in draining), f"(draining, accepting): {draining}"
        # the idle connection was closed by the server
        idle.settimeout(1)
        try:
            assert idle.recv(100) == b""
        except ConnectionResetError:
            pass
    finally:
        idle.close()
    with pytest.raises(OSError):
        http_get(mport, "/healthz", timeout=0.5)


def test_metrics_port_from_environment(start_server, monkeypatch):
    mport = free_port()
    monkeypatch.setenv("MEMCRAB_METRICS_PORT", str(mport))
    server = start_server()
    assert wait_http(mport) == 200, server.log_tail()
    assert scrape(mport).value("memcached_up") == 1
    assert listening_ports(server.pid) == {server.port, mport}


def test_no_http_listener_by_default(start_server, monkeypatch):
    monkeypatch.delenv("MEMCRAB_METRICS_PORT", raising=False)
    mport = free_port()
    server = start_server()
    assert listening_ports(server.pid) == {server.port}
    with pytest.raises(OSError):
        socket.create_connection((HOST, mport), timeout=0.5).close()


# --------------------------------------------------------------------------
# 7. stats compared with Debian's memcached

# Names memcrab prints that memcached 1.6.18 does not (allowed):
#   stats:          slab_reassign_busy_nomem (newer memcached's name)
#   stats settings: client_flags_size (newer memcached)
# Names memcached prints only when built with EXTSTORE or TLS (Debian builds
# both; the `#ifdef EXTSTORE` / `#ifdef TLS` blocks of process_stat_settings).
# A server without external storage or TLS does not print them, as memcached
# built without them does not.
BUILD_OPTION_SETTINGS = re.compile(r"ext_\w+|slab_automove_freeratio|ssl_\w+")
# Stats that memcached renamed after 1.6.18; memcrab prints the newer name in its place.
RENAMED = {"slab_reassign_evictions_nomem": "slab_reassign_busy_nomem"}

# The same few commands on both servers: (request, end of its reply).
COMMON_SCRIPT = [
    (b"set a 0 0 1\r\nx\r\n", b"\r\n"),
    (b"set b 0 0 300\r\n" + b"y" * 300 + b"\r\n", b"\r\n"),
    (b"get a\r\n", b"END\r\n"),
    (b"get zz\r\n", b"END\r\n"),
    (b"delete zz\r\n", b"\r\n"),
    (b"incr a 1\r\n", b"\r\n"),
]
COMPARED = (b"", b"settings", b"items", b"slabs")


@pytest.fixture
def memcached(tmp_path, _reaper):
    # The 1.6.45 oracle scripts/test.sh builds, else the memcached on PATH.
    binary = os.environ.get("MEMCRAB_IT_MEMCACHED") or shutil.which("memcached")
    if binary is None:
        if os.environ.get("CI") == "true":  # CI has the oracle: its absence is a failure
            pytest.fail("CI=true and memcached (the oracle) is not installed", pytrace=False)
        pytest.skip("memcached (the oracle) is not installed")
    proc = ServerProcess(binary, [], tmp_path / "memcached.log")
    proc.start()
    yield proc
    proc.close_clients()
    proc.terminate()
    _reaper.append(proc)


def run_common(server):
    """COMMON_SCRIPT, then the replies of the four stats commands."""
    with socket.create_connection(server.address, timeout=5) as sock:
        for request, end in COMMON_SCRIPT:
            sock.sendall(request)
            reply = b""
            while not reply.endswith(end):
                chunk = sock.recv(4096)
                assert chunk, f"connection closed after {request[:20]!r}"
                reply += chunk
    c = server.client()
    return {arg: stats_lines(c, arg) for arg in COMPARED}


def normalize(name):
    """items:7:number -> items:<id>:number, 7:chunk_size -> <id>:chunk_size."""
    return re.sub(r"^(items:)?\d+:", lambda m: (m.group(1) or "") + "<id>:", name)


def ordered_names(pairs):
    seen = []
    for name, _ in pairs:
        n = normalize(name)
        if n not in seen:
            seen.append(n)
    return seen


def test_stats_names_order_and_types_match_memcached(start_server, memcached):
    server = start_server()
    ours = run_common(server)
    theirs = run_common(memcached)
    version = dict(theirs[b""])["version"]
    problems = []
    for arg in COMPARED:
        command = ("stats " + arg.decode()).strip()
        want = [
            RENAMED.get(n, n) for n in ordered_names(theirs[arg])
            if not (arg == b"settings" and BUILD_OPTION_SETTINGS.fullmatch(n))
        ]  # fmt: skip
        got = ordered_names(ours[arg])
        missing = [n for n in want if n not in got]
        if missing:
            problems.append(
                f"`{command}`: memcached {version} prints {missing}, memcrab does not"
            )
        common_theirs = [n for n in want if n in got]
        common_ours = [n for n in got if n in want]
        if common_theirs != common_ours:
            first = next(
                i for i, (a, b) in enumerate(zip(common_theirs, common_ours)) if a != b
            )
            problems.append(
                f"`{command}`: order differs at {common_theirs[first]!r} "
                f"(memcrab has {common_ours[first]!r} there)"
            )
        their_ints = {
            RENAMED.get(normalize(n), normalize(n)) for n, v in theirs[arg] if is_int(v)
        }
        for name, value in ours[arg]:
            if normalize(name) in their_ints and not is_int(value):
                problems.append(f"`{command}`: STAT {name} {value} is not an integer")
    assert not problems, "\n".join(problems)


# `stats` values that are text in memcached too (1.6.45's last slab move status).
TEXT_STATS = ("version", "libevent", "slab_reassign_last_busy_status")


def test_stats_exporter_contract(start_server):
    """The stats names memcached_exporter reads, on memcrab's reply to the same commands."""
    server = start_server()
    replies = run_common(server)
    problems = []
    for arg in (b"", b"items", b"slabs"):
        for name, value in replies[arg]:
            line = f"STAT {name} {value}"
            if len(line.split(" ")) != 3:
                problems.append(f"not 3 fields: {line!r}")
            elif name not in TEXT_STATS and not re.fullmatch(
                r"-?\d+(\.\d+)?", value
            ):
                problems.append(f"not a number: {line!r}")
    for name, value in replies[b""]:
        if name.startswith("rusage_") and not re.fullmatch(r"\d+\.\d{6}", value):
            problems.append(f"rusage format: STAT {name} {value}")
    for name, _ in replies[b"items"]:
        m = re.fullmatch(r"items:(\d+):(\w+)", name)
        if not m:
            problems.append(f"stats items: bad name {name}")
        elif m.group(2) in ("store_too_large", "store_no_memory"):
            problems.append(f"stats items: {name}")
    for name, _ in replies[b"slabs"]:
        if name in ("active_slabs", "total_malloced"):
            continue
        m = re.fullmatch(r"(\d+):(\w+)", name)
        if not m:
            problems.append(f"stats slabs: bad name {name}")
        elif m.group(2) == "mem_requested":
            problems.append(f"stats slabs: {name}")
    slab_names = dict(replies[b"slabs"])
    for key in ("active_slabs", "total_malloced"):
        if key not in slab_names:
            problems.append(f"stats slabs: no {key}")
    item_ids = {n.split(":")[1] for n, _ in replies[b"items"]}
    slab_ids = {n.split(":")[0] for n, _ in replies[b"slabs"] if n[0].isdigit()}
    if item_ids != slab_ids or not item_ids:
        problems.append(
            f"class ids: stats items {sorted(item_ids)}, stats slabs {sorted(slab_ids)}"
        )
    for sid in slab_ids:
        for field in ("cmd_set", "cas_hits", "cas_badval", "chunk_size", "used_chunks"):
            if f"{sid}:{field}" not in slab_names:
                problems.append(f"stats slabs: no {sid}:{field}")
    settings = dict(replies[b"settings"])
    if not is_int(settings.get("maxconns", "")):
        problems.append(f"stats settings maxconns {settings.get('maxconns')!r}")
    for key in ("lru_crawler", "lru_maintainer_thread"):
        if settings.get(key) not in ("yes", "no"):
            problems.append(f"stats settings {key} {settings.get(key)!r}")
    stats = dict(replies[b""])
    for key in ("extstore_limit_maxbytes", "proxy_backend_total"):
        if key in stats:
            problems.append(f"stats: {key}")
    assert not problems, "\n".join(problems)
