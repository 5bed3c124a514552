"""Layer 6, pure: what to do with one logical daemon at one sweep.

A logical daemon (a keepalive shard runner, the poll dispatcher, an instance's SSH collector) is not a
process: it is a chain of bounded Celery tasks, each handing over to its continuation, that beats a
heartbeat in Redis and holds a fenced lease while it runs. The supervision sweep looks at each wanted
daemon and calls :func:`decide` with

- its supervision record (:class:`DaemonRecord`, the guide's watchdog fields plus the sweep's own),
- what Redis says about it now (:class:`Observed`: heartbeat age, lease held),
- whether it is still wanted, the :class:`SupervisionPolicy`, the time and a jitter source,

and gets a :class:`Decision`: the new record, whether to send a start, and what to announce.

The rules (``alive`` = heartbeat not older than ``stale_s`` **or** the daemon's lease held **or** a heartbeat
marked ``handover`` not older than ``start_timeout_s``, so a normal handover, where the lease is free while
the heartbeat stays fresh or the continuation waits in a queue, is never a crash):

=====================  ==============================================================================
record status          not alive →
=====================  ==============================================================================
(new) ``registered``   ``start`` now: the first start never waits (and is not a restart)
``starting``           ``wait`` until ``start_timeout_s`` after the start was sent (the message may sit
                       in a queue); then it is a crash ("no heartbeat within the start timeout")
``running``, holder    ``restart`` now, no backoff, not a crash: the daemon had held its lease
gone                   (``leaseSeen``), the lease lapsed, the heartbeat is stale, and no crash was reported
                       (a heartbeat marked ``crashed``). Its holder is gone (host paused, cut off, killed),
                       nothing crashed where it ran; another host takes it at this sweep.
                       ``lastHandoverTime`` = now. Only once per ``stable_after_s``: a second one sooner is
                       a crash (a daemon that keeps vanishing without a word backs off)
``running``            a crash: ``consecutiveCrashes`` +1 (reset to 1 if it had run ``stable_after_s``),
                       status ``backoff`` until ``nextRestartAt`` = now + :func:`restart_delay` with jitter
``backoff``            ``wait``, then at ``nextRestartAt`` ``restart``: ``restartCount`` +1, ``starting``
``failed``             nothing (an operator resets it); ``maxRestarts`` reached (never with -1)
=====================  ==============================================================================

An alive daemon is ``running``; after ``stable_after_s`` of it, ``consecutiveCrashes`` goes back to 0.
``crash_loop_crashes`` crashes within ``crash_loop_window_s`` raise one ``crash-loop`` alert per window.
The jitter only ever shortens a delay (spread over its last ``jitter_fraction``), so a restart is never later
than the guide's 10/20/40/60 s, and daemons that died together (a worker with three shards) restart apart.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from vastkeep.core.backoff import RestartPolicy, failures_after_session, restart_delay

if TYPE_CHECKING:
    from vastkeep.core.settings import Settings

#: A jitter source: (daemon id, consecutive crashes) → a number in [0, 1).
Jitter = Callable[[str, int], float]



class DaemonStatus(StrEnum):
    """Where a supervised daemon is (the guide's watchdog statuses; stored and answered as these strings)."""

    REGISTERED = "registered"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    FAILED = "failed"


class Action(StrEnum):
    """One sweep's verdict for one daemon."""

    HEALTHY = "healthy"
    START = "start"
    WAIT = "wait"
    CRASHED = "crashed"
    RESTART = "restart"
    FAILED = "failed"
    RETIRE = "retire"


class Announcement(StrEnum):
    """What a decision asks the flow to log and emit."""

    REGISTERED = "registered"
    CRASHED = "crashed"
    RESTARTED = "restarted"
    FAILED = "failed"
    CRASH_LOOP = "crash-loop"
    HOLDER_GONE = "holder-gone"


STATUSES: tuple[DaemonStatus, ...] = tuple(DaemonStatus)
START_TIMEOUT_ERROR = "no heartbeat within the start timeout"
STALE_ERROR = "heartbeat stale and lease free"
HOLDER_GONE = "holder gone: lease lapsed, heartbeat stale, no crash reported"


def hash_jitter(daemon_id: str, crashes: int) -> float:
    """Deterministic per daemon and crash number, different across daemons: the default jitter source."""
    return zlib.crc32(f"{daemon_id}#{int(crashes)}".encode()) / 2**32


def no_jitter(daemon_id: str, crashes: int) -> float:
    """The guide's exact schedule (tests, and ``SUPERVISION_RESTART_JITTER_PCT=0``)."""
    return 0.0


@dataclass(frozen=True)
class SupervisionPolicy:
    """When a daemon counts as dead, how long a start may take, the restart schedule and the alert rule."""

    restart: RestartPolicy = field(default_factory=RestartPolicy)
    stale_s: float = 10.0
    start_timeout_s: float = 60.0
    jitter_fraction: float = 0.2
    crash_loop_crashes: int = 5
    crash_loop_window_s: float = 600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SupervisionPolicy:
        """The SUPERVISION_* settings (the restart schedule itself is the guide's, not configurable)."""
        return cls(restart=RestartPolicy(max_restarts=int(settings.supervision_max_restarts)),
                   stale_s=settings.supervision_heartbeat_stale_ms / 1000,
                   start_timeout_s=settings.supervision_start_timeout_ms / 1000,
                   jitter_fraction=settings.supervision_restart_jitter_pct / 100,
                   crash_loop_crashes=int(settings.supervision_crash_loop_crashes),
                   crash_loop_window_s=settings.supervision_crash_loop_window_ms / 1000)


@dataclass(frozen=True)
class Observed:
    """What Redis says about a daemon now: its heartbeat's age (None: no live heartbeat), its lease."""

    heartbeat_age_s: float | None = None
    lease_held: bool = False
    pid: int | None = None
    handover: bool = False  # the last heartbeat said "my continuation is sent" (it may wait in a queue)
    crashed: bool = False  # the last heartbeat said "my run ended in an error" (a crash where it ran)

    def alive(self, policy: SupervisionPolicy) -> bool:
        age = self.heartbeat_age_s
        fresh = age is not None and age <= policy.stale_s and not self.crashed
        handing_over = self.handover and age is not None and age <= policy.start_timeout_s
        return fresh or self.lease_held or handing_over


@dataclass(frozen=True)
class DaemonRecord:
    """One daemon's supervision record (times are epoch seconds; the JSON form uses the guide's names)."""

    id: str
    name: str
    status: DaemonStatus = DaemonStatus.REGISTERED
    restart_count: int = 0
    consecutive_crashes: int = 0
    last_start_time: float | None = None
    last_crash_time: float | None = None
    last_error: str | None = None
    next_restart_at: float | None = None
    running_since: float | None = None
    crash_times: tuple[float, ...] = ()
    alerted_at: float | None = None
    lease_seen: bool = False  # seen holding its lease since its last start (it really ran)
    last_handover_time: float | None = None  # the last restart because its holder was gone

    def to_json(self) -> dict[str, object]:
        """The guide's names; ``leaseSeen`` and ``lastHandoverTime`` only when set, so a record the issue-20
        rule never touched is stored byte for byte as before (and reads the same on older code)."""
        out = self._guide_json()
        if self.lease_seen:
            out["leaseSeen"] = True
        if self.last_handover_time is not None:
            out["lastHandoverTime"] = self.last_handover_time
        return out

    def _guide_json(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "status": self.status, "restartCount": self.restart_count,
                "consecutiveCrashes": self.consecutive_crashes, "lastStartTime": self.last_start_time,
                "lastCrashTime": self.last_crash_time, "lastError": self.last_error,
                "nextRestartAt": self.next_restart_at, "runningSince": self.running_since,
                "crashTimes": list(self.crash_times), "alertedAt": self.alerted_at}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> DaemonRecord:
        """Parse a stored record; a field of the wrong type raises ``TypeError``/``ValueError``."""
        def num(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else _number(value)

        status = str(data.get("status") or DaemonStatus.REGISTERED)
        error = data.get("lastError")
        times = data.get("crashTimes") or ()
        if not isinstance(times, (list, tuple)):
            raise TypeError("crashTimes is not a list")
        return cls(id=str(data["id"]), name=str(data.get("name") or data["id"]),
                   status=DaemonStatus(status) if status in STATUSES else DaemonStatus.REGISTERED,
                   restart_count=int(_number(data.get("restartCount") or 0)),
                   consecutive_crashes=int(_number(data.get("consecutiveCrashes") or 0)),
                   last_start_time=num("lastStartTime"), last_crash_time=num("lastCrashTime"),
                   last_error=None if error is None else str(error), next_restart_at=num("nextRestartAt"),
                   running_since=num("runningSince"),
                   crash_times=tuple(_number(t) for t in times),
                   alerted_at=num("alertedAt"), lease_seen=bool(data.get("leaseSeen") or False),
                   last_handover_time=num("lastHandoverTime"))


def _number(value: object) -> float:
    """A JSON number (or numeric string) as a float; anything else is a corrupt record."""
    if isinstance(value, (int, float, str)):
        return float(value)
    raise TypeError(f"not a number: {type(value).__name__}")


@dataclass(frozen=True)
class Decision:
    """``action``: healthy | start | wait | crashed | restart | failed | retire.

    ``start`` says whether to send the daemon's start now; ``announce`` lists what to log and emit
    (``registered``, ``crashed``, ``restarted``, ``failed``, ``crash-loop``); ``delay_s`` is the backoff
    chosen at a crash. ``record`` is None for ``retire`` (drop it from the book).
    """

    action: Action
    record: DaemonRecord | None
    start: bool = False
    announce: tuple[Announcement, ...] = ()
    delay_s: float | None = None


def jittered_delay(daemon_id: str, crashes: int, policy: SupervisionPolicy, jitter: Jitter) -> float:
    """``restart_delay(crashes)`` shortened by up to ``jitter_fraction`` of itself, per daemon."""
    base = restart_delay(crashes, policy.restart)
    u = min(max(float(jitter(daemon_id, crashes)), 0.0), 1.0)
    return round(base * (1.0 - policy.jitter_fraction * u), 3)


def decide(record: DaemonRecord | None, observed: Observed, *, daemon_id: str, name: str, wanted: bool,
           now: float, policy: SupervisionPolicy, jitter: Jitter = hash_jitter) -> Decision:
    """One sweep's verdict for one daemon (see the module docstring for the table)."""
    announce: tuple[Announcement, ...] = ()
    if record is None:
        if not wanted:
            return Decision(Action.RETIRE, None)
        record = DaemonRecord(id=daemon_id, name=name)
        announce = (Announcement.REGISTERED,)
    if not wanted:
        return Decision(Action.RETIRE, None)
    alive = observed.alive(policy)
    if alive:
        return _alive(record, observed, now, policy, announce)
    if record.status == DaemonStatus.FAILED:
        return Decision(Action.FAILED, record, announce=announce)
    if record.status == DaemonStatus.REGISTERED:
        started = replace(record, status=DaemonStatus.STARTING, last_start_time=now, running_since=None,
                          next_restart_at=None, lease_seen=False)
        return Decision(Action.START, started, start=True, announce=announce)
    starting_for_s = now - (record.last_start_time or now)
    if record.status == DaemonStatus.STARTING and starting_for_s < policy.start_timeout_s:
        return Decision(Action.WAIT, record, announce=announce)
    if record.status == DaemonStatus.BACKOFF:
        if record.next_restart_at is not None and now < record.next_restart_at:
            return Decision(Action.WAIT, record, announce=announce)
        restarted = replace(record, status=DaemonStatus.STARTING, restart_count=record.restart_count + 1,
                            last_start_time=now, running_since=None, next_restart_at=None, lease_seen=False)
        return Decision(Action.RESTART, restarted, start=True, announce=(*announce, Announcement.RESTARTED))
    if holder_gone(record, observed, now, policy):
        moved = replace(record, status=DaemonStatus.STARTING, restart_count=record.restart_count + 1,
                        last_start_time=now, running_since=None, next_restart_at=None, lease_seen=False,
                        last_handover_time=now, last_error=HOLDER_GONE)
        return Decision(Action.RESTART, moved, start=True,
                        announce=(*announce, Announcement.HOLDER_GONE, Announcement.RESTARTED), delay_s=0.0)
    error = START_TIMEOUT_ERROR if record.status == DaemonStatus.STARTING else STALE_ERROR
    return _crashed(record, now, policy, jitter, error, announce)


def holder_gone(record: DaemonRecord, observed: Observed, now: float, policy: SupervisionPolicy) -> bool:
    """A ``running`` daemon that is not alive lost its holder rather than crashed where it ran.

    It had held its lease since its last start (``leaseSeen``: it really ran), the lease lapsed and the
    heartbeat went stale, and its last heartbeat reported no crash; and it was not already handed over
    within ``stable_after_s`` (a daemon that keeps vanishing without a word is a crash loop after all, and
    backs off on the guide's schedule). The caller has checked ``not observed.alive(policy)``.
    """
    if record.status != DaemonStatus.RUNNING or not record.lease_seen or observed.crashed:
        return False
    last = record.last_handover_time
    return last is None or now - last >= policy.restart.stable_after_s


def _alive(record: DaemonRecord, observed: Observed, now: float, policy: SupervisionPolicy,
           announce: tuple[Announcement, ...]) -> Decision:
    running = record.status == DaemonStatus.RUNNING and record.running_since is not None
    since = record.running_since if running and record.running_since is not None else now
    crashes = record.consecutive_crashes
    if crashes and now - since >= policy.restart.stable_after_s:
        crashes = 0  # a stable run proves the daemon works: the next crash waits base_s again
    new = replace(record, status=DaemonStatus.RUNNING, running_since=since, consecutive_crashes=crashes,
                  next_restart_at=None, lease_seen=record.lease_seen or observed.lease_held)
    return Decision(Action.HEALTHY, new, announce=announce)


def _crashed(record: DaemonRecord, now: float, policy: SupervisionPolicy, jitter: Jitter, error: str,
             announce: tuple[Announcement, ...]) -> Decision:
    uptime = now - record.running_since if record.running_since is not None else None
    # the crash that ends a stable run is the first of a new series (it still waits base_s): "or 1"
    crashes = failures_after_session(record.consecutive_crashes, uptime, policy.restart.stable_after_s) or 1
    window_start = now - policy.crash_loop_window_s
    keep = max(1, policy.crash_loop_crashes)
    recent = tuple(t for t in (*record.crash_times, now) if t > window_start)[-keep:]
    crashed = replace(record, consecutive_crashes=crashes, last_crash_time=now, last_error=error,
                      running_since=None, crash_times=recent, lease_seen=False)
    loop = len(recent) >= policy.crash_loop_crashes and (record.alerted_at is None
                                                          or record.alerted_at <= window_start)
    if loop:
        crashed = replace(crashed, alerted_at=now)
        announce = (*announce, Announcement.CRASH_LOOP)
    limit = policy.restart.max_restarts
    if limit >= 0 and record.restart_count >= limit:
        return Decision(Action.FAILED, replace(crashed, status=DaemonStatus.FAILED, next_restart_at=None),
                        announce=(*announce, Announcement.FAILED))
    delay = jittered_delay(record.id, crashes, policy, jitter)
    crashed = replace(crashed, status=DaemonStatus.BACKOFF, next_restart_at=now + delay)
    return Decision(Action.CRASHED, crashed, announce=(*announce, Announcement.CRASHED), delay_s=delay)


def reset_record(record: DaemonRecord) -> DaemonRecord:
    """An operator's reset: ``registered`` with no crash or restart counted, so the next sweep starts it now.

    ``lastCrashTime`` and ``lastError`` stay, as the history of what had failed.
    """
    return replace(record, status=DaemonStatus.REGISTERED, restart_count=0, consecutive_crashes=0,
                   next_restart_at=None, running_since=None, crash_times=(), alerted_at=None,
                   lease_seen=False, last_handover_time=None)


__all__ = ["HOLDER_GONE", "START_TIMEOUT_ERROR", "STALE_ERROR", "STATUSES", "Action", "Announcement",
           "DaemonRecord",
           "DaemonStatus",
           "Decision", "Jitter", "Observed",
           "SupervisionPolicy", "decide", "hash_jitter", "holder_gone", "jittered_delay", "no_jitter",
           "reset_record"]
