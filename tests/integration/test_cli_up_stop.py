"""Ctrl-C of `vastkeep up` is quick and clean: every worker finishes its warm shutdown well inside the
supervisor's 15 s grace (the polling dispatcher ends its run at the stop instead of running out its budget),
and no child log gets a traceback (a pool process killed under its worker reads as ``WorkerLostError``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.stack import stack_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
#: well under the supervisor's 15 s SIGKILL: a worker that waits for a long task would show here
STOP_BOUND_S = 10.0


def _healthy(cwd: Path, env: dict[str, str]) -> bool:
    res = subprocess.run([sys.executable, "-m", "vastkeep.cli", "check"], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=60)
    return res.returncode == 0


def test_ctrl_c_stops_quickly_without_tracebacks(tmp_path: Path) -> None:
    env = stack_env()
    out_path = tmp_path / "up.out"
    logs = tmp_path / ".vastkeep" / "logs"
    with open(out_path, "wb") as out:
        up = subprocess.Popen([sys.executable, "-m", "vastkeep.cli", "up"], cwd=tmp_path, env=env,
                              stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            # healthy, and the dispatcher is inside a run (its loop is what a stop must end)
            while not ((logs / "worker-control.log").exists()
                       and "Starting adaptive polling loop" in (logs / "worker-control.log").read_text()
                       and _healthy(tmp_path, env)):
                assert up.poll() is None, out_path.read_text()[-3000:]
                assert time.monotonic() < deadline, out_path.read_text()[-3000:]
                time.sleep(0.5)
            time.sleep(3.0)  # a few turns into the run, pool processes busy with their daemons
            t0 = time.monotonic()
            up.send_signal(signal.SIGINT)
            try:
                rc = up.wait(60)
            except subprocess.TimeoutExpired:
                rc = None
            took_s = time.monotonic() - t0
        finally:
            if up.poll() is None:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait(10)
    text = out_path.read_text()
    print(f"vastkeep up stopped in {took_s:.2f} s")
    assert rc == 0, text[-3000:]
    assert "did not stop within" not in text, text[-3000:]
    assert took_s < STOP_BOUND_S, f"Ctrl-C took {took_s:.1f} s\n{text[-3000:]}"
    for log_file in sorted((tmp_path / ".vastkeep").rglob("*.log")):
        body = log_file.read_text(errors="replace")
        for bad in ("Traceback", "WorkerLostError"):
            assert bad not in body, f"{log_file.name}:\n{body[-4000:]}"
