"""Benchmark: ``vastkeep.system.ping`` through a real ``celery -A worker worker`` vs a plain Celery task.

Starts its own ``redis-server`` on a free loopback port, then three worker subprocesses on that one broker,
each on its own queue and with the same flags (``-P solo`` by default, ``--without-mingle --without-gossip``):

* ``vastkeep``  — ``celery -A worker worker -Q vastkeep.control``: the real app (``worker.config``), the
  real task module, wiring and heartbeat bootstep;
* ``plain``     — ``celery -A bench.plain_app worker -Q plain``: a bare ``Celery()`` app, one plain task;
* ``plain+vkconf`` — the same plain task with vastkeep's delivery settings (acks late, prefetch 1, task
  events, sent events, track started), to separate the cost of the configuration from the cost of the code.

From this process it times, in interleaved rounds (order rotated each round): sequential round trips
(send → ``get()``, one at a time) and a burst (send N, then collect N). Printed: tasks/s and ratios.

    .venv/bin/python bench/bench_tasks.py [--pool solo|threads] [--seq 200] [--burst 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from celery import Celery  # noqa: E402

from bench.plain_app import make_app  # noqa: E402
from bench.support import start_redis_server  # noqa: E402
from vastkeep.core.processes import end_process  # noqa: E402
from vastkeep.core.settings import load_settings  # noqa: E402
from worker.config import CONTROL_QUEUE, celery_config  # noqa: E402


@dataclass
class Variant:
    label: str
    app_module: str
    queue: str
    node: str
    task: str
    client: Celery
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    log: Any = None
    seq: list[float] = field(default_factory=list)
    burst: list[float] = field(default_factory=list)


def start_worker(v: Variant, pool: str, concurrency: int, home: Path) -> None:
    env = {k: val for k, val in os.environ.items()
           if not k.startswith(("VAST_", "HUGGINGFACE_", "CIVITAI_", "ADMIN_", "FLOWER_"))}
    env.update({"PYTHONPATH": str(REPO), "VASTKEEP_HOME": str(home), "LOG_LEVEL": "WARNING", **v.env})
    cmd = [sys.executable, "-m", "celery", "-A", v.app_module, "worker", "-P", pool, "-n", v.node,
           "-Q", v.queue, "--without-mingle", "--without-gossip", "-l", "WARNING"]
    if pool != "solo":
        cmd += ["-c", str(concurrency)]
    v.log = open(home / f"{v.node.split('@')[0]}.log", "wb")  # noqa: SIM115 - closed in stop_worker
    v.proc = subprocess.Popen(cmd, cwd=home, env=env, stdout=v.log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True)


def stop_worker(v: Variant) -> None:
    if v.proc is not None:
        end_process(v.proc, 20, group=True)
    if v.log is not None:
        v.log.close()
    v.client.close()


def send(v: Variant) -> Any:
    return v.client.send_task(v.task, queue=v.queue)


def run_seq(v: Variant, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        assert send(v).get(timeout=30)["pong"] is True
    return n / (time.perf_counter() - t0)


def run_burst(v: Variant, n: int) -> float:
    t0 = time.perf_counter()
    pending = [send(v) for _ in range(n)]
    for r in pending:
        assert r.get(timeout=60)["pong"] is True
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--pool", choices=["solo", "threads"], default="solo")
    p.add_argument("--concurrency", type=int, default=4, help="threads pool size (ignored by solo)")
    p.add_argument("--seq", type=int, default=200, help="sequential round trips per round")
    p.add_argument("--burst", type=int, default=300, help="tasks in flight per burst")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)

    t_start = time.perf_counter()
    home = Path(tempfile.mkdtemp(prefix="vk-bench-tasks-"))
    server = start_redis_server()
    url = server.url
    vk_client = Celery("bench-vk-client", set_as_current=False)
    vk_client.conf.update(celery_config(load_settings(environ={"REDIS_URL": url, "VASTKEEP_HOME": str(home)},
                                                      env_file=False), redis_url=url))
    variants = [
        Variant("vastkeep.system.ping (worker app)", "worker", CONTROL_QUEUE, "vk@bench",
                "vastkeep.system.ping", vk_client, env={"REDIS_URL": url}),
        Variant("plain task, bare Celery()", "bench.plain_app", "plain", "plain@bench", "bench.plain.ping",
                make_app(url), env={"BENCH_BROKER_URL": url}),
        Variant("plain task + vastkeep delivery conf", "bench.plain_app", "plainvk", "plainvk@bench",
                "bench.plain.ping", make_app(url, vk_conf=True),
                env={"BENCH_BROKER_URL": url, "BENCH_PLAIN_VKCONF": "1"}),
    ]
    try:
        for v in variants:
            start_worker(v, args.pool, args.concurrency, home)
        ready_s = {}
        for v in variants:  # ready = answers a task (no fixed sleeps)
            r = send(v).get(timeout=60)
            assert r == {"pong": True, "worker": v.node}, r
            ready_s[v.label] = time.perf_counter() - t_start
        for v in variants:  # warm-up
            run_seq(v, 20)
        for rnd in range(args.rounds):
            order = variants[rnd % len(variants):] + variants[:rnd % len(variants)]
            for v in order:
                v.seq.append(run_seq(v, args.seq))
            for v in order:
                v.burst.append(run_burst(v, args.burst))
    finally:
        for v in variants:
            stop_worker(v)
        server.stop()

    base = variants[1]
    print(f"private redis-server; workers: celery -A <app> worker -P {args.pool}"
          f"{'' if args.pool == 'solo' else f' -c {args.concurrency}'} --without-mingle --without-gossip; "
          f"{os.cpu_count()} CPUs; median of {args.rounds} interleaved rounds; all workers up in "
          f"{max(ready_s.values()):.1f}s")
    print(f"{'task':<40}{'seq tasks/s':>12}{'seq ms/task':>13}{'burst tasks/s':>15}{'seq ratio':>11}"
          f"{'burst ratio':>13}")
    for v in variants:
        s, b = statistics.median(v.seq), statistics.median(v.burst)
        bs, bb = statistics.median(base.seq), statistics.median(base.burst)
        print(f"{v.label:<40}{s:>12,.0f}{1000 / s:>13.2f}{b:>15,.0f}{bs / s:>10.2f}x{bb / b:>12.2f}x")
    vk, pvk = variants[0], variants[2]
    med = statistics.median
    print(f"ratios are plain tasks/s / this row's tasks/s (slowdown vs the bare app; {args.seq} sequential, "
          f"{args.burst} in a burst)")
    print(f"of which configuration (plain+vkconf vs plain): seq {med(base.seq) / med(pvk.seq):.2f}x, burst "
          f"{med(base.burst) / med(pvk.burst):.2f}x; vastkeep code+wiring (vastkeep vs plain+vkconf): "
          f"seq {med(pvk.seq) / med(vk.seq):.2f}x, burst {med(pvk.burst) / med(vk.burst):.2f}x; "
          f"total {time.perf_counter() - t_start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
