"""Layer 4 decisions, pure: what one ping (or one closed connection) means for an instance.

The guide's keepalive counts consecutive failed ``/system_stats`` pings; at ``max_failures`` it raises
``connection-lost`` and asks for an immediate health check; the next success resets the count and, if the
connection had been lost, raises ``connection-restored``. We keep that cadence and those semantics and add:

- a *fast path*: a held connection (ComfyUI's ``/ws``) that closes is confirmed with one immediate ping; a
  failed confirmation is a crash, reported at once with ``detectedBy: "connection-closed"`` (the slow path
  says ``"ping-failures"``), while a passing one was a blip and changes nothing;
- a *suspect mode*: after a failure the next ping comes after ``suspect_interval_s`` instead of the full
  interval, so a black hole is caught in ``interval + (max_failures - 1) * suspect + timeout`` rather than
  ``interval * max_failures + timeout``. ``suspect_interval_s = 0`` turns it off (the guide's behaviour).

Everything here takes numbers and returns new values; the shard runner does the I/O.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import Any

from vastkeep.core.clock import iso
from vastkeep.core.settings import Settings

PING_FAILURES = "ping-failures"
CONNECTION_CLOSED = "connection-closed"


@dataclass(frozen=True)
class KeepalivePolicy:
    """The guide's three settings plus our suspect-mode interval (seconds)."""

    interval_s: float = 30.0
    timeout_s: float = 5.0
    max_failures: int = 5
    suspect_interval_s: float = 0.0

    def __post_init__(self) -> None:
        if (self.interval_s <= 0 or self.timeout_s <= 0 or self.max_failures < 1
                or self.suspect_interval_s < 0):
            raise ValueError("KeepalivePolicy needs interval_s > 0, timeout_s > 0, max_failures >= 1, "
                             "suspect_interval_s >= 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> KeepalivePolicy:
        return cls(interval_s=settings.comfyui_keepalive_interval_ms / 1000,
                   timeout_s=settings.comfyui_keepalive_timeout_ms / 1000,
                   max_failures=settings.comfyui_keepalive_max_failures,
                   suspect_interval_s=settings.comfyui_keepalive_suspect_interval_ms / 1000)

    def detection_bound_s(self) -> float:
        """The longest a black hole (no answer at all) can go unnoticed after the last good ping."""
        later = self.suspect_interval_s or self.interval_s
        return self.interval_s + (self.max_failures - 1) * later + self.max_failures * self.timeout_s


@dataclass(frozen=True)
class KeepaliveState:
    """One instance's keepalive counters, as stored in Redis (the guide's fields plus ours)."""

    consecutive_failures: int = 0
    total_pings: int = 0
    total_successes: int = 0
    total_failures: int = 0
    last_success_time: float | None = None
    last_ping_time: float | None = None
    last_error: str | None = None
    lost: bool = False
    lost_at: float | None = None
    detected_by: str | None = None
    next_ping_at: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: object) -> KeepaliveState:
        """Tolerant: unknown keys ignored, wrong kinds take defaults (bad data never crashes a shard)."""
        if not isinstance(data, dict):
            return cls()
        out: dict[str, Any] = {}  # values checked against each field's kind just below
        for name, f in cls.__dataclass_fields__.items():
            value = data.get(name)
            if value is None:
                continue
            kind = str(f.type)
            whole = isinstance(value, int) and not isinstance(value, bool)
            if (kind == "int" and whole) or (kind == "bool" and isinstance(value, bool)):
                out[name] = value
            elif kind.startswith("float") and isinstance(value, int | float) and not isinstance(value, bool):
                out[name] = float(value)
            elif kind.startswith("str") and isinstance(value, str):
                out[name] = value
        return cls(**out)


@dataclass(frozen=True)
class Signal:
    """Something the runner must report: an event kind and its fields."""

    kind: str  # "ping-failure" | "connection-lost" | "connection-restored"
    fields: dict[str, object]


def after_ping(state: KeepaliveState, ok: bool, error: str | None, now: float,
               policy: KeepalivePolicy) -> tuple[KeepaliveState, list[Signal]]:
    """Apply one ping's outcome; returns the new state and what to report."""
    signals: list[Signal] = []
    if ok:
        if state.lost:
            signals.append(Signal("connection-restored", {"after_s": _since(state.lost_at, now)}))
        new = replace(state, consecutive_failures=0, total_pings=state.total_pings + 1,
                      total_successes=state.total_successes + 1, last_success_time=now, last_ping_time=now,
                      last_error=None, lost=False, lost_at=None, detected_by=None,
                      next_ping_at=now + policy.interval_s)
        return new, signals
    failures = state.consecutive_failures + 1
    new = replace(state, consecutive_failures=failures, total_pings=state.total_pings + 1,
                  total_failures=state.total_failures + 1, last_ping_time=now, last_error=error,
                  next_ping_at=now + (policy.suspect_interval_s or policy.interval_s))
    signals.append(Signal("ping-failure", {"failures": failures, "error": error}))
    if failures >= policy.max_failures and not state.lost:
        new = replace(new, lost=True, lost_at=now, detected_by=PING_FAILURES)
        signals.append(Signal("connection-lost", {"failures": failures, "last_error": error,
                                                  "detectedBy": PING_FAILURES}))
    return new, signals


def after_close(state: KeepaliveState, confirm_ok: bool, error: str | None, now: float,
                policy: KeepalivePolicy) -> tuple[KeepaliveState, list[Signal]]:
    """The held connection closed and one immediate ping confirmed (or not) that ComfyUI is gone.

    A passing confirmation is an ordinary successful ping (a blip never fails an instance). A failing one
    is a crash: ``connection-lost`` at once, whatever the failure count, unless already lost.
    """
    if confirm_ok:
        return after_ping(state, True, None, now, policy)
    new, signals = after_ping(state, False, error, now, policy)
    if not new.lost:
        new = replace(new, lost=True, lost_at=now, detected_by=CONNECTION_CLOSED)
        signals.append(Signal("connection-lost", {"failures": new.consecutive_failures, "last_error": error,
                                                  "detectedBy": CONNECTION_CLOSED}))
    return new, signals


def first_ping_at(state: KeepaliveState, now: float, policy: KeepalivePolicy) -> float:
    """When a runner that just took an instance over pings it first: the stored due time, so a handover
    between shard owners never pings an instance twice in one interval; never later than one interval."""
    due = state.next_ping_at
    if due is None:
        return now
    return min(max(due, now), now + policy.interval_s)


def shard_of(instance_id: str | int, shards: int) -> int:
    """A stable shard number for an instance (crc32, not ``hash()``, which differs per process)."""
    if shards < 1:
        raise ValueError("shards must be >= 1")
    return zlib.crc32(str(instance_id).encode()) % shards


def status_view(state: KeepaliveState, *, running: bool) -> dict[str, object]:
    """The guide's ``getStatus()`` shape for one instance, plus ``lost`` and ``detectedBy``."""
    rate = round(100.0 * state.total_successes / state.total_pings, 1) if state.total_pings else None
    return {
        "isRunning": running,
        "consecutiveFailures": state.consecutive_failures,
        "lastSuccessTime": iso(state.last_success_time),
        "totalPings": state.total_pings,
        "totalSuccesses": state.total_successes,
        "totalFailures": state.total_failures,
        "successRate": rate,
        "lastError": state.last_error,
        "connectionLost": state.lost,
        "detectedBy": state.detected_by,
    }


def pool_view(states: dict[str, tuple[KeepaliveState, bool]]) -> dict[str, object]:
    """The pool-wide keepalive status: per instance, and the totals an operator alerts on."""
    instances = {iid: status_view(st, running=running) for iid, (st, running) in sorted(states.items())}
    pings = sum(st.total_pings for st, _ in states.values())
    ok = sum(st.total_successes for st, _ in states.values())
    return {
        "isRunning": any(running for _, running in states.values()),
        "instances": instances,
        "watched": sum(1 for _, running in states.values() if running),
        "lost": sorted(iid for iid, (st, _) in states.items() if st.lost),
        "totalPings": pings,
        "totalSuccesses": ok,
        "totalFailures": pings - ok,
        "successRate": round(100.0 * ok / pings, 1) if pings else None,
    }


def _since(then: float | None, now: float) -> float | None:
    return None if then is None else round(max(0.0, now - then), 3)
