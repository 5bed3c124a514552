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


def node_marker(cid: str) -> str:
    """What a worker child's node name starts with in its ``ready.`` line: ``worker-control`` → ``control@``,
    host B's ``hostb-control`` → ``control-b@``."""
    kind, _, queue = cid.partition("-")
    return f"{queue}@" if kind == "worker" else f"{queue}-{kind.removeprefix('host')}@"


def _serving_since(cid: str, since: float, logs: Path, clock: Clock, api_answers: Callable[[], bool],
                   redis_answers: Callable[[], bool]) -> float | None:
    """When the child ``cid`` served again after ``since``, or None: the API answers, Redis answers ``PING``,
    beat logged ``beat: Starting...``, a worker logged ``<node> ready.``."""
    if cid == "api":
        return clock.now() if api_answers() else None
    if cid == "redis":
        return clock.now() if redis_answers() else None
    if cid == "beat":
        return log_mark_after(logs / "beat.log", "beat: Starting...", since)
    return log_mark_after(logs / f"{cid}.log", node_marker(cid), since, need=" ready.")


def _respawned(child: Mapping[str, object], old_pid: object) -> bool:
    return child.get("status") == "running" and child.get("pid") not in (None, old_pid)


def _track_together(record: Injection, status: Mapping[str, Mapping[str, object]], logs: Path, clock: Clock,
                    api_answers: Callable[[], bool], redis_answers: Callable[[], bool]) -> None:
    """A fault on several children at once is back when every one of them serves again."""
    backs = record.setdefault("backs", {})
    for cid, pid in (record.get("pids") or {}).items():
        if cid in backs or not _respawned(status.get(cid) or {}, pid):
            continue
        seen = _serving_since(cid, float(record["at"]), logs, clock, api_answers, redis_answers)
        if seen is not None:
            backs[cid] = seen
    if backs and set(backs) == set(record.get("pids") or {}):
        record["respawned_at"] = min(backs.values())
        record["back_at"] = max(backs.values())


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
        if fam.signal == Signal.CUT:  # host B's link: back when the relay moves bytes again
            if record.get("restored_at"):
                record["respawned_at"] = record["back_at"] = record["restored_at"]
            continue
        status = status or status_fn()
        if fam.together:
            _track_together(record, status, logs, clock, api_answers, redis_answers)
            continue
        child = status.get(fam.process or "") or {}
        if fam.signal in (Signal.KILL, Signal.TERM) and not record.get("respawned_at"):
            if _respawned(child, record["pid"]):
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
        seen = _serving_since(fam.process or "", since, logs, clock, api_answers, redis_answers)
        if seen is not None:
            record["back_at"] = seen


__all__ = ["log_mark_after", "node_marker", "track_processes"]
