"""Failover's pure decisions: is the instance behind a lease gone, which prompts are sent again, what the
client is told. No I/O here; ``failover`` does the moving, reconnecting and re-submitting.

An instance is gone when the keepalive declared its ComfyUI lost (``extra.keepalive_lost_since`` on its
record), when its record says it is dead or missing, or when the proxy's own calls to it were refused or reset
``refusals`` times within ``window_s`` (a connection that is refused twice is not a slow answer; a timeout
alone never counts: a hang is the keepalive's to declare).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from vastkeep.state import InstanceStatus

#: Record statuses that mean the instance will not serve again.
DEAD = frozenset({InstanceStatus.FAILED, InstanceStatus.GONE, InstanceStatus.DESTROYING,
                  InstanceStatus.DESTROYED, InstanceStatus.UNHEALTHY})
#: Upstream failures that mean "nobody is there" (connection refused, reset, dropped); never timeouts.
HARD_KINDS = frozenset({"connect", "upstream", "ws-drop", "probe-refused"})
#: ComfyUI's messages that end a prompt (``executing`` with ``node: null`` is the classic end marker).
END_TYPES = frozenset({"execution_success", "execution_error", "execution_interrupted"})
STATUS_TYPE = "vastkeep_failover"


class Why(StrEnum):
    """Why a lease failed over (the ``reason`` of the events and of the client's status frame)."""

    KEEPALIVE_LOST = "keepalive-lost"
    INSTANCE_GONE = "instance-gone"
    UPSTREAM_REFUSED = "upstream-refused"


@dataclass(frozen=True)
class FailoverPolicy:
    refusals: int = 2  # hard upstream failures within window_s that make the instance gone
    window_s: float = 10.0
    watch_interval_s: float = 0.25  # how often leases in use are checked against their instance's record
    move_wait_s: float = 120.0  # how long a failover waits for a ready instance to move to
    reconnect_wait_s: float = 3.0  # how long re-submission waits for the websockets to reconnect
    #: how long one re-submission (or one upload replayed) may go unanswered by the new instance: ComfyUI
    #: queues a prompt in milliseconds, and a new instance that hangs must not hold the failover (and so the
    #: lease's next one) for the upstream read timeout (120 s); an unanswered prompt stays open and goes with
    #: the lease's next failover (a 30-minute soak: the lease moved onto a spare hung at the same moment)
    resubmit_timeout_s: float = 10.0
    max_prompts: int = 256  # prompts remembered per lease (the oldest finished ones go first)
    max_uploads: int = 64  # uploads kept per lease for replay (the oldest go first)


@dataclass
class Strikes:
    """Monotonic times of the hard upstream failures seen on one instance."""

    times: list[float] = field(default_factory=list)


def strike(strikes: Strikes, kind: str, now: float, policy: FailoverPolicy) -> bool:
    """Record one upstream failure of ``kind``; True when the instance now counts as gone."""
    if kind not in HARD_KINDS:
        return False
    strikes.times = [t for t in strikes.times if now - t <= policy.window_s] + [now]
    return len(strikes.times) >= policy.refusals


def verdict(record: Mapping[str, object] | None, upstream_gone: bool) -> Why | None:
    """Why the instance behind a lease is gone, or None while it may still serve."""
    if record is None:
        return Why.INSTANCE_GONE
    extra = record.get("extra")
    if isinstance(extra, Mapping) and extra.get("keepalive_lost_since"):
        return Why.KEEPALIVE_LOST  # the keepalive also marks the record unhealthy: its reason says more
    if record.get("status") in DEAD:
        return Why.INSTANCE_GONE
    return Why.UPSTREAM_REFUSED if upstream_gone else None


@dataclass
class Tracked:
    """One prompt sent through a lease's endpoint: what it takes to send it again."""

    prompt_id: str
    body: dict[str, object]  # the client's JSON body (graph, client_id, extra_data ...)
    consent: bool  # Idempotency-Key on its POST, or the lease's setting
    done: bool = False
    client_id: str | None = None


def split_in_flight(prompts: Iterable[Tracked]) -> tuple[list[Tracked], list[Tracked]]:
    """(re-submit, lost): the unfinished prompts with consent, in the order sent, and those without."""
    pending = [p for p in prompts if not p.done]
    return [p for p in pending if p.consent], [p for p in pending if not p.consent]


def resubmission(p: Tracked) -> dict[str, object]:
    """The body sent to the new instance: the client's own, with its ``prompt_id`` fixed (ComfyUI takes a
    caller's ``prompt_id``), so ``/history/{prompt_id}``, the websocket messages and queue deletes follow."""
    return {**p.body, "prompt_id": p.prompt_id}


def ended_prompt(message: Mapping[str, object]) -> str | None:
    """The prompt id a ComfyUI websocket message ends, else None."""
    kind, data = message.get("type"), message.get("data")
    if not isinstance(data, Mapping):
        return None
    pid = data.get("prompt_id")
    if not isinstance(pid, str):
        return None
    if kind in END_TYPES or (kind == "executing" and data.get("node") is None):
        return pid
    return None


def status_frame(old: str, new: str, why: str, resubmitted: Sequence[str],
                 lost: Sequence[str]) -> dict[str, object]:
    """The text frame a relayed websocket gets when its lease moved (before the new instance's messages)."""
    return {"type": STATUS_TYPE, "data": {"from_instance": old, "to_instance": new, "reason": str(why),
                                          "resubmitted": list(resubmitted), "lost": list(lost)}}


def lost_message(old: str, new: str, why: str) -> str:
    """The one clear error of a failover the client did not consent to re-submit through."""
    return (f"vastkeep failover: instance {old} was lost ({why}); the lease moved to instance {new}. "
            "Prompts in flight were not re-submitted (send Idempotency-Key on POST /prompt to allow it); "
            "submit again.")


def lost_error_frame(prompt_id: str, old: str, new: str, why: str) -> dict[str, object]:
    """ComfyUI's own ``execution_error`` for a prompt lost in a failover (clients already handle it)."""
    return {"type": "execution_error", "data": {
        "prompt_id": prompt_id, "node_id": None, "node_type": None, "executed": [],
        "exception_type": "vastkeep.Failover", "exception_message": lost_message(old, new, why),
        "traceback": [], "current_inputs": {}, "current_outputs": {}}}


def lost_error_body(lost: Sequence[str], old: str, new: str, why: str) -> dict[str, object]:
    """The HTTP 503 answer (once) for lost prompts whose client has no websocket through the proxy."""
    return {"error": "failover", "reason": lost_message(old, new, why), "fromInstance": old,
            "toInstance": new, "lostPrompts": list(lost)}


__all__ = ["DEAD", "END_TYPES", "HARD_KINDS", "STATUS_TYPE", "FailoverPolicy", "Strikes", "Tracked", "Why",
           "ended_prompt", "lost_error_body", "lost_error_frame", "lost_message", "resubmission",
           "split_in_flight", "status_frame", "strike", "verdict"]
