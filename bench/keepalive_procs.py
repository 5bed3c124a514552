"""The processes behind ``bench/bench_keepalive.py``: a split simulated cloud, shard-runner workers, the bare
asyncio baseline, and the /proc readers that charge CPU and open files to the right side.

Why split: each process here may hold at most 20,000 open files. A simulated instance costs its simulator one
listener plus one socket per client connection held to it (the runner's keep-alive ping connection and its
``/ws``), so one simulator process gets at most ``--per-sim`` instances (2,500 by default: ≈ 7,500 fds); and
a shard runner holds two sockets per instance it watches, so N instances need at least ``2N / 18,000`` worker
processes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import resource
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp

from vastkeep.core.clock import SystemClock
from vastkeep.core.settings import Secret
from vastkeep.keepalive import KeepalivePolicy, RunnerConfig, ShardRunner
from vastkeep.providers.vast import VastClient
from vastkeep.sim.process import SimulatorProcess, spawn
from vastkeep.state.connection import connect
from vastkeep.state.events import EventLog
from vastkeep.state.keys import Keys
from vastkeep.state.store import StateStore

CLK_TCK = os.sysconf("SC_CLK_TCK")
#: what a runner may hold besides its instances' sockets (Redis, the event loop, the interpreter)
FD_MARGIN = 300


def proc_cpu_s(pid: int) -> float:
    """user + system CPU seconds of a live process (``/proc/<pid>/stat``), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def fd_hard_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


class FdSampler:
    """The highest open-file count seen per pid, sampled once a second on a thread (the claim "no process
    near the limit" is checked, not assumed)."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids, self.peak = pids, {}  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            for pid in self.pids():
                self.peak[pid] = max(self.peak.get(pid, 0), proc_fds(pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(3)
        return max(self.peak.values(), default=0)


# ── the simulated cloud, split over processes ───────────────────────────────────────────────────────────
class SimCluster:
    """``ceil(count / per_sim)`` simulator processes, each with its own 127.X.0.0/16 (distinct seeds), so
    every instance keeps its own ``ip:port`` and no simulator holds more than ``3 × per_sim`` sockets."""

    def __init__(self, count: int, per_sim: int) -> None:
        self.sims: list[SimulatorProcess] = []
        n = max(1, -(-count // per_sim))
        sizes = [count // n + (1 if i < count % n else 0) for i in range(n)]
        self._seed, self._nets = 1000, set()  # type: ignore[var-annotated]
        try:
            with ThreadPoolExecutor(n) as pool:
                self.sims = list(pool.map(self._start, sizes))
            # Simulators draw instance ids from overlapping ranges: the bench's id is k × 10^8 + the sim's id
            self.urls: dict[str, str] = {}
            self.owner: dict[str, tuple[SimulatorProcess, int]] = {}
            for k, sim in enumerate(self.sims, start=1):
                with VastClient(Secret(sim.api_key), sim.vast_api_url, timeout_s=(5.0, 120.0)) as vast:
                    for vi in vast.list_instances():
                        iid = str(k * 100_000_000 + int(vi.id))
                        self.urls[iid] = f"http://{vi.public_ip}:{vi.ports['8188/tcp']}"
                        self.owner[iid] = (sim, int(vi.id))
        except BaseException:
            self.stop()
            raise
        if len(set(self.urls.values())) != len(self.urls) or len(self.urls) != count:
            self.stop()
            raise RuntimeError(f"{len(self.urls)} distinct simulated instances, {count} asked for")

    def _start(self, size: int) -> SimulatorProcess:
        """One simulator with ``size`` running instances. Another simulator on the machine (another
        engineer's) may use the same 127.X/16: then creations fail on taken ports, and we try another X."""
        for _ in range(8):
            self._seed += 1
            net = random.Random(self._seed).randrange(1, 250)  # what the simulator draws first
            if net in self._nets:
                continue
            self._nets.add(net)
            sim = spawn(["--ssh-backend", "off", "--seed", str(self._seed)])
            if sim.control.bulk_create(size, timeout_s=900)["failed"] == 0:
                return sim
            sim.stop()
            sim.remove_state_dir()
        raise RuntimeError("no free 127.X/16 for a simulator after 8 tries")

    @property
    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.sims]

    def cpu_s(self) -> float:
        return sum(proc_cpu_s(p) for p in self.pids)

    def each(self, action: str, ids: list[str]) -> None:
        """Apply a control action (``hang_comfy``, ``crash_comfy``, ``blackhole``, ``restore_comfy``)."""
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: getattr(self.owner[i][0].control, action)(self.owner[i][1]), ids))

    def stop(self) -> None:
        for sim in self.sims:
            sim.stop()
            sim.remove_state_dir()


# ── vastkeep: one shard per worker process, continuations back to back ─────────────────────────────────
class Mark:
    """CPU and pings of this process at ``mark_s`` after its start (read on a thread), so the steady state
    after the first round (connections and websockets opened) can be told from the whole window."""

    def __init__(self, mark_s: float, pings: Callable[[], int]) -> None:
        self.cpu_s, self.pings = None, None  # type: ignore[var-annotated]
        self._count = pings
        self._timer = threading.Timer(mark_s, self._take)
        self._timer.daemon = True
        self._timer.start()

    def _take(self) -> None:
        self.cpu_s, self.pings = _self_cpu_s(), self._count()

    def result(self, cpu_s: float, pings: int) -> dict[str, Any]:
        self._timer.cancel()
        if self.cpu_s is None:
            return {}
        return {"steady_cpu_s": cpu_s - self.cpu_s, "steady_pings": pings - self.pings}


def runner_proc(redis_url: str, shard: int, shards: int, policy: dict, window_s: float, run_s: float,
                mark_s: float, out: Any) -> None:
    """One worker process: run shard ``shard`` of ``shards`` in bounded runs (``run_s``, what the
    ``run_shard`` task does, each run a fresh event loop, session and websockets) until ``window_s``."""
    logging.getLogger("vastkeep").setLevel(logging.CRITICAL)  # thousands of guide lines are not the point
    r = connect(redis_url)
    keys = Keys()
    cpu0, started = _self_cpu_s(), time.monotonic()
    pings, runs, late, ws = 0, 0, [], [0, 0]
    current: list[Any] = [None]
    mark = Mark(mark_s, lambda: pings + (current[0].pings if current[0] is not None else 0))
    while (left := window_s - (time.monotonic() - started)) > 0.5:
        runner = ShardRunner(redis=r, keys=keys, store=StateStore(r, keys), events=EventLog(r, keys),
                             shard=shard, policy=KeepalivePolicy(**policy), clock=SystemClock(),
                             config=RunnerConfig(shards=shards, run_s=min(run_s, left), refresh_s=5.0,
                                                 fast_path=True, acquire_wait_s=10.0))
        current[0] = runner
        result = _profiled(lambda r=runner: asyncio.run(r.run()), f"shard{shard}-run{runs}")
        if result["result"] != "done":
            break
        pings += result["pings"]
        current[0] = None
        late.extend(runner.lateness_s)
        ws[0] += result["ws_attempts"]
        ws[1] += result["ws_closes"]
        runs += 1
    cpu = _self_cpu_s()
    out.put({"shard": shard, "pings": pings, "runs": runs, "cpu_s": cpu - cpu0, "late": late,
             "ws_attempts": ws[0], "ws_closes": ws[1], **mark.result(cpu, pings)})


def _profiled(fn: Callable[[], Any], name: str) -> Any:
    """``VK_BENCH_PROFILE=<dir>``: write a cProfile of each run there (for finding the runner's overhead)."""
    where = os.environ.get("VK_BENCH_PROFILE")
    if not where:
        return fn()
    import cProfile  # noqa: PLC0415

    prof = cProfile.Profile()
    try:
        return prof.runcall(fn)
    finally:
        prof.dump_stats(os.path.join(where, f"{name}.prof"))


# ── the baseline: what a capable user writes without vastkeep ───────────────────────────────────────────
def bare_proc(urls: list[str], offsets: list[float], interval_s: float, timeout_s: float, window_s: float,
              mark_s: float, out: Any) -> None:
    """One aiohttp session (keep-alive connections), one task per instance, ``GET /system_stats`` at the
    same schedule as the runners (the same first-ping offsets) with the same timeout; nothing stored."""

    count = [0]

    async def main() -> dict[str, Any]:
        late = []
        conn = aiohttp.TCPConnector(limit=0, keepalive_timeout=interval_s + timeout_s + 2)
        async with aiohttp.ClientSession(connector=conn) as session:
            t0 = time.monotonic()
            stop = t0 + window_s

            async def one(url: str, offset: float) -> None:
                due = t0 + offset
                while due < stop:
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    late.append(max(0.0, time.monotonic() - due))
                    try:
                        async with asyncio.timeout(timeout_s), session.get(url + "/system_stats") as resp:
                            body = await resp.read()
                            json.loads(body) if resp.status == 200 else None
                    except (TimeoutError, aiohttp.ClientError, ValueError):
                        pass
                    count[0] += 1
                    due += interval_s

            await asyncio.gather(*(one(u, o) for u, o in zip(urls, offsets, strict=True)))
        return {"pings": count[0], "late": late}

    cpu0 = _self_cpu_s()
    mark = Mark(mark_s, lambda: count[0])
    result = asyncio.run(main())
    cpu = _self_cpu_s()
    out.put({**result, "cpu_s": cpu - cpu0, **mark.result(cpu, result["pings"])})


def _self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime
