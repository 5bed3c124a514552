"""Benchmark: the warm pool against its floors, side by side in one run.

1. ``0 → N ready`` on the simulated cloud (its own process, default lifecycle delays): the reconciler (one
   round every ``--tick-s``) plus the Layer 3 port sweep (same tick) from desired 0 to N instances ready,
   against the provider's own provisioning time for one instance (rent, then poll ``show`` +
   ``/system_stats`` every tick until ComfyUI answers: the floor no control plane can beat at that tick).
2. Client-lease grant latency p50/p99 with ``--clients`` threads (own Redis connection each) looping
   grant → release over ``--instances`` ready records, against a bare ``SET NX PX`` + ``DEL`` round trip by
   the same threads in the same run. Checked on the way: no instance held twice at once, every fence unique.

3. A ComfyUI crash → a different instance ready (``--crashes`` per mode, at the default
   ``WARM_POOL_UNHEALTHY_GRACE_MS`` unless ``--grace-ms``), woken by polling and left to the beat, against
   detection + one instance's provisioning.

    .venv/bin/python bench/bench_pool.py [--ready 20] [--tick-s 0.25] [--clients 50] [--instances 100]
                                         [--ops 40] [--crashes 3] [--grace-ms MS] [--only-crashes]
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

from bench.support import start_redis_server  # noqa: E402
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


# ── 3. a ComfyUI crash → a ready replacement ─────────────────────────────────
POLL_NOW = "vastkeep.polling.poll_instance"


class Transport:
    """What the workers do with the tasks the flows send, in this process (one thread per task run).

    The flows are the production ones (keepalive runner → ``on_lost`` → poll now; the poller's
    ``send`` for Layer 3, snapshot refreshes and the pool wake-up; the reconciler); only the Celery hop is
    replaced by a thread. ``wake=False`` drops the pool wake-up: the replacement then waits for the beat
    (what vastkeep did before the wake-up existed).
    """

    def __init__(self, settings: Any, client: Any, keys: Any, store: Any, events: Any, wake: bool) -> None:
        from vastkeep.polling import Poller, PollPolicy  # noqa: PLC0415

        self.settings, self.client, self.keys, self.store, self.events = settings, client, keys, store, events
        self.wake = wake
        self.policy = PollPolicy.from_settings(settings)
        probe = ProbeConfig(tcp_timeout_s=1.0, http_timeout_s=1.0, allow_loopback=True)
        self.validator = PortValidator(probe, concurrency=20)
        self.stopping = threading.Event()
        self.wakes = 0
        self.poller = Poller(store, self.policy, events=events, send=self.send,
                             vast=vast_client(settings, store, events=events))
        self._make_poller = lambda: Poller(store, self.policy, events=events, send=self.send,  # noqa: E731
                                           vast=vast_client(settings, store, events=events))

    def _thread(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        if not self.stopping.is_set():
            threading.Thread(target=fn, args=args, kwargs=kwargs, daemon=True).start()

    def send(self, name: str, kwargs: dict[str, Any]) -> None:
        if name == "vastkeep.polling.refresh":
            self._thread(lambda: self._make_poller().refresh(inline=True))
        elif name == "vastkeep.ports.validate_instance":
            self._thread(port_flow.validate_instance, self.store, self.events, self.validator,
                         kwargs["instance_id"])
        elif name == POLL_NOW:
            self.poller.request_poll(kwargs["instance_id"])
        elif name == "vastkeep.polling.confirm_absence":  # show about an unlisted instance, as a worker would
            self._thread(self._confirm, kwargs["instance_id"])
        elif name == "vastkeep.pool.reconcile" and self.wake:
            self.wakes += 1
            delay = max(0.0, float(kwargs["wake_at"]) - time.time())
            timer = threading.Timer(delay, self.reconcile, kwargs={"wake": True})
            timer.daemon = True
            timer.start()

    def _confirm(self, instance_id: str) -> None:
        from vastkeep.polling import confirm_absence  # noqa: PLC0415

        poller = self._make_poller()
        try:
            confirm_absence(self.client, self.keys, poller.vast, poller.schedule, instance_id)
        finally:
            poller.vast.close()

    def reconcile(self, wake: bool = False) -> None:
        if self.stopping.is_set():
            return
        with vast_client(self.settings, self.store, events=self.events) as vast:
            rc = Reconciler(self.settings, self.store, self.events, LeaseManager(self.client, self.keys),
                            PoolBook(self.client, self.keys, self.settings.warm_pool_name), vast)
            rc.run(wake=wake)

    def beat(self) -> None:
        while not self.stopping.wait(self.settings.warm_pool_reconcile_interval_s):
            self.reconcile()

    def start(self) -> None:
        from vastkeep.keepalive import KeepalivePolicy, RunnerConfig, run_shard  # noqa: PLC0415

        ka = RunnerConfig(shards=1, run_s=3600.0, lease_ttl_ms=15_000,
                          fast_path=self.settings.comfyui_keepalive_fast_path)
        self._thread(run_shard, redis=self.client, keys=self.keys, store=self.store, events=self.events,
                     shard=0, policy=KeepalivePolicy.from_settings(self.settings), config=ka,
                     on_lost=lambda iid, _f: self.send(POLL_NOW, {"instance_id": iid}))
        self._thread(self.poller.run, LeaseManager(self.client, self.keys), 3600.0, self.stopping.is_set)
        self._thread(self.beat)
        self._thread(self.reconcile)


def _ready_ids(store: Any) -> set[str]:
    return {r.instance_id for r in store.list_instances() if r.status == "ready"}


def _watched(client: Any, keys: Any, iid: str) -> bool:
    import json  # noqa: PLC0415

    raw = client.get(keys.keepalive(iid))
    return bool(raw) and int(json.loads(raw).get("total_successes") or 0) >= 1


def crash_to_replacement(sim: Any, redis_url: str, crashes: int, wake: bool,
                         grace_ms: int | None) -> list[dict[str, float]]:
    """Crash the ready instance's ComfyUI ``crashes`` times; per crash: detection (the keepalive's
    ``keepalive_lost_since``), shown lost (its status no longer ``ready``), the replacement rented, and a
    different instance ready. ``grace_ms`` None: the default ``WARM_POOL_UNHEALTHY_GRACE_MS`` (5 min); the
    crashed one then goes at the round after its replacement is ready (surplus), before the next crash."""
    client = connect(redis_url)
    client.flushdb()
    keys = Keys()
    grace = {} if grace_ms is None else {"WARM_POOL_UNHEALTHY_GRACE_MS": str(grace_ms)}
    settings = load_settings({**sim.env(), "WARM_POOL_MIN_RELIABILITY": "0.85", "WARM_POOL_MAX_DPH": "5",
                              "WARM_POOL_MAX_SPEND_DPH": "1000", **grace,
                              "COMFYUI_KEEPALIVE_SHARDS": "1", "WARM_POOL_DESIRED_SIZE": "1"}, env_file=False)
    store = StateStore(client, keys)
    events = EventLog(client, keys)
    store.set_desired_size(1)
    transport = Transport(settings, client, keys, store, events, wake)
    transport.start()
    out: list[dict[str, float]] = []
    try:
        for _ in range(crashes):
            deadline = time.monotonic() + 120
            while True:  # one ready instance, watched by the keepalive (its /ws held), nothing else left
                ready = _ready_ids(store)
                live = [r for r in store.list_instances() if r.status != "destroyed"]
                if len(ready) == 1 and len(live) == 1 and _watched(client, keys, next(iter(ready))):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pool did not settle: {[(r.instance_id, r.status) for r in live]}")
                time.sleep(0.05)
            time.sleep(1.0)  # the fast path's /ws opens beside the first ping
            victim = next(iter(ready))
            t0 = time.monotonic()
            sim.control.crash_comfy(int(victim))
            marks: dict[str, float] = {}
            while "ready" not in marks:
                now = time.monotonic() - t0
                rec = store.get_instance(victim)
                if "detect" not in marks and (rec is None or "keepalive_lost_since" in rec.extra):
                    marks["detect"] = now
                if "shown" not in marks and (rec is None or rec.status != "ready"):
                    marks["shown"] = now
                others = [r for r in store.list_instances() if r.instance_id != victim]
                if "rented" not in marks and others:
                    marks["rented"] = now
                if any(r.status == "ready" for r in others):
                    marks["ready"] = now
                if now > 120:
                    raise RuntimeError("no replacement within 120 s")
                time.sleep(0.02)
            out.append(marks)
    finally:
        transport.stopping.set()
    time.sleep(0.5)
    return out


def report_crashes(sim: Any, redis_url: str, args: Any, floor: float) -> None:
    """Part 3, both modes in this run: the replacement left to the beat, then woken by the polling flow.

    The replacement no longer waits for the grace (the crashed one stops counting at once), so the floor is
    detection + provisioning whatever the grace; the default grace is what is measured unless ``--grace-ms``.
    """
    grace = "default (5 min)" if args.grace_ms is None else f"{args.grace_ms} ms"
    for wake in (False, True):
        runs = crash_to_replacement(sim, redis_url, args.crashes, wake, args.grace_ms)
        detect = statistics.median(r["detect"] for r in runs)
        shown = max(r["shown"] for r in runs)
        ready = [r["ready"] for r in runs]
        base = detect + floor
        mode = "woken at once " if wake else "beat only     "
        rented = statistics.median(r["rented"] for r in runs)
        print(f"crash -> ready replacement, {mode}(grace {grace}): median {statistics.median(ready):.2f} s, "
              f"max {max(ready):.2f} s (shown lost after at most {shown:.2f} s, rented after median "
              f"{rented:.2f} s; {len(runs)} crashes); floor = detection {detect:.2f} s + provisioning "
              f"{floor:.2f} s = {base:.2f} s; ratio {statistics.median(ready) / base:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ready", type=int, default=20)
    ap.add_argument("--tick-s", type=float, default=0.25)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--ops", type=int, default=40)
    ap.add_argument("--crashes", type=int, default=3, help="crashes per mode (0: skip part 3)")
    ap.add_argument("--grace-ms", type=int, default=None,
                    help="WARM_POOL_UNHEALTHY_GRACE_MS for part 3 (default: the setting's default, 5 min)")
    ap.add_argument("--only-crashes", action="store_true", help="part 3 only (its floor is measured too)")
    args = ap.parse_args()
    server = start_redis_server()
    logging.basicConfig(level=logging.ERROR)
    sim = spawn()
    try:
        floor = provider_floor(sim, args.tick_s)
        if args.only_crashes:
            report_crashes(sim, server.url, args, floor)
            return 0
        took, rounds = zero_to_ready(sim, server.url, args.ready, args.tick_s)
        # Vast.ai wants VAST_API_MIN_GAP_MS between two rents with one key (the shared pacer keeps it):
        # N rents cannot start closer than (N - 1) gaps, whoever sends them: part of the floor for N.
        gap_s = load_settings(sim.env(), env_file=False).vast_api_min_gap_s
        paced = floor + (args.ready - 1) * gap_s
        print(f"0 -> {args.ready} ready: {took:.2f} s ({rounds} ticks of {args.tick_s} s); "
              f"provider floor for one instance: {floor:.2f} s ({took / floor:.2f}x); with the "
              f"{args.ready - 1} rent gaps of {gap_s:.2f} s Vast.ai asks for: {paced:.2f} s "
              f"({took / paced:.2f}x)")
        lat = lease_latency(server.url, args.clients, args.instances, args.ops)
        print(f"lease grant, {args.clients} clients over {args.instances} instances: "
              f"p50 {lat['grant_p50']:.2f} ms, p99 {lat['grant_p99']:.2f} ms "
              f"({lat['grants']} grants, {lat['busy']} busy); bare SET NX: p50 {lat['nx_p50']:.2f} ms, "
              f"p99 {lat['nx_p99']:.2f} ms; ratio p50 {lat['grant_p50'] / lat['nx_p50']:.1f}x, "
              f"p99 {lat['grant_p99'] / lat['nx_p99']:.1f}x")
        print(f"double leases: {len(lat['problems'])}; fences unique: {lat['fences_unique']}")
        if args.crashes:
            report_crashes(sim, server.url, args, floor)
        return 0 if not lat["problems"] and lat["fences_unique"] else 1
    finally:
        sim.stop()
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
