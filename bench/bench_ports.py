"""Benchmark: port validation of a whole simulated pool vs the same code run sequentially.

Starts the simulated cloud (``python -m vastkeep.sim``, its own process, loopback only), rents N running
instances with all three ComfyUI candidates (direct :8188, ``8188/tcp``, ``18188/tcp``), black-holes every
path of a fraction of them (connects time out), reads the instances back through ``VastClient`` exactly
as production does, then measures in this one process:

1. the concurrent sweep of all N instances (``PortValidator.validate_many``, concurrency bound C);
2. the same sweep at the default PORT_PROBE_CONCURRENCY (1000);
3. the same code with concurrency 1 (one socket at a time) on S instances with the same black-holed share.

Both deadlines (TCP connect and HTTP) are ``--timeout-s`` (default 1 s, documented smaller than the
guide's 5 s so the run takes seconds). The goal: sweep(N) < 2 × one TCP timeout. It is checked for both
bounds; the exit code follows the ``--concurrency`` sweep. At the default bound the goal holds up to ~1,000
black-holed probes; beyond, a black-holed probe holds its slot for the whole timeout, so the sweep needs
ceil(black-holed probes / bound) rounds of it — raise PORT_PROBE_CONCURRENCY for bigger pools.

    .venv/bin/python -m bench.bench_ports [--instances 1000] [--blackholed 0.2] [--timeout-s 1.0]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from vastkeep.core.settings import Settings
from vastkeep.ports.candidates import derive_candidates
from vastkeep.ports.probe import ProbeConfig
from vastkeep.ports.validator import PortValidator
from vastkeep.providers.vast import VastClient
from vastkeep.sim.control import SimControl

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BOUND = Settings().port_probe_concurrency  # PORT_PROBE_CONCURRENCY's default (200)


def start_sim(timeout_s: float = 30.0) -> tuple[subprocess.Popen, dict]:
    state = Path(tempfile.mkdtemp(prefix="vk-bench-sim-"))
    ready = state / "ready.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "vastkeep.sim", "--state-dir", str(state), "--ready-file",
                             str(ready), "--ssh-backend", "off"], env=env, cwd=str(REPO),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready.exists():
            return proc, json.loads(ready.read_text())
        if proc.poll() is not None:
            raise RuntimeError("simulator exited during start-up")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("simulator did not become ready")


def sweep(targets: dict, timeout_s: float, concurrency: int) -> tuple[float, Counter]:
    v = PortValidator(ProbeConfig(tcp_timeout_s=timeout_s, http_timeout_s=timeout_s, allow_loopback=True),
                      concurrency=concurrency)
    t0 = time.perf_counter()
    verdicts = v.validate_many(targets)
    elapsed = time.perf_counter() - t0
    tally = Counter("ok" if pv.success else ("firewall" if pv.firewall else "failed")
                    for pv in verdicts.values())
    return elapsed, tally


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--blackholed", type=float, default=0.2,
                   help="share of instances whose paths all time out")
    p.add_argument("--timeout-s", type=float, default=1.0,
                   help="TCP and HTTP deadline (the guide's TCP is 5 s)")
    p.add_argument("--concurrency", type=int, default=3000, help="sockets open at once in the sweep")
    p.add_argument("--sequential", type=int, default=20, help="instances for the sequential baseline")
    args = p.parse_args(argv)
    logging.getLogger("vastkeep.ports").setLevel(logging.ERROR)  # 1,000 guide log lines are not the point
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    proc, info = start_sim()
    try:
        ctl = SimControl(info["control_url"], info["control_token"])
        t0 = time.perf_counter()
        ids = ctl.bulk_create(args.instances, direct_8188=True, port_18188=True)["ids"]
        n_bh = round(len(ids) * args.blackholed)
        step = len(ids) / n_bh if n_bh else 0
        black = {ids[int(i * step)] for i in range(n_bh)}  # spread evenly, so any prefix has the same share
        for iid in black:
            ctl.blackhole(iid)
        setup_s = time.perf_counter() - t0
        with VastClient(info["api_key"], info["vast_api_url"], timeout_s=(5.0, 60.0)) as vast:
            instances = {str(vi.id): vi for vi in vast.list_instances()}
        targets = {iid: derive_candidates(vi.public_ip, vi.ports) for iid, vi in instances.items()}
        n_cands = sum(len(c) for c in targets.values())
        n_black_probes = sum(len(targets[str(i)]) for i in black if str(i) in targets)

        sweep_s, tally = sweep(targets, args.timeout_s, args.concurrency)
        default_s, _ = sweep(targets, args.timeout_s, DEFAULT_BOUND)
        seq_ids = [str(i) for i in ids[: args.sequential]]
        seq_targets = {i: targets[i] for i in seq_ids}
        seq_black = sum(1 for i in seq_ids if int(i) in black)
        seq_s, seq_tally = sweep(seq_targets, args.timeout_s, 1)
    finally:
        proc.terminate()
        proc.wait(15)

    per_seq = seq_s / len(seq_targets)
    per_sweep = sweep_s / len(targets)
    print(f"setup: {len(ids)} instances rented, {len(black)} black-holed, in {setup_s:.2f}s; "
          f"fd limit {hard}; {os.cpu_count()} CPUs; TCP=HTTP timeout {args.timeout_s:.2f}s")
    print(f"{'run':<44}{'instances':>10}{'probes':>8}{'wall s':>9}{'per inst ms':>13}")
    print(f"{'concurrent sweep (bound ' + str(args.concurrency) + ')':<44}{len(targets):>10}{n_cands:>8}"
          f"{sweep_s:>9.3f}{per_sweep * 1000:>13.2f}")
    print(f"{'concurrent sweep (default bound ' + str(DEFAULT_BOUND) + ')':<44}{len(targets):>10}"
          f"{n_cands:>8}{default_s:>9.3f}{default_s / len(targets) * 1000:>13.2f}")
    print(f"{'sequential (bound 1), ' + str(seq_black) + ' black-holed':<44}{len(seq_targets):>10}"
          f"{sum(len(c) for c in seq_targets.values()):>8}{seq_s:>9.3f}{per_seq * 1000:>13.2f}")
    print(f"verdicts (sweep): {dict(tally)}; (sequential): {dict(seq_tally)}")
    print(f"ratio sweep({len(targets)}) / sequential({len(seq_targets)}) wall: {sweep_s / seq_s:.3f}")
    print(f"extrapolated sequential for {len(targets)}: {per_seq * len(targets):.1f}s → speed-up "
          f"{per_seq * len(targets) / sweep_s:.0f}x (per instance {per_seq / per_sweep:.0f}x)")
    goal = 2 * args.timeout_s
    ok = sweep_s < goal
    runs = ((args.concurrency, sweep_s, ok), (DEFAULT_BOUND, default_s, default_s < goal))
    for bound, took, passed in runs:
        rounds = max(1, math.ceil(n_black_probes / bound))
        print(f"goal sweep({len(targets)}) < 2 x TCP timeout = {goal:.2f}s at bound {bound}: "
              f"{'PASS' if passed else 'FAIL'} ({took:.2f}s; {n_black_probes} black-holed probes = "
              f"~{rounds} round(s) of the {args.timeout_s:.2f}s timeout)")
    if default_s >= goal:
        print(f"at the default bound PORT_PROBE_CONCURRENCY={DEFAULT_BOUND} this pool needs "
              f"~{math.ceil(n_black_probes / DEFAULT_BOUND)} rounds of the timeout: raise "
              f"PORT_PROBE_CONCURRENCY for big pools (keep it below the worker's fd limit)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
