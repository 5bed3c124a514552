"""ops/systemd units restart with the guide's backoff (10/20/40/60 s, unlimited, reset after a stable run)
through ops/restart-backoff.py on every systemd version; the script's schedule as a table; the real script
run as systemd runs it (ExecStopPost / ExecStartPre with SERVICE_RESULT) against a state directory;
``systemd-analyze verify`` on the units where it is installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "ops" / "restart-backoff.py"
UNITS = sorted((ROOT / "ops" / "systemd").glob("vastkeep-*.service"))
SUPERVISED = [u for u in UNITS if "Restart=always" in u.read_text()]


def _module():
    spec = importlib.util.spec_from_file_location("restart_backoff", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


RB = _module()


@pytest.mark.parametrize(("crashes", "delay"),
                         [(0, 0), (1, 10), (2, 20), (3, 40), (4, 60), (5, 60), (99, 60)])
def test_the_wrapper_waits_the_guide_schedule(crashes, delay) -> None:
    assert RB.delay_for(crashes) == delay


@pytest.mark.parametrize(("crashes", "uptime", "result", "after"), [
    (0, 5.0, "exit-code", 1),       # a quick crash: one more
    (3, 5.0, "signal", 4),          # kill -9 after 5 s
    (2, 5.0, "success", 3),         # exits 0 at once: still a crash (no tight loop)
    (4, 60.0, "exit-code", 1),      # crashed after a stable run: a new series (waits 10 s)
    (4, 3600.0, "success", 0),      # a clean stop after a stable run: the next start is immediate
    (1, None, "exit-code", 2),      # never stamped a start (ExecStartPre failed)
])
def test_the_count_after_a_stop(crashes, uptime, result, after) -> None:
    assert RB.after_stop(crashes, uptime, result) == after


def test_every_supervised_unit_uses_the_wrapper_and_never_gives_up() -> None:
    assert len(SUPERVISED) >= 6
    for unit in SUPERVISED:
        text = unit.read_text()
        unit_section, service = text.split("[Service]", 1)
        assert "ExecStartPre=/opt/vastkeep/ops/restart-backoff.py start %N" in service, unit.name
        assert "ExecStopPost=/opt/vastkeep/ops/restart-backoff.py stopped %N" in service, unit.name
        assert "RestartSec=100ms" in service and "StartLimitIntervalSec=0" in unit_section, unit.name
        assert "StateDirectory=vastkeep" in service, unit.name
        timeout = int(service.split("TimeoutStartSec=", 1)[1].split()[0])
        assert timeout > RB.delay_for(99) + 30, unit.name  # the longest wait fits in the start timeout
    assert os.access(SCRIPT, os.X_OK)


def _run(tmp_path: Path, verb: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "STATE_DIRECTORY": str(tmp_path), "RESTART_BACKOFF_DRY_RUN": "1",
            "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, str(SCRIPT), verb, "vastkeep-worker-ssh"], env=full,
                          capture_output=True, text=True, timeout=30, check=True)


def test_the_script_as_systemd_runs_it(tmp_path: Path) -> None:
    state = tmp_path / "restart-backoff" / "vastkeep-worker-ssh.json"
    assert _run(tmp_path, "start").stdout == ""  # the first start does not wait
    waits = []
    for _ in range(5):  # crash right after each start
        _run(tmp_path, "stopped", SERVICE_RESULT="signal")
        waits.append(_run(tmp_path, "start").stdout.strip())
    assert waits == [f"[Watchdog] vastkeep-worker-ssh: {n} crashes, restarting in {d}s"
                     for n, d in [(1, 10), (2, 20), (3, 40), (4, 60), (5, 60)]]
    data = json.loads(state.read_text())
    data["started_at"] -= 61  # the last run was stable
    state.write_text(json.dumps(data))
    _run(tmp_path, "stopped", SERVICE_RESULT="exit-code")
    assert "1 crashes, restarting in 10s" in _run(tmp_path, "start").stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    for unit in (ROOT / "ops" / "systemd").iterdir():
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/vastkeep", str(ROOT)))
    names = [u.name for u in SUPERVISED]
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if "Unknown key" in line or "Invalid" in line or "Failed" in line or "not executable" in line]
    assert problems == [], problems
