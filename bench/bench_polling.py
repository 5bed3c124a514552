"""Benchmark: Layer 5 adaptive polling of 100 / 1,000 / 10,000 instances on one host, real processes.

Per pool size: the simulated cloud (its own process) with N running instances labelled ``vastkeep:bench``
(one ComfyUI listener each), a private redis-server, and the product's ``celery -A worker worker`` (prefork,
concurrency 2) + ``celery -A worker beat`` as subprocesses. The records are discovered from the provider
listing, then put in a mix of states (85 % ready idle, 10 % ready leased, 3 % loading, 2 % offline/exited/
outbid/OCI error at the provider), and their first due times are spread over their intervals (steady state,
not a thundering herd). After a warm-up, one window is measured:

* lateness of polls against their due time (p50 / p99, from the dispatcher's histogram in ``poll:stats``;
  bucket upper bounds, so "≤ 0.1 s" means the true value lies at or below it);
* Vast.ai calls per minute (the poller's own counters, cross-checked with the simulator's request log);
* CPU seconds of the whole system (worker processes, beat, Redis) per 1,000 polls, against a bare asyncio
  loop (redis.asyncio) doing the same Redis reads and writes per poll, measured in the same run;
* at the largest size, the time from the provider reporting ``offline`` to our ``failed``, against its bound
  (one active interval + the snapshot age).

    .venv/bin/python bench/bench_polling.py [--sizes 100,1000,10000] [--window 60] [--warmup 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import redis  # noqa: E402
import redis.asyncio as aredis  # noqa: E402

from bench.support import start_redis_server  # noqa: E402
from vastkeep.core.settings import Secret, load_settings  # noqa: E402
from vastkeep.polling import PollPolicy, PollSchedule, ProviderSnapshot  # noqa: E402
from vastkeep.polling.flow import LATENESS_BOUNDS_S  # noqa: E402
from vastkeep.providers.vast import VastClient  # noqa: E402
from vastkeep.sim.process import spawn  # noqa: E402
from vastkeep.state import Keys, StateStore  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
FAULTS = ("offline", "exited", "outbid", "error")


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return out


class System:
    """The worker + beat subprocesses of one pool size (own session each; stopped by pid/group)."""

    def __init__(self, env: dict[str, str], home: Path) -> None:
        py = sys.executable
        log = open(home / "system.log", "ab")  # noqa: SIM115 - closed in stop()
        self.log = log
        celery = [py, "-m", "celery", "-A", "worker"]
        worker = celery + ["worker", "-P", "prefork", "-c", "2", "-n", f"bench-{os.getpid()}@localhost",
                           "-Q", "vastkeep.control,vastkeep.ssh", "--without-mingle", "--without-gossip",
                           "-l", "WARNING"]
        beat = celery + ["beat", "-s", str(home / "beat-schedule"), "-l", "WARNING"]
        self.worker = subprocess.Popen(worker, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.beat = subprocess.Popen(beat, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def cpu(self) -> float:
        return sum(cpu_s(p) for p in [self.worker.pid, *children_of(self.worker.pid), self.beat.pid])

    def stop(self) -> None:
        for proc in (self.beat, self.worker):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        self.log.close()


def stats(r: redis.Redis, keys: Keys) -> dict[str, float]:
    return {k: float(v) for k, v in r.hgetall(keys.poll_stats()).items()}


def percentile_bound(delta: dict[str, float], q: float) -> str:
    names = [f"late_le_{b}" for b in LATENESS_BOUNDS_S] + [f"late_gt_{LATENESS_BOUNDS_S[-1]}"]
    counts = [delta.get(n, 0.0) for n in names]
    total = sum(counts)
    if not total:
        return "n/a"
    seen = 0.0
    for name, c in zip(names, counts, strict=True):
        seen += c
        if seen >= q * total:
            return ("≤ " + name[len("late_le_"):] + " s") if name.startswith("late_le_") else "> 30 s"
    return "n/a"


def seed_mix(store: StateStore, sim: Any, policy: PollPolicy, rng: random.Random) -> dict[str, list[str]]:
    """Records in the mix of states, their first due times spread over their intervals."""
    records = store.list_instances()
    now = time.time()
    groups: dict[str, list[str]] = {"ready": [], "leased": [], "loading": [], "fault": []}
    due: dict[str, float] = {}
    for k, rec in enumerate(records):
        share = k % 100
        group = "ready" if share < 85 else "leased" if share < 95 else "loading" if share < 98 else "fault"
        groups[group].append(rec.instance_id)
        if group in ("ready", "leased"):
            port = next(iter(rec.ports.values()), None)
            url = f"http://{rec.public_ip}:{port}"
            changes = {"status": "ready", "connection_url": url,
                       "port_validation": {"success": True, "connection_url": url}}
            if group == "leased":
                changes |= {"leased_until": now + 3600, "lease_owner": "bench-client"}
            store.update_instance(rec.instance_id, changes)
            interval = policy.poll_idle_interval_s if group == "ready" else policy.poll_active_interval_s
        else:
            interval = policy.poll_active_interval_s
        due[rec.instance_id] = now + rng.uniform(0, interval)
    for iid, fault in zip(groups["fault"], FAULTS * len(groups["fault"]), strict=False):
        sim.control.set_state(int(iid), fault)
    store.redis.zadd(store.keys.poll_due(), due)
    store.redis.sadd(store.keys.poll_active(), *(groups["leased"] + groups["loading"]))
    return groups


async def bare_loop(url: str, keys: Keys, polls: int, batch: int = 200) -> None:
    """The same Redis reads/writes per poll as the dispatcher, with none of the product around them:
    claim (ZRANGEBYSCORE + ZADD), read records (MGET) and snapshot rows (HMGET), reschedule (ZADD),
    last poll (HSET)."""
    r = aredis.Redis.from_url(url)
    done = 0
    while done < polls:
        now = time.time()
        ids = await r.zrangebyscore(keys.poll_due(), "-inf", "+inf", start=0, num=batch, withscores=True)
        names = [i for i, _ in ids]
        if not names:
            break
        await r.zadd(keys.poll_due(), dict.fromkeys(names, now + 15))
        raws = await r.mget([keys.instance(n.decode()) for n in names])
        rows = await r.hmget(keys.provider_snapshot(), names)
        for raw, row in zip(raws, rows, strict=True):
            if raw:
                json.loads(raw)
            if row:
                json.loads(row)
        async with r.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.poll_due(), {n: now + 180 + random.random() for n in names})
            pipe.hset(keys.poll_last(), mapping=dict.fromkeys(names, now))
            await pipe.execute()
        done += len(names)
    await r.aclose()


def run_size(n: int, args: argparse.Namespace, sim: Any, server: Any, home: Path) -> dict[str, Any]:
    r = redis.Redis.from_url(server.url, decode_responses=True)
    r.flushall()
    sim.control.reset()
    t0 = time.monotonic()
    created = sim.control.bulk_create(n, timeout_s=1800, label="vastkeep:bench", direct_8188=False,
                                      port_18188=False)
    bulk_s = time.monotonic() - t0
    keys = Keys()
    store = StateStore(r, keys)
    env_vars = {"WARM_POOL_POLL_ACTIVE_INTERVAL_MS": str(args.active_ms),
                "WARM_POOL_POLL_IDLE_INTERVAL_MS": str(args.idle_ms),
                "WARM_POOL_POLL_INTERVAL_MS": str(args.default_ms)}
    settings = load_settings(environ={**env_vars, "WARM_POOL_LABEL_PREFIX": "vastkeep"}, env_file=False)
    policy = PollPolicy.from_settings(settings)
    with VastClient(Secret(sim.api_key), sim.vast_api_url, timeout_s=(5.0, 120.0)) as vast:
        ProviderSnapshot(r, keys).refresh(vast, store, PollSchedule(r, keys), force=True)
    groups = seed_mix(store, sim, policy, random.Random(n))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST_", "WARM_POOL_", "REDIS_"))}
    env.update(sim.env())
    env.update(env_vars, REDIS_URL=server.url, VASTKEEP_HOME=str(home), PYTHONPATH=str(REPO),
               LOG_LEVEL="WARNING")
    system = System(env, home)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (r.exists(keys.lease("poll-dispatcher"))
                                                    and stats(r, keys).get("polls", 0) > 0):
            time.sleep(0.2)  # the dispatcher is up (beat's first ensure) and polling
        time.sleep(args.warmup)
        s0, c0, rc0 = stats(r, keys), system.cpu(), cpu_s(server.proc.pid)
        req0 = len(sim.control.requests_seen(service="vast"))
        t_start = time.monotonic()
        time.sleep(args.window)
        elapsed = time.monotonic() - t_start
        s1, c1, rc1 = stats(r, keys), system.cpu(), cpu_s(server.proc.pid)
        req1 = len(sim.control.requests_seen(service="vast"))
        delta = {k: s1.get(k, 0.0) - s0.get(k, 0.0) for k in s1}
        polls = int(delta.get("polls", 0))
        calls = delta.get("vast_list_calls", 0) + delta.get("vast_show_calls", 0)
        out = {"n": n, "created": len(created["ids"]), "bulk_s": round(bulk_s, 1),
               "window_s": round(elapsed, 1),
               "polls": polls, "polls_per_s": round(polls / elapsed, 1),
               "lateness_p50": percentile_bound(delta, 0.5), "lateness_p99": percentile_bound(delta, 0.99),
               "vast_calls_per_min": round(calls / elapsed * 60, 1),
               "sim_vast_requests_per_min": round((req1 - req0) / elapsed * 60, 1),
               "system_cpu_s": round(c1 - c0, 2), "redis_cpu_s": round(rc1 - rc0, 2),
               "stale_finishes": int(delta.get("stale_finishes", 0))}
        out["system_cpu_ms_per_1000_polls"] = round((c1 - c0 + rc1 - rc0) / max(polls, 1) * 1e6, 1)
        if args.offline and n == max(args.sizes):
            out |= offline_to_failed(store, sim, groups["ready"][:5], policy)
    finally:
        system.stop()
    if polls:
        b0, rb0 = cpu_s(os.getpid()), cpu_s(server.proc.pid)
        asyncio.run(bare_loop(server.url, keys, polls))
        bare = cpu_s(os.getpid()) - b0 + cpu_s(server.proc.pid) - rb0
        out["bare_cpu_ms_per_1000_polls"] = round(bare / polls * 1e6, 1)
        out["ratio"] = round(out["system_cpu_ms_per_1000_polls"]
                             / max(out["bare_cpu_ms_per_1000_polls"], 1e-9), 1)
    r.close()
    return out


def offline_to_failed(store: StateStore, sim: Any, ids: list[str], policy: PollPolicy) -> dict[str, Any]:
    """Set some ready idle instances offline at the provider; time until each record says failed."""
    t0 = time.time()
    for iid in ids:
        sim.control.host_offline(int(iid))
    took: dict[str, float] = {}
    deadline = t0 + policy.poll_active_interval_s + 60
    while len(took) < len(ids) and time.time() < deadline:
        for iid, rec in store.get_instances([i for i in ids if i not in took]).items():
            if rec.status == "failed":
                took[iid] = time.time() - t0
        time.sleep(0.1)
    worst = max(took.values()) if took else None
    bound = policy.poll_active_interval_s + 5.0  # one active interval + the snapshot age while active
    return {"offline_to_failed_max_s": round(worst, 2) if worst is not None else "not reached",
            "offline_to_failed_n": f"{len(took)}/{len(ids)}", "offline_bound_s": bound}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1000, 10000])
    p.add_argument("--window", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--active-ms", type=int, default=30000)
    p.add_argument("--idle-ms", type=int, default=180000)
    p.add_argument("--default-ms", type=int, default=120000)
    p.add_argument("--no-offline", dest="offline", action="store_false")
    args = p.parse_args(argv)
    server = start_redis_server()
    sim = spawn(["--seed", "5"], timeout_s=60)
    home = Path(tempfile.mkdtemp(prefix="vk-bench-poll-"))
    results = []
    try:
        for n in args.sizes:
            res = run_size(n, args, sim, server, home)
            results.append(res)
            print(json.dumps(res), flush=True)
    finally:
        sim.stop()
        server.stop()
    print("\n| instances | polls/s | lateness p50 | lateness p99 | Vast calls/min "
          "| system CPU ms / 1,000 polls | bare asyncio ms / 1,000 polls | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for res in results:
        print(f"| {res['n']:,} | {res['polls_per_s']} | {res['lateness_p50']} | {res['lateness_p99']} | "
              f"{res['vast_calls_per_min']} | {res['system_cpu_ms_per_1000_polls']} | "
              f"{res.get('bare_cpu_ms_per_1000_polls', 'n/a')} | {res.get('ratio', 'n/a')} |")
    big = results[-1] if results else {}
    if "offline_to_failed_max_s" in big:
        print(f"\noffline → failed at {big['n']:,} instances: worst {big['offline_to_failed_max_s']} s "
              f"({big['offline_to_failed_n']}), bound {big['offline_bound_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
