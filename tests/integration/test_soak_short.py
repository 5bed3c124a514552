"""The soak's short form: `vastkeep soak --minutes 4 --seed 20261207` as a user runs it, in CI.

Real processes throughout: the command starts vastkeep up's children (embedded Redis, simulated cloud, a
worker per queue, beat, admin API, Flower) and a second worker host (a control and a keepalive worker that
reach Redis through a relay the soak cuts), four client programs that never import vastkeep, and every fault
family of the short plan at least once: among them a Redis restart on its AOF (``redis-restart``) and one
partition (``host-cut``: the second host cut off from Redis past its leases). The 60 s Redis outage and the
paused lease holder are in the full form only (``--minutes`` 10 or more). It fails on any client-visible
failure, any must-never count, a fault family injected 0 times or never observed, or a killed process not
restarted (docs/reliability.md).

``KNOWN_OPEN`` names the defects this run found on the code it was written against, each being fixed on its
own branch; while it is not empty the test is an expected failure (it still runs, and the report it leaves
says what it saw). Empty it once those branches are merged: from then on any count above 0 fails CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SEED = 20261207
MINUTES = 4

KNOWN_OPEN: list[str] = []


@pytest.mark.slow
@pytest.mark.timeout(MINUTES * 60 + 120)
@pytest.mark.xfail(bool(KNOWN_OPEN), reason="; ".join(KNOWN_OPEN), strict=False)
def test_short_soak_counts_nothing(tmp_path: Path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "VAST_API_KEY", "ADMIN_API_KEY", "FLOWER_BASIC_AUTH", "VASTKEEP_HOME")}
    report_path = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, "-m", "vastkeep.cli", "soak", "--minutes", str(MINUTES),
                           "--seed", str(SEED), "--report", str(report_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=MINUTES * 60 + 90)
    out = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert report_path.exists(), f"no report written (exit {proc.returncode}):\n{out}"
    report = json.loads(report_path.read_text())
    # the short form's promise: every fault family of the plan was injected and observed
    missing = {name: row for name, row in report["faults"].items() if not row["ok"]}
    assert not missing, f"fault families not injected or never observed: {sorted(missing)}\n{out}"
    # and a failover during a prompt: a comfy-crash struck while a client's prompt ran on its target
    assert report["faults"]["comfy-crash"]["under_prompt"] >= 1, f"{report['faults']['comfy-crash']}\n{out}"
    assert report["clientFailures"] == dict.fromkeys(report["clientFailures"], 0), out
    assert report["mustNever"] == dict.fromkeys(report["mustNever"], 0), out
    assert report["ok"] and proc.returncode == 0, out


def test_soak_refuses_a_real_cloud(tmp_path: Path):
    env = {**os.environ, "VAST_API_KEY": "not-a-real-key", "VAST_API_URL": "https://console.vast.ai/api/v0"}
    proc = subprocess.run([sys.executable, "-m", "vastkeep.cli", "soak", "--minutes", "1"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "refused" in proc.stderr and "VAST_API_KEY" in proc.stderr and "console.vast.ai" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing started, nothing written
