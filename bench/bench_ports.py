"""Benchmark: the production port sweep of a whole simulated pool vs a thread pool of ``requests``.

Starts the simulated cloud (``python -m vastkeep.sim``, its own process, loopback only, SSH off) and a
private ``redis-server`` (free loopback port), rents N running instances with all three ComfyUI candidates
(direct :8188, ``8188/tcp``, ``18188/tcp``), black-holes every path of a share of them (connects time out),
stores one ``loading`` record per instance without an address (as the pool does right after renting), then
times, in this one process and one run, at full size each:

1. **vastkeep**: ``vastkeep.ports.flow.validate_pool`` exactly as the ``vastkeep.ports.validate_pool`` task
   calls it: the fenced ``ports-sweep`` lease, one ``list_instances`` through the production Vast.ai client
   (``vastkeep.tokens.vast_client``), the address writes, the probes at the **default**
   ``PORT_PROBE_CONCURRENCY`` with the default deadlines (``PortValidator.from_settings``), and every verdict
   written to the store (events included). Run twice: the first sweep also writes every address, the second
   is the steady state of a poll.
2. **baseline**: what a capable user writes without vastkeep: ``requests.get(/instances)``, then a
   ``ThreadPoolExecutor`` of ``requests.get(http://ip:port/system_stats, timeout=(tcp, http))`` over every
   instance × candidate, the best passing candidate per instance (the guide's priority), one plain ``SET``
   of the verdict per instance (pipelined) under a ``SET NX PX`` lock. Two pool sizes: ``--threads``
   (default 100, a common choice) and as many threads as vastkeep's bound (same concurrency, one OS thread
   per socket).

Deadlines default to the product's (``PORT_TCP_TIMEOUT_MS`` 5 s, ``PORT_HTTP_TIMEOUT_MS`` 10 s) for both.
Printed: wall time, verdict tallies (they must agree) and the ratios baseline / vastkeep.

    .venv/bin/python -m bench.bench_ports [--instances 1000] [--blackholed 0.2] [--threads 100]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support import start_redis_server  # noqa: E402
from vastkeep.core.settings import Settings, load_settings  # noqa: E402
from vastkeep.ports import flow as port_flow  # noqa: E402
from vastkeep.ports.validator import PortValidator  # noqa: E402
from vastkeep.sim.process import spawn  # noqa: E402
from vastkeep.state.events import EventLog  # noqa: E402
from vastkeep.state.keys import Keys  # noqa: E402
from vastkeep.state.leases import LeaseManager  # noqa: E402
from vastkeep.state.store import InstanceRecord, StateStore  # noqa: E402
from vastkeep.tokens import vast_client  # noqa: E402

DEFAULTS = Settings()
DEFAULT_BOUND = DEFAULTS.port_probe_concurrency
PRIORITY = ("direct", "mapped", "fallback")


def production_sweep(settings: Settings, r: redis.Redis) -> tuple[float, dict[str, Any]]:
    """One ``validate_pool`` as the task runs it; returns (wall s, its result)."""
    store, events, leases = StateStore(r, Keys()), EventLog(r, Keys()), LeaseManager(r, Keys())
    t0 = time.perf_counter()
    vast = vast_client(settings, store)
    try:
        result = port_flow.validate_pool(store, events, PortValidator.from_settings(settings), vast=vast,
                                         leases=leases)
    finally:
        if vast is not None:
            vast.close()
    return time.perf_counter() - t0, result


def user_candidates(inst: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, URL) in the guide's priority: ip:8188 if reported, mapped 8188/tcp, fallback 18188/tcp."""
    ip = str(inst.get("public_ipaddr") or "").strip()
    ports = inst.get("ports") or {}
    out = []
    if "8188/tcp" in ports:
        out.append(("direct", f"http://{ip}:8188/system_stats"))
    for kind, key in (("mapped", "8188/tcp"), ("fallback", "18188/tcp")):
        binding = ports.get(key)
        if binding:
            out.append((kind, f"http://{ip}:{binding[0]['HostPort']}/system_stats"))
    return out


def baseline_sweep(vast_url: str, api_key: str, r: redis.Redis, threads: int, tcp_s: float,
                   http_s: float) -> tuple[float, Counter]:
    """The thread-pool sweep a user would write; returns (wall s, verdict tally)."""
    t0 = time.perf_counter()
    assert r.set("bench:user-sweep-lock", "me", nx=True, px=600_000)
    instances = requests.get(f"{vast_url}/instances", params={"owner": "me"}, timeout=(5, 60),
                             headers={"Authorization": f"Bearer {api_key}"}).json()["instances"]
    jobs = [(str(inst["id"]), kind, url) for inst in instances for kind, url in user_candidates(inst)]

    def probe(job: tuple[str, str, str]) -> tuple[str, str, str]:
        iid, kind, url = job
        try:
            resp = requests.get(url, timeout=(tcp_s, http_s))
            return iid, kind, "ok" if resp.status_code == 200 and "system" in resp.json() else "failed"
        except requests.exceptions.ConnectTimeout:
            return iid, kind, "timeout"
        except (requests.RequestException, ValueError):
            return iid, kind, "failed"

    with ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(probe, jobs))
    by_iid: dict[str, dict[str, str]] = {}
    for iid, kind, outcome in outcomes:
        by_iid.setdefault(iid, {})[kind] = outcome
    tally: Counter = Counter()
    with r.pipeline(transaction=False) as pipe:
        for iid, seen in by_iid.items():
            best = next((k for k in PRIORITY if seen.get(k) == "ok"), None)
            verdict = "ok" if best else ("firewall" if set(seen.values()) == {"timeout"} else "failed")
            tally[verdict] += 1
            pipe.set(f"bench:verdict:{iid}", json.dumps({"success": best is not None, "kind": best,
                                                          "outcomes": seen}))
        pipe.execute()
    r.delete("bench:user-sweep-lock")
    return time.perf_counter() - t0, tally


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--blackholed", type=float, default=0.2,
                   help="share of instances whose paths all time out")
    p.add_argument("--tcp-ms", type=int, default=DEFAULTS.port_tcp_timeout_ms, help="TCP connect deadline")
    p.add_argument("--http-ms", type=int, default=DEFAULTS.port_http_timeout_ms, help="HTTP deadline")
    p.add_argument("--threads", type=int, default=100, help="the baseline's usual thread-pool size")
    args = p.parse_args(argv)
    logging.getLogger("vastkeep").setLevel(logging.ERROR)  # 1,000 guide log lines are not the point
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    rs = start_redis_server()
    sim = spawn(["--ssh-backend", "off"])
    try:
        r = redis.Redis.from_url(rs.url, decode_responses=True)
        t0 = time.perf_counter()
        ids = sim.control.bulk_create(args.instances, direct_8188=True, port_18188=True)["ids"]
        n_bh = round(len(ids) * args.blackholed)
        step = len(ids) / n_bh if n_bh else 0
        black = {ids[int(i * step)] for i in range(n_bh)}
        for iid in black:
            sim.control.blackhole(iid)
        store = StateStore(r, Keys())
        for iid in ids:
            store.create_instance(InstanceRecord(instance_id=str(iid), status="loading"))
        setup_s = time.perf_counter() - t0
        info = sim.info
        settings = load_settings(environ={
            "REDIS_URL": rs.url, "VAST_API_KEY": info["api_key"], "VAST_API_URL": info["vast_api_url"],
            "VASTKEEP_SIMULATED": "1", "PORT_TCP_TIMEOUT_MS": str(args.tcp_ms),
            "PORT_HTTP_TIMEOUT_MS": str(args.http_ms)}, env_file=False)
        bound = PortValidator.from_settings(settings).concurrency
        tcp_s, http_s = args.tcp_ms / 1000, args.http_ms / 1000

        first_s, first = production_sweep(settings, r)
        url, key = info["vast_api_url"], info["api_key"]
        user_s, user_tally = baseline_sweep(url, key, r, args.threads, tcp_s, http_s)
        same_s, same_tally = baseline_sweep(url, key, r, bound, tcp_s, http_s)
        steady_s, steady = production_sweep(settings, r)
    finally:
        sim.stop()
        sim.remove_state_dir()
        rs.stop()

    n_probes = sum(3 for _ in ids)
    print(f"setup: {len(ids)} instances rented and stored, {len(black)} black-holed "
          f"({3 * len(black)} probes), "
          f"in {setup_s:.2f}s; fd limit {hard}; {os.cpu_count()} CPUs; TCP {tcp_s:g}s, HTTP {http_s:g}s")
    print(f"{'run':<62}{'probes':>8}{'wall s':>9}{'passed':>8}{'firewall':>10}")
    rows = [
        (f"vastkeep validate_pool, bound {bound} (default), 1st sweep", first_s, first["passed"],
         first["firewall"]),
        (f"vastkeep validate_pool, bound {bound} (default), steady", steady_s, steady["passed"],
         steady["firewall"]),
        (f"baseline ThreadPoolExecutor({args.threads}) + requests.get", user_s, user_tally["ok"],
         user_tally["firewall"]),
        (f"baseline ThreadPoolExecutor({bound}) + requests.get", same_s, same_tally["ok"],
         same_tally["firewall"]),
    ]
    for name, took, passed, fw in rows:
        print(f"{name:<62}{n_probes:>8}{took:>9.2f}{passed:>8}{fw:>10}")
    print(f"ratio baseline({args.threads} threads) / vastkeep steady: {user_s / steady_s:.2f}x; "
          f"/ vastkeep 1st: {user_s / first_s:.2f}x")
    print(f"ratio baseline({bound} threads) / vastkeep steady: {same_s / steady_s:.2f}x; "
          f"/ vastkeep 1st: {same_s / first_s:.2f}x")
    healthy = len(ids) - len(black)
    agree = first["passed"] == steady["passed"] == user_tally["ok"] == same_tally["ok"] == healthy
    print(f"verdicts agree (passed = {len(ids) - len(black)} everywhere): {'yes' if agree else 'NO'}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
