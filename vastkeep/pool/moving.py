"""Failover of a client lease: the lease leaves its lost instance for a ready, idle one (``lease_move.lua``).

The move is a fenced lease write like every other: it names the grant it moves (instance id + fence), and
happens only while that grant is still the lease's (compare-and-set on the fence); the moved lease gets a
fresh fence from the pool's counter, keeps its lease id, client and end, and its endpoint token now names
the new grant, so the client's URL and token do not change. The lost instance's entry ends (reason
``failover``): it rejoins the pool only after a health check, as after any lease.

Safe to run twice: the request id is derived from the grant being moved (``failover:<instance>:<fence>``),
so redis-py's re-send after a timeout, a retry, and a second process deciding the same failover (two
proxies, or a proxy and the reconcile round) all get the first answer from the lease memo.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vastkeep.core.clock import iso
from vastkeep.state import as_text
from vastkeep.state.keys import POOL_LEASE_REQUEST_TTL_MS

if TYPE_CHECKING:
    from vastkeep.pool.leasing import PoolLeases

log = logging.getLogger("vastkeep.pool")
_HERE = Path(__file__).parent
_SOURCE: str | None = None


@dataclass(frozen=True)
class Moved:
    """Where a lease went: the new grant (instance id + fence) and its ComfyUI URL."""

    instance_id: str
    fence: int
    connection_url: str | None
    from_instance: str
    replayed: bool


def move_request_id(instance_id: str, fence: int) -> str:
    """The request id of the failover of one grant: the same in every process that decides it."""
    return f"failover:{instance_id}:{int(fence)}"


def _source() -> str:
    global _SOURCE  # noqa: PLW0603 - the script text is read once per process
    if _SOURCE is None:
        _SOURCE = ((_HERE / "lease_move.lua").read_text(encoding="utf-8") + "\n"
                   + (_HERE / "lease_memo.lua").read_text(encoding="utf-8"))
    return _SOURCE


def move_lease(leases: PoolLeases, instance_id: str, fence: int, reason: str) -> Moved | str:
    """Move the lease on grant (``instance_id``, ``fence``) to a ready instance: :class:`Moved`, or why not
    (``"gone"``: the lease is not on that grant any more; ``"none-ready"``: nothing to move to yet)."""
    k, pool, now = leases.keys, leases.pool, leases.clock.now()
    script = leases.redis.register_script(_source())
    rid = move_request_id(str(instance_id), int(fence))
    grant_prefix = k.endpoint_grant(pool, "x", 0)[: -len("x:0")]
    raw = script(keys=[k.instances(), k.pool_leases(pool), k.pool_lease_index(pool), k.pool_lease_fence(pool),
                       k.pool_claims(pool), k.pool_lease_request(pool, "move", rid)],
                 args=[k.instance("x")[:-1], f"{leases.prefix}:{pool}:", str(instance_id), str(int(fence)),
                       repr(now), iso(now) or "", k.endpoint("x")[:-1], grant_prefix, reason[:80], pool,
                       str(POOL_LEASE_REQUEST_TTL_MS)])
    answer = json.loads(as_text(raw[1]))
    if not isinstance(answer, list) or int(answer[0]) != 1:
        return str(answer[1]) if isinstance(answer, list) and len(answer) > 1 else "gone"
    moved = Moved(str(answer[1]), int(answer[2]), str(answer[3]) or None, str(answer[4]), int(raw[0]) == 1)
    if not moved.replayed:
        entry = leases._entry(moved.instance_id)
        until = entry.get("until")
        leases.mirror(moved.instance_id, float(until) if until else None, entry.get("client"))
        leases.mirror(str(instance_id), None, None)
        log.info("client lease moved: instance %s -> %s (fence %d, %s)", instance_id, moved.instance_id,
                 moved.fence, reason[:80])
    return moved


#: Record statuses after which an instance will not serve its lease again (the round moves the lease).
_DEAD = frozenset({"failed", "gone", "destroying", "destroyed"})


def lost_reason(status: str | None, extra: dict[str, object] | None) -> str | None:
    """Why a leased instance's lease should move (pure): ``keepalive-lost``, ``instance-gone``, or None."""
    if isinstance(extra, dict) and extra.get("keepalive_lost_since"):
        return "keepalive-lost"
    return "instance-gone" if status in _DEAD else None


def fail_over(leases: PoolLeases, instance_id: str, fence: int, reason: str,
              lost_since: float | None) -> bool:
    """The reconcile round's failover of a lease whose instance is lost (a proxy serving the lease follows it
    and re-submits its prompts; with no traffic the lease still moves before the lost instance is destroyed).
    True when moved now; the events say so."""
    t0 = leases.clock.monotonic()
    got = move_lease(leases, instance_id, fence, reason)
    if not isinstance(got, Moved) or got.replayed:
        return False
    switch_s = round(leases.clock.monotonic() - t0, 3)
    detect_s = round(max(0.0, leases.clock.now() - lost_since), 3) if lost_since else 0.0
    leases.events.emit("failover-started", instance_id=instance_id, reason=reason, detect_s=detect_s)
    leases.events.emit("failover-done", instance_id=instance_id, to_instance=got.instance_id, reason=reason,
                       outcome="moved", detect_s=detect_s, switch_s=switch_s, total_s=switch_s, resubmitted=0,
                       lost=0)
    return True


__all__ = ["Moved", "fail_over", "lost_reason", "move_lease", "move_request_id"]
