#!/usr/bin/env python3
"""The guide's watchdog backoff for systemd units: 10 s, 20 s, 40 s, then 60 s; unlimited; reset after 60 s.

systemd's own ``RestartSec=`` is one fixed delay. ``RestartSteps=``/``RestartMaxDelaySec=`` (systemd 254+,
not in Debian 12's 252) interpolate *exponentially* between the two (10 → 18 → 33 → 60 s) and never reset
after a stable run, so they cannot give the guide's schedule either. Every vastkeep unit therefore runs
this script around its process (the same on every systemd version):

``ExecStopPost=restart-backoff.py stopped %N``
    after each stop: a run that lasted at least the gate (60 s) resets the count (to 1 if it failed, so
    that crash still waits 10 s; to 0 after a clean stop); a shorter run counts as one more crash,
    whatever its exit status (a process that exits 0 at once must not restart in a tight loop).
``ExecStartPre=restart-backoff.py start %N``
    before each start: sleep ``restart_delay(crashes)`` (0 for the first start) and stamp the start time.

With ``RestartSec=100ms`` and ``StartLimitIntervalSec=0`` systemd restarts at once and forever; this script
adds the delay. State: one small JSON file per unit in ``$STATE_DIRECTORY/restart-backoff/`` (systemd's
``StateDirectory=vastkeep``), else ``$VASTKEEP_HOME``. An operator clears a unit's count by deleting its
file. ``RESTART_BACKOFF_DRY_RUN=1`` prints the delay instead of sleeping (tests).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

GATE_S = 60.0

try:  # the one restart schedule of vastkeep, when the package is importable (the unit's venv)
    from vastkeep.core.backoff import RestartPolicy, restart_delay

    def delay_for(crashes: int) -> float:
        """Seconds to wait before start number ``crashes`` + 1 after a crash series."""
        return restart_delay(crashes, RestartPolicy())
except ImportError:  # pragma: no cover - a bare system python: the same table
    def delay_for(crashes: int) -> float:
        """Seconds to wait before start number ``crashes`` + 1 after a crash series."""
        return 0.0 if crashes <= 0 else min(60.0, 10.0 * 2 ** (crashes - 1))


def after_stop(crashes: int, uptime_s: float | None, result: str, gate_s: float = GATE_S) -> int:
    """The crash count after a stop: reset by a run of ``gate_s`` or more, else one more crash."""
    if uptime_s is not None and uptime_s >= gate_s:
        return 0 if result == "success" else 1
    return max(0, int(crashes)) + 1


def state_file(unit: str) -> Path:
    base = os.environ.get("STATE_DIRECTORY", "").split(":")[0] or os.environ.get("VASTKEEP_HOME") or "."
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in unit) or "unit"
    return Path(base) / "restart-backoff" / f"{safe}.json"


def load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("start", "stopped"):
        print("usage: restart-backoff.py start|stopped <unit>", file=sys.stderr)
        return 2
    path = state_file(argv[2])
    data = load(path)
    crashes = int(data.get("crashes") or 0)
    now = time.time()
    if argv[1] == "stopped":
        started = data.get("started_at")
        uptime = now - float(started) if started is not None else None
        result = os.environ.get("SERVICE_RESULT", "success")
        save(path, {"crashes": after_stop(crashes, uptime, result), "started_at": None, "result": result})
        return 0
    delay = delay_for(crashes)
    if delay > 0:
        print(f"[Watchdog] {argv[2]}: {crashes} crashes, restarting in {delay:.0f}s", flush=True)
        if os.environ.get("RESTART_BACKOFF_DRY_RUN") != "1":
            time.sleep(delay)
    save(path, {"crashes": crashes, "started_at": time.time()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
