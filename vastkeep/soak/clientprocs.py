"""The client programs of a soak (I/O): start them, kill one while it holds now and then, wait for them.

Each client is ``client_workload`` run by file path with the venv's Python, in its own session, writing one
JSON line per outcome to ``clients.jsonl`` (docs/reliability.md, "The clients"). It never imports vastkeep.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

from vastkeep.core.clock import Clock

CLIENT_PROGRAM = Path(__file__).with_name("client_workload")
CLIENT_KILL_EVERY_S = 45.0
_HOLDING = ("grant", "url-ok", "url-fail", "renew")  # a client's last line says it holds a lease


def read_lines(path: Path) -> list[dict[str, object]]:
    """The JSON objects of a JSON-lines file, skipping a line cut short (its writer was killed)."""
    out: list[dict[str, object]] = []
    try:
        text = path.read_text()
    except OSError:
        return out
    for raw in text.splitlines():
        try:
            line: object = json.loads(raw)
        except ValueError:
            continue  # a client killed mid-line
        if isinstance(line, dict):
            out.append(line)
    return out


class ClientProcs:
    """The running clients; ``kills`` lists each client the soak killed (``client``, ``t``, ``holding``)."""

    def __init__(self, out_dir: Path, base_env: dict[str, str], clock: Clock, rng: random.Random) -> None:
        self.out_dir, self.base_env, self.clock, self.rng = out_dir, base_env, clock, rng
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.kills: list[dict[str, object]] = []

    @property
    def lines_path(self) -> Path:
        return self.out_dir / "clients.jsonl"

    def start(self, name: str, until: float) -> None:
        env = {**self.base_env, "SOAK_CLIENT": name, "SOAK_UNTIL": repr(until),
               "SOAK_OUT": str(self.lines_path), "PYTHONUNBUFFERED": "1"}
        log = open(self.out_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child's own stdout/stderr
        self.procs[name] = subprocess.Popen(
            [sys.executable, str(CLIENT_PROGRAM)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def kill_a_holder(self, until: float, serial: int) -> None:
        """SIGKILL one live client (its lease, if it holds one, must expire on its own) and start another."""
        live = sorted(n for n, p in self.procs.items() if p.poll() is None)
        if not live:
            return
        last: dict[str, str] = {}
        for line in read_lines(self.lines_path):
            last[str(line.get("client"))] = str(line.get("op"))
        holding = [n for n in live if last.get(n) in _HOLDING]
        name = self.rng.choice(holding or live)
        self.procs[name].kill()
        self.procs[name].wait(timeout=10)
        self.kills.append({"client": name, "t": self.clock.now(), "holding": name in holding})
        self.start(f"c{serial}", until)

    def wait(self, timeout_s: float = 30.0) -> None:
        """Wait for each client to end by itself (its ``SOAK_UNTIL``); SIGKILL one that does not."""
        for p in self.procs.values():
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)

    def kill_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()


__all__ = ["CLIENT_KILL_EVERY_S", "CLIENT_PROGRAM", "ClientProcs", "read_lines"]
