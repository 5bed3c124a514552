"""When a struck process serves again (I/O: the supervisor's status, the children's logs, the API).

:func:`track_processes` fills ``respawned_at`` and ``back_at`` of each process fault. Back means serving
again, not spawned: the API answers ``/health``; a worker logged ``<name>@<host> ready.``; beat logged
``beat: Starting...`` (after a kill); a stopped process is back at ``SIGCONT`` (the API: once ``/health``
answers); Redis is back once it answers ``PING`` (``redis_back``, from the runner).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from vastkeep.core.clock import Clock
from vastkeep.soak.counters import iso_s
from vastkeep.soak.injector import Injection
from vastkeep.soak.plan import FAMILIES, PROCESS, Signal

StatusFn = Callable[[], Mapping[str, Mapping[str, object]]]


def log_mark_after(path: Path, marker: str, since: float, need: str = "") -> float | None:
    """Time of the first line of a Celery log holding ``marker`` (and ``need``) stamped at or after ``since``
    (epoch seconds; Celery stamps local time as ``[YYYY-mm-dd HH:MM:SS,mmm: ...``)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if marker not in line or need not in line or not line.startswith("["):
            continue
        try:
            t = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        if t >= since - 1.0:
            return t
    return None


def track_processes(
    injections: list[Injection],
    status_fn: StatusFn,
    logs: Path,
    clock: Clock,
    api_answers: Callable[[], bool],
    redis_answers: Callable[[], bool],
) -> None:
    """Fill ``respawned_at`` and ``back_at`` of process faults (the module's rules)."""
    status: Mapping[str, Mapping[str, object]] | None = None
    for record in injections:
        fam = FAMILIES[record["family"]]
        if fam.target != PROCESS or not record.get("injected") or record.get("back_at"):
            continue
        status = status or status_fn()
        child = status.get(fam.process or "") or {}
        if fam.signal in (Signal.KILL, Signal.TERM) and not record.get("respawned_at"):
            if child.get("status") == "running" and child.get("pid") not in (None, record["pid"]):
                record["respawned_at"] = clock.now()
                started = iso_s(child.get("lastStartTime"))
                if started is not None:
                    record["spawned_at"] = started  # the new process existed from here (noticed later)
            continue
        if fam.signal == Signal.STOP:
            if not record.get("restored_at") or child.get("pid") != record["pid"]:
                continue
            record["respawned_at"] = record["restored_at"]
            if fam.process not in ("api", "redis"):
                record["back_at"] = record["restored_at"]
                continue
        # after a kill every line is the new process's (the old one is dead): from the kill on, since the
        # runner may notice the new pid seconds after it started logging under load
        since = float(record["at"]) if fam.signal != Signal.STOP else float(record["respawned_at"])
        if fam.process == "api":
            if api_answers():
                record["back_at"] = clock.now()
        elif fam.process == "redis":
            if redis_answers():
                record["back_at"] = clock.now()
        else:
            process = fam.process or ""
            marker = "beat: Starting..." if process == "beat" else f"{process.split('-')[-1]}@"
            seen = log_mark_after(logs / f"{process}.log", marker, since,
                                  need="" if process == "beat" else " ready.")
            if seen is not None:
                record["back_at"] = seen


__all__ = ["log_mark_after", "track_processes"]
