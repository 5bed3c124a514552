"""The clients' view (pure): each JSON line a client wrote, judged a failure or an expected outcome.

The rule for each kind is in :mod:`vastkeep.soak.counters` (and docs/reliability.md): an outcome a fault on
that instance or process explains is *expected*, any other is a client-visible failure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

from vastkeep.soak.counters.base import (
    CLIENT_FAILURE_KINDS,
    LEASE_CLOCK_SLACK_S,
    ClientFailure,
    ClientVerdict,
    Excused,
    Record,
    inside,
    instance_windows,
    iso_s,
    num,
    overlaps,
    process_windows,
    summary,
    whole,
)

#: Instance faults the endpoint's failover must hide from a prompt (a crash is seen at once): a prompt that
#: fails under one of them is a client-visible failure. Under the others (a hang, a slow path, a host gone
#: silent) the failover waits for the keepalive's verdict, which at its default intervals outlasts the
#: client's bound, so a failed prompt there is expected (the fault's own observation is judged apart).
FAILOVER_HIDES = frozenset({"comfy-crash"})


def prompt_windows(injections: Iterable[Record]) -> dict[str, list[tuple[float, float]]]:
    """Instance id → windows in which a prompt through the endpoint may fail without blame."""
    return instance_windows(i for i in injections if str(i.get("family")) not in FAILOVER_HIDES)


#: an instance fault struck this close after a crash lands before the crash's failover is over (the proxy
#: sees the crash and moves the lease within about 0.3 s)
SAME_MOMENT_S = 2.0
#: a free instance another client's lease took this close to a crash was gone before its failover could
#: move there (the proxy needs two refused calls, about 0.2 s: a grant 0.02 s after a crash took the only
#: spare in a 30-minute run)
GRANT_RACE_S = 0.5


def healthy_spares(crash: Record, injections: Sequence[Record],
                   grants: Sequence[tuple[float, str]] = ()) -> int | None:
    """How many instances free for a lease when ``crash`` struck its failover could move the lease to: not
    under a fault of their own then (or struck within :data:`SAME_MOMENT_S` after: the only free instance
    hung as a crash struck, and the lease moved onto it), and not leased by another client within
    :data:`GRANT_RACE_S` of the crash (``grants``: ``(time, instance)``)."""
    ids, count = crash.get("spare_ids"), crash.get("spares")
    if not isinstance(ids, list):
        return count if isinstance(count, int) else None  # a report from before the ids were kept
    at = num(crash["at"])
    faulted = instance_windows(i for i in injections if i is not crash)
    taken = {inst for t, inst in grants if abs(t - at) <= GRANT_RACE_S}

    def lost(iid: object) -> bool:
        struck = any(a <= at + SAME_MOMENT_S and at <= b for a, b in faulted.get(str(iid), ()))
        return struck or str(iid) in taken

    return len([i for i in ids if not lost(i)])


def no_spare_windows(injections: Sequence[Record],
                     grants: Sequence[tuple[float, str]] = ()) -> dict[str, list[tuple[float, float]]]:
    """Instance id → windows of a fault failover hides, struck when no healthy instance was free (``spares``
    0 when it struck, or each one under a fault of its own or taken by another lease at once): the failover
    waits for the pool to rent one, longer than a client waits for an answer (a crash with none free in a
    30-minute run: the move came 27.6 s later, every prompt re-sent)."""
    return instance_windows(i for i in injections if str(i.get("family")) in FAILOVER_HIDES
                            and healthy_spares(i, injections, grants) == 0)


Windows = Mapping[str, list[tuple[float, float]]]


def _judge_prompt(line: Record, t: float, inst: str | None, windows: tuple[Windows, Windows],
                  redis_w: Sequence[tuple[float, float]], fail: Callable[[ClientFailure, Record], None],
                  expected: dict[str, int]) -> None:
    """A prompt sent through the endpoint that failed: expected only under a fault failover cannot hide, or
    while Redis was away (the endpoint finds its lease in Redis; a lease whose time ran out then is gone),
    or under a crash that struck with no instance free to move to."""
    took = num(line.get("took_s") or 0)

    def meets(by_inst: Windows) -> bool:
        return inst is not None and any(a <= t + took and t <= b for a, b in by_inst.get(inst, ()))

    if meets(windows[0]) or any(a <= t + took and t <= b for a, b in redis_w):
        expected[Excused.PROMPT_FAIL_UNDER_FAULT] += 1
    elif meets(windows[1]):
        expected[Excused.PROMPT_FAIL_NO_SPARE] += 1
    else:
        fail(ClientFailure.PROMPT_FAILED, line)


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
    # the control queue is served by the stack's control worker and by host B's (cut off: a message it took
    # just before waits with it until the link is back)
    control_w = process_windows(injections, "worker-control") + process_windows(injections, "hostb-control")
    redis_w = process_windows(injections, "redis")
    taken = [(num(x.get("t") or 0), str(x.get("instance"))) for x in lines if x.get("op") == "grant"]
    prompt_w = (prompt_windows(injections), no_spare_windows(injections, taken))  # once, not per prompt
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
            verdict = _url_fail(t, inst, granted_at.get(str(line.get("lease"))), comfy_lost, inst_w, broken)
            if isinstance(verdict, Excused):
                expected[verdict] += 1
            else:
                fail(verdict, line)
        elif op == "prompt-fail":
            _judge_prompt(line, t, inst, prompt_w, redis_w, fail, expected)
        elif op == "http-5xx":
            if inside(t, redis_w):  # the API answers 5xx while Redis is away: the right answer, not a bug
                expected[Excused.HTTP_5XX_UNDER_REDIS_FAULT] += 1
            else:
                fail(ClientFailure.HTTP_5XX, line)
        elif op == "api-unreachable":
            if inside(t, api_w):
                expected[Excused.API_UNREACHABLE_UNDER_FAULT] += 1
            else:
                fail(ClientFailure.API_UNREACHABLE, line)
        elif op == "task-error":  # the task's whole wait, sent (t0) to given up (t), against the windows
            if overlaps(t, num(line.get("t") or t), control_w):
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


def _url_fail(
    t: float,
    inst: str | None,
    granted: float | None,
    comfy_lost: Mapping[str, Sequence[tuple[float, float | None]]],
    inst_w: Mapping[str, list[tuple[float, float]]],
    broken: Mapping[str, float],
) -> ClientFailure | Excused:
    """A dead ComfyUI URL: a failure when vastkeep granted it while its keepalive said ComfyUI was lost, or
    when no fault on the instance and no break explains it; expected otherwise."""
    if inst is None:
        return ClientFailure.URL_DEAD
    if granted is not None and any(
        lost <= granted and (back is None or granted < back) for lost, back in comfy_lost.get(inst, ())
    ):
        return ClientFailure.URL_DEAD
    if inside(t, inst_w.get(inst, ())):
        return Excused.URL_FAIL_UNDER_FAULT
    if inst in broken and broken[inst] <= t + 1.0:
        return Excused.URL_FAIL_AFTER_BREAK
    return ClientFailure.URL_DEAD


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
        inside(t, inst_w.get(inst, ())) or (inst in broken and broken[inst] <= t + 1.0)
    )
    if status == 200:  # another instance answering is right only after a fault moved the lease (failover)
        if line.get("answered_instance") not in (None, "None", inst) and not excused:
            fail(ClientFailure(f"{op}-wrong"), line)
            return
        if op == "renew":
            new, old = iso_s(line.get("leased_until")), iso_s(line.get("previous_until"))
            if new is None or (old is not None and new < old):
                fail(ClientFailure.RENEW_WRONG, line)
        return
    if op == "release" and status in (404, 409) and whole(line.get("attempt") or 0) > 0:
        expected[Excused.RELEASE_LANDED_BEFORE] += 1  # the attempt whose answer never came had landed
        return
    if status in (404, 409) and excused:
        expected[Excused(f"{op}-refused-after-break")] += 1
        return
    if status in (404, 409):
        until = iso_s(line.get("previous_until"))  # the lease's end as the client last heard it
        if until is not None and t >= until - LEASE_CLOCK_SLACK_S:  # it let the lease run out: not lost
            expected[Excused.RENEW_LATE if op == "renew" else Excused.RELEASE_LATE] += 1
            return
        fail(ClientFailure.LEASE_LOST, line)
        return
    if isinstance(status, int) and status >= 500:
        return  # counted by the http-5xx line
    fail(ClientFailure(f"{op}-wrong"), line)
