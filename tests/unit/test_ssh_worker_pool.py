"""The SSH worker runs the threads pool with SSH_WORKER_CONCURRENCY collectors, everywhere it is started:
``vastkeep up`` (stack/runtime.py), ``ops/start-worker-ssh.sh`` (systemd, compose)."""

from __future__ import annotations

from pathlib import Path

from vastkeep.core.settings import load_settings
from vastkeep.stack.runtime import Stack

ROOT = Path(__file__).resolve().parents[2]


def _stack(tmp_path: Path, **env: str) -> Stack:
    settings = load_settings(environ={"VASTKEEP_HOME": str(tmp_path / "home"), **env}, env_file=False)
    return Stack(settings, {})


def test_vastkeep_up_runs_the_ssh_worker_on_threads_with_the_setting(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    assert stack.pools["ssh"] == "threads" and stack.concurrency["ssh"] == 64
    assert stack.pools["control"] == stack.pools["keepalive"] == "prefork"  # time limits enforced there
    assert _stack(tmp_path, SSH_WORKER_CONCURRENCY="200").concurrency["ssh"] == 200


def test_the_ops_script_and_compose_use_threads_and_the_setting() -> None:
    script = (ROOT / "ops" / "start-worker-ssh.sh").read_text()
    assert '-P threads -c "${SSH_WORKER_CONCURRENCY:-64}"' in script
    assert "SSH_WORKER_CONCURRENCY" in (ROOT / "docker-compose.yml").read_text()
    unit = (ROOT / "ops" / "systemd" / "vastkeep-worker-ssh.service").read_text()
    assert "SSH_WORKER_CONCURRENCY=64" in unit
