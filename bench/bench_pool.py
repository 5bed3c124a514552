"""Benchmark: the warm pool against its floors, side by side in one run.

1. ``0 → N ready`` on the simulated cloud (its own process, default lifecycle delays): the reconciler (one
   round every ``--tick-s``) plus the Layer 3 port sweep (same tick) from desired 0 to N instances ready,
   against the provider's own provisioning time for one instance (rent, then poll ``show`` +
   ``/system_stats`` every tick until ComfyUI answers: the floor no control plane can beat at that tick).
2. Client-lease grant latency p50/p99 with ``--clients`` threads (own Redis connection each) looping
   grant → release over ``--instances`` ready records, against a bare ``SET NX PX`` + ``DEL`` round trip by
   the same threads in the same run. Checked on the way: no instance held twice at once, every fence unique.

    .venv/bin/python bench/bench_pool.py [--ready 20] [--tick-s 0.25] [--clients 50] [--instances 100]
                                         [--ops 40]
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402

from tests.fixtures.redis_server import start_redis_server  # noqa: E402
from vastkeep.core.errors import LeaseBusy  # noqa: E402
from vastkeep.core.settings import Secret, load_settings  # noqa: E402
from vastkeep.pool import PoolBook, PoolLeases, Reconciler  # noqa: E402
from vastkeep.ports import flow as port_flow  # noqa: E402
from vastkeep.ports.probe import ProbeConfig  # noqa: E402
from vastkeep.ports.validator import PortValidator  # noqa: E402
from vastkeep.providers.vast import VastClient  # noqa: E402
from vastkeep.sim.process import spawn  # noqa: E402
from vastkeep.state import EventLog, InstanceRecord, Keys, LeaseManager, StateStore, connect  # noqa: E402
from vastkeep.tokens import vast_client  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ── 1. 0 → N ready ───────────────────────────────────────────────────────────
def provider_floor(sim: Any, tick_s: float) -> float:
    """One instance rented by hand and polled every tick until ComfyUI answers: the provider's own time."""
    with VastClient(Secret(sim.api_key), sim.vast_api_url, timeout_s=(2.0, 10.0)) as vast:
        offer = vast.search_offers({"rentable": {"eq": True}, "direct_port_count": {"gte": 1}})[-1]
        start = time.monotonic()
        iid = vast.rent(offer.id, image="floor", label="floor:0")
        while True:
            vi = vast.show_instance(iid)
            port = vi.host_port(8188)
            if vi.public_ip and port:
                try:
                    if requests.get(f"http://{vi.public_ip}:{port}/system_stats", timeout=1).ok:
                        break
                except requests.RequestException:
                    pass
            time.sleep(tick_s)
        took = time.monotonic() - start
        vast.destroy(iid)
        return took


def zero_to_ready(sim: Any, redis_url: str, want: int, tick_s: float) -> tuple[float, int]:
    client = connect(redis_url)
    client.flushdb()
    keys = Keys()
    settings = load_settings({**sim.env(), "WARM_POOL_MIN_RELIABILITY": "0.85", "WARM_POOL_MAX_DPH": "5",
                              "WARM_POOL_MAX_SPEND_DPH": "1000"}, env_file=False)
    store = StateStore(client, keys)
    events = EventLog(client, keys)
    leases = LeaseManager(client, keys)
    validator = PortValidator(ProbeConfig(tcp_timeout_s=1.0, http_timeout_s=1.0, allow_loopback=True),
                              concurrency=200)
    store.set_desired_size(want)
    start = time.monotonic()
    rounds = 0
    with vast_client(settings, store, events=events) as vast:
        book = PoolBook(client, keys, settings.warm_pool_name)
        rc = Reconciler(settings, store, events, leases, book, vast)
        while True:
            rc.run()
            port_flow.validate_pool(store, events, validator, vast=vast, leases=leases)
            rounds += 1
            if sum(1 for r in store.list_instances() if r.status == "ready") >= want:
                return time.monotonic() - start, rounds
            time.sleep(tick_s)


# ── 2. lease grant latency ───────────────────────────────────────────────────
def lease_latency(redis_url: str, clients: int, instances: int, ops: int) -> dict[str, Any]:
    setup = connect(redis_url)
    setup.flushdb()
    store = StateStore(setup, Keys())
    for i in range(instances):  # validated "after" any lease end: released instances are grantable again
        store.put_instance(InstanceRecord(str(1000 + i), status="ready", label=f"vastkeep:default:{i}",
                                          connection_url=f"http://127.0.0.1:{20000 + i}",
                                          port_validation={"success": True, "checked_at": "9999-12-31"}))
    held: set[str] = set()
    fences: list[int] = []
    lock = threading.Lock()
    grant_ms: list[float] = []
    nx_ms: list[float] = []
    problems: list[str] = []
    busy = [0]
    barrier = threading.Barrier(clients)

    def leaser(n: int) -> None:
        conn = connect(redis_url)
        pool = PoolLeases(conn, Keys(), "default", "vastkeep")
        barrier.wait()
        for _ in range(ops):
            t0 = time.perf_counter()
            try:
                grant = pool.grant(600, f"bench-{n}")
            except LeaseBusy:
                with lock:
                    busy[0] += 1
                continue
            took = (time.perf_counter() - t0) * 1000
            with lock:
                grant_ms.append(took)
                fences.append(grant.fence)
                if grant.instance_id in held:
                    problems.append(f"instance {grant.instance_id} leased twice")
                held.add(grant.instance_id)
            time.sleep(random.uniform(0, 0.002))
            with lock:
                held.discard(grant.instance_id)
            pool.release(grant.lease_id)

    def setnx(n: int) -> None:
        conn = connect(redis_url)
        barrier.wait()
        for i in range(ops):
            key = f"bench:nx:{n}:{i % 8}"
            t0 = time.perf_counter()
            conn.set(key, uuid.uuid4().hex, nx=True, px=60_000)
            took = (time.perf_counter() - t0) * 1000
            with lock:
                nx_ms.append(took)
            conn.delete(key)

    for fn in (leaser, setnx):
        threads = [threading.Thread(target=fn, args=(n,)) for n in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        barrier.reset()
    return {"grant_p50": pct(grant_ms, 0.5), "grant_p99": pct(grant_ms, 0.99), "nx_p50": pct(nx_ms, 0.5),
            "nx_p99": pct(nx_ms, 0.99), "grants": len(grant_ms), "busy": busy[0], "problems": problems,
            "fences_unique": len(fences) == len(set(fences)), "mean_grant": statistics.mean(grant_ms)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ready", type=int, default=20)
    ap.add_argument("--tick-s", type=float, default=0.25)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--ops", type=int, default=40)
    args = ap.parse_args()
    server = start_redis_server()
    logging.basicConfig(level=logging.ERROR)
    sim = spawn()
    try:
        floor = provider_floor(sim, args.tick_s)
        took, rounds = zero_to_ready(sim, server.url, args.ready, args.tick_s)
        print(f"0 -> {args.ready} ready: {took:.2f} s ({rounds} ticks of {args.tick_s} s); "
              f"provider floor for one instance: {floor:.2f} s; overhead {took - floor:+.2f} s "
              f"({took / floor:.2f}x)")
        lat = lease_latency(server.url, args.clients, args.instances, args.ops)
        print(f"lease grant, {args.clients} clients over {args.instances} instances: "
              f"p50 {lat['grant_p50']:.2f} ms, p99 {lat['grant_p99']:.2f} ms "
              f"({lat['grants']} grants, {lat['busy']} busy); bare SET NX: p50 {lat['nx_p50']:.2f} ms, "
              f"p99 {lat['nx_p99']:.2f} ms; ratio p50 {lat['grant_p50'] / lat['nx_p50']:.1f}x, "
              f"p99 {lat['grant_p99'] / lat['nx_p99']:.1f}x")
        print(f"double leases: {len(lat['problems'])}; fences unique: {lat['fences_unique']}")
        return 0 if not lat["problems"] and lat["fences_unique"] else 1
    finally:
        sim.stop()
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
