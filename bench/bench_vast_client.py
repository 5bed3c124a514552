"""Benchmark: ``VastClient`` against bare ``requests`` on the simulated Vast.ai API, side by side in one run.

Starts the simulated cloud (``vastkeep.sim.process.spawn``, its own process, SSH off), creates N running
instances (default 200), then times, call by call and interleaved (client, baseline, client, ...):

* ``VastClient.list_instances()`` (bearer header, bounded-retry wrapper, tolerant ``VastInstance`` parsing of
  every record) against ``requests.Session().get(.../instances?owner=me)`` + ``.json()`` with the same header
  (the same pooled-connection conditions; the JSON decode is in the baseline because any client needs it);
* ``VastClient.show_instance(id)`` against ``GET .../instances/{id}/?owner=me`` + ``.json()``.

A third row per call shows module-level ``requests.get`` (a new TCP connection per call) for reference.
Printed: p50 / p95 latency and the p50 ratio (client / bare session) = the parsing + wrapper overhead.

    .venv/bin/python bench/bench_vast_client.py [--instances 200] [--list-calls 150] [--show-calls 600]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vastkeep.providers.vast import VastClient  # noqa: E402
from vastkeep.sim.process import spawn  # noqa: E402


def pct(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank."""
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def interleaved(calls: int, fns: list[Callable[[], Any]]) -> list[list[float]]:
    """Per-call latency in ms for each fn, alternating the order every call (no warm-order bias)."""
    out: list[list[float]] = [[] for _ in fns]
    order = list(range(len(fns)))
    for i in range(calls):
        seq = order if i % 2 == 0 else order[::-1]
        for idx in seq:
            t0 = time.perf_counter()
            fns[idx]()
            out[idx].append((time.perf_counter() - t0) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--instances", type=int, default=200)
    p.add_argument("--list-calls", type=int, default=150)
    p.add_argument("--show-calls", type=int, default=600)
    args = p.parse_args(argv)
    logging.getLogger("vastkeep").setLevel(logging.ERROR)

    t_start = time.perf_counter()
    sim = spawn(["--ssh-backend", "off"])
    try:
        ids = sim.control.bulk_create(args.instances)["ids"]
        url, headers = sim.vast_api_url, sim.vast_headers()
        session = requests.Session()
        rng = random.Random(7)
        with VastClient(sim.api_key, url) as client:
            listed = client.list_instances()
            assert len(listed) == len(ids), (len(listed), len(ids))
            raw = session.get(f"{url}/instances", params={"owner": "me"}, headers=headers, timeout=30).json()
            assert len(raw["instances"]) == len(ids)
            list_bytes = len(session.get(f"{url}/instances", params={"owner": "me"}, headers=headers,
                                         timeout=30).content)

            def vk_list() -> None:
                assert len(client.list_instances()) == len(ids)

            def bare_list() -> None:
                r = session.get(f"{url}/instances", params={"owner": "me"}, headers=headers, timeout=(5, 30))
                r.raise_for_status()
                assert len(r.json()["instances"]) == len(ids)

            def new_conn_list() -> None:
                r = requests.get(f"{url}/instances", params={"owner": "me"}, headers=headers, timeout=(5, 30))
                r.raise_for_status()
                r.json()

            picks = [rng.choice(ids) for _ in range(args.show_calls)]
            pos = {"vk": 0, "bare": 0, "new": 0}

            def nxt(which: str) -> int:
                i = picks[pos[which] % len(picks)]
                pos[which] += 1
                return i

            def vk_show() -> None:
                iid = nxt("vk")
                assert client.show_instance(iid).id == iid

            def bare_show() -> None:
                iid = nxt("bare")
                r = session.get(f"{url}/instances/{iid}/", params={"owner": "me"}, headers=headers,
                                timeout=(5, 30))
                r.raise_for_status()
                assert r.json()["instances"]["id"] == iid

            def new_conn_show() -> None:
                iid = nxt("new")
                r = requests.get(f"{url}/instances/{iid}/", params={"owner": "me"}, headers=headers,
                                 timeout=(5, 30))
                r.raise_for_status()
                r.json()

            for fn in (vk_list, bare_list, vk_show, bare_show):  # warm-up: connections, caches
                for _ in range(5):
                    fn()
            lists = interleaved(args.list_calls, [vk_list, bare_list, new_conn_list])
            shows = interleaved(args.show_calls, [vk_show, bare_show, new_conn_show])
        session.close()
    finally:
        sim.stop()
        sim.remove_state_dir()

    _print_table(lists, shows, len(ids), list_bytes, t_start)
    return 0


def _print_table(lists: list[list[float]], shows: list[list[float]], n_ids: int, list_bytes: int,
                 t_start: float) -> None:
    """The figures side by side: each call's p50/p95/mean and the ratios against a bare session."""
    print(f"simulated Vast.ai API (own process, loopback); {n_ids} running instances; list body "
          f"{list_bytes / 1024:.0f} KiB; {os.cpu_count()} CPUs; calls interleaved")
    print(f"{'call':<52}{'calls':>6}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}")
    rows = [
        ("VastClient.list_instances()", lists[0]),
        ("bare Session.get(/instances) + .json()", lists[1]),
        ("requests.get(/instances) + .json() (new conn)", lists[2]),
        ("VastClient.show_instance(id)", shows[0]),
        ("bare Session.get(/instances/{id}/) + .json()", shows[1]),
        ("requests.get(/instances/{id}/) + .json() (new conn)", shows[2]),
    ]
    for name, s in rows:
        print(f"{name:<52}{len(s):>6}{pct(s, 50):>9.2f}{pct(s, 95):>9.2f}{statistics.fmean(s):>9.2f}")
    r_list = pct(lists[0], 50) / pct(lists[1], 50)
    r_show = pct(shows[0], 50) / pct(shows[1], 50)
    print(f"ratio p50 VastClient / bare session: list_instances {r_list:.2f}x "
          f"(+{pct(lists[0], 50) - pct(lists[1], 50):.2f} ms = parsing {n_ids} records + wrapper), "
          f"show_instance {r_show:.2f}x (+{pct(shows[0], 50) - pct(shows[1], 50):.2f} ms)")
    p95_list, p95_show = pct(lists[0], 95) / pct(lists[1], 95), pct(shows[0], 95) / pct(shows[1], 95)
    print(f"ratio p95 VastClient / bare session: list_instances {p95_list:.2f}x, "
          f"show_instance {p95_show:.2f}x; total {time.perf_counter() - t_start:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
