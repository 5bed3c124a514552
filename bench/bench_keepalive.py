"""Layer 4 at scale: shard runners vs a bare asyncio client doing the same pings, in the same run.

    .venv/bin/python bench/bench_keepalive.py [--count 4000] [--hang 0.1] [--interval-s 10]
                                              [--window-s 40] [--workers 1,2] [--crashes 20]

Setup: a private redis-server, the simulator with ``--count`` running ComfyUI instances (``--hang`` of
them hung), their records ``ready`` in Redis. Then, for each entry of ``--workers``, that many OS processes
each run one shard runner (shards = processes) for ``--window-s`` at ``--interval-s`` cadence, fast path on;
once, a
bare asyncio client in one process (one aiohttp session with keep-alive connections, one task per instance,
``GET /system_stats`` every interval with the same timeout) — what a capable user would write without
vastkeep's counters, events, Redis state or websockets. Printed: pings done, CPU seconds per 1,000 pings
(user + system of the pinging processes) and the ratio, ping lateness p50/p99 against the schedule, then crash
detection (``--crashes`` healthy instances crashed while held: time to ``connection-lost``) and black-hole
detection against its bound.

Sizes: each instance costs the simulator one listener plus two held connections (ping + ``/ws``), and the
runner two sockets; with this machine's 20,000 open files per process, one simulator holds about 6,000
instances with the fast path. A 10,000-instance run needs the simulator split over processes (not done here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402

from tests.fixtures.redis_server import start_redis_server  # noqa: E402
from vastkeep.core.clock import SystemClock  # noqa: E402
from vastkeep.core.settings import Secret  # noqa: E402
from vastkeep.keepalive import KeepalivePolicy, RunnerConfig, ShardRunner  # noqa: E402
from vastkeep.providers.vast import VastClient  # noqa: E402
from vastkeep.sim.process import spawn  # noqa: E402
from vastkeep.state.connection import connect  # noqa: E402
from vastkeep.state.events import EventLog  # noqa: E402
from vastkeep.state.keys import Keys  # noqa: E402
from vastkeep.state.store import InstanceRecord, StateStore  # noqa: E402


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _runner_proc(redis_url: str, shard: int, shards: int, policy: dict, window_s: float, out: Any) -> None:
    logging.getLogger("vastkeep").setLevel(logging.CRITICAL)  # thousands of guide lines are not the point
    r = connect(redis_url)
    runner = ShardRunner(redis=r, keys=Keys(), store=StateStore(r, Keys()), events=EventLog(r, Keys()),
                         shard=shard, policy=KeepalivePolicy(**policy), clock=SystemClock(),
                         config=RunnerConfig(shards=shards, run_s=window_s, refresh_s=5.0, fast_path=True))
    cpu0 = _cpu_s()
    result = asyncio.run(runner.run())
    out.put({**result, "cpu_s": _cpu_s() - cpu0})


def _bare_proc(urls: list[str], interval_s: float, timeout_s: float, window_s: float, out: Any) -> None:
    async def main() -> dict[str, Any]:
        pings, late = 0, []
        conn = aiohttp.TCPConnector(limit=0, keepalive_timeout=interval_s + timeout_s + 2)
        async with aiohttp.ClientSession(connector=conn) as session:
            stop = time.monotonic() + window_s

            async def one(url: str) -> None:
                nonlocal pings
                due = time.monotonic()
                while due < stop:
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    late.append(max(0.0, time.monotonic() - due))
                    try:
                        async with asyncio.timeout(timeout_s), session.get(url + "/system_stats") as resp:
                            body = await resp.read()
                            json.loads(body) if resp.status == 200 else None
                    except (TimeoutError, aiohttp.ClientError, ValueError):
                        pass
                    pings += 1
                    due += interval_s

            await asyncio.gather(*(one(u) for u in urls))
        late.sort()
        return {"pings": pings, "lateness_p50_s": late[len(late) // 2] if late else None,
                "lateness_p99_s": late[int(0.99 * len(late))] if late else None}

    cpu0 = _cpu_s()
    result = asyncio.run(main())
    out.put({**result, "cpu_s": _cpu_s() - cpu0})


def _run_procs(targets: list[tuple[Any, tuple]]) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=fn, args=(*args, q)) for fn, args in targets]
    for p in procs:
        p.start()
    results = [q.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=4000)
    ap.add_argument("--hang", type=float, default=0.1)
    ap.add_argument("--interval-s", type=float, default=10.0)
    ap.add_argument("--timeout-s", type=float, default=2.0)
    ap.add_argument("--window-s", type=float, default=40.0)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--crashes", type=int, default=20)
    args = ap.parse_args()

    server = start_redis_server()
    sim = spawn(["--ssh-backend", "off"])
    try:
        sim.control.bulk_create(args.count, timeout_s=900)
        with VastClient(Secret(sim.api_key), sim.vast_api_url, timeout_s=(5.0, 120.0)) as vast:
            rows = vast.list_instances()
        r = server.client()
        store = StateStore(r, Keys())
        urls: dict[str, str] = {}
        for vi in rows:
            urls[str(vi.id)] = f"http://{vi.public_ip}:{vi.ports['8188/tcp']}"
            store.put_instance(InstanceRecord(instance_id=str(vi.id), status="ready",
                                              connection_url=urls[str(vi.id)]))
        ids = sorted(urls)
        hung = ids[: int(len(ids) * args.hang)]
        for iid in hung:
            sim.control.hang_comfy(int(iid))
        policy = {"interval_s": args.interval_s, "timeout_s": args.timeout_s, "max_failures": 5}
        print(f"{len(ids)} ready instances ({len(hung)} hung), interval {args.interval_s:g} s, "
              f"timeout {args.timeout_s:g} s, window {args.window_s:g} s")

        bare_args = (list(urls.values()), args.interval_s, args.timeout_s, args.window_s)
        bare = _run_procs([(_bare_proc, bare_args)])[0]
        bare_cpu_k = 1000 * bare["cpu_s"] / max(1, bare["pings"])
        print(f"  bare asyncio client, 1 process: {bare['pings']} pings, {bare_cpu_k * 1000:.1f} ms CPU per "
              f"1,000 pings, lateness p50 {bare['lateness_p50_s']:.3f} s p99 {bare['lateness_p99_s']:.3f} s")
        for n in [int(x) for x in args.workers.split(",")]:
            for key in r.scan_iter("vastkeep:keepalive:*"):
                r.delete(key)
            res = _run_procs([(_runner_proc, (server.url, i, n, policy, args.window_s))
                              for i in range(n)])
            pings = sum(x["pings"] for x in res)
            cpu = sum(x["cpu_s"] for x in res)
            cpu_k = 1000 * cpu / max(1, pings)
            expected = len(ids) * args.window_s / args.interval_s
            p99 = max((x["lateness_p99_s"] or 0.0) for x in res)
            p50 = statistics.median([(x["lateness_p50_s"] or 0.0) for x in res])
            print(f"  vastkeep, {n} runner process(es): {pings} pings "
                  f"({pings / expected:.0%} of the cadence), "
                  f"{cpu_k * 1000:.1f} ms CPU per 1,000 pings = {cpu_k / bare_cpu_k:.2f}x the bare client, "
                  f"lateness p50 {p50:.3f} s p99 {p99:.3f} s")

        # crash and black-hole detection with one runner holding everything
        for iid in hung:
            sim.control.restore_comfy(int(iid))
        events = EventLog(r, Keys())
        healthy = ids[len(hung): len(hung) + args.crashes]
        blackholed = ids[len(hung) + args.crashes: len(hung) + args.crashes + 5]
        detect_window = args.interval_s * 5 + args.timeout_s * 5 + 20
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        proc = ctx.Process(target=_runner_proc, args=(server.url, 0, 1, policy, detect_window + 15, q))
        proc.start()
        time.sleep(args.interval_s + 5)  # every instance pinged once, websockets held
        latest = events.latest(1)
        cursor = latest[-1].id if latest else "0-0"
        crashed_at = {}
        for iid in healthy:
            sim.control.crash_comfy(int(iid))
            crashed_at[iid] = time.time()
        for iid in blackholed:
            sim.control.blackhole(int(iid))
            crashed_at[iid] = time.time()
        deadline = time.time() + detect_window
        found: dict[str, float] = {}
        while time.time() < deadline and len(found) < len(crashed_at):
            for e in events.read(after=cursor, count=1000):
                cursor = e.id
                iid = str(e.fields.get("instance_id"))
                if e.kind == "connection-lost" and iid in crashed_at and iid not in found:
                    found[iid] = e.ts - crashed_at[iid]
            time.sleep(0.05)
        crash = sorted(found[i] for i in healthy if i in found)
        black = sorted(found[i] for i in blackholed if i in found)
        bound = KeepalivePolicy(**policy).detection_bound_s()
        if crash:
            print(f"  crash detection ({len(crash)}/{len(healthy)}): p50 {crash[len(crash) // 2]:.2f} s, "
                  f"p99 {crash[int(0.99 * (len(crash) - 1))]:.2f} s (goal p99 < 2 s)")
        if black:
            print(f"  black-hole detection ({len(black)}/{len(blackholed)}): max {black[-1]:.1f} s "
                  f"(bound interval + 4 x interval + 5 x timeout = {bound:.0f} s)")
        proc.join(detect_window + 60)
    finally:
        sim.stop()
        sim.remove_state_dir()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
