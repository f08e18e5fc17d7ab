#!/usr/bin/env python3
"""Instructions per request in memcrab's worker threads, counted by callgrind.

Wall-clock figures on a shared 2-core machine swing by 10-30% between rounds; instruction
counts do not (the same binary gives the same count to 0.3%). This counts the user-space
instructions the worker threads spend per request, for one or more memcrab builds side by
side, so that a change to the request path can be judged to a percent. The kernel's share
(the socket calls, 80% of the CPU of an unpipelined request) is not counted: it is the same
for every build that makes the same system calls.

Each workload runs twice, with N1 and N2 iterations, against a fresh server under
`valgrind --tool=callgrind` with `-t 1 -o no_lru_crawler`; the difference of the two counts
over the difference of the requests is the figure, so start-up and the preload cancel out.
Counting starts in the threads std spawns (the workers, the acceptor), not in main.

    python3 benches/instructions.py target/release/memcrab /tmp/memcrab-other
    python3 benches/instructions.py target/release/memcrab --memcached /tmp/memcached-1.6.45

memcached is counted in its worker threads (`worker_libevent`), run as `nobody` with a
preloaded `setrlimit` that does nothing (valgrind refuses the file limit memcached sets, and
memcached refuses to start without it); it needs a C compiler for that shim.

Workloads (10,000 keys of 100 bytes preloaded):
    getset16  16 connections, one request in flight each, 90% get / 10% set
    pipe16    one connection, 16 gets per write
    multi10   one connection, one 10-key get at a time
"""

import argparse
import os
import pwd
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

KEYS = 10_000
VALUE = b"x" * 100
WORKLOADS = {
    # name: (N1, N2, requests per iteration)
    "getset16": (300, 1300, 16),
    "pipe16": (1000, 3000, 16),
    "multi10": (1000, 3000, 1),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(port, deadline=30.0):
    end = time.monotonic() + deadline
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def read_until(s, end, count):
    buf = b""
    while buf.count(end) < count:
        chunk = s.recv(1 << 20)
        if not chunk:
            raise RuntimeError("server closed the connection")
        buf += chunk


def drive(port, workload, iterations):
    rnd = random.Random(1)
    s = connect(port)
    for batch in range(KEYS // 100):
        s.sendall(
            b"".join(
                b"set key:%d 0 0 %d\r\n%s\r\n" % (batch * 100 + i, len(VALUE), VALUE)
                for i in range(100)
            )
        )
        read_until(s, b"STORED\r\n", 100)
    conns = [s] + [connect(port) for _ in range(15)] if workload == "getset16" else [s]
    for _ in range(iterations):
        if workload == "pipe16":
            s.sendall(b"".join(b"get key:%d\r\n" % rnd.randrange(KEYS) for _ in range(16)))
            read_until(s, b"END\r\n", 16)
        elif workload == "multi10":
            keys = b" ".join(b"key:%d" % rnd.randrange(KEYS) for _ in range(10))
            s.sendall(b"get " + keys + b"\r\n")
            read_until(s, b"END\r\n", 1)
        else:
            ends = []
            for c in conns:
                key = rnd.randrange(KEYS)
                if rnd.random() < 0.1:
                    c.sendall(b"set key:%d 0 0 %d\r\n%s\r\n" % (key, len(VALUE), VALUE))
                    ends.append(b"STORED\r\n")
                else:
                    c.sendall(b"get key:%d\r\n" % key)
                    ends.append(b"END\r\n")
            for c, end in zip(conns, ends):
                buf = b""
                while not buf.endswith(end):
                    buf += c.recv(65536)
    for c in conns:
        c.close()


SHIM = """
#define _GNU_SOURCE
#include <sys/resource.h>
int setrlimit(__rlimit_resource_t r, const struct rlimit *l) { (void)r; (void)l; return 0; }
int setrlimit64(__rlimit_resource_t r, const struct rlimit64 *l) { (void)r; (void)l; return 0; }
"""


def memcached_shim(workdir):
    source = os.path.join(workdir, "norlimit.c")
    shim = os.path.join(workdir, "norlimit.so")
    with open(source, "w") as f:
        f.write(SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", shim, source], check=True)
    return shim


def count(binary, workload, iterations, workdir, shim=None):
    port = free_port()
    # A file of its own: memcached, running as nobody, cannot write over root's.
    out = tempfile.mktemp(prefix=f"callgrind.{workload}.{iterations}.", dir=workdir)
    listen = ["-p", str(port), "-U", "0", "-l", "127.0.0.1", "-t", "1", "-m", "64"]
    env, become = None, None
    if shim is None:
        toggle = "std::sys::backtrace::__rust_begin_short_backtrace*"
        options = ["-o", "no_lru_crawler"]
    else:
        env = dict(os.environ, LD_PRELOAD=shim)
        toggle = "worker_libevent"
        options = ["-o", "no_lru_crawler,no_lru_maintainer"]
        if os.geteuid() == 0:
            # As nobody from the start: memcached refuses to run as root without -u, and
            # with -u it could no longer write callgrind's file, which root opened.
            nobody = pwd.getpwnam("nobody")

            def become():
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)

    server = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            f"--toggle-collect={toggle}",
            f"--callgrind-out-file={out}",
            binary,
        ]
        + listen
        + options,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        preexec_fn=become,
    )
    try:
        drive(port, workload, iterations)
    finally:
        time.sleep(0.5)
        server.send_signal(2)
        server.wait(timeout=60)
    with open(out) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binaries", nargs="+", help="memcrab binaries to compare")
    ap.add_argument("--memcached", help="a memcached binary to count as well, last")
    ap.add_argument("--only", default=",".join(WORKLOADS), help="workloads, comma-separated")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is needed (apt-get install valgrind)")
    names = args.only.split(",")
    for name in names:
        if name not in WORKLOADS:
            sys.exit(f"unknown workload {name}; known: {', '.join(WORKLOADS)}")
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        # memcached may run as nobody: it writes callgrind's files here.
        os.chmod(workdir, 0o777)
        servers = [(binary, None) for binary in args.binaries]
        if args.memcached:
            servers.append((args.memcached, memcached_shim(workdir)))
        for binary, shim in servers:
            for name in names:
                n1, n2, per = WORKLOADS[name]
                low = count(binary, name, n1, workdir, shim)
                high = count(binary, name, n2, workdir, shim)
                results[(binary, name)] = (high - low) / ((n2 - n1) * per)
                print(f"{binary:40} {name:9} {results[(binary, name)]:9,.0f} instructions/request",
                      flush=True)
    if len(servers) > 1:
        base = servers[-1][0]
        print(f"\nratios against {base}:")
        for binary, _ in servers[:-1]:
            ratios = "  ".join(
                f"{name} {results[(binary, name)] / results[(base, name)]:.3f}x" for name in names
            )
            print(f"  {binary}: {ratios}")


if __name__ == "__main__":
    main()
