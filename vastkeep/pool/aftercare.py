"""After a client lease: what its instance needs (a pure decision) and the reconcile round's pass over the
leases (:func:`settle`).

An ended lease (released, expired, or its holder gone and so never renewed) returns its instance to the pool
only after a health check, Layer 3's port validation, checked *after* that end. Expiry is an ``until`` field,
not a Redis TTL, so some process must notice it: the reconcile round runs :func:`settle` first, at most one
``WARM_POOL_RECONCILE_INTERVAL_MS`` (plus the beat's lateness) after an expiry. It ends every expired lease
(``lease_settle.lua``: state ended, its id out of the lease-id index), emits ``pool-lease-ended`` (reason
``expired``), clears the record's mirror, queues the check of every ended lease not yet checked (through the
leases' check port; once per ended lease), marks an ended lease whose check passed ``cleared`` (a later
failing verdict is Layer 4/5's business, never a post-lease failure), and retires an instance whose check
failed: its record turns ``failed`` (reason :data:`CHECK_FAILED`), and the same round's plan destroys and
replaces it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from enum import StrEnum
from typing import TYPE_CHECKING, TypedDict

from redis.commands.core import Script

from vastkeep.core.errors import NotFound
from vastkeep.pool import moving
from vastkeep.state import InstanceRecord, InstanceStatus, as_text

if TYPE_CHECKING:
    from vastkeep.pool.leasing import PoolLeases

log = logging.getLogger("vastkeep.pool")

#: The status reason of an instance retired because its health check after a lease failed.
CHECK_FAILED = "post-lease health check failed"
#: Record statuses a failed post-lease check retires (polling may have demoted a ready one to loading).
_RETIRABLE = frozenset({InstanceStatus.READY, InstanceStatus.LOADING})


class LeaseEntry(TypedDict, total=False):
    """A client lease's entry in the pool's lease hash, as the lease scripts write it (JSON)."""

    lease_id: str
    client: str
    until: float
    ended_iso: str
    granted_at: float
    fence: int
    state: str  # active | ended
    instance_id: str
    cleared: bool


class AfterLease(StrEnum):
    """What an instance needs after a client lease (see :func:`after_lease`)."""

    LIVE = "live"
    FREE = "free"
    RETIRE = "retire"
    CHECK = "check"
    WAIT = "wait"


def after_lease(entry: LeaseEntry, status: str | None, port_validation: Mapping[str, object] | None,
                now: float) -> AfterLease:
    """What an instance needs after a client lease (pure; ``entry`` is its lease entry).

    ``"live"`` the lease holds; ``"free"`` a health check passed after the end (grantable; the round then
    marks the entry ``cleared``, so a later failing verdict never retires it as a post-lease failure);
    ``"retire"`` the check after the end failed and the instance is still counted live (replace it);
    ``"check"`` no check after the end yet (queue one); ``"wait"`` not ready (polling and Layer 3 decide).
    """
    if entry.get("state") == "active" and float(entry.get("until") or 0) > now:
        return AfterLease.LIVE
    if entry.get("cleared"):  # a check passed after the end: later verdicts are not the post-lease check's
        return AfterLease.FREE
    pv = port_validation or {}
    checked_at = pv.get("checked_at")
    checked = isinstance(checked_at, str) and checked_at > str(entry.get("ended_iso") or "")
    if checked and pv.get("success") is True:
        return AfterLease.FREE
    if checked and status in _RETIRABLE:
        return AfterLease.RETIRE
    return AfterLease.CHECK if status == InstanceStatus.READY else AfterLease.WAIT


#: What the status views show for an instance between a lease's end and its passing health check.
SHOWN_AFTER_LEASE: dict[str, str] = {AfterLease.CHECK: "checking", AfterLease.RETIRE: "check-failed"}


def after_lease_views(entries: Mapping[str, str | bytes | LeaseEntry], records: Mapping[str, InstanceRecord],
                      now: float) -> dict[str, str]:
    """Instance id → ``checking`` (its health check after a lease has not passed yet) or ``check-failed``
    (being replaced) for the status views (pure): such an instance is not leasable, so it is never shown
    or counted as idle and ready."""
    out: dict[str, str] = {}
    for iid, raw in entries.items():
        try:
            entry: LeaseEntry = raw if isinstance(raw, dict) else json.loads(as_text(raw))
        except ValueError:
            continue
        rec = records.get(iid)
        need = after_lease(entry, rec.status if rec else None, rec.port_validation if rec else None, now)
        if need in SHOWN_AFTER_LEASE:
            out[iid] = SHOWN_AFTER_LEASE[need]
    return out


def settle(leases: PoolLeases, script: Script, clear: Script) -> dict[str, object]:
    """One pass over the pool's leases (``script``: ``lease_settle.lua``, ``clear``: ``lease_clear.lua``);
    counts for the round's result."""
    now = leases.clock.now()
    k, pool = leases.keys, leases.pool
    flat = script(keys=[k.pool_leases(pool), k.pool_lease_index(pool)], args=[repr(now)])
    expired = [(str(flat[i]), str(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)]
    for iid, client, fence in expired:
        leases.mirror(iid, None, None)
        log.info("client lease on instance %s expired (%s, fence %d)", iid, client, fence)
        leases.events.emit("pool-lease-ended", instance_id=iid, client=client, fence=fence, reason="expired")
    checks = moved = 0
    retired: list[str] = []
    cleared: list[str] = []
    entries = {as_text(i): as_text(v) for i, v in leases.redis.hgetall(k.pool_leases(pool)).items()}
    records = leases.store.get_instances(list(entries)) if leases.store is not None and entries else {}
    for iid, raw in entries.items():
        try:
            entry: LeaseEntry = json.loads(raw)
        except ValueError:
            continue
        rec = records.get(iid)
        need = after_lease(entry, rec.status if rec else None, rec.port_validation if rec else None, now)
        live = rec is not None and need == AfterLease.LIVE
        why = moving.lost_reason(rec.status, rec.extra) if rec is not None and live else None
        if rec is not None and why is not None:  # failover: the lease moves (none ready: the next round)
            lost_since = rec.extra.get("keepalive_lost_since")
            moved += moving.fail_over(leases, iid, int(entry.get("fence") or 0), why,
                                      float(lost_since) if isinstance(lost_since, int | float) else None)
        elif need == AfterLease.FREE and not entry.get("cleared"):
            cleared += [iid, str(entry.get("fence"))]
        elif need == AfterLease.CHECK:
            checks += leases.request_check(iid, int(entry.get("fence") or 0))
        elif need == AfterLease.RETIRE and retire(leases, iid, str(entry.get("ended_iso") or "")):
            retired.append(iid)
    if cleared:
        clear(keys=[k.pool_leases(pool)], args=cleared)
    out: dict[str, object] = {"expired": len(expired), "checks": checks, "retired": retired}
    return {**out, "moved": moved} if moved else out  # "moved": leases failed over this pass


def retire(leases: PoolLeases, instance_id: str, ended_iso: str) -> bool:
    """Mark an instance whose post-lease check failed ``failed`` (decided again on the record as it is at
    write time), so the plan destroys and replaces it; True when marked now."""
    why: list[str] = []

    def change(rec: InstanceRecord) -> InstanceRecord:
        why.clear()
        pv = rec.port_validation or {}
        entry: LeaseEntry = {"state": "ended", "until": 0, "ended_iso": ended_iso}
        if after_lease(entry, rec.status, pv, leases.clock.now()) == AfterLease.RETIRE:
            why.extend((f"{CHECK_FAILED}: {str(pv.get('error') or 'no answer')[:160]}", rec.status))
            rec.status, rec.error, rec.status_reason = InstanceStatus.FAILED, why[0], why[0]
        return rec

    if leases.store is None:
        return False
    try:
        leases.store.modify_instance(instance_id, change)
    except NotFound:
        return False
    if not why:
        return False
    log.warning("⚠️  Instance %s %s: retired, the pool replaces it", instance_id, why[0])
    leases.events.emit("instance-status", instance_id=instance_id, old=why[1], new=InstanceStatus.FAILED,
                       reason=why[0])
    return True


def with_lease(rec: InstanceRecord, entry: LeaseEntry | None) -> InstanceRecord:
    """The record as the plan must see it: a live client lease (the truth) over the record's mirror."""
    if entry is None:
        return rec
    until = max(float(entry.get("until") or 0), rec.leased_until or 0.0)
    return replace(rec, leased_until=until, lease_owner=entry.get("client") or rec.lease_owner)


__all__ = ["CHECK_FAILED", "AfterLease", "LeaseEntry", "after_lease", "retire", "settle", "with_lease"]
