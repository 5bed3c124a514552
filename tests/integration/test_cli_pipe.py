"""A reader that closes the pipe early (``vastkeep simulate fault … | head -1``) ends the command quietly:
no traceback, no "Exception ignored" line, exit 141 (128 + SIGPIPE, as a shell reports for any Unix tool)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXIT_BROKEN_PIPE = 141  # the documented contract (vastkeep.cli.EXIT_BROKEN_PIPE)


def run_into_closed_pipe(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes a byte: every write is EPIPE
    env = {k: v for k, v in os.environ.items() if k not in ("VASTKEEP_HOME", "REDIS_URL")}
    env["PYTHONPATH"] = str(ROOT)
    try:
        return subprocess.run([sys.executable, "-m", "vastkeep.cli", *args], cwd=cwd, env=env,
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)


def assert_quiet(res: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in res.stderr and "BrokenPipeError" not in res.stderr, res.stderr
    assert "Exception ignored" not in res.stderr, res.stderr
    assert res.returncode == EXIT_BROKEN_PIPE, (res.returncode, res.stderr)


def test_simulate_fault_into_a_closed_pipe(tmp_path: Path, sim: Any) -> None:
    iid = sim.control.create_instance(running=True)["id"]
    home = tmp_path / ".vastkeep"
    home.mkdir()
    (home / "stack.json").write_text(json.dumps({
        "simulated": True, "simulator": {"control_url": sim.info["control_url"],
                                         "control_token": sim.info["control_token"]}}))
    res = run_into_closed_pipe(["simulate", "fault", str(iid), "crash"], tmp_path)
    assert_quiet(res)
    endpoints = sim.control.instance(int(iid))["sim"]["endpoints"].values()
    assert "crash" in {e["comfy_mode"] for e in endpoints}, "the fault went in before the output failed"


@pytest.mark.parametrize("args", [["status", "--json"], ["check"]])
def test_other_commands_into_a_closed_pipe(tmp_path: Path, args: list[str]) -> None:
    assert_quiet(run_into_closed_pipe(args, tmp_path))
