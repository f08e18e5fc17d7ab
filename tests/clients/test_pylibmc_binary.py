"""pylibmc (libmemcached) with ``binary=True``: the binary protocol as PHP's memcached
extension and other libmemcached users speak it, beside memcached 1.6.45, without and
with SASL (``-S``, a username and password).

The same script runs against memcrab and against the oracle, and every result must be
the same: values, flags round trips, misses, add/replace/cas outcomes, counters, touches,
multi-gets, deletes and flushes.
"""

import os
import pathlib
import shutil
import socket
import subprocess
import tempfile

import pytest

from support import ServerProcess

# The client's SASL library looks for its mechanism plugins here (Debian's
# libsasl2-modules); the wheel's own copy of libsasl2 does not know the path.
SASL_PLUGINS = "/usr/lib/x86_64-linux-gnu/sasl2"
if os.path.isdir(SASL_PLUGINS):
    os.environ.setdefault("SASL_PATH", SASL_PLUGINS)

pylibmc = pytest.importorskip("pylibmc")


@pytest.fixture
def start_oracle(tmp_path, _reaper):
    binary = os.environ.get("MEMCRAB_IT_MEMCACHED") or shutil.which("memcached")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and memcached (the oracle) is not installed", pytrace=False)
        pytest.skip("memcached (the oracle) is not installed")
    procs = []

    def start(*args):
        proc = ServerProcess(binary, list(args), tmp_path / f"memcached-{len(procs)}.log")
        procs.append(proc)
        return proc.start()

    yield start
    for proc in procs:
        proc.terminate()
        _reaper.append(proc)


@pytest.fixture
def oracle(start_oracle):
    return start_oracle()


def client(server, **kwargs):
    return pylibmc.Client(
        [f"{server.address[0]}:{server.port}"],
        binary=True,
        behaviors={"tcp_nodelay": True, "cas": True, "connect_timeout": 2000, "send_timeout": 2_000_000,
                   "receive_timeout": 2_000_000},
        **kwargs,
    )  # fmt: skip


def outcome(f):
    """What a call returned, or the kind of error it raised."""
    try:
        return ("ok", f())
    except pylibmc.Error as e:
        return ("error", type(e).__name__)


def script(mc):
    results = []
    run = lambda name, f: results.append((name, outcome(f)))  # noqa: E731
    run("set", lambda: mc.set("k", "value"))
    run("get", lambda: mc.get("k"))
    run("get miss", lambda: mc.get("nope"))
    run("set int", lambda: mc.set("i", 42))
    run("get int", lambda: mc.get("i"))
    run("set bytes", lambda: mc.set("b", b"\x00\x01\r\n\xff" * 100))
    run("get bytes", lambda: mc.get("b"))
    run("set large", lambda: mc.set("large", b"x" * 500_000))
    run("get large", lambda: len(mc.get("large")))
    run("set too large", lambda: mc.set("huge", b"x" * (2 << 20)))
    run("add exists", lambda: mc.add("k", "other"))
    run("add new", lambda: mc.add("new", "v"))
    run("replace miss", lambda: mc.replace("missing", "v"))
    run("replace hit", lambda: mc.replace("k", "replaced"))
    run("append", lambda: mc.append("k", "+tail"))
    run("prepend", lambda: mc.prepend("k", "head+"))
    run("get after concat", lambda: mc.get("k"))
    run("incr create?", lambda: mc.incr("counter", 1))
    run("set counter", lambda: mc.set("counter", "10"))
    run("incr", lambda: mc.incr("counter", 5))
    run("decr", lambda: mc.decr("counter", 100))
    run("incr non-numeric", lambda: mc.incr("k", 1))
    run("gets", lambda: mc.gets("k")[0])
    run("cas ok", lambda: mc.cas("k", "cas1", mc.gets("k")[1]))
    run("cas stale", lambda: mc.cas("k", "cas2", 1))
    run("get after cas", lambda: mc.get("k"))
    run("set_multi", lambda: sorted(mc.set_multi({"m1": "a", "m2": "b", "m3": "c"})))
    run("get_multi", lambda: sorted(mc.get_multi(["m1", "m2", "m3", "m4"]).items()))
    run("delete", lambda: mc.delete("m1"))
    run("delete miss", lambda: mc.delete("m1"))
    run("delete_multi", lambda: mc.delete_multi(["m2", "m3", "m9"]))
    run("touch", lambda: mc.touch("k", 100))
    run("touch miss", lambda: mc.touch("absent", 100))
    run("set expiring", lambda: mc.set("exp", "v", time=-1))
    run("get expired", lambda: mc.get("exp"))
    run("flush_all", lambda: mc.flush_all())
    run("get after flush", lambda: mc.get("k"))
    return results


def test_pylibmc_binary_matches_memcached(server, oracle):
    mine, theirs = script(client(server)), script(client(oracle))
    differ = [(a[0], a[1], b[1]) for a, b in zip(mine, theirs) if a != b]
    assert not differ, "name, memcrab, memcached:\n" + "\n".join(map(str, differ))
    assert server.is_running()


def test_pylibmc_binary_many_keys(server):
    mc = client(server)
    values = {f"key:{i}": f"value:{i}" * (i % 50 + 1) for i in range(2000)}
    assert mc.set_multi(values) == []
    got = mc.get_multi(list(values))
    assert got == values


def test_pylibmc_sasl_matches_memcached(start_server, start_oracle, monkeypatch):
    if not pylibmc.support_sasl:
        pytest.skip("this pylibmc has no SASL support")
    # Debian's build checks SASL against a sasldb: only the 1.6.45 oracle reads memcached's
    # password database.
    oracle = os.environ.get("MEMCRAB_IT_MEMCACHED") or shutil.which("memcached") or ""
    version = subprocess.run([oracle, "-V"], capture_output=True, text=True).stdout if oracle else ""
    if "1.6.45" not in version:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the oracle {oracle!r} is not memcached 1.6.45", pytrace=False)
        pytest.skip(f"the oracle {oracle!r} is not memcached 1.6.45 (built with the password database)")
    # memcached's password database: the SASL user is user@hostname; its SASL library
    # wants a configuration naming the mechanism.
    # memcached runs as nobody: the files sit in a directory of their own under /tmp.
    conf = pathlib.Path(tempfile.mkdtemp(prefix="memcrab-sasl-"))
    os.chmod(conf, 0o755)
    pwdb = conf / "pwdb"
    pwdb.write_text(f"alice@{socket.gethostname()}:secret\n")
    (conf / "memcached.conf").write_text("mech_list: plain\n")
    monkeypatch.setenv("MEMCACHED_SASL_PWDB", str(pwdb))
    monkeypatch.setenv("SASL_CONF_PATH", str(conf))
    mine, theirs = start_server("-S"), start_oracle("-S")
    for user, password in [("alice", "secret"), ("alice", "wrong"), ("mallory", "secret")]:
        results = []
        for server in (mine, theirs):
            mc = client(server, username=user, password=password)
            results.append([outcome(lambda: mc.set("k", "v")), outcome(lambda: mc.get("k"))])
        assert results[0] == results[1], (user, password, results)
        expected_ok = (user, password) == ("alice", "secret")
        assert (results[0][1] == ("ok", "v")) == expected_ok, results
    # Without credentials nothing is served (pylibmc reports the refused get as a miss).
    anonymous = [outcome(lambda: client(server).get("k")) for server in (mine, theirs)]
    assert anonymous[0] == anonymous[1] and anonymous[0] != ("ok", "v"), anonymous
    assert mine.is_running()
