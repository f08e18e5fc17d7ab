"""Churn soak: values of random sizes (10 B - 512 KiB, log-uniform) set and read back
by three clients at ``-m 64``; the RSS, sampled every second, stays within the bound.

It runs for ``$MEMCRAB_SOAK_SECONDS`` (default 20, the CI run; 600 for the long run).
"""

import os
import time

from load import Helper
from support import default_buf_cap_mb, rss_bound
from wire import MiB

SOAK_SECONDS = float(os.environ.get("MEMCRAB_SOAK_SECONDS", "20"))
M_MB = 64
THREADS = 4
CLIENTS = 3
KEYS_PER_CLIENT = 2000  # about 100 MiB of values each: the cache evicts all along


def test_churn_soak(kind, start_server, figures):
    server = start_server("-m", M_MB, "-t", THREADS)
    bound = rss_bound(M_MB, default_buf_cap_mb(M_MB), CLIENTS + 1, THREADS)
    workers = [
        Helper("churn", server, seed, KEYS_PER_CLIENT, SOAK_SECONDS) for seed in range(CLIENTS)
    ]
    samples = []
    deadline = time.monotonic() + SOAK_SECONDS + 10
    try:
        while time.monotonic() < deadline and any(w.proc.poll() is None for w in workers):
            samples.append(server.rss())
            time.sleep(1.0)
        results = [w.result(timeout=10) for w in workers]
    finally:
        for worker in workers:
            worker.kill()
    counts = {name: sum(r["counts"][name] for r in results) for name in results[0]["counts"]}
    errors = [e for r in results for e in r["errors"]]
    over = [(i, rss) for i, rss in enumerate(samples) if rss > bound]
    figures("RSS peak / bound", f"{max(samples) / MiB:.1f} / {bound / MiB:.1f}", "MiB")
    figures("RSS samples", len(samples))
    figures("sets (out of memory) / hits / misses", "{set} ({set_oom}) / {hit} / {miss}".format(**counts))
    figures("MiB written", counts["bytes"] / MiB, "MiB")
    assert not errors, errors[:5]
    assert counts["hit"] > 0 and counts["set"] > 0
    assert not over, f"RSS over {bound / MiB:.0f} MiB at second {over[0][0]}: {over[0][1] / MiB:.0f} MiB"
    server.check_healthy()
