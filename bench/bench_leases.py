"""Benchmark: fenced leases and fenced record writes vs bare redis-py, side by side in one run.

Starts its own ``redis-server`` on a free loopback port (``bench/support.py``), then measures:

1. single client, interleaved rounds: ``LeaseManager.acquire`` / ``renew`` / ``release`` (Lua, owner- and
   fence-checked) against the bare ``SET NX PX`` / ``PEXPIRE`` / ``DEL`` a hand-rolled lock would use, and a
   fenced ``StateStore.update_instance(..., lease=...)`` (GET, JSON, compare-and-set in Lua under the lease)
   against a plain ``SET`` of the same JSON record. Ops/s for both and the slowdown ratio.
2. N threads (own connection each) contending for ONE lease: each winner checks in to a shared in-process
   gate, makes a fenced write, checks out, releases. Counted: overlapping holders (must be 0), fences that do
   not strictly increase (must be 0), fenced writes refused (must be 0), grants/s; the same loop with bare
   ``SET NX PX`` / ``DEL`` as the baseline.

    .venv/bin/python bench/bench_leases.py [--ops 2000] [--rounds 3] [--threads 8] [--contend-s 2.0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support import RedisServer, start_redis_server  # noqa: E402
from vastkeep.core.errors import VastkeepError  # noqa: E402
from vastkeep.state.connection import connect  # noqa: E402
from vastkeep.state.keys import Keys  # noqa: E402
from vastkeep.state.leases import Lease, LeaseManager  # noqa: E402
from vastkeep.state.store import InstanceRecord, StateStore  # noqa: E402

TTL_MS = 30_000


def bare_client(server: RedisServer) -> redis.Redis:
    """The baseline: a plain redis-py client (no retry object, no health checks)."""
    return redis.Redis(host="127.0.0.1", port=server.port, db=0, decode_responses=True)


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ── 1. single client ─────────────────────────────────────────────────────────
def single_client(server: RedisServer, ops: int, rounds: int) -> list[tuple[str, float, float]]:
    """[(operation, vastkeep ops/s, bare ops/s)]: the median of ``rounds`` interleaved rounds."""
    keys = Keys("bench")
    vk = connect(server.url)
    bare = bare_client(server)
    leases = LeaseManager(vk, keys)
    store = StateStore(vk, keys)
    owner = f"bench:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    names = [f"bench-{i}" for i in range(ops)]
    bare_keys = [f"bench:bare-lock:{i}" for i in range(ops)]
    rec = InstanceRecord(instance_id="4242", status="loading", vast_status="running", public_ip="203.0.113.7",
                         ports={"8188/tcp": 41234, "22/tcp": 41022}, label="bench", gpu_name="RTX 4090")
    store.put_instance(rec)
    rec_key = keys.instance("4242")
    bare_rec_key = "bench:bare-instance:4242"
    rec_dict = store.get_instance("4242").to_dict()  # type: ignore[union-attr]
    held: list[Lease] = []
    results: dict[str, tuple[list[float], list[float]]] = {
        k: ([], []) for k in ("acquire", "renew", "release", "fenced update_instance")}

    def vk_acquire() -> None:
        held.clear()
        for n in names:
            lease = leases.acquire(n, owner, TTL_MS)
            assert lease is not None
            held.append(lease)

    def vk_renew() -> None:
        for lease in held:
            assert leases.renew(lease)

    def vk_release() -> None:
        for lease in held:
            assert leases.release(lease)

    def bare_acquire() -> None:
        for k in bare_keys:
            assert bare.set(k, owner, nx=True, px=TTL_MS)

    def bare_renew() -> None:
        for k in bare_keys:
            assert bare.pexpire(k, TTL_MS)

    def bare_release() -> None:
        for k in bare_keys:
            assert bare.delete(k)

    lease_w = leases.acquire("bench-writer", owner, TTL_MS)
    assert lease_w is not None

    def vk_update() -> None:
        for i in range(ops):
            store.update_instance("4242", {"status": "ready" if i % 2 else "loading"}, lease=lease_w)

    def bare_update() -> None:
        for i in range(ops):
            rec_dict["status"] = "ready" if i % 2 else "loading"
            bare.set(bare_rec_key, json.dumps(rec_dict, sort_keys=True, separators=(",", ":")))

    pairs = {"acquire": (vk_acquire, bare_acquire), "renew": (vk_renew, bare_renew),
             "release": (vk_release, bare_release), "fenced update_instance": (vk_update, bare_update)}
    # warm-up: load the Lua scripts (EVALSHA cache), open both connections
    vk_acquire(), vk_release(), bare_acquire(), bare_release()
    for r in range(rounds):
        for op in ("acquire", "renew", "release", "fenced update_instance"):
            vk_fn, bare_fn = pairs[op]
            order = [(0, vk_fn), (1, bare_fn)] if r % 2 == 0 else [(1, bare_fn), (0, vk_fn)]
            for idx, fn in order:
                results[op][idx].append(ops / timed(fn))
    assert store.get_instance("4242").fence == lease_w.fence  # type: ignore[union-attr]
    vk.delete(rec_key, bare_rec_key)
    vk.close()
    bare.close()
    return [(op, statistics.median(v), statistics.median(b)) for op, (v, b) in results.items()]


# ── 2. contention ────────────────────────────────────────────────────────────
class Gate:
    """In-process witness of mutual exclusion: how many threads believe they hold the lease right now."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.overlaps = 0
        self.grants = 0
        self.last_fence = 0
        self.fence_regressions = 0
        self.write_refusals = 0
        self.errors: list[str] = []

    def enter(self, fence: int | None = None) -> None:
        with self.lock:
            self.inside += 1
            self.grants += 1
            if self.inside > 1:
                self.overlaps += 1
            if fence is not None:
                if fence <= self.last_fence:
                    self.fence_regressions += 1
                self.last_fence = fence

    def leave(self) -> None:
        with self.lock:
            self.inside -= 1


def contend_vastkeep(server: RedisServer, threads: int, seconds: float) -> Gate:
    """Every thread loops acquire → enter gate → fenced write → leave → release, until the deadline."""
    gate = Gate()
    keys = Keys("bench")
    setup = StateStore(connect(server.url), keys)
    setup.put_instance(InstanceRecord(instance_id="9000", status="ready"))
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def run(i: int) -> None:
        client = connect(server.url)
        mgr, store = LeaseManager(client, keys), StateStore(client, keys)
        owner = f"contender-{i}:{uuid.uuid4().hex[:8]}"
        start.wait()
        try:
            while time.perf_counter() < stop_at[0]:
                lease = mgr.acquire("contended", owner, TTL_MS)
                if lease is None:
                    continue
                gate.enter(lease.fence)
                try:
                    store.update_instance("9000", {"lease_owner": f"contender-{i}"}, lease=lease)
                except VastkeepError as exc:
                    with gate.lock:
                        gate.write_refusals += 1
                        gate.errors.append(type(exc).__name__)
                finally:
                    gate.leave()
                    mgr.release(lease)
        finally:
            client.close()

    run_threads(run, threads, seconds, start, stop_at)
    setup.redis.delete(keys.instance("9000"), keys.lease("contended"))
    setup.redis.close()
    return gate


def run_threads(run, threads: int, seconds: float, start: threading.Barrier, stop_at: list[float]) -> None:
    """Start ``threads`` contenders, release them together, let them run ``seconds``, join them."""
    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    stop_at[0] = time.perf_counter() + seconds
    start.wait()
    for w in workers:
        w.join(seconds + 30)


def contend_bare(server: RedisServer, threads: int, seconds: float) -> Gate:
    """The same loop with a hand-rolled lock: SET NX PX, plain SET of the record, DEL."""
    gate = Gate()
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]
    record = json.dumps(InstanceRecord(instance_id="9001", status="ready").to_dict())

    def run(i: int) -> None:
        client = bare_client(server)
        owner = f"contender-{i}"
        start.wait()
        try:
            while time.perf_counter() < stop_at[0]:
                if not client.set("bench:bare-contended", owner, nx=True, px=TTL_MS):
                    continue
                gate.enter()
                try:
                    client.set("bench:bare-instance:9001", record)
                finally:
                    gate.leave()
                    client.delete("bench:bare-contended")
        finally:
            client.close()

    run_threads(run, threads, seconds, start, stop_at)
    return gate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--ops", type=int, default=2000, help="operations per timed batch")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    p.add_argument("--threads", type=int, default=8, help="threads contending for one lease")
    p.add_argument("--contend-s", type=float, default=2.0, help="seconds of contention per variant")
    args = p.parse_args(argv)

    t_start = time.perf_counter()
    server = start_redis_server()
    try:
        single = single_client(server, args.ops, args.rounds)
        vk_gate = contend_vastkeep(server, args.threads, args.contend_s)
        bare_gate = contend_bare(server, args.threads, args.contend_s)
    finally:
        server.stop()

    print(f"redis-server on a private loopback port; {os.cpu_count()} CPUs; {args.ops} ops per batch, "
          f"median of {args.rounds} interleaved rounds; one connection each")
    print(f"{'operation (single client)':<30}{'vastkeep ops/s':>16}{'bare ops/s':>12}{'slowdown':>10}"
          f"   baseline")
    base_names = {"acquire": "SET NX PX", "renew": "PEXPIRE", "release": "DEL",
                  "fenced update_instance": "SET <json>"}
    for op, vk_ops, bare_ops in single:
        print(f"{op:<30}{vk_ops:>16,.0f}{bare_ops:>12,.0f}{bare_ops / vk_ops:>9.2f}x   {base_names[op]}")
    print()
    print(f"{args.threads} threads contending for one lease for {args.contend_s:.1f}s each "
          f"(own connection per thread)")
    print(f"{'variant':<34}{'grants':>8}{'grants/s':>10}{'overlaps':>10}{'fence regress':>15}"
          f"{'refused writes':>16}")
    for label, g in (("LeaseManager + fenced write", vk_gate), ("bare SET NX PX + SET + DEL", bare_gate)):
        regress = str(g.fence_regressions) if g is vk_gate else "n/a"
        refused = str(g.write_refusals) if g is vk_gate else "n/a"
        print(f"{label:<34}{g.grants:>8}{g.grants / args.contend_s:>10,.0f}{g.overlaps:>10}{regress:>15}"
              f"{refused:>16}")
    ratio = bare_gate.grants / vk_gate.grants if vk_gate.grants else float("inf")
    print(f"contended grants/s ratio bare / vastkeep: {ratio:.2f}x")
    ok = (vk_gate.overlaps == 0 and vk_gate.fence_regressions == 0 and vk_gate.write_refusals == 0
          and vk_gate.grants > 0)
    if vk_gate.errors:
        print(f"refused write errors: {sorted(set(vk_gate.errors))}")
    print(f"exactly one holder at a time (violations must be 0): {'PASS' if ok else 'FAIL'}; "
          f"total {time.perf_counter() - t_start:.1f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
