"""Ending a child process the one way: a polite signal, a deadline, then SIGKILL.

Every owner of a child process (the simulator's sshd, the simulator process itself, the benches' and tests'
servers) stops it so that it never outlives its owner and never hangs the owner's stop: the child gets the
signal (SIGTERM by default) and ``timeout_s`` to exit, then SIGKILL, to its whole process group with
``group`` (a child in a session of its own takes its own children along).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def end_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout_s: float = 10.0, *,
                sig: int = signal.SIGTERM, group: bool = False, kill_wait_s: float = 5.0) -> int | None:
    """Send ``sig`` to ``proc`` (if still running) and reap it: its exit code, or None when it had to be
    SIGKILLed at the deadline."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        if group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait(kill_wait_s)
        return None


__all__ = ["end_process"]
