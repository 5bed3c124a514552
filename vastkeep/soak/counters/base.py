"""The judges' shared vocabulary (pure): failure kinds, records, summaries and the fault windows.

Inputs are plain data the runner gathered: the clients' JSON lines, the injections the runner made (each
``{"family", "target", "at", "restored_at", ...}`` with epoch seconds), the event stream, the simulator's
rent/destroy ledger and request log. Nothing here reads a clock or a socket.

Expected vs failure — the rule for a ComfyUI URL that does not answer (``url-fail``): it is *expected* when a
fault struck that same instance in the window ``[at - 1 s, end]``, where ``end`` is the fault's undo time plus
:data:`RECOVERY_GRACE_S` for an undone fault, and ``at`` plus :data:`DETECTION_BOUND_S` (the guide's
bound) for one that is never undone (the instance is dead; vastkeep must break the lease and replace it
within the bound). Any other ``url-fail`` is a client-visible failure, and so is one on a lease granted
while vastkeep's keepalive had reported that instance's ComfyUI lost (``connection-lost`` with no
``connection-restored`` yet): vastkeep knew and handed it out. An admin API call that found no server
(``api-unreachable``) or a lease by name that failed (``task-error``) is expected only inside the window of a
fault on the process that serves it (API; a control worker) or of Redis (which stops every process) — from the
injection to its restart plus :data:`PROCESS_GRACE_S` — else it is a failure; so is a 5xx answer, except while
Redis is away (the API cannot answer otherwise then).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import TypedDict

from vastkeep.soak.plan import FAMILIES, INSTANCE, PROCESS

RECOVERY_GRACE_S = 40.0  # one keepalive interval (30 s) and a ping after an undone ComfyUI/SSH fault
DETECTION_BOUND_S = 150.0  # the guide's failure-detection bound
PROCESS_GRACE_S = 10.0  # after a killed or stopped process is back, its port and queue take this to serve
LEASE_CLOCK_SLACK_S = 2.0  # a renewal refused this close to the lease's end is the holder's lateness


class ClientFailure(StrEnum):
    """What a client saw that it never should (each counted; the goal is 0)."""

    REFUSED_WHILE_IDLE = "refused-while-idle"
    URL_DEAD = "url-dead"
    LEASE_LOST = "lease-lost"
    DOUBLE_LEASE = "double-lease"
    RENEW_WRONG = "renew-wrong"
    RELEASE_WRONG = "release-wrong"
    HTTP_5XX = "http-5xx"
    API_UNREACHABLE = "api-unreachable"
    TASK_ERROR = "task-error"
    PROMPT_FAILED = "prompt-failed"


class Excused(StrEnum):
    """A client outcome that looks like a failure but a fault (or vastkeep's own break) explains."""

    REFUSED_NONE_IDLE = "refused-none-idle"
    URL_FAIL_UNDER_FAULT = "url-fail-under-fault"
    URL_FAIL_AFTER_BREAK = "url-fail-after-break"
    API_UNREACHABLE_UNDER_FAULT = "api-unreachable-under-fault"
    TASK_ERROR_UNDER_FAULT = "task-error-under-fault"
    RENEW_REFUSED_AFTER_BREAK = "renew-refused-after-break"
    RELEASE_REFUSED_AFTER_BREAK = "release-refused-after-break"
    RELEASE_LANDED_BEFORE = "release-landed-before"  # a retried release finds the lease gone: it had landed
    RENEW_LATE = "renew-late"
    RELEASE_LATE = "release-late"  # released after its leasedUntil (held through a long prompt or an outage)
    HTTP_5XX_UNDER_REDIS_FAULT = "http-5xx-under-redis-fault"
    PROMPT_FAIL_UNDER_FAULT = "prompt-fail-under-fault"
    PROMPT_FAIL_NO_SPARE = "prompt-fail-no-spare"  # a crash struck when no ready instance was free to move to


class MustNever(StrEnum):
    """What must never happen in a run, whatever the faults."""

    DOUBLE_RENTS = "double-rents"
    DOUBLE_LEASES = "double-leases"
    FENCE_REGRESSIONS = "fence-regressions"
    LOG_LINES_LOST = "log-lines-lost"
    LOG_LINES_DUPLICATED = "log-lines-duplicated"
    UNKNOWN_BILLING = "unknown-billing"
    CANARY_LEAKS = "canary-leaks"
    GRANTED_WHILE_REDIS_AWAY = "granted-while-redis-away"
    EXITED_ON_REDIS_FAULT = "exited-on-redis-fault"


CLIENT_FAILURE_KINDS = tuple(ClientFailure)
MUST_NEVER_KINDS = tuple(MustNever)


#: One JSON line or record as read: narrowed at each use (:func:`num`, :func:`whole`).
Record = Mapping[str, object]


class Summary(TypedDict):
    """``{n, p50, p99, max}`` of a series, in its unit."""

    n: int
    p50: float | None
    p99: float | None
    max: float | None


class Hold(TypedDict):
    """One lease as its client held it, from grant to its end (epoch seconds)."""

    lease: object
    instance: str
    client: object
    fence: object
    start: float
    end: float


class FamilyRow(TypedDict, total=False):
    """Per fault family: planned, injected, observed, and the detection times' summary."""

    planned: int
    injected: int
    observed: int
    detection_s: list[float]
    detection: Summary
    ok: bool
    under_prompt: int  # comfy-crash: strikes that landed while a client's prompt ran on the target


class ClientVerdict(TypedDict, total=False):
    """What :func:`judge_clients` counted."""

    failures: dict[str, int]
    expected: dict[str, int]
    examples: dict[str, list[dict[str, object]]]
    ops: dict[str, int]
    grants: int
    grant_latency_s: Summary


def num(value: object) -> float:
    """``float(value)`` of a JSON number or numeric string; anything else is a ``TypeError``, as ``float``."""
    if isinstance(value, int | float | str):
        return float(value)
    raise TypeError(f"not a number: {type(value).__name__}")


def whole(value: object) -> int:
    """``int(value)`` of a JSON number or numeric string; anything else is a ``TypeError``, as in ``int``."""
    if isinstance(value, int | float | str):
        return int(value)
    raise TypeError(f"not an integer: {type(value).__name__}")


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Sequence[float]) -> Summary:
    """``{n, p50, p99, max}`` rounded to milliseconds."""

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 3)

    return {
        "n": len(values),
        "p50": r(percentile(values, 50)),
        "p99": r(percentile(values, 99)),
        "max": r(max(values) if values else None),
    }


# ── fault windows ────────────────────────────────────────────────────────────
def instance_windows(injections: Iterable[Record]) -> dict[str, list[tuple[float, float]]]:
    """Instance id → windows in which a ComfyUI URL of that instance may fail without blame."""
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for inj in injections:
        fam = FAMILIES.get(str(inj.get("family")))
        if fam is None or fam.target != INSTANCE or inj.get("target") is None:
            continue
        at = num(inj["at"])
        if fam.restorable:
            undone = num(inj.get("restored_at") or at)
            end = undone + RECOVERY_GRACE_S
        else:
            end = at + DETECTION_BOUND_S
        out[str(inj["target"])].append((at - 1.0, end))
    return out


def process_windows(injections: Iterable[Record], process: str) -> list[tuple[float, float]]:
    """Windows in which the stack child ``process`` was down or frozen by a fault (its own, or one of Redis,
    which stops every child), plus the grace."""
    out = []
    for inj in injections:
        fam = FAMILIES.get(str(inj.get("family")))
        if fam is None or fam.target != PROCESS or process not in fam.stops:
            continue
        at = num(inj["at"])
        back = inj.get("back_at") or inj.get("restored_at")
        end = num(back) if back else at + 120.0
        out.append((at - 1.0, end + PROCESS_GRACE_S))
    return out


def inside(t: float, windows: Iterable[tuple[float, float]]) -> bool:
    return any(a <= t <= b for a, b in windows)


def overlaps(start: float, end: float, windows: Iterable[tuple[float, float]]) -> bool:
    """True when the span ``[start, end]`` meets a window: a call that waited through a fault that began
    after it was sent is covered by it as much as one sent inside it."""
    return any(a <= max(start, end) and min(start, end) <= b for a, b in windows)


def iso_s(value: object) -> float | None:
    """Epoch seconds of an ISO-8601 time (the API's ``leasedUntil``), None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    from datetime import datetime  # noqa: PLC0415

    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
