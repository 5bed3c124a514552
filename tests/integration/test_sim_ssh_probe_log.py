"""The built-in SSH server (no sshd on the machine) and a connection that is not SSH: the simulator's log
gets one clear line, not paramiko's traceback, and its own start-up no longer makes such a connection."""

from __future__ import annotations

import socket
import time

from tests.fixtures.helpers import wait_for
from tests.fixtures.sim import start_sim

BANNER_ERROR = "Error reading SSH protocol banner"


def _wait_for(path, text: str, timeout_s: float = 10.0) -> str:
    """The log once it holds ``text``."""
    def holding() -> str:
        out = path.read_text(errors="replace")
        return out if text in out else ""

    return wait_for(holding, timeout_s, f"{text!r} in {path}", interval_s=0.05)


def test_a_non_ssh_connection_is_one_line_and_start_up_makes_none() -> None:
    proc = start_sim(["--ssh-backend", "builtin", "--log-level", "WARNING"])
    log = proc.state_dir / "sim.out"
    try:
        assert proc.info["ssh_backend"] == "builtin"
        inst = proc.control.create_instance(running=True, ssh=True)
        # the simulator's own start-up (and an SSH-enabled instance) leave no traceback behind
        time.sleep(1.0)
        before = log.read_text(errors="replace")
        assert "Traceback" not in before and BANNER_ERROR not in before, before
        assert "closed before sending an SSH banner" not in before, before
        # a port check on the instance's SSH port: connect, send nothing, close
        host, port = inst["public_ipaddr"].strip(), int(inst["ports"]["22/tcp"][0]["HostPort"])
        with socket.create_connection((host, port), timeout=5):
            time.sleep(0.3)
        out = _wait_for(log, "closed before sending an SSH banner")
    finally:
        proc.stop()
        proc.remove_state_dir()
    new = out[len(before):]
    lines = [line for line in new.splitlines() if line.strip()]
    assert len(lines) == 1, new
    assert "built-in SSH server" in lines[0] and "not an SSH client" in lines[0], lines[0]
    assert "Traceback" not in new and BANNER_ERROR not in new
