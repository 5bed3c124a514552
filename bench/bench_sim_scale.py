"""Benchmark: one simulator process holding N (default 10,000) running instances.

Measures, side by side in one run: simulator start-up time (spawn → ready file), bulk creation time,
the simulator's RSS before/after (from /proc/<pid>/status), open file descriptors, how many of a random
sample of instances answer ``GET /system_stats`` through their reported ``public_ipaddr`` + ``8188/tcp``,
the API's list time for all N, and teardown time; then the same figures for the baseline, one bare
aiohttp app serving the same endpoints in its own process (``bench/sim_scale_baseline.py``: no instance
state, no API, no faults), and the ratio simulator / baseline for each.

    .venv/bin/python bench/bench_sim_scale.py [--count 10000] [--sample 500]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vastkeep.sim.process import spawn  # noqa: E402


def proc_status(pid: int, field: str) -> int:
    """A kB figure from /proc/<pid>/status (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def probe(inst: dict) -> bool:
    """What a client of ComfyUI does first: GET /system_stats on the reported address."""
    url = f"http://{inst['public_ipaddr'].strip()}:{inst['ports']['8188/tcp'][0]['HostPort']}/system_stats"
    try:
        return requests.get(url, timeout=5).json()["system"]["os"] == "posix"
    except (requests.RequestException, ValueError, KeyError):
        return False


def probe_sample(sample: list[dict], rounds: int = 3) -> tuple[int, float]:
    """(fewest answers in a round, median wall time of ``rounds`` rounds): one round is noisy on 2 CPUs."""
    answered, took = [], []
    with ThreadPoolExecutor(32) as pool:
        for _ in range(rounds):
            t0 = time.monotonic()
            answered.append(sum(pool.map(probe, sample)))
            took.append(time.monotonic() - t0)
    return min(answered), sorted(took)[len(took) // 2]


def endpoints_of(listing: list[dict]) -> list[tuple[str, int]]:
    """Every (address, host port) the listing reports: what the simulator listens on."""
    return sorted({(inst["public_ipaddr"].strip(), int(b["HostPort"]))
                   for inst in listing for bindings in (inst.get("ports") or {}).values()
                   for b in bindings or ()})


def run_baseline(endpoints: list[tuple[str, int]], sample: list[dict]) -> dict:
    """The same listeners served by one bare aiohttp app in its own process (bench/sim_scale_baseline.py)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(endpoints, fh)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "bench.sim_scale_baseline", fh.name], cwd=REPO, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "empty"
        out = {"startup_s": time.monotonic() - t0, "rss0": proc_status(proc.pid, "VmRSS")}
        t1 = time.monotonic()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        _, took, count = proc.stdout.readline().split()
        out.update(create_s=float(took), create_wall_s=time.monotonic() - t1, created=int(count),
                   rss1=proc_status(proc.pid, "VmRSS"), hwm=proc_status(proc.pid, "VmHWM"),
                   fds=open_fds(proc.pid))
        out["answered"], out["probe_s"] = probe_sample(sample)
        t2 = time.monotonic()
        proc.stdin.close()
        out["code"] = proc.wait(60)
        out["stop_s"] = time.monotonic() - t2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.unlink(fh.name)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=500)
    args = parser.parse_args()

    t0 = time.monotonic()
    sim = spawn(["--seed", "11"])
    startup_s = time.monotonic() - t0
    pid = sim.proc.pid
    try:
        rss0 = proc_status(pid, "VmRSS")
        t1 = time.monotonic()
        result = sim.control.bulk_create(args.count, timeout_s=900)
        bulk_wall_s = time.monotonic() - t1
        rss1, hwm = proc_status(pid, "VmRSS"), proc_status(pid, "VmHWM")
        fds = open_fds(pid)
        listeners = sim.control.health()["listeners"]
        t2 = time.monotonic()
        listing = requests.get(
            f"{sim.vast_api_url}/instances", params={"owner": "me"}, headers=sim.vast_headers(), timeout=120
        ).json()["instances"]
        list_s = time.monotonic() - t2
        sample = random.Random(5).sample(listing, min(args.sample, len(listing)))
        answered, probe_s = probe_sample(sample)
        t4 = time.monotonic()
        sim.control.reset()
        reset_s = time.monotonic() - t4
        health = sim.control.health()
    finally:
        t5 = time.monotonic()
        code = sim.stop()
        stop_s = time.monotonic() - t5
        sim.remove_state_dir()
    endpoints = endpoints_of(listing)
    base = run_baseline(endpoints, sample)

    n = max(1, len(result["ids"]))
    print(f"simulated instances requested     {args.count}")
    print(f"created (running, listening)      {len(result['ids'])}  failed={result['failed']}")
    print(f"simulator start-up (to ready)     {startup_s:.2f} s")
    print(
        f"bulk creation (server side)       {result['elapsed_s']:.2f} s   wall {bulk_wall_s:.2f} s"
        f"   = {1000 * result['elapsed_s'] / n:.3f} ms/instance"
    )
    print(
        f"RSS empty -> loaded               {rss0 / 1024:.1f} MiB -> {rss1 / 1024:.1f} MiB"
        f"  (peak {hwm / 1024:.1f} MiB)"
        f"   = {(rss1 - rss0) / n:.2f} KiB/instance"
    )
    print(f"open fds in the simulator         {fds}  (soft limit {health['fd_soft_limit']}); "
          f"listeners {listeners}")
    print(f"GET /instances with all           {list_s:.2f} s  ({len(listing)} records)")
    print(f"sample answering /system_stats    {answered}/{len(sample)}  in {probe_s:.2f} s (median of 3)")
    print(f"reset (close every listener)      {reset_s:.2f} s; listeners left {health['listeners']}")
    print(f"simulator exit code               {code}")
    print()
    print(f"baseline: one bare aiohttp app on the same {len(endpoints)} endpoints "
          "(bench/sim_scale_baseline.py)")
    rows = [
        ("start-up to ready, s", startup_s, base["startup_s"]),
        ("create every listener, s (server side)", result["elapsed_s"], base["create_s"]),
        ("create, ms per instance", 1000 * result["elapsed_s"] / n, 1000 * base["create_s"] / n),
        ("RSS empty, MiB", rss0 / 1024, base["rss0"] / 1024),
        ("RSS loaded, MiB", rss1 / 1024, base["rss1"] / 1024),
        ("RSS added, KiB per instance", (rss1 - rss0) / n, (base["rss1"] - base["rss0"]) / n),
        ("open fds", fds, base["fds"]),
        (f"{len(sample)} x GET /system_stats (32 threads, median of 3), s", probe_s, base["probe_s"]),
        ("close every listener and exit, s", reset_s + stop_s, base["stop_s"]),
    ]
    print(f"{'':<52}{'simulator':>12}{'baseline':>12}{'ratio':>9}")
    for name, mine, theirs in rows:
        print(f"{name:<52}{mine:>12.3f}{theirs:>12.3f}{(mine / theirs if theirs else float('nan')):>8.2f}x")
    print(f"baseline answered {base['answered']}/{len(sample)}, exit code {base['code']}")
    ok = answered == len(sample) == base["answered"] and len(result["ids"]) == args.count
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
