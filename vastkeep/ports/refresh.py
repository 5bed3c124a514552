"""Layer 3's view of the provider: keep a record's address current, and mark one the provider no longer knows.

A port is probed at the address the provider reports *now*: a record without one is filled from
:meth:`~vastkeep.providers.Provider.instance` (:func:`refresh_from_provider`), and a pool sweep's one listing
refreshes every listed record (:func:`apply_provider_address`, the address from
:func:`vastkeep.providers.address_of`). An instance the provider says is gone is marked ``gone``
(:func:`mark_gone`). Every write is a compare-and-set on the record as it is at write time that leaves
records being destroyed (or gone) alone (:func:`modify_live`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from vastkeep.core.errors import NotFound
from vastkeep.providers import Instance, Provider, address_of
from vastkeep.state import (
    ENDING_STATUSES,
    NULL_EVENTS,
    EventSink,
    InstanceRecord,
    InstanceStatus,
    Lease,
    Store,
)

log = logging.getLogger("vastkeep.ports")

#: Statuses we neither probe nor write: the instance is going or gone, or the provider said it failed
#: (Layer 5: a failed or gone record is never promoted by a probe nor swept as if alive).
SKIPPED_STATUSES = ENDING_STATUSES
#: What a record says once Vast.ai no longer knows the instance (``show_instance`` → NotFound).
GONE_STATUS = InstanceStatus.GONE
GONE_ERROR = "gone at provider: no_such_instance"

T = TypeVar("T")


def _needs_refresh(rec: InstanceRecord) -> bool:
    return not (rec.public_ip and rec.ports)


def modify_live(store: Store, instance_id: str, change: Callable[[InstanceRecord], T], *,
                 lease: Lease | None = None) -> tuple[InstanceRecord | None, T | None]:
    """Apply ``change(rec)`` (it edits ``rec`` in place) inside the store's compare-and-set.

    The decision is taken on the record as it is at write time: one being destroyed (or gone) is left as it
    is and ``change`` is not called. Returns ``(record, what change returned)``, the second from the attempt
    that was stored (the CAS may call us again with a newer record, so earlier attempts' answers are
    dropped); ``(None, None)`` when the record vanished. With ``lease`` the write is fenced and raises
    ``StaleFence`` once that grant no longer holds it (a skipped record then gets only the fence stamp).
    """
    outcome: T | None = None

    def decide(rec: InstanceRecord) -> InstanceRecord:
        nonlocal outcome
        outcome = None
        if rec.status not in SKIPPED_STATUSES:
            outcome = change(rec)
        return rec

    try:
        rec = store.modify_instance(instance_id, decide, lease=lease)
    except NotFound:
        return None, None
    return rec, outcome


@dataclass(frozen=True)
class GoneAtProvider:
    """What :func:`refresh_from_provider` returns when Vast.ai no longer knows the instance.

    A value, not an error: ``NotFound`` already means "no record in the store" to the callers, and the two
    need opposite handling (nothing to do vs. mark the record), so this case never travels as NotFound.
    ``record`` is the record as marked (None when it vanished meanwhile).
    """

    record: InstanceRecord | None


def refresh_from_provider(store: Store, vast: Provider, rec: InstanceRecord, *,
                          events: EventSink = NULL_EVENTS) -> InstanceRecord | GoneAtProvider:
    """Fill a record's ``public_ip``/``ports`` from ``Provider.instance`` (loading ones lack them).

    When Vast.ai answers NotFound the instance is gone there: the record is marked (:func:`mark_gone`) and a
    :class:`GoneAtProvider` is returned. ``NotFound`` raised from here means the store has no record.
    """
    try:
        vi = vast.instance(int(rec.instance_id))
    except NotFound:
        return GoneAtProvider(mark_gone(store, events, rec.instance_id))
    if not vi.public_ip and not vi.ports:
        return rec
    return store.update_instance(rec.instance_id, {"public_ip": vi.public_ip, "ports": dict(vi.ports)})


def mark_gone(store: Store, events: EventSink, instance_id: str) -> InstanceRecord | None:
    """Record that Vast.ai no longer knows the instance: status "gone", ``error`` = :data:`GONE_ERROR`.

    Compare-and-set on the record as it is at write time: destroying/destroyed records are left alone (that
    is the expected end of a destroy), and the ``instance-status`` event is emitted only when the status
    actually changes, so a redelivered task or the next poll writes nothing new and emits nothing.
    Returns the record (None when there is none).
    """
    def change(rec: InstanceRecord) -> str | None:
        old = rec.status if rec.status != GONE_STATUS else None
        rec.status, rec.error, rec.status_reason = GONE_STATUS, GONE_ERROR, GONE_ERROR
        return old

    rec, old_status = modify_live(store, instance_id, change)
    if old_status is not None:
        log.warning("⚠️  Instance %s is gone at Vast.ai: marked %s", instance_id, GONE_STATUS,
                    extra={"instance_id": instance_id})
        events.emit("instance-status", instance_id=str(instance_id), old=old_status, new=GONE_STATUS,
                    reason=GONE_ERROR)
    return rec


#: The address fields the provider reports now (one function for every layer: :func:`providers.address_of`).
provider_address = address_of


def apply_provider_address(store: Store, rec: InstanceRecord, vi: Instance, *,
                           lease: Lease | None = None) -> InstanceRecord | None:
    """Write the provider's current address into ``rec`` where it differs (compare-and-set on the record
    as it is at write time; destroying/destroyed records are left alone; fenced by ``lease`` when given).
    Returns the record, or None when it was deleted meanwhile. An unchanged address costs no write."""
    fresh = provider_address(vi)
    if all(getattr(rec, k) == v for k, v in fresh.items()):
        return rec

    def change(cur: InstanceRecord) -> dict[str, tuple[object, object]]:
        diff = {k: (getattr(cur, k), v) for k, v in fresh.items() if getattr(cur, k) != v}
        for key, (_, value) in diff.items():
            setattr(cur, key, value)
        return diff

    new, changed = modify_live(store, rec.instance_id, change, lease=lease)
    if changed:
        log.info("Instance %s address changed at Vast.ai: %s", rec.instance_id,
                 ", ".join(f"{k} {old!r} -> {value!r}" for k, (old, value) in changed.items()),
                 extra={"instance_id": rec.instance_id})
    return new


def _apply_refresh(store: Store, records: list[InstanceRecord], by_id: dict[str, Instance],
                   lease: Lease | None) -> list[InstanceRecord]:
    """Every listed record gets the provider's current address; one deleted or being destroyed is dropped,
    and so is one the listing does not show: its stored address may belong to someone else by now, so it
    is never probed there (Layer 5 polling tells listing lag from "gone")."""
    fresh: list[InstanceRecord] = []
    for r in records:
        vi = by_id.get(str(r.instance_id))
        if vi is None:
            continue
        now = apply_provider_address(store, r, vi, lease=lease)
        if now is not None and now.status not in SKIPPED_STATUSES:
            fresh.append(now)
    return fresh




__all__ = ["GONE_ERROR", "GONE_STATUS", "SKIPPED_STATUSES", "GoneAtProvider", "apply_provider_address",
           "mark_gone", "modify_live", "provider_address", "refresh_from_provider"]
