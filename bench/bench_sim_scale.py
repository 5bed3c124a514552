"""Benchmark: one simulator process holding N (default 10,000) running instances.

Measures, side by side in one run: simulator start-up time (spawn → ready file), bulk creation time,
the simulator's RSS before/after (from /proc/<pid>/status), open file descriptors, how many of a random
sample of instances answer ``GET /system_stats`` through their reported ``public_ipaddr`` + ``8188/tcp``,
the API's list time for all N, and teardown time.

    .venv/bin/python bench/bench_sim_scale.py [--count 10000] [--sample 500]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vastkeep.sim.process import spawn  # noqa: E402


def proc_status(pid: int, field: str) -> int:
    """A kB figure from /proc/<pid>/status (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


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
        t2 = time.monotonic()
        listing = requests.get(
            f"{sim.vast_api_url}/instances", params={"owner": "me"}, headers=sim.vast_headers(), timeout=120
        ).json()["instances"]
        list_s = time.monotonic() - t2
        sample = random.Random(5).sample(listing, min(args.sample, len(listing)))

        def probe(inst: dict) -> bool:
            url = f"http://{inst['public_ipaddr'].strip()}:{inst['ports']['8188/tcp'][0]['HostPort']}/system_stats"
            try:
                return requests.get(url, timeout=5).json()["system"]["os"] == "posix"
            except (requests.RequestException, ValueError, KeyError):
                return False

        t3 = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            answered = sum(pool.map(probe, sample))
        probe_s = time.monotonic() - t3
        t4 = time.monotonic()
        sim.control.reset()
        reset_s = time.monotonic() - t4
        health = sim.control.health()
    finally:
        code = sim.stop()
        sim.remove_state_dir()

    print(f"simulated instances requested     {args.count}")
    print(f"created (running, listening)      {len(result['ids'])}  failed={result['failed']}")
    print(f"simulator start-up (to ready)     {startup_s:.2f} s")
    print(
        f"bulk creation (server side)       {result['elapsed_s']:.2f} s   wall {bulk_wall_s:.2f} s"
        f"   = {1000 * result['elapsed_s'] / max(1, len(result['ids'])):.3f} ms/instance"
    )
    print(
        f"RSS empty -> loaded               {rss0 / 1024:.1f} MiB -> {rss1 / 1024:.1f} MiB"
        f"  (peak {hwm / 1024:.1f} MiB)"
        f"   = {(rss1 - rss0) / max(1, len(result['ids'])):.2f} KiB/instance"
    )
    print(f"open fds in the simulator         {fds}  (soft limit {health['fd_soft_limit']})")
    print(f"GET /instances with all           {list_s:.2f} s  ({len(listing)} records)")
    print(f"sample answering /system_stats    {answered}/{len(sample)}  in {probe_s:.2f} s")
    print(f"reset (close every listener)      {reset_s:.2f} s; listeners left {health['listeners']}")
    print(f"simulator exit code               {code}")
    return 0 if answered == len(sample) and len(result["ids"]) == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
