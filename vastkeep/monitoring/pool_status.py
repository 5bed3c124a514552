"""The guide's warm-pool status document, computed from what Redis holds.

A pure function so the admin API, `vastkeep status` and tests agree on one shape: the guide's
``desiredSize`` / ``instance`` / ``isPrewarming`` / ``safeMode`` fields, plus every instance for pools
larger than one. An instance whose ComfyUI Layer 4 found lost is ``unhealthy`` in its record (reason
``keepalive: connection lost``), so it is never counted ``ready`` or ``idle``; ``counts.comfyuiLost``
counts them. Neither is an instance between a client lease's end and its passing health check
(``afterLease``: ``checking``, or ``check-failed`` while it is replaced): the grant refuses it, so the views
say so (``counts.checking``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vastkeep.core.clock import iso
from vastkeep.state.status import ENDING_STATUSES, PROVISIONING_STATUSES, InstanceStatus
from vastkeep.state.store import InstanceRecord, PoolSettings, comfyui_lost_since

S = InstanceStatus
# Preference when one instance must stand for the pool (the guide's single ``instance`` field).
_PRIMARY_ORDER = (S.READY, S.LOADING, S.STARTING, S.UNHEALTHY)


def is_leased(record: InstanceRecord, now: float) -> bool:
    """Leased while ``leased_until`` lies in the future (the guide's ``isLeased``)."""
    return record.leased_until is not None and now < record.leased_until


def primary_instance(records: Sequence[InstanceRecord]) -> InstanceRecord | None:
    """The instance the guide's single-instance view shows: ready first, then the furthest along.

    A failed, gone or destroying instance never stands for the pool (it must never be handed out)."""
    live = [r for r in records if r.status not in ENDING_STATUSES]
    for status in _PRIMARY_ORDER:
        for record in live:
            if record.status == status:
                return record
    return None


def warm_pool_status(pool: PoolSettings, records: Sequence[InstanceRecord], now: float,
                     polls: Mapping[str, tuple[float | None, float | None]] | None = None,
                     figures: Mapping[str, object] | None = None) -> dict[str, object]:
    """``GET /api/proxy/admin/warm-pool/status``: the guide's fields, then counts and the full list.

    ``polls`` (id → (last poll, next poll due), from Layer 5's schedule) overrides the record's own
    ``lastPollAt`` / ``nextPollAt``, which are only written when a poll changes the record.
    ``figures`` (``vastkeep.pool.ops.pool_figures``): pool-level numbers from the warm pool's own book (rents
    in flight, spend rate and cap, the safe-mode cause), shown under ``pool``; a rent in flight also makes
    ``isPrewarming`` true, as in the guide (prewarming = renting and waiting for ready).
    """
    live = [r for r in records if r.status != S.DESTROYED]
    primary = primary_instance(live)
    counts: dict[str, int] = {}
    for record in live:
        counts[record.status] = counts.get(record.status, 0) + 1
    given = (figures or {}).get("afterLease")
    after = {str(k): str(v) for k, v in given.items()} if isinstance(given, Mapping) else {}
    truth = _live_leases(figures)
    leased = sum(1 for r in live if _leased(r, now, truth))
    idle = sum(1 for r in live
               if r.status == S.READY and not _leased(r, now, truth) and r.instance_id not in after)
    lost = sum(1 for r in live if r.status not in ENDING_STATUSES and comfyui_lost_since(r) is not None)
    return {
        "desiredSize": pool.desired_size,
        "instance": _view(primary, now, polls, after, truth) if primary else None,
        "isPrewarming": (any(r.status in PROVISIONING_STATUSES for r in live)
                         or bool((figures or {}).get("pendingRents"))),
        "safeMode": pool.safe_mode,
        "safeModeReason": pool.safe_mode_reason,
        "counts": {"total": len(live), "leased": leased, "idle": idle, "comfyuiLost": lost,
                   "checking": sum(1 for r in live if r.instance_id in after), "byStatus": counts},
        "pool": dict(figures or {}),
        "instances": [_view(r, now, polls, after, truth) for r in live],
    }


def _live_leases(figures: Mapping[str, object] | None) -> dict[str, object] | None:
    """Instance id → ``leasedUntil`` of every live client lease, from the pool's lease entries (the truth the
    grant decides on; ``figures["leases"]``), or None when the caller gave none (then the record's mirror)."""
    given = (figures or {}).get("leases")
    if not isinstance(given, list):
        return None
    return {str(e["instanceId"]): e.get("leasedUntil") for e in given
            if isinstance(e, Mapping) and "instanceId" in e}


def _leased(record: InstanceRecord, now: float, truth: Mapping[str, object] | None) -> bool:
    return record.instance_id in truth if truth is not None else is_leased(record, now)


def _view(record: InstanceRecord, now: float,
          polls: Mapping[str, tuple[float | None, float | None]] | None = None,
          after: Mapping[str, str] | None = None,
          truth: Mapping[str, object] | None = None) -> dict[str, object]:
    view = record.to_status_dict()
    last, due = (polls or {}).get(record.instance_id, (None, None))
    if last is not None:
        view["lastPollAt"] = iso(last)
    if due is not None:
        view["nextPollAt"] = iso(due)
    view["isLeased"] = _leased(record, now, truth)
    if truth is not None:  # the lease entry, not the record's best-effort mirror of it
        view["leasedUntil"] = truth.get(record.instance_id)
    view["afterLease"] = (after or {}).get(record.instance_id)
    view.pop("fence", None)  # internal fencing marks, not status fields
    view.pop("fenceName", None)
    return view
