"""An instance's container log: the provisioning lines the lifecycle writes, kept in memory (what
``request_logs`` serves) and in the instance's ``onstart.log`` (what SSH ``tail`` reads), and the snapshots
``request_logs`` hands out under an unguessable name."""

from __future__ import annotations

import secrets
from collections import OrderedDict
from pathlib import Path as FsPath

from vastkeep.sim.config import SimConfig
from vastkeep.sim.state import Instance

#: How many ``request_logs`` results are kept for their ``result_url`` (oldest dropped first).
LOG_RESULTS_KEPT = 256


class ContainerLogs:
    """Container logs and ``request_logs`` snapshots (mixed into :class:`~vastkeep.sim.core.Simulator`)."""

    config: SimConfig
    log_results: OrderedDict[str, str]

    def log_path(self, inst: Instance) -> FsPath:
        return self.config.state_dir / "instances" / str(inst.id) / "var" / "log" / "onstart.log"

    def append_log(self, inst: Instance, lines: list[str]) -> None:
        """Append to the instance's container log (also what ``request_logs`` and SSH ``tail`` read)."""
        inst.log_lines.extend(line.rstrip("\n") for line in lines)
        path = self.log_path(inst)
        if path.parent.is_dir():
            with open(path, "a") as fh:
                fh.writelines(line.rstrip("\n") + "\n" for line in lines)

    def container_log(self, inst: Instance, tail: int | None = None, grep: str | None = None) -> str:
        """The container log as ``request_logs`` serves it: the last ``tail`` lines containing ``grep``."""
        lines = list(inst.log_lines)
        if grep:
            lines = [line for line in lines if grep in line]
        if tail is not None and tail >= 0:
            lines = lines[-tail:] if tail else []
        return "".join(line + "\n" for line in lines)

    def store_log_result(self, text: str) -> str:
        """Keep a log snapshot under an unguessable name (the real API uploads it and hands out a URL)."""
        name = secrets.token_urlsafe(18)
        self.log_results[name] = text
        while len(self.log_results) > LOG_RESULTS_KEPT:
            self.log_results.popitem(last=False)
        return name


__all__ = ["LOG_RESULTS_KEPT", "ContainerLogs"]
