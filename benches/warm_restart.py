#!/usr/bin/env python3
"""Save and restore times of a warm restart (`-e`), for BENCHMARKS.md.

Fills a server with GIB gibibytes of values, stops it with SIGUSR1 (the save), starts it on
the same file (the restore), checks a sample of the items, and prints the times the server
logged. With --memcached, does the same with memcached's -e for comparison.

    python3 benches/warm_restart.py --gib 1 --dir /dev/shm      # tmpfs
    python3 benches/warm_restart.py --gib 8 --dir /var/tmp      # disk-backed
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, port):
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    t0 = time.monotonic()
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, time.monotonic() - t0
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"server exited: {proc.stderr.read()}")
            if time.monotonic() - t0 > 600:
                sys.exit("server did not start")
            time.sleep(0.01)


def fill(port, items, value_size):
    s = socket.create_connection(("127.0.0.1", port))
    value = b"v" * value_size
    batch = []
    size = 0
    for i in range(items):
        batch.append(b"set key:%d 0 0 %d noreply\r\n%s\r\n" % (i, value_size, value))
        size += value_size + 40
        if size > 4 << 20:
            s.sendall(b"".join(batch))
            batch, size = [], 0
    s.sendall(b"".join(batch) + b"mn\r\n")
    buf = b""
    while not buf.endswith(b"MN\r\n"):
        buf += s.recv(65536)
    s.close()


def count_items(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"stats\r\n")
    buf = b""
    while not buf.endswith(b"END\r\n"):
        buf += s.recv(65536)
    s.close()
    return int(re.search(rb"STAT curr_items (\d+)", buf).group(1))


def sample(port, items, value_size):
    s = socket.create_connection(("127.0.0.1", port))
    missing = 0
    for i in range(0, items, max(1, items // 1000)):
        s.sendall(b"get key:%d\r\n" % i)
        buf = b""
        while not (buf.endswith(b"END\r\n")):
            buf += s.recv(1 << 20)
        if buf == b"END\r\n":
            missing += 1
        else:
            assert buf == b"VALUE key:%d 0 %d\r\n%s\r\nEND\r\n" % (i, value_size, b"v" * value_size)
    s.close()
    return missing


def run(kind, binary, gib, value_size, directory):
    items = (gib << 30) // value_size
    mem_mb = int(gib * 1024 * 1.15) + 64
    port = free_port()
    path = os.path.join(directory, f"bench-{kind}-{os.getpid()}")
    for p in (path, path + ".meta", path + ".saving"):
        if os.path.exists(p):
            os.remove(p)
    cmd = [binary, "-p", str(port), "-U", "0", "-l", "127.0.0.1", "-m", str(mem_mb), "-e", path]
    if os.geteuid() == 0:
        cmd += ["-u", "root"]
    proc, _ = start(cmd, port)
    t0 = time.monotonic()
    fill(port, items, value_size)
    stored = count_items(port)
    fill_s = time.monotonic() - t0
    t0 = time.monotonic()
    proc.send_signal(signal.SIGUSR1)
    proc.wait(timeout=900)
    save_s = time.monotonic() - t0
    log1 = proc.stderr.read()
    size = os.path.getsize(path)
    # memcached refuses a restart within the second or two after its stop ("restart
    # incompatible due to setting for [stop_time]"): a pause like a pod's rescheduling.
    time.sleep(3)
    proc, restore_s = start(cmd, port)
    restored = count_items(port)
    missing = sample(port, items, value_size)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log2 = proc.stderr.read()
    for p in (path, path + ".meta"):
        if os.path.exists(p):
            os.remove(p)
    print(
        f"{kind:9} {gib} GiB of {value_size}-byte values in {directory}: {stored} items "
        f"(fill {fill_s:.1f} s), file {size / (1 << 30):.2f} GiB; "
        f"stop-to-exit {save_s:.2f} s, start-to-serving {restore_s:.2f} s; "
        f"{restored} items back, {missing} of the sample missing"
    )
    for line in (log1 + log2).splitlines():
        if re.search(r"saved|restored|restart", line):
            print(f"          log: {line}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=int, default=1)
    ap.add_argument("--value-size", type=int, default=1000)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--memcrab", default=os.path.join(ROOT, "target/release/memcrab"))
    ap.add_argument("--memcached", default=None, help="also measure this memcached's -e")
    args = ap.parse_args()
    run("memcrab", args.memcrab, args.gib, args.value_size, args.dir)
    if args.memcached:
        run("memcached", args.memcached, args.gib, args.value_size, args.dir)


if __name__ == "__main__":
    main()
