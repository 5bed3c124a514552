"""Run the simulator as a child process and wait for its ready file (used by tests, the benchmark and
``vastkeep up``). The child is ``python -m vastkeep.sim``, exactly what ``vastkeep simulate`` runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TypedDict

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.processes import end_process
from vastkeep.sim.control import SimControl

REPO_ROOT = Path(__file__).resolve().parents[2]


class ReadyInfo(TypedDict):
    """The simulator's ready file: every URL and key a client needs (keys inside: written 0600)."""

    vast_api_url: str
    huggingface_api_url: str
    civitai_api_url: str
    control_url: str
    control_token: str
    api_key: str
    hf_token: str
    civitai_token: str
    ssh_private_key_path: str | None
    ssh_known_hosts_path: str | None
    ssh_backend: str
    ssh_user: str
    provisioning_log_path: str
    state_dir: str
    pid: int


class SimulatorProcess:
    """A simulator child: its ready-file values (``info``, holds keys), the process and a control client."""

    def __init__(self, info: ReadyInfo, proc: subprocess.Popen[bytes], state_dir: Path) -> None:
        self.info = info
        self.proc = proc
        self.state_dir = state_dir
        self.control = SimControl(info["control_url"], info["control_token"])

    def __repr__(self) -> str:  # info holds keys
        return f"SimulatorProcess(pid={self.proc.pid}, url={self.info['vast_api_url']!r})"

    @property
    def vast_api_url(self) -> str:
        return self.info["vast_api_url"]

    @property
    def api_key(self) -> str:
        return self.info["api_key"]

    @property
    def base_url(self) -> str:
        """The HuggingFace / Civitai base URL (the same port)."""
        return self.info["huggingface_api_url"]

    def vast_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def env(self) -> dict[str, str]:
        """Environment variables that point vastkeep's settings at this simulator."""
        i = self.info
        return {
            "VAST_API_URL": i["vast_api_url"],
            "VAST_API_KEY": i["api_key"],
            "HUGGINGFACE_API_URL": i["huggingface_api_url"],
            "HUGGINGFACE_HUB_TOKEN": i["hf_token"],
            "CIVITAI_API_URL": i["civitai_api_url"],
            "CIVITAI_TOKEN": i["civitai_token"],
            "SSH_KEY_PATH": i["ssh_private_key_path"] or "",
            "SSH_KNOWN_HOSTS_PATH": i["ssh_known_hosts_path"] or "",
            "VASTKEEP_SIMULATED": "1",
        }

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
        end_process(self.proc, timeout_s)
        self.control.close()
        return self.proc.returncode

    def remove_state_dir(self) -> None:
        """Delete the state directory (keys, logs) once the process is stopped."""
        if self.proc.poll() is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def spawn(
    extra_args: list[str] | None = None,
    state_dir: Path | None = None,
    timeout_s: float = 20.0,
    clock: Clock = SYSTEM_CLOCK,
) -> SimulatorProcess:
    """Start the simulator and wait (poll with a deadline) until its ready file appears."""
    state_dir = state_dir or Path(tempfile.mkdtemp(prefix="vk-sim-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    ready = state_dir / "ready.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with open(state_dir / "sim.out", "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vastkeep.sim",
                "--state-dir",
                str(state_dir),
                "--ready-file",
                str(ready),
                *(extra_args or []),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    deadline = clock.monotonic() + timeout_s
    while clock.monotonic() < deadline:
        if ready.exists():
            info: ReadyInfo = json.loads(ready.read_text())  # written by vastkeep.sim.cli.ready_info
            return SimulatorProcess(info, proc, state_dir)
        if proc.poll() is not None:
            raise RuntimeError(f"simulator exited with {proc.returncode}; see {state_dir / 'sim.out'}")
        clock.sleep(0.02)
    proc.kill()
    proc.wait(5)
    raise RuntimeError(f"simulator not ready after {timeout_s} s; see {state_dir / 'sim.out'}")
