"""CI smoke of ``bench/bench_keepalive.py --quick``: the whole rig (split simulator, worker processes, the
bare baseline, crash and black-hole checks) still runs end to end and its figures are sane. Timing goals are
the benchmark's, not asserted here (docs/testing.md); this catches a rig that no longer measures anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_keepalive_quick_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    cmd = [sys.executable, str(REPO / "bench" / "bench_keepalive.py"), "--quick", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    figures = json.loads(out.read_text())
    phases = {p["name"]: p for p in figures["phases"]}
    assert set(phases) == {"bare asyncio client", "vastkeep x1", "vastkeep x2"}
    for name, phase in phases.items():
        # every instance pinged at its cadence (a little slack for the last ping of the window)
        assert phase["pings"] >= 0.9 * phase["due"], (name, phase["pings"], phase["due"])
        assert phase["cpu_ms_per_1000"] > 0
    assert figures["args"]["per_sim"] < figures["args"]["instances"]  # the simulator really was split
    found = phases["vastkeep x2"]["detection"]
    assert found["crash_found"] == found["crashes"] == 5
    assert found["crash_detected_by"] == ["connection-closed"]
    assert found["blackhole_found"] == found["blackholes"] == 2
    assert found["blackhole_max_s"] <= found["blackhole_bound_s"] + 2
    assert phases["vastkeep x2"]["peak_fds"] > 0
