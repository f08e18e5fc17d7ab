"""File descriptors (issue 12, case 4): the server fits RLIMIT_NOFILE to ``-c`` or refuses
to start with memcached's message, never accepts connections it cannot serve, and
running out of descriptors at accept time answers or closes, never leaves a client in
silence; plus 10,000 simultaneous connections.
"""

import os
import pwd
import resource
import time

import pytest

from support import (
    RLIMIT_MESSAGE,
    RssSampler,
    Server,
    can_raise_hard_limits,
    cpu_seconds,
    default_buf_cap_mb,
    free_port,
    nofile_limit,
    open_fds,
    raise_own_nofile,
    rss_bound,
    run_to_exit,
)
from wire import Conn, KiB, MiB, open_many

STARTING_LIMITS = {
    # soft 256 under a high hard limit: any user may raise it
    "soft-256": ((256, ""), lambda: True),
    # soft and hard 256: only with CAP_SYS_RESOURCE (root, unless a container drops it)
    "hard-256-as-root": ((256, 256), can_raise_hard_limits),
}


def version_answered(conn):
    return conn.request(b"version\r\n").startswith(b"VERSION ")


@pytest.mark.parametrize("limits", list(STARTING_LIMITS))
def test_raises_nofile_to_fit_maxconns(kind, start_server, figures, limits):
    """Started with RLIMIT_NOFILE 256 and ``-c 1024``: the limit is raised to fit and 600
    simultaneous connections are served."""
    nofile, allowed = STARTING_LIMITS[limits]
    if not allowed():
        pytest.skip("raising a hard RLIMIT_NOFILE needs CAP_SYS_RESOURCE, which this root lacks")
    assert raise_own_nofile(2000), "cannot raise this process's RLIMIT_NOFILE to 2000"
    server = start_server("-c", 1024, nofile=nofile)
    limit = nofile_limit(server.pid)
    figures("RLIMIT_NOFILE after start", limit)
    assert limit >= 1024
    _, outcomes = open_many(server, 600)
    assert outcomes["version"] == 600, outcomes


def as_nobody_with_nofile(limit):
    """A preexec_fn: RLIMIT_NOFILE ``limit`` (soft and hard), then user nobody, so the
    hard limit cannot be raised again."""
    nobody = pwd.getpwnam("nobody")

    def apply():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    return apply


def unreachable_maxconns():
    with open("/proc/sys/fs/nr_open") as f:
        return max(2_000_000, int(f.read()) + 1)


CASES = {
    # -c beyond fs.nr_open: not even root can raise RLIMIT_NOFILE that far
    "beyond-nr_open": lambda: (unreachable_maxconns(), (256, ""), None),
    # a hard limit of 256 and no privilege to raise it (user nobody)
    "hard-limit-as-nobody": lambda: (1024, None, as_nobody_with_nofile(256)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refuses_maxconns_it_cannot_reach(kind, binary, case, tmp_path):
    """memcached's message and a non-zero exit, instead of accepting connections the
    process has no descriptors for."""
    maxconns, nofile, preexec = CASES[case]()
    if preexec is not None and os.geteuid() != 0:
        pytest.skip("switching to user nobody needs root")
    server = Server(kind, binary, ["-c", maxconns], tmp_path / "unused.log", nofile=nofile)
    server.port = free_port()
    status, output = run_to_exit(server.command(), timeout=5.0, preexec=preexec)
    assert status is not None, f"still running 5 s after start with -c {maxconns}:\n{output}"
    assert status != 0, output
    assert RLIMIT_MESSAGE in output, output


@pytest.mark.memcrab_only(
    "memcached stops accepting on EMFILE and leaves new clients in the listen backlog, "
    "silent, until a descriptor frees"
)
def test_descriptors_exhausted_at_accept(kind, start_server, figures):
    """With the running server's RLIMIT_NOFILE lowered to what it uses + 10, 40 new
    clients each get ``version`` answered, ``ERROR Too many open connections`` or a close
    within 2 s; the accept loop does not spin; an established client keeps being served;
    once descriptors are back new clients are served again."""
    server = start_server("-c", 1024)
    keeper = server.admin()
    assert version_answered(keeper)
    soft, hard = resource.prlimit(server.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (open_fds(server.pid) + 10, hard))
    try:
        socks, outcomes = open_many(server, 40, batch=40, timeout=2.0)
        cpu_before = cpu_seconds(server.pid)
        time.sleep(1.0)
        cpu_idle = cpu_seconds(server.pid) - cpu_before
        assert version_answered(keeper), "an established client is no longer served"
    finally:
        resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (soft, hard))
    figures("answers: version / too many / closed / silent", "{version} / {too_many} / {closed} / {silent}".format(**outcomes))
    figures("CPU in the next second", cpu_idle, "s")
    assert outcomes["silent"] == 0, outcomes
    assert outcomes["too_many"] + outcomes["closed"] >= 1, f"descriptors never ran out: {outcomes}"
    assert cpu_idle < 0.2, f"{cpu_idle:.2f} s of CPU in one idle second: accept spins"
    for sock in socks:
        sock.close()
    server.check_healthy()


def test_ten_thousand_connections(kind, start_server, figures):
    """``-c 10240``: 10,000 simultaneous connections all get ``version`` answered."""
    if not raise_own_nofile(10_500):
        pytest.skip("cannot raise this process's RLIMIT_NOFILE to 10,500")
    server = start_server("-c", 10240)
    started = time.monotonic()
    with RssSampler(server.pid) as rss:
        _, outcomes = open_many(server, 10_000)
    # At most one batch of open_many (500) is busy at a time; the others are idle.
    bound = rss_bound(64, default_buf_cap_mb(64), 500, 4, conns=10_000)
    figures("seconds to open and serve", time.monotonic() - started, "s")
    figures("RSS per connection", rss.growth / 10_000 / KiB, "KiB")
    figures("RSS peak / bound", f"{rss.peak / MiB:.1f} / {bound / MiB:.1f}", "MiB")
    assert outcomes["version"] == 10_000, outcomes
    assert rss.peak <= bound
    assert version_answered(Conn(server.connect()))
