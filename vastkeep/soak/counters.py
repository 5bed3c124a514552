"""The soak's judges (pure): what the clients saw, what the faults did, what must never happen.

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
fault on the process that serves it (API; control worker) — from the injection to its restart plus
:data:`PROCESS_GRACE_S` — else it is a failure.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import TypedDict

from vastkeep.soak.plan import API, FAMILIES, INSTANCE, PROCESS

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
    RENEW_LATE = "renew-late"
    PROMPT_FAIL_UNDER_FAULT = "prompt-fail-under-fault"


class MustNever(StrEnum):
    """What must never happen in a run, whatever the faults."""

    DOUBLE_RENTS = "double-rents"
    DOUBLE_LEASES = "double-leases"
    FENCE_REGRESSIONS = "fence-regressions"
    LOG_LINES_LOST = "log-lines-lost"
    LOG_LINES_DUPLICATED = "log-lines-duplicated"
    UNKNOWN_BILLING = "unknown-billing"
    CANARY_LEAKS = "canary-leaks"


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
    """Windows in which the stack child ``process`` was down or frozen by a fault, plus the grace."""
    out = []
    for inj in injections:
        fam = FAMILIES.get(str(inj.get("family")))
        if fam is None or fam.target != PROCESS or fam.process != process:
            continue
        at = num(inj["at"])
        back = inj.get("back_at") or inj.get("restored_at")
        end = num(back) if back else at + 120.0
        out.append((at - 1.0, end + PROCESS_GRACE_S))
    return out


#: Instance faults the endpoint's failover must hide from a prompt (a crash is seen at once): a prompt that
#: fails under one of them is a client-visible failure. Under the others (a hang, a slow path, a host gone
#: silent) the failover waits for the keepalive's verdict, which at its default intervals outlasts the
#: client's bound, so a failed prompt there is expected (the fault's own observation is judged apart).
FAILOVER_HIDES = frozenset({"comfy-crash"})


def prompt_windows(injections: Iterable[Record]) -> dict[str, list[tuple[float, float]]]:
    """Instance id → windows in which a prompt through the endpoint may fail without blame."""
    return instance_windows(i for i in injections if str(i.get("family")) not in FAILOVER_HIDES)


def _judge_prompt(line: Record, t: float, inst: str | None, windows: Mapping[str, list[tuple[float, float]]],
                  fail: Callable[[ClientFailure, Record], None], expected: dict[str, int]) -> None:
    """A prompt sent through the endpoint that failed: expected only under a fault failover cannot hide."""
    took = num(line.get("took_s") or 0)
    if inst is not None and any(a <= t + took and t <= b for a, b in windows.get(inst, ())):
        expected[Excused.PROMPT_FAIL_UNDER_FAULT] += 1
    else:
        fail(ClientFailure.PROMPT_FAILED, line)


def _inside(t: float, windows: Iterable[tuple[float, float]]) -> bool:
    return any(a <= t <= b for a, b in windows)


def _iso_s(value: object) -> float | None:
    """Epoch seconds of an ISO-8601 time (the API's ``leasedUntil``), None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    from datetime import datetime  # noqa: PLC0415

    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# ── the clients' view ───────────────────────────────────────────────────────
def judge_clients(
    lines: Sequence[Record],
    injections: Sequence[Record],
    broken: Mapping[str, float] | None = None,
    comfy_lost: Mapping[str, Sequence[tuple[float, float | None]]] | None = None,
) -> ClientVerdict:
    """Count client-visible failures by kind, with the expected (fault-covered) outcomes beside them.

    ``broken``: instance id → first time vastkeep said its lease broke or the instance was replaced or
    destroyed (from the event stream): a renewal or release refused after that is the right answer.
    ``comfy_lost``: instance id → spans ``(connection-lost, connection-restored or None)``: a lease
    granted inside such a span whose URL then fails is ``url-dead`` even under a fault (vastkeep knew).
    """
    broken = broken or {}
    comfy_lost = comfy_lost or {}
    granted_at = {str(x.get("lease")): num(x.get("t") or 0) for x in lines if x.get("op") == "grant"}
    inst_w = instance_windows(injections)
    api_w = process_windows(injections, "api")
    control_w = process_windows(injections, "worker-control")
    failures: dict[str, int] = dict.fromkeys(CLIENT_FAILURE_KINDS, 0)
    expected: dict[str, int] = defaultdict(int)
    examples: dict[str, list[dict[str, object]]] = defaultdict(list)
    grants, latencies = [], []
    ops: dict[str, int] = defaultdict(int)

    def fail(kind: ClientFailure, line: Record) -> None:
        failures[kind] += 1
        if len(examples[kind]) < 5:
            examples[kind].append({k: v for k, v in line.items() if k != "url"})

    for line in lines:
        op = str(line.get("op"))
        ops[op] += 1
        t = num(line.get("t0") or line.get("t") or 0)
        inst = str(line.get("instance")) if line.get("instance") is not None else None
        if op == "grant":
            grants.append(line)
            latencies.append(num(line.get("latency_s") or 0))
        elif op == "refused":
            if line.get("idle_both"):
                fail(ClientFailure.REFUSED_WHILE_IDLE, line)
            else:
                expected[Excused.REFUSED_NONE_IDLE] += 1
        elif op == "url-fail":
            at = granted_at.get(str(line.get("lease")))
            if (
                inst is not None
                and at is not None
                and any(lost <= at and (back is None or at < back) for lost, back in comfy_lost.get(inst, ()))
            ):  # granted while vastkeep's own keepalive said ComfyUI was lost
                fail(ClientFailure.URL_DEAD, line)
            elif inst is not None and _inside(t, inst_w.get(inst, ())):
                expected[Excused.URL_FAIL_UNDER_FAULT] += 1
            elif inst is not None and inst in broken and broken[inst] <= t + 1.0:
                expected[Excused.URL_FAIL_AFTER_BREAK] += 1
            else:
                fail(ClientFailure.URL_DEAD, line)
        elif op == "prompt-fail":
            _judge_prompt(line, t, inst, prompt_windows(injections), fail, expected)
        elif op == "http-5xx":
            fail(ClientFailure.HTTP_5XX, line)
        elif op == "api-unreachable":
            if _inside(t, api_w):
                expected[Excused.API_UNREACHABLE_UNDER_FAULT] += 1
            else:
                fail(ClientFailure.API_UNREACHABLE, line)
        elif op == "task-error":
            if _inside(t, control_w):
                expected[Excused.TASK_ERROR_UNDER_FAULT] += 1
            else:
                fail(ClientFailure.TASK_ERROR, line)
        elif op in ("renew", "release"):
            _judge_end(op, line, t, inst, inst_w, api_w, broken, fail, expected)
    return {
        "failures": failures,
        "expected": dict(expected),
        "examples": dict(examples),
        "ops": dict(ops),
        "grants": len(grants),
        "grant_latency_s": summary(latencies),
    }


def _judge_end(
    op: str,
    line: Record,
    t: float,
    inst: str | None,
    inst_w: Mapping[str, list[tuple[float, float]]],
    api_w: list[tuple[float, float]],
    broken: Mapping[str, float],
    fail: Callable[[ClientFailure, Record], None],
    expected: dict[str, int],
) -> None:
    status = line.get("status")
    if status is None:  # no answer: counted as api-unreachable by its own line
        return
    excused = inst is not None and (
        _inside(t, inst_w.get(inst, ())) or (inst in broken and broken[inst] <= t + 1.0)
    )
    if status == 200:  # another instance answering is right only after a fault moved the lease (failover)
        if line.get("answered_instance") not in (None, "None", inst) and not excused:
            fail(ClientFailure(f"{op}-wrong"), line)
            return
        if op == "renew":
            new, old = _iso_s(line.get("leased_until")), _iso_s(line.get("previous_until"))
            if new is None or (old is not None and new < old):
                fail(ClientFailure.RENEW_WRONG, line)
        return
    if status in (404, 409) and excused:
        expected[Excused(f"{op}-refused-after-break")] += 1
        return
    if status in (404, 409):
        until = _iso_s(line.get("previous_until"))
        if op == "renew" and until is not None and t >= until - LEASE_CLOCK_SLACK_S:
            expected[Excused.RENEW_LATE] += 1
            return
        fail(ClientFailure.LEASE_LOST, line)
        return
    if isinstance(status, int) and status >= 500:
        return  # counted by the http-5xx line
    fail(ClientFailure(f"{op}-wrong"), line)


# ── must-never ──────────────────────────────────────────────────────────────
def lease_holds(lines: Sequence[Record], breaks: Mapping[str, Sequence[float]] | None = None) -> list[Hold]:
    """Each grant as a hold ``{lease, instance, client, fence, start, end}``: it ends at its release (or a
    refused renewal), else at its ``leasedUntil`` (left to expire, or its client was killed), and at the
    latest when vastkeep broke it (``breaks``: instance id → times of lease-broken events)."""
    holds: dict[str, Hold] = {}
    for line in lines:
        op, lease = line.get("op"), line.get("lease")
        if op == "grant":
            holds[str(lease)] = {
                "lease": lease,
                "instance": str(line.get("instance")),
                "client": line.get("client"),
                "fence": line.get("fence"),
                "start": num(line.get("t") or 0),
                "end": _iso_s(line.get("leased_until")) or num(line.get("t") or 0),
            }
        elif op in ("renew", "release") and str(lease) in holds:
            h = holds[str(lease)]
            if op == "renew" and line.get("status") == 200:
                h["end"] = _iso_s(line.get("leased_until")) or h["end"]
            elif line.get("status") is not None:  # released, or refused: the hold ended at the latest here
                h["end"] = min(h["end"], num(line.get("t0") or line.get("t") or h["end"]))
    for h in holds.values():
        for tb in sorted((breaks or {}).get(h["instance"], ())):
            if h["start"] <= tb < h["end"]:
                h["end"] = tb
                break
    return sorted(holds.values(), key=lambda h: h["start"])


def double_leases(holds: Sequence[Hold], slack_s: float = 0.5) -> list[dict[str, object]]:
    """Pairs of holds of one instance by two leases that overlap by more than ``slack_s``."""
    by_inst: dict[str, list[Hold]] = defaultdict(list)
    for h in holds:
        by_inst[str(h["instance"])].append(h)
    found: list[dict[str, object]] = []
    for inst, hs in by_inst.items():
        hs = sorted(hs, key=lambda h: h["start"])
        for i, a in enumerate(hs):
            for b in hs[i + 1 :]:
                if b["start"] >= a["end"] - slack_s:
                    continue
                found.append(
                    {
                        "instance": inst,
                        "first": a["client"],
                        "second": b["client"],
                        "overlap_s": round(min(a["end"], b["end"]) - b["start"], 3),
                    }
                )
    return found


def fence_regressions(grants: Sequence[tuple[float, str, object]]) -> list[dict[str, object]]:
    """``(time, instance, fence)`` grants, from any source: per instance, a fence not above the one before."""
    last: dict[str, int] = {}
    found: list[dict[str, object]] = []
    for t, inst, fence in sorted(grants, key=lambda g: g[0]):
        if fence is None:
            continue
        f = whole(fence)
        if inst in last and f <= last[inst]:
            found.append({"instance": inst, "fence": f, "previous": last[inst], "t": t})
        last[inst] = max(f, last.get(inst, f))
    return found


def double_rents(ledger: Sequence[Record]) -> list[dict[str, object]]:
    """Rents of a label while an instance with that label was still alive (from the cloud's own ledger)."""
    alive: dict[object, set[int]] = defaultdict(set)
    found: list[dict[str, object]] = []
    for e in sorted(ledger, key=lambda e: num(e.get("seq", 0))):
        label, iid = e.get("label"), whole(e["instance_id"])
        if e.get("action") == "rent":
            if label and alive[label]:
                found.append({"label": label, "instance_id": iid, "alive": sorted(alive[label])})
            if label:
                alive[label].add(iid)
        elif e.get("action") == "destroy" and label:
            alive[label].discard(iid)
    return found


def unknown_billing(
    cloud_ids: Iterable[Iterable[object]], known_ids: Iterable[Iterable[object]]
) -> list[str]:
    """Instances the cloud bills in every snapshot that vastkeep's records know in none of them."""
    clouds = [set(map(str, s)) for s in cloud_ids]
    knowns = set().union(*[set(map(str, s)) for s in known_ids]) if known_ids else set()
    steady = set.intersection(*clouds) if clouds else set()
    return sorted(steady - knowns)


def log_diff(remote: str, collected: str) -> dict[str, int]:
    """Lines lost and duplicated: the collected text against the span of the remote file it covers (the
    runner passes the remote bytes up to the collector's offset: a collector that lags has lost nothing).
    A line is lost when collected fewer times than it occurs there, duplicated when collected more often."""
    want: dict[str, int] = defaultdict(int)
    got: dict[str, int] = defaultdict(int)
    for line in remote.splitlines():
        want[line] += 1
    for line in collected.splitlines():
        got[line] += 1
    lost = sum(max(0, n - got[k]) for k, n in want.items())
    dup = sum(max(0, n - want[k]) for k, n in got.items())
    return {"lost": lost, "duplicated": dup, "due": sum(want.values())}


def canary_hits(texts: Mapping[str, str], canaries: Mapping[str, str]) -> list[dict[str, str]]:
    """Every (source, canary name) where a planted secret's value appears; the values never in the answer."""
    return [
        {"source": src, "canary": name}
        for src, text in texts.items()
        for name, value in canaries.items()
        if value and value in text
    ]


# ── what the system observed of each fault ─────────────────────────────────
def observe_instance_fault(inj: Record, events: Sequence[Record]) -> float | None:
    """Seconds from the injection to the first event on its instance of a kind that family counts, within
    the fault's window (an undone fault: until its undo plus :data:`RECOVERY_GRACE_S`; a lasting one: the
    guide's :data:`DETECTION_BOUND_S`); a later event is not credited to this fault."""
    fam = FAMILIES[str(inj["family"])]
    at, target = num(inj["at"]), str(inj.get("target"))
    if fam.restorable and fam.hold_s[1] > 0:
        until = num(inj.get("restored_at") or at + fam.hold_s[1]) + RECOVERY_GRACE_S
    else:
        until = at + DETECTION_BOUND_S
    for ev in events:
        ts = num(ev["ts"])
        data = ev.get("data") or {}
        if (
            ev.get("kind") in fam.observed_by
            and isinstance(data, Mapping)
            and str(data.get("instance_id")) == target
            and at - 0.5 <= ts <= until
        ):
            return max(0.0, ts - at)
    return None


def observe_api_fault(inj: Record, requests: Sequence[Record]) -> float | None:
    """Seconds from the injection to vastkeep's first clean answer after it was served the fault (it retried
    and recovered); None when the fault was never served, or no request came after it."""
    at = num(inj["at"])
    served = [r for r in requests if r.get("fault") and num(r.get("ts") or 0) >= at - 0.5]
    if not served:
        return None
    first = min(num(r["ts"]) for r in served)
    for r in sorted(requests, key=lambda r: num(r.get("ts") or 0)):
        ts = num(r.get("ts") or 0)
        status = r.get("status")
        if ts > first and not r.get("fault") and isinstance(status, int) and status < 400:
            return max(0.0, ts - at)
    return None


def family_table(injections: Sequence[Record], planned: Iterable[str]) -> dict[str, FamilyRow]:
    """Per family: planned, injected, observed and the detection times (``observed_s`` of each injection);
    for ``comfy-crash`` also how many struck under a client's prompt (``under_prompt``)."""
    out: dict[str, FamilyRow] = {}
    for name in planned:
        out.setdefault(name, {"planned": 0, "injected": 0, "observed": 0, "detection_s": []})
        out[name]["planned"] += 1
    for inj in injections:
        row = out.setdefault(
            str(inj["family"]), {"planned": 0, "injected": 0, "observed": 0, "detection_s": []}
        )
        if inj.get("injected"):
            row["injected"] += 1
            if inj.get("under_prompt"):
                row["under_prompt"] = row.get("under_prompt", 0) + 1
            if inj.get("observed_s") is not None:
                row["observed"] += 1
                row["detection_s"].append(num(inj["observed_s"]))
    for name, row in out.items():
        if name == "comfy-crash":
            row.setdefault("under_prompt", 0)
        row["detection"] = summary(row.pop("detection_s"))
        row["ok"] = row["planned"] == 0 or (row["injected"] > 0 and row["observed"] > 0)
    return out


__all__ = [
    "API",
    "CLIENT_FAILURE_KINDS",
    "ClientFailure",
    "Excused",
    "MustNever",
    "DETECTION_BOUND_S",
    "MUST_NEVER_KINDS",
    "PROCESS",
    "RECOVERY_GRACE_S",
    "canary_hits",
    "double_leases",
    "double_rents",
    "family_table",
    "fence_regressions",
    "instance_windows",
    "judge_clients",
    "lease_holds",
    "log_diff",
    "observe_api_fault",
    "observe_instance_fault",
    "percentile",
    "process_windows",
    "summary",
    "unknown_billing",
]
