"""Layer 4 at scale: shard-runner worker processes vs a bare asyncio client doing the same pings, same run.

    .venv/bin/python bench/bench_keepalive.py [--instances 10000] [--hang 0.1] [--cadence-s 30]
        [--timeout-s 5] [--window-s 75] [--run-s 300] [--workers 1,2,4] [--crashes 20] [--blackholes 5]
        [--per-sim 2500] [--no-detect] [--quick]

Setup: a private redis-server, the simulated cloud split over ``ceil(instances / per-sim)`` simulator
processes (each its own 127.X/16, so every instance keeps its own ``ip:port``), ``--hang`` of the instances
hung (accepting, never answering), every record ``ready`` in Redis, and a steady-state schedule: instance k's
first ping is due at ``k / N`` of an interval (what a pool that became ready over time looks like; the bare
client uses the same offsets). Then, in one run:

* **bare**: one process (per 15,000 instances) with one aiohttp session (keep-alive connections), one task per
  instance, ``GET /system_stats`` every interval with the same timeout — no counters, events, Redis state or
  websockets;
* **vastkeep**, for each ``--workers`` W: W processes each running one shard (shards = W) in back-to-back
  bounded runs of ``--run-s`` (the ``run_shard`` task and its continuation: each run a fresh event loop,
  session and ``/ws`` per instance), fast path on. A W whose largest shard needs more sockets than the fd
  limit allows (two per instance) is reported as not fitting and skipped.

CPU per 1,000 pings: vastkeep = the runner processes + the redis-server (the writes they cause); bare = its
process; the simulators' CPU is charged to neither (printed apart). The largest W that fits also runs the
detection checks: ``--crashes`` held instances crashed (time to ``connection-lost``, goal p99 < 2 s) and
``--blackholes`` black-holed (time to ``connection-lost`` against the bound). ``--quick``: the CI smoke size.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.keepalive_procs import (  # noqa: E402
    FD_MARGIN,
    FdSampler,
    SimCluster,
    bare_proc,
    fd_hard_limit,
    proc_cpu_s,
    runner_proc,
)
from bench.support import start_redis_server  # noqa: E402
from vastkeep.keepalive import KeepalivePolicy, KeepaliveState, shard_of  # noqa: E402
from vastkeep.state.events import EventLog  # noqa: E402
from vastkeep.state.keys import KEEPALIVE_STATUS_TTL_MS, Keys  # noqa: E402
from vastkeep.state.store import InstanceRecord, StateStore  # noqa: E402
from worker.limits import KEEPALIVE_RUN_S  # noqa: E402

BARE_PER_PROC = 15_000
LEAD_S = 5.0  # the runners' first pings are due (at most) this long after their processes are started


def _q(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _spawn(targets: list[tuple[Any, tuple]]) -> tuple[list[Any], Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=fn, args=(*args, q)) for fn, args in targets]
    for p in procs:
        p.start()
    return procs, q


def _collect(procs: list[Any], q: Any, timeout_s: float) -> list[dict[str, Any]]:
    results = [q.get(timeout=timeout_s) for _ in procs]
    for p in procs:
        p.join(60)
    return results


def _due(offsets: list[float], interval_s: float, span_s: float) -> int:
    """How many pings the schedule asks for in ``span_s``."""
    return sum(int((span_s - o) // interval_s) + 1 for o in offsets if o < span_s)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--instances", "--count", type=int, default=10_000)
    ap.add_argument("--hang", type=float, default=0.1)
    ap.add_argument("--cadence-s", "--interval-s", type=float, default=30.0)
    ap.add_argument("--timeout-s", type=float, default=5.0, help="COMFYUI_KEEPALIVE_TIMEOUT_MS (default 5 s)")
    ap.add_argument("--max-failures", type=int, default=5)
    ap.add_argument("--window-s", type=float, default=None, help="per phase (default 2 × cadence + 15)")
    ap.add_argument("--run-s", type=float, default=KEEPALIVE_RUN_S, help="one run_shard run")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--crashes", type=int, default=20)
    ap.add_argument("--blackholes", type=int, default=5)
    ap.add_argument("--per-sim", type=int, default=2500, help="instances per simulator process")
    ap.add_argument("--no-detect", action="store_true", help="skip the crash / black-hole checks")
    ap.add_argument("--json", default="", help="also write the figures here")
    ap.add_argument("--quick", action="store_true", help="CI smoke: 300 instances, 2 s cadence")
    args = ap.parse_args(argv)
    if args.quick:
        args.instances, args.cadence_s, args.timeout_s, args.run_s = 300, 2.0, 1.0, 6.0
        args.window_s, args.workers, args.crashes, args.blackholes, args.per_sim = 8.0, "1,2", 5, 2, 150
    if args.window_s is None:
        args.window_s = 2 * args.cadence_s + 15
    return args


@dataclass
class Rig:
    """What every phase runs against: the simulators, the Redis, the ready pool and its ping schedule."""

    args: argparse.Namespace
    server: Any
    cluster: SimCluster
    r: Any
    ids: list[str]
    hung: list[str]
    offset: dict[str, float]  # instance → when in an interval its first ping is due
    pol: dict[str, Any]
    policy: KeepalivePolicy
    live: list[int]  # every process whose open files are sampled
    sampler: FdSampler


def _ready_pool(rig_args: argparse.Namespace, server: Any, cluster: SimCluster, live: list[int],
                sampler: FdSampler) -> Rig:
    """Every simulated instance ``ready`` in Redis, ``--hang`` of them hung, each with its steady offset."""
    r = server.client()
    store = StateStore(r, Keys())
    ids = sorted(cluster.urls)
    for iid in ids:
        store.put_instance(InstanceRecord(instance_id=iid, status="ready", connection_url=cluster.urls[iid]))
    hung = ids[: int(len(ids) * rig_args.hang)]
    cluster.each("hang_comfy", hung)
    order = ids[:]
    random.Random(7).shuffle(order)
    offset = {iid: k * rig_args.cadence_s / len(order) for k, iid in enumerate(order)}
    pol = {"interval_s": rig_args.cadence_s, "timeout_s": rig_args.timeout_s,
           "max_failures": rig_args.max_failures}
    return Rig(rig_args, server, cluster, r, ids, hung, offset, pol, KeepalivePolicy(**pol), live, sampler)


def _bare_phase(rig: Rig) -> dict[str, Any]:
    args, ids, offset = rig.args, rig.ids, rig.offset
    chunks = [ids[i: i + BARE_PER_PROC] for i in range(0, len(ids), BARE_PER_PROC)]
    procs, q = _spawn([(bare_proc, ([rig.cluster.urls[i] for i in c], [offset[i] for i in c], args.cadence_s,
                                    args.timeout_s, args.window_s, _mark(args, 0.0))) for c in chunks])
    rig.live.extend(p.pid for p in procs)
    sim0, redis0 = rig.cluster.cpu_s(), proc_cpu_s(rig.server.proc.pid)
    res = _collect(procs, q, args.window_s + 120)
    return {"name": "bare asyncio client", "procs": len(procs), "pings": sum(x["pings"] for x in res),
            "due": _due(list(offset.values()), args.cadence_s, args.window_s),
            "cpu_s": sum(x["cpu_s"] for x in res), "redis_cpu_s": proc_cpu_s(rig.server.proc.pid) - redis0,
            "sim_cpu_s": rig.cluster.cpu_s() - sim0, "late": [v for x in res for v in x["late"]],
            "peak_fds": max(rig.sampler.peak.get(p.pid, 0) for p in procs), **_steady(res, 0.0)}


def _fitting(rig: Rig, budget: int, phases: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(workers, largest shard) for each ``--workers`` W whose largest shard fits the open-file budget; the
    others are reported (and recorded in ``phases``) as not fitting."""
    fits = []
    for w in [int(x) for x in rig.args.workers.split(",")]:
        biggest = max(sum(1 for i in rig.ids if shard_of(i, w) == s) for s in range(w))
        if 2 * biggest + FD_MARGIN > budget:
            print(f"  vastkeep, {w} worker process(es): does not fit — its largest shard ({biggest} "
                  f"instances) needs ≈ {2 * biggest + FD_MARGIN} open files (limit {budget} with "
                  "headroom)",
                  flush=True)
            phases.append({"name": f"vastkeep x{w}", "workers": w, "fits": False, "largest_shard": biggest})
            continue
        fits.append((w, biggest))
    return fits


def _vastkeep_phase(rig: Rig, w: int, biggest: int, detect: bool) -> tuple[dict[str, Any], Any]:
    """W runner processes, one shard each, in back-to-back runs; with ``detect``, the crash checks too."""
    args, pid = rig.args, rig.server.proc.pid
    window = args.window_s
    if detect:
        window = max(window, _lead(args) + _settle(args) + rig.policy.detection_bound_s() + 15)
    _seed(rig.r, rig.ids, rig.offset, _lead(args))
    sim0, redis0 = rig.cluster.cpu_s(), proc_cpu_s(pid)
    mark_s = _mark(args, _lead(args))
    procs, q = _spawn([(runner_proc, (rig.server.url, s, w, rig.pol, window, args.run_s, mark_s))
                       for s in range(w)])
    rig.live.extend(p.pid for p in procs)
    t_mark = time.monotonic() + _mark(args, _lead(args)) + 1.0  # the children's imports take ≈ 1 s
    found = _detect(rig.r, rig.cluster, rig.ids, rig.hung, args, rig.policy) if detect else None
    while time.monotonic() < t_mark:
        time.sleep(0.1)
    redis_mark = proc_cpu_s(pid)
    res = _collect(procs, q, window + 180)
    redis_end = proc_cpu_s(pid)
    return {"name": f"vastkeep x{w}", "workers": w, "fits": True, "largest_shard": biggest,
            "pings": sum(x["pings"] for x in res), "runs": sum(x["runs"] for x in res),
            "due": _due([o + _lead(args) for o in rig.offset.values()], args.cadence_s, window),
            "cpu_s": sum(x["cpu_s"] for x in res),
            "redis_cpu_s": redis_end - redis0, **_steady(res, redis_end - redis_mark),
            "sim_cpu_s": rig.cluster.cpu_s() - sim0, "late": [v for x in res for v in x["late"]],
            "ws_attempts": sum(x["ws_attempts"] for x in res),
            "ws_closes": sum(x["ws_closes"] for x in res), "window_s": window,
            "peak_fds": max(rig.sampler.peak.get(p.pid, 0) for p in procs)}, found


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    budget = int(fd_hard_limit() * 0.9)  # ≈ 18,000 of 20,000: the rest is headroom
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
          f"fd hard limit {fd_hard_limit()} per process; {os.cpu_count()} CPUs", flush=True)
    server = start_redis_server()
    cluster = SimCluster(args.instances, args.per_sim)
    live: list[int] = [*cluster.pids, server.proc.pid]
    sampler = FdSampler(lambda: list(live))
    figures: dict[str, Any] = {"args": vars(args), "phases": []}
    try:
        rig = _ready_pool(args, server, cluster, live, sampler)
        print(f"{len(rig.ids)} ready instances ({len(rig.hung)} hung) on {len(cluster.sims)} simulator "
              f"processes; cadence {args.cadence_s:g} s, timeout {args.timeout_s:g} s, window "
              f"{args.window_s:g} s, runs of {args.run_s:g} s", flush=True)
        bare = _bare_phase(rig)
        _report(bare, None, args)
        figures["phases"].append(bare)
        fits = _fitting(rig, budget, figures["phases"])
        detect_w = None if args.no_detect or not fits else fits[-1][0]
        for w, biggest in fits:
            phase, found = _vastkeep_phase(rig, w, biggest, detect=w == detect_w)
            _report(phase, bare, args)
            if found is not None:
                phase["detection"] = found
            figures["phases"].append(phase)
        figures["peak_fds_sim"] = max(sampler.peak.get(p, 0) for p in cluster.pids)
        figures["peak_fds_redis"] = sampler.peak.get(server.proc.pid, 0)
        print(f"  peak open files: simulator process {figures['peak_fds_sim']}, redis-server "
              f"{figures['peak_fds_redis']}, worker processes as listed (limit {fd_hard_limit()})",
              flush=True)
        print(f"load average at the end {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}", flush=True)
    finally:
        sampler.stop()
        cluster.stop()
        server.stop()
    if args.json:
        for ph in figures["phases"]:
            ph.pop("late", None)
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


def _lead(args: argparse.Namespace) -> float:
    return min(LEAD_S, args.cadence_s)  # a runner never waits longer than one interval for a first ping


def _settle(args: argparse.Namespace) -> float:
    """Long enough for every runner to hold all its websockets (≈ 2 ms of CPU per handshake) before the
    crashes, so the figure is the held-connection path; a crash before that is confirmed through the refused
    handshake instead."""
    return min(args.cadence_s + 2, 10.0 + args.instances / 500)


def _mark(args: argparse.Namespace, lead_s: float) -> float:
    """Steady state starts once every instance was pinged once (connections and websockets open)."""
    return lead_s + args.cadence_s + 2


def _steady(res: list[dict[str, Any]], redis_cpu_s: float) -> dict[str, Any]:
    if not all("steady_cpu_s" in x for x in res):
        return {}
    return {"steady_cpu_s": sum(x["steady_cpu_s"] for x in res) + redis_cpu_s,
            "steady_pings": sum(x["steady_pings"] for x in res)}


def _seed(r: Any, ids: list[str], offset: dict[str, float], lead_s: float) -> None:
    """Fresh keepalive state whose first ping is due at the steady-state offset (a pool already running)."""
    now = time.time() + lead_s
    keys = Keys()
    pipe = r.pipeline(transaction=False)
    for iid in ids:
        pipe.set(keys.keepalive(iid), json.dumps(KeepaliveState(next_ping_at=now + offset[iid]).to_dict()),
                 px=KEEPALIVE_STATUS_TTL_MS)
    pipe.execute()


def _report(ph: dict[str, Any], bare: dict[str, Any] | None, args: argparse.Namespace) -> None:
    side = ph["cpu_s"] + (ph["redis_cpu_s"] if bare is not None else 0.0)
    ph["cpu_ms_per_1000"] = 1_000_000 * side / max(1, ph["pings"])
    ph["lateness_p50_s"], ph["lateness_p99_s"] = _q(ph["late"], 0.5), _q(ph["late"], 0.99)
    ph["lateness_max_s"] = max(ph["late"], default=float("nan"))
    ratio = ""
    if ph.get("steady_pings"):
        ph["steady_ms_per_1000"] = 1_000_000 * ph["steady_cpu_s"] / ph["steady_pings"]
    if bare is not None:
        ph["ratio"] = ph["cpu_ms_per_1000"] / bare["cpu_ms_per_1000"]
        ratio = f" = {ph['ratio']:.2f}x bare (runners {ph['cpu_s']:.1f} s + redis {ph['redis_cpu_s']:.1f} s)"
        if "steady_ms_per_1000" in ph and "steady_ms_per_1000" in bare:
            ph["steady_ratio"] = ph["steady_ms_per_1000"] / bare["steady_ms_per_1000"]
    if "steady_ms_per_1000" in ph:
        ratio += (f"; after the first round {ph['steady_ms_per_1000']:.0f} ms per 1,000 pings"
                  + (f" = {ph['steady_ratio']:.2f}x bare" if "steady_ratio" in ph else "")
                  + f" ({ph['steady_pings']} pings)")
    print(f"  {ph['name']}, {ph.get('workers', ph.get('procs'))} process(es): {ph['pings']} pings "
          f"({ph['pings'] / max(1, ph['due']):.0%} of {ph['due']} due), "
          f"{ph['cpu_ms_per_1000']:.0f} ms CPU per 1,000 pings{ratio}; "
          f"lateness p50 {ph['lateness_p50_s']:.3f} s p99 {ph['lateness_p99_s']:.3f} s "
          f"max {ph['lateness_max_s']:.2f} s; simulators {ph['sim_cpu_s']:.1f} s CPU (charged to neither); "
          f"peak fds {ph['peak_fds']}" + (f"; /ws handshakes {ph['ws_attempts']}, closes {ph['ws_closes']}"
                                            if "ws_attempts" in ph else ""), flush=True)


def _detect(r: Any, cluster: SimCluster, ids: list[str], hung: list[str], args: argparse.Namespace,
            policy: KeepalivePolicy) -> dict[str, Any]:
    """While the runners run: crash held instances and black-hole others; time each ``connection-lost``."""
    time.sleep(_lead(args) + _settle(args))  # the runners are up and every /ws is held
    events = EventLog(r, Keys())
    latest = events.latest(1)
    cursor = latest[-1].id if latest else "0-0"
    healthy = ids[len(hung):]
    crashed, holed = healthy[: args.crashes], healthy[args.crashes: args.crashes + args.blackholes]
    at: dict[str, float] = {}
    for group, action in ((crashed, "crash_comfy"), (holed, "blackhole")):
        for iid in group:
            cluster.each(action, [iid])
            at[iid] = time.time()
    deadline = time.time() + policy.detection_bound_s() + 10
    found: dict[str, tuple[float, str]] = {}
    while time.time() < deadline and len(found) < len(at):
        for e in events.read(after=cursor, count=1000):
            cursor = e.id
            iid = str(e.fields.get("instance_id"))
            if e.kind == "connection-lost" and iid in at and iid not in found:
                found[iid] = (e.ts - at[iid], str(e.fields.get("detectedBy")))
        time.sleep(0.05)
    crash = sorted(found[i][0] for i in crashed if i in found)
    black = sorted(found[i][0] for i in holed if i in found)
    out = {"crash_found": len(crash), "crashes": len(crashed), "crash_p50_s": _q(crash, 0.5),
           "crash_p99_s": _q(crash, 0.99), "blackhole_found": len(black), "blackholes": len(holed),
           "blackhole_max_s": max(black, default=float("nan")),
           "blackhole_bound_s": policy.detection_bound_s(),
           "crash_detected_by": sorted({found[i][1] for i in crashed if i in found})}
    print(f"  crash detection ({len(crash)}/{len(crashed)}, {out['crash_detected_by']}): p50 "
          f"{out['crash_p50_s']:.2f} s, p99 {out['crash_p99_s']:.2f} s (goal p99 < 2 s); black-hole "
          f"detection ({len(black)}/{len(holed)}): max {out['blackhole_max_s']:.1f} s "
          f"(bound {out['blackhole_bound_s']:.0f} s "
          f"= interval + {args.max_failures - 1} × interval + {args.max_failures} × timeout)", flush=True)
    return out


if __name__ == "__main__":
    sys.exit(main())
