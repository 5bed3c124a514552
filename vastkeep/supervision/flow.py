"""Layer 6 I/O: one supervision sweep over every wanted daemon, by one supervisor at a time.

:func:`sweep` takes the fenced ``supervisor`` lease (a second sweeper returns ``skipped``), reads in a
fixed number of Redis calls the book, the daemons' heartbeats and whether each daemon's lease is held,
asks :func:`~vastkeep.supervision.decide.decide` for each daemon, sends the starts through the injected
``start(spec)`` (the task layer sends the daemon's Celery task; tests pass a function), writes the new
records fenced by the lease, and announces what happened: the guide's log lines on logger
``vastkeep.supervision`` and the events ``process-restarted``, ``process-failed`` and
``process-crash-loop`` on the event stream.

:func:`watchdog_status` is the read side: the guide's ``getStatus()`` shape for the daemons (plus
``heartbeatAgeS`` and ``nextRestartAt``) and the published status of ``vastkeep up``'s processes.

:func:`reset_daemon` is an operator's way out of ``failed`` (which the sweep never leaves by itself): the
record goes back to ``registered`` with its counters at zero (a compare-and-set beside the sweep, safe to
send twice), the next sweep starts the daemon at once, and a ``process-reset`` event records who was reset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from enum import StrEnum
from typing import TypedDict

from vastkeep.core.clock import SYSTEM_CLOCK, Clock, iso
from vastkeep.core.errors import WriteConflict
from vastkeep.state import (
    NULL_EVENTS,
    EventSink,
    Keys,
    LeaseManager,
    read_heartbeats,
    thread_owner,
    write_heartbeat,
)
from vastkeep.supervision.book import Redis, SupervisionBook, read_processes
from vastkeep.supervision.catalogue import DaemonSpec
from vastkeep.supervision.decide import (
    Action,
    Announcement,
    DaemonRecord,
    DaemonStatus,
    Decision,
    Jitter,
    Observed,
    SupervisionPolicy,
    decide,
    hash_jitter,
    reset_record,
)

log = logging.getLogger("vastkeep.supervision")

SUPERVISOR_LEASE = "supervisor"
SUPERVISOR_LEASE_TTL_MS = 30_000
SWEEP_BUSY = "another supervisor is sweeping"

Start = Callable[[DaemonSpec], object]


def _observe(redis: Redis, keys: Keys, clock: Clock, specs: Sequence[DaemonSpec]) -> dict[str, Observed]:
    """Heartbeats and leases of ``specs`` in three Redis calls (HMGET + ZMSCORE, one EXISTS pipeline)."""
    beats = read_heartbeats(redis, keys, clock, [s.id for s in specs])
    with_lease = [(s, s.lease) for s in specs if s.lease]
    with redis.pipeline(transaction=False) as pipe:
        for _, lease_name in with_lease:
            pipe.exists(keys.lease(lease_name))
        held_by_id = {s.id: bool(int(n or 0)) for (s, _), n in zip(with_lease, pipe.execute(), strict=True)}
    out: dict[str, Observed] = {}
    for spec in specs:
        beat = beats.get(spec.id)
        out[spec.id] = Observed(heartbeat_age_s=float(beat["age_s"]) if beat else None,
                                lease_held=held_by_id.get(spec.id, False),
                                pid=int(beat["pid"]) if beat and beat.get("pid") is not None else None,
                                handover=bool(beat.get("handover")) if beat else False,
                                crashed=bool(beat.get("crashed")) if beat else False)
    return out


def sweep(*, redis: Redis, keys: Keys, specs: Sequence[DaemonSpec], policy: SupervisionPolicy, start: Start,
          events: EventSink = NULL_EVENTS, clock: Clock = SYSTEM_CLOCK, jitter: Jitter = hash_jitter,
          lease_ttl_ms: int = SUPERVISOR_LEASE_TTL_MS) -> dict[str, object]:
    """Supervise every daemon in ``specs`` once; returns counts (and ``skipped`` when not our turn)."""
    leases = LeaseManager(redis, keys, clock)
    lease = leases.acquire(SUPERVISOR_LEASE, thread_owner(SUPERVISOR_LEASE), lease_ttl_ms)
    if lease is None:
        return {"skipped": SWEEP_BUSY}
    book = SupervisionBook(redis, keys)
    started: list[str] = []
    restarted: list[str] = []
    crashed: list[str] = []
    failed: list[str] = []
    totals: dict[str, object] = {"daemons": len(specs), "started": started, "restarted": restarted,
                                 "crashed": crashed, "failed": failed, "fence": lease.fence}
    try:
        records = book.all()
        observed = _observe(redis, keys, clock, specs)
        now = clock.now()
        changed: list[DaemonRecord] = []
        for spec in specs:
            old = records.get(spec.id)
            d = decide(old, observed[spec.id], daemon_id=spec.id, name=spec.name, wanted=True, now=now,
                       policy=policy, jitter=jitter)
            if d.start and (error := _send(spec, start)) is not None and d.record is not None:
                d = replace(d, record=replace(d.record, last_error=error))
            if d.start:
                (restarted if d.action == Action.RESTART else started).append(spec.id)
            if d.action == Action.CRASHED:
                crashed.append(spec.id)
            elif d.action == Action.FAILED:
                failed.append(spec.id)
            _announce(spec, d, events)
            if d.record is not None and d.record != old:
                changed.append(d.record)
        wanted = {s.id for s in specs}
        retired = [daemon_id for daemon_id in records if daemon_id not in wanted]
        if (changed or retired) and not book.write(lease, changed, retired):
            log.warning("supervision sweep: the supervisor lease was lost; records not written")
            totals["lost"] = True
        totals["retired"] = retired
    finally:
        leases.release(lease)
    return totals


class DaemonView(TypedDict):
    """One daemon in the guide's ``getStatus()`` shape (times as ISO-8601)."""

    name: str
    pid: int | None
    status: DaemonStatus
    restartCount: int
    consecutiveCrashes: int
    lastStartTime: str | None
    lastCrashTime: str | None
    lastError: str | None
    heartbeatAgeS: float | None
    nextRestartAt: str | None


class ResetView(DaemonView):
    """:class:`DaemonView` plus the book id and the status the reset found."""

    id: str
    previousStatus: DaemonStatus


def _send(spec: DaemonSpec, start: Start) -> str | None:
    """Send one start; the error text when it failed (the start timeout then turns it into a crash)."""
    try:
        start(spec)
    except Exception as exc:  # noqa: BLE001 - one daemon's failed start must not stop the sweep
        log.warning("[Watchdog] could not send the start of %s: %s", spec.name, type(exc).__name__)
        return f"start failed: {type(exc).__name__}"
    return None


def _announce(spec: DaemonSpec, d: Decision, events: EventSink) -> None:
    rec = d.record
    for what in d.announce:
        if what == Announcement.REGISTERED:
            log.info("[Watchdog] Registered process: %s", spec.name)
        elif rec is None:
            continue
        elif what == Announcement.CRASHED:
            log.warning("[Watchdog] Process %s stopped (%s); restarting in %.1fs", spec.name, rec.last_error,
                        d.delay_s or 0.0)
        elif what == Announcement.HOLDER_GONE:
            # the guide's line family: an operator grepping "[Watchdog] Process" sees every move, crash or not
            log.warning("[Watchdog] Process %s stopped (%s); restarting in 0.0s", spec.name, rec.last_error)
        elif what == Announcement.RESTARTED:
            log.warning("Restarted %s (attempt %d, %d crashes)", spec.id, rec.restart_count,
                        rec.consecutive_crashes)
            _emit(events, "process-restarted", id=spec.id, name=spec.name, restartCount=rec.restart_count,
                  consecutiveCrashes=rec.consecutive_crashes)
        elif what == Announcement.FAILED:
            log.error("[Watchdog] Process %s FAILED after %d restarts", spec.name, rec.restart_count)
            _emit(events, "process-failed", id=spec.id, name=spec.name, restartCount=rec.restart_count)
        elif what == Announcement.CRASH_LOOP:
            span = rec.crash_times[-1] - rec.crash_times[0] if rec.crash_times else 0.0
            log.error("[Watchdog] Process %s is crash-looping: %d crashes within %.0fs", spec.name,
                      len(rec.crash_times), span)
            _emit(events, "process-crash-loop", id=spec.id, name=spec.name, crashes=len(rec.crash_times),
                  consecutiveCrashes=rec.consecutive_crashes, restartCount=rec.restart_count)


def _emit(events: EventSink, kind: str, **fields: object) -> None:
    try:
        events.emit(kind, **fields)
    except Exception as exc:  # noqa: BLE001 - the log line already went out; the sweep must go on
        log.warning("could not emit %s: %s", kind, type(exc).__name__)


def mark_handover(redis: Redis, keys: Keys, clock: Clock, daemon_id: str, *, ttl_ms: int = 600_000) -> None:
    """Beat once with ``handover`` before sending a continuation: until the continuation beats (or the start
    timeout passes) the sweep treats the daemon as alive, even while the continuation waits in a queue."""
    write_heartbeat(redis, keys, clock, daemon_id, kind="handover", handover=True, ttl_ms=ttl_ms)


def mark_crashed(redis: Redis, keys: Keys, clock: Clock, daemon_id: str, *, ttl_ms: int = 600_000) -> None:
    """Beat once with ``crashed`` when a run ends in an error: the next sweep counts a crash where it ran
    (the guide's backoff), not a holder gone elsewhere (restarted at once). Safe to send twice."""
    write_heartbeat(redis, keys, clock, daemon_id, kind="crashed", crashed=True, ttl_ms=ttl_ms)


def daemon_status(rec: DaemonRecord, observed: Observed | None) -> DaemonView:
    """One daemon in the guide's getStatus shape (times as ISO-8601), plus heartbeatAgeS and nextRestartAt."""
    return {"name": rec.name, "pid": observed.pid if observed else None, "status": rec.status,
            "restartCount": rec.restart_count, "consecutiveCrashes": rec.consecutive_crashes,
            "lastStartTime": iso(rec.last_start_time), "lastCrashTime": iso(rec.last_crash_time),
            "lastError": rec.last_error,
            "heartbeatAgeS": observed.heartbeat_age_s if observed else None,
            "nextRestartAt": iso(rec.next_restart_at)}


def watchdog_status(redis: Redis, keys: Keys, clock: Clock = SYSTEM_CLOCK) -> dict[str, object]:
    """``{"processes": {...}, "daemons": {...}}``: ``vastkeep up``'s processes (if published) and the book."""
    records = SupervisionBook(redis, keys).all()
    specs = [DaemonSpec(r.id, r.name, "") for r in records.values()]
    observed = _observe(redis, keys, clock, specs) if specs else {}
    daemons = {daemon_id: daemon_status(rec, observed.get(daemon_id))
               for daemon_id, rec in sorted(records.items())}
    return {"processes": read_processes(redis, keys), "daemons": daemons}


class ResetOutcome(StrEnum):
    """What :func:`reset_daemon` found: reset now, already reset (a repeat), not failed, no such daemon."""

    RESET = "reset"
    ALREADY_RESET = "already-reset"
    NOT_FAILED = "not-failed"
    UNKNOWN = "unknown"


RESET, ALREADY_RESET, NOT_FAILED, UNKNOWN = (ResetOutcome.RESET, ResetOutcome.ALREADY_RESET,
                                             ResetOutcome.NOT_FAILED, ResetOutcome.UNKNOWN)
_RESET_ATTEMPTS = 5


def find_daemon(records: dict[str, DaemonRecord], name: str) -> str | None:
    """The book id for ``name``: a daemon id (``keepalive-shard-0``) or a display name."""
    if name in records:
        return name
    return next((daemon_id for daemon_id, rec in sorted(records.items()) if rec.name == name), None)


def reset_daemon(redis: Redis, keys: Keys, clock: Clock, name: str,
                 events: EventSink = NULL_EVENTS) -> tuple[ResetOutcome, ResetView | None]:
    """Reset the ``failed`` daemon ``name`` (id or display name): (outcome, its new status view or None).

    The view is :func:`daemon_status`'s shape plus ``id`` and ``previousStatus``. Only a ``failed`` daemon is
    reset (``not-failed`` otherwise: a running or backing-off one is the sweep's to handle); a repeat of a
    reset the sweep has not picked up yet answers ``already-reset`` with the same view.
    """
    book = SupervisionBook(redis, keys)
    daemon_id = find_daemon(book.all(), name)
    if daemon_id is None:
        return UNKNOWN, None
    for _ in range(_RESET_ATTEMPTS):
        rec, text = book.get(daemon_id)
        if rec is None or text is None:
            return UNKNOWN, None
        if rec.status != DaemonStatus.FAILED:
            fresh = rec == reset_record(rec)  # registered with zero counters: our reset, not yet swept
            outcome = ALREADY_RESET if fresh else NOT_FAILED
            return outcome, _reset_view(redis, keys, clock, rec, DaemonStatus.FAILED if fresh else rec.status)
        new = reset_record(rec)
        if book.replace(text, new):
            log.warning("[Watchdog] Process %s reset by an operator (was failed after %d restarts)", rec.name,
                        rec.restart_count)
            _emit(events, "process-reset", id=rec.id, name=rec.name, previousStatus=rec.status,
                  restartCount=rec.restart_count)
            return RESET, _reset_view(redis, keys, clock, new, rec.status)
    raise WriteConflict(f"the supervision record of {daemon_id} kept changing; try again")


def _reset_view(redis: Redis, keys: Keys, clock: Clock, rec: DaemonRecord,
                previous: DaemonStatus) -> ResetView:
    observed = _observe(redis, keys, clock, [DaemonSpec(rec.id, rec.name, "")])
    return {"id": rec.id, **daemon_status(rec, observed.get(rec.id)), "previousStatus": previous}


__all__ = ["ALREADY_RESET", "NOT_FAILED", "RESET", "SUPERVISOR_LEASE", "SWEEP_BUSY", "UNKNOWN", "DaemonView",
           "ResetOutcome", "ResetView", "Start",
           "daemon_status", "find_daemon", "mark_crashed", "mark_handover", "reset_daemon", "sweep",
           "watchdog_status"]
