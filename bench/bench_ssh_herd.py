"""Benchmark: N instances lose SSH at the same moment; how are their reconnect handshakes spread over time?

Flow level, in one process: N real :class:`vastkeep.ssh.Collector` runs as threads (as one threads-pool SSH
worker holds them), each streaming its instance's log from the simulated cloud's SSH server (real sshd, or
the built-in server) into a real redis-server. Once all stream and are past the gate time, every SSH session
is killed at once (the simulator's kill-sessions fault, sent from 32 threads: all within a fraction of a
second). Each collector records its drop in the shared count (``vastkeep:ssh-drops``); the first few (below
``HERD_DROPS``) reconnect at once, the rest see a herd and wait ``uniform(0, SSH_RECONNECT_WINDOW_S)``.
The completed handshakes (``ssh-connected``) are time-stamped; the figure is the **peak
number of handshakes in any 1 s window** (sliding), with the same herd and no window (0 s) for comparison.
Real Celery worker processes are not used: on a 2-CPU host that also runs every instance's sshd, the
collectors' work is the same either way and the worker adds nothing to the spread.

    .venv/bin/python -m bench.bench_ssh_herd [--count 200] [--window 10] [--no-baseline] [--always-spread]
    [--earlier-rule-first]

Collectors are started ``--ramp`` per second so the initial connects do not themselves form a herd.
"""

from __future__ import annotations

import argparse
import bisect
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_ssh import Bench  # noqa: E402
from vastkeep.ssh import PROVISION_LOG  # noqa: E402
from vastkeep.ssh.decide import HERD_DROPS, RECONNECT_WINDOW_S  # noqa: E402


def peak_in_window(stamps: list[float], window_s: float = 1.0) -> int:
    """The most time stamps in any ``window_s``-long window (sliding, starting at each stamp)."""
    s = sorted(stamps)
    return max((bisect.bisect_left(s, t + window_s) - i for i, t in enumerate(s)), default=0)


def herd(b: Bench, count: int, window_s: float, ramp_per_s: float = 40.0,
         timeout_s: float = 120.0, herd_drops: int = HERD_DROPS) -> dict[str, Any]:
    """One herd of ``count`` collectors with reconnect window ``window_s``; the figures as a dict.
    ``herd_drops=1``: every drop is a herd (the earlier rule: even a lone drop waited in the window)."""
    ids = b.sim.control.bulk_create(count, ssh=True)["ids"]
    made = [b.instance(b.sim.control.instance(i)["instance"]) for i in ids]
    for _iid, path, _route in made:
        path.write_bytes(b"up\n")
    pairs = []
    for n, (iid, _p, _r) in enumerate(made):
        pairs.append(b.collector(iid, reconnect_window_s=window_s, keepalive_interval_s=15.0,
                                 herd_drops=herd_drops))
        if (n + 1) % max(1, int(ramp_per_s / 5)) == 0:
            time.sleep(0.2)
    try:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and not all(b.logs.offset(i, PROVISION_LOG) >= 3 for i, _p, _r in made):
            time.sleep(0.2)
        streaming = sum(1 for i, _p, _r in made if b.logs.offset(i, PROVISION_LOG) >= 3)
        time.sleep(1.5)  # past the gate (1 s): a drop now is a healthy link's first failure
        b.events.seen.clear()
        t0 = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda i: b.sim.control.kill_ssh_sessions(int(i)), [m[0] for m in made]))
        killed_in = time.monotonic() - t0

        def connected() -> list[float]:
            return [t for t, k in list(b.events.seen) if k == "ssh-connected"]

        end = time.monotonic() + window_s + timeout_s
        while len(connected()) < streaming and time.monotonic() < end:
            time.sleep(0.05)
        stamps = connected()
        for _iid, path, _route in made:  # and every collector streams again: one more line each
            with open(path, "ab") as fh:
                fh.write(b"after\n")
        end = time.monotonic() + 60
        while time.monotonic() < end and not all(b.logs.offset(i, PROVISION_LOG) >= 9 for i, _p, _r in made):
            time.sleep(0.1)
        resumed = sum(1 for i, _p, _r in made if b.logs.offset(i, PROVISION_LOG) >= 9)
    finally:
        b.stop(pairs)
        for i in ids:
            b.sim.control.exit_instance(i)
    per_s: dict[int, int] = {}
    for t in stamps:
        per_s[int(t - t0)] = per_s.get(int(t - t0), 0) + 1
    return {"count": count, "window_s": window_s, "herd_drops": herd_drops, "streaming": streaming,
            "reconnected": len(stamps),
            "resumed": resumed, "kill_s": round(killed_in, 2),
            "spread_s": round(max(stamps) - min(stamps), 2) if stamps else 0.0,
            "peak_1s": peak_in_window(stamps, 1.0), "per_second": [per_s.get(s, 0) for s in range(
                int(max(stamps) - t0) + 1 if stamps else 0)]}


def show(r: dict[str, Any]) -> None:
    print(f"   window {r['window_s']:g} s, herd from {r['herd_drops']} drops: {r['streaming']}/{r['count']} "
          f"streaming, {r['reconnected']} "
          f"reconnected over {r['spread_s']} s (kills sent in {r['kill_s']} s), {r['resumed']} streamed a "
          f"new line after; PEAK {r['peak_1s']} handshakes in any 1 s")
    print(f"   handshakes per second after the drop: {r['per_second']}")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--window", type=float, default=RECONNECT_WINDOW_S)
    p.add_argument("--no-baseline", action="store_true", help="skip the same herd with no window (0 s)")
    p.add_argument("--ramp", type=float, default=40.0, help="collectors started per second")
    p.add_argument("--always-spread", action="store_true",
                   help="also the same herd with the earlier rule (every drop waits in the window)")
    p.add_argument("--earlier-rule-first", action="store_true", help="with --always-spread: run it first")
    a = p.parse_args()
    b = Bench()
    print(f"SSH backend: {b.sim.info['ssh_backend']}, CPUs: {os.cpu_count()}; {a.count} instances lose SSH "
          f"at once:")
    try:
        rules = [HERD_DROPS, 1] if a.always_spread else [HERD_DROPS]
        if a.earlier_rule_first:
            rules.reverse()
        for herd_drops in rules:
            show(herd(b, a.count, a.window, a.ramp, herd_drops=herd_drops))
        if not a.no_baseline:
            show(herd(b, a.count, 0.0, a.ramp))
    finally:
        b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
