"""Benchmark: worker processes against Vast.ai's per-endpoint gap, with and without the shared limiter.

Starts its own ``redis-server`` (``bench/support.py``) and the simulated cloud with a
minimum gap (``python -m vastkeep.sim --min-gap-ms``), then runs the same load three ways, each in
``--processes`` fresh OS processes (``spawn``) that wait on one barrier and then call ``list_instances()``
``--calls`` times:

- ``shared``: clients built the production way (``tokens.preflight.vast_client``): one Redis slot per
  endpoint and key for all processes (``VAST_API_MIN_GAP_MS`` = threshold + ``--margin-ms``);
- ``per-process``: the realistic alternative without shared state: each process spaces its own calls by
  the same gap (a local "next allowed time"), as a user would write it;
- ``none``: no pacing, only the client's retry (429 floor 0.5 s + jitter).

A negative ``--margin-ms`` sets the limiter's gap below the threshold: the case of a real threshold above
``VAST_API_MIN_GAP_MS``, where the first 429 (``endpoint threshold=N``) teaches every worker the larger gap.

Reported per variant: 429s the simulator answered, calls that failed after retries, wall time, and the
rate achieved against the ceiling of one call per threshold. Also the cost of one reservation (one Lua
call) against a bare ``SET`` on the same connection.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support import start_redis_server  # noqa: E402
from vastkeep.core.clock import SYSTEM_CLOCK  # noqa: E402
from vastkeep.core.errors import VastkeepError  # noqa: E402
from vastkeep.core.settings import load_settings  # noqa: E402
from vastkeep.providers.vast import VastClient  # noqa: E402
from vastkeep.sim.process import spawn  # noqa: E402
from vastkeep.state import Keys, SharedRateLimiter, StateStore, connect  # noqa: E402
from vastkeep.tokens.preflight import vast_client  # noqa: E402


class LocalPacer:
    """The baseline: each process keeps its own next-allowed time (no coordination between processes)."""

    def __init__(self, gap_s: float) -> None:
        self.gap = gap_s
        self.next_at = 0.0

    def gap_s(self, endpoint: str) -> float:
        return self.gap

    def learn(self, endpoint: str, threshold_s: float | None) -> float:
        if threshold_s is not None and threshold_s > self.gap:
            self.gap = threshold_s
        return self.gap

    def wait_turn(self, endpoint: str) -> float:
        now = SYSTEM_CLOCK.monotonic()
        wait = max(0.0, self.next_at - now)
        self.next_at = max(now, self.next_at) + self.gap
        SYSTEM_CLOCK.sleep(wait)
        return wait


def count_listings(client: VastClient, calls: int, barrier) -> tuple[int, int]:
    """Wait on ``barrier`` with the others, then ``calls`` listings: (succeeded, failed after the client's
    retries). The load of this bench and of ``tests/integration/test_vast_rate_limit.py``."""
    ok = failed = 0
    with client:
        barrier.wait(60)
        for _ in range(calls):
            try:
                client.list_instances()
                ok += 1
            except VastkeepError:
                failed += 1
    return ok, failed


def _worker(variant: str, env: dict[str, str], calls: int, barrier, out) -> None:
    logging.disable(logging.WARNING)  # the retry lines of 'none' would drown the table
    settings = load_settings(env, env_file=False)
    store = StateStore(connect(settings.redis_url), Keys("bench"))
    if variant == "per-process":
        client = VastClient(settings.vast_api_key, settings.vast_api_url,
                            pacer=LocalPacer(settings.vast_api_min_gap_s))
    else:
        client = vast_client(settings, store)
    out.put(count_listings(client, calls, barrier))


def run_variant(variant: str, sim, redis_url: str, gap_ms: int, processes: int, calls: int) -> dict:
    env = {"VAST_API_URL": sim.vast_api_url, "VAST_API_KEY": sim.api_key, "REDIS_URL": redis_url,
           "VAST_API_MIN_GAP_MS": str(0 if variant == "none" else gap_ms)}
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(processes + 1), ctx.Queue()
    before = sim.control.rate_limit()["refused"]
    procs = [ctx.Process(target=_worker, args=(variant, env, calls, barrier, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    barrier.wait(120)
    started = time.perf_counter()
    results = [out.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - started
    for p in procs:
        p.join(30)
    return {"variant": variant, "refused": sim.control.rate_limit()["refused"] - before,
            "ok": sum(r[0] for r in results), "failed": sum(r[1] for r in results), "wall_s": wall}


def reserve_cost(redis_url: str, n: int) -> tuple[float, float]:
    """Median µs of one reservation (Lua, Redis TIME) vs a bare SET, same connection."""
    client = connect(redis_url)
    lim = SharedRateLimiter(client, Keys("bench"), min_gap_s=1e-6)
    lua, bare = [], []
    for _ in range(n):
        t = time.perf_counter()
        lim.reserve("GET /instances", "fp")
        lua.append(time.perf_counter() - t)
        t = time.perf_counter()
        client.set("bench:bare", "1", px=1000)
        bare.append(time.perf_counter() - t)
    return statistics.median(lua) * 1e6, statistics.median(bare) * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--processes", type=int, default=4, help="worker processes")
    p.add_argument("--calls", type=int, default=10, help="list_instances calls per process")
    p.add_argument("--threshold-ms", type=int, default=200, help="the simulated minimum gap")
    p.add_argument("--margin-ms", type=int, default=100, help="limiter gap = threshold + margin")
    p.add_argument("--reserve-ops", type=int, default=2000, help="reservations timed for the cost line")
    args = p.parse_args(argv)
    gap_ms = args.threshold_ms + args.margin_ms

    server = start_redis_server()
    sim = spawn(["--ssh-backend", "off", "--min-gap-ms", str(args.threshold_ms)])
    try:
        sim.control.create_instance(running=True, ssh=False)
        rows = [run_variant(v, sim, server.url, gap_ms, args.processes, args.calls)
                for v in ("shared", "per-process", "none")]
        lua_us, bare_us = reserve_cost(server.url, args.reserve_ops)
    finally:
        sim.stop()
        sim.remove_state_dir()
        server.stop()

    total = args.processes * args.calls
    ceiling = 1000 / args.threshold_ms
    print(f"{os.cpu_count()} CPUs; {args.processes} processes x {args.calls} list_instances() = {total} "
          f"calls; simulated threshold {args.threshold_ms} ms per endpoint and key; limiter gap {gap_ms} ms")
    print(f"{'variant':<14}{'429s':>7}{'ok':>6}{'failed':>8}{'wall s':>9}{'calls/s':>9}{'of ceiling':>12}")
    for r in rows:
        rate = r["ok"] / r["wall_s"] if r["wall_s"] else 0.0
        print(f"{r['variant']:<14}{r['refused']:>7}{r['ok']:>6}{r['failed']:>8}{r['wall_s']:>9.2f}"
              f"{rate:>9.2f}{rate / ceiling:>11.0%}")
    print(f"one reservation (Lua + Redis TIME): {lua_us:.0f} us median; bare SET: {bare_us:.0f} us")
    shared = rows[0]
    if args.margin_ms < 0:  # the limiter's gap is below the threshold: it has to learn it from a 429
        print("goal: n/a (limiter gap below the threshold: the first 429s teach every worker the threshold)")
        return 0
    good = shared["refused"] == 0 and shared["failed"] == 0
    print(f"goal: shared limiter -> 0 x 429 and 0 failed calls: {'PASS' if good else 'FAIL'}")
    return 0 if good else 1


if __name__ == "__main__":
    raise SystemExit(main())
