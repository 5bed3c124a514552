"""Layer 3 against the store: validate one instance or the whole pool and record the verdict.

The guide's integration, in Python: a validated instance gets its ``connection_url`` and turns "ready";
a failed one stays "loading" with ``port_validation`` saying why, and the next poll simply tries again.
Writes only set values (no counters), so a redelivered task writes the same thing twice, harmlessly;
events are emitted only when the verdict changes, so redelivery and steady polling do not flood the stream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from vastkeep.clock import SYSTEM_CLOCK, Clock, iso
from vastkeep.errors import NotFound, UnsafeTarget, VastkeepError, is_transient
from vastkeep.ports import PortValidation, PortValidator, candidates_for, unsafe_validation

log = logging.getLogger("vastkeep.ports")

#: Statuses a passing validation promotes to "ready" (the guide: loading → ready once a port works).
PROMOTABLE = frozenset({"starting", "loading"})
#: Statuses we neither probe nor write: the instance is going or gone.
SKIPPED_STATUSES = frozenset({"destroyed", "destroying"})
#: What a record says once Vast.ai no longer knows the instance (``show_instance`` → NotFound).
GONE_STATUS = "failed"
GONE_ERROR = "gone at provider: no_such_instance"


def _needs_refresh(rec: Any) -> bool:
    return not (getattr(rec, "public_ip", None) and getattr(rec, "ports", None))


@dataclass(frozen=True)
class GoneAtProvider:
    """What :func:`refresh_from_provider` returns when Vast.ai no longer knows the instance.

    A value, not an error: ``NotFound`` already means "no record in the store" to the callers, and the two
    need opposite handling (nothing to do vs. mark the record), so this case never travels as NotFound.
    ``record`` is the record as marked (None when it vanished meanwhile).
    """

    record: Any


def refresh_from_provider(store: Any, vast: Any, rec: Any, *, events: Any = None) -> Any:
    """Fill a record's ``public_ip``/``ports`` from ``VastClient.show_instance`` (loading ones lack them).

    When Vast.ai answers NotFound the instance is gone there: the record is marked (:func:`mark_gone`) and a
    :class:`GoneAtProvider` is returned. ``NotFound`` raised from here means the store has no record.
    """
    try:
        vi = vast.show_instance(int(rec.instance_id))
    except NotFound:
        return GoneAtProvider(mark_gone(store, events, rec.instance_id))
    if not vi.public_ip and not vi.ports:
        return rec
    return store.update_instance(rec.instance_id, {"public_ip": vi.public_ip, "ports": dict(vi.ports)})


def mark_gone(store: Any, events: Any, instance_id: str) -> Any:
    """Record that Vast.ai no longer knows the instance: status "failed", ``error`` = :data:`GONE_ERROR`.

    Compare-and-set on the record as it is at write time: destroying/destroyed records are left alone (that
    is the expected end of a destroy), and the ``instance-status`` event is emitted only when the status
    actually changes, so a redelivered task or the next poll writes nothing new and emits nothing.
    Returns the record (None when there is none).
    """
    old_status: str | None = None

    def decide(rec: Any) -> Any:
        nonlocal old_status
        old_status = None  # the CAS may call us again with a newer record
        if rec.status in SKIPPED_STATUSES:
            return rec
        if rec.status != GONE_STATUS:
            old_status = rec.status
            rec.status = GONE_STATUS
        rec.error = GONE_ERROR
        return rec

    try:
        rec = store.modify_instance(instance_id, decide)
    except NotFound:
        return None
    if old_status is not None:
        log.warning("⚠️  Instance %s is gone at Vast.ai: marked %s", instance_id, GONE_STATUS,
                    extra={"instance_id": instance_id})
        if events is not None:
            events.emit("instance-status", instance_id=str(instance_id), old=old_status, new=GONE_STATUS,
                        reason=GONE_ERROR)
    return rec


def _verdict_key(pv: dict[str, Any] | None) -> tuple[Any, ...] | None:
    if not pv:
        return None
    return (pv.get("success"), pv.get("connection_url"), pv.get("error"))


def record_validation(store: Any, events: Any, instance_id: str, pv: PortValidation, clock: Clock) -> Any:
    """Write the verdict: always ``port_validation``; on success also the URL and loading → ready.

    The decision is taken inside the store's compare-and-set (:meth:`StateStore.modify_instance`), on the
    record as it is at write time: an instance that turned "destroying" after we read it is never promoted,
    and one that vanished or is being destroyed is left alone (nothing written, never resurrected).
    """
    entry = pv.to_dict() | {"checked_at": iso(clock.now())}
    changed = False

    def decide(rec: Any) -> Any:
        nonlocal changed
        changed = False  # the CAS may call us again with a newer record
        if rec.status in SKIPPED_STATUSES:
            return rec  # unchanged: the store writes nothing
        promoted = pv.success and rec.status in PROMOTABLE
        changed = promoted or _verdict_key(rec.port_validation) != _verdict_key(entry)
        rec.port_validation = entry
        if pv.success:
            rec.connection_url = pv.connection_url
            if promoted:
                rec.status = "ready"
        return rec

    try:
        rec = store.modify_instance(instance_id, decide)
    except NotFound:
        return None
    if events is not None and changed:
        if pv.success:
            events.emit("port-validated", instance_id=instance_id, port=pv.port, candidate=pv.kind,
                        connection_url=pv.connection_url, status=rec.status)
        else:
            events.emit("port-validation-failed", instance_id=instance_id, error=pv.error,
                        firewall=pv.firewall, status=rec.status)
    return rec


def result_dict(instance_id: str, pv: PortValidation) -> dict[str, Any]:
    """The task result: small JSON, no secrets."""
    return {"instance_id": instance_id, "success": pv.success, "port": pv.port, "kind": pv.kind,
            "connection_url": pv.connection_url, "error": pv.error, "firewall": pv.firewall,
            "candidates": [{"kind": r.kind, "port": r.port, "outcome": r.outcome, "ms": round(r.ms, 1)}
                           for r in pv.candidates]}


def validate_instance(store: Any, events: Any, validator: PortValidator, instance_id: str, *,
                      vast: Any = None, clock: Clock = SYSTEM_CLOCK) -> dict[str, Any]:
    """Probe one stored instance and record the verdict; returns :func:`result_dict`.

    Raises NotFound when the record does not exist (and only then). An address refused by the SSRF guard
    is recorded as a failed validation (nothing is probed) rather than raised, so the caller sees it in the
    store. An instance Vast.ai no longer knows is marked (:func:`mark_gone`) and the result says
    ``gone_at_provider: true``.
    """
    rec = store.get_instance(instance_id)
    if rec is None:
        raise NotFound(f"no instance record {instance_id}", instance_id=instance_id)
    if rec.status in SKIPPED_STATUSES:
        return result_dict(instance_id, PortValidation(False, error=f"instance is {rec.status}"))
    if vast is not None and _needs_refresh(rec):
        rec = refresh_from_provider(store, vast, rec, events=events)
        if isinstance(rec, GoneAtProvider):
            status = rec.record.status if rec.record is not None else None
            return result_dict(instance_id, PortValidation(False, error=GONE_ERROR)) | {
                "gone_at_provider": True, "status": status}
    cands = candidates_for(rec)
    try:
        pv = validator.validate(cands, instance_id)
    except UnsafeTarget as exc:
        pv = unsafe_validation(cands, exc)
        log.warning("⚠️  Port validation failed: %s", pv.error, extra={"instance_id": instance_id})
    record_validation(store, events, instance_id, pv, clock)
    return result_dict(instance_id, pv)


def validate_pool(store: Any, events: Any, validator: PortValidator, *, vast: Any = None,
                  clock: Clock = SYSTEM_CLOCK) -> dict[str, Any]:
    """Every non-destroyed instance, concurrently (bounded by the validator's concurrency).

    Records lacking an address are filled from one ``VastClient.list_instances()`` call, not one call each.
    If that call fails (a rejected key, or 429/5xx/network after the client's retries), only those records
    are affected: they are skipped this sweep (nothing probed or written for them; the next sweep retries)
    and the result carries ``refresh_error``; every record that has its address is still validated. The
    error is reported, never raised, so the sweep always returns its summary.
    Returns counts plus the failed/skipped ids (small JSON even for thousands of instances).
    """
    records = [r for r in store.list_instances() if r.status not in SKIPPED_STATUSES]
    skipped: list[str] = []
    refresh_error: dict[str, Any] | None = None
    if vast is not None and any(_needs_refresh(r) for r in records):
        try:
            by_id = {str(vi.id): vi for vi in vast.list_instances()}
        except VastkeepError as exc:
            skipped = [r.instance_id for r in records if _needs_refresh(r)]
            records = [r for r in records if not _needs_refresh(r)]
            refresh_error = exc.to_dict() | {"transient": is_transient(exc)}
            log.warning("⚠️  Vast.ai refresh failed (%s: %s); %d instance(s) without an address skipped this "
                        "sweep", type(exc).__name__, exc.message, len(skipped))
        else:
            records = _apply_refresh(store, records, by_id)
    verdicts = validator.validate_many({r.instance_id: candidates_for(r) for r in records})
    ready, failed = [], []
    for iid, pv in verdicts.items():
        record_validation(store, events, iid, pv, clock)
        (ready if pv.success else failed).append(iid)
    result = {"checked": len(verdicts), "passed": len(ready), "failed": len(failed),
              "failed_ids": sorted(failed)[:100],
              "firewall": sum(1 for pv in verdicts.values() if pv.firewall)}
    if refresh_error is not None:
        result |= {"skipped": len(skipped), "skipped_ids": sorted(skipped)[:100],
                   "refresh_error": refresh_error}
    return result


def _apply_refresh(store: Any, records: list[Any], by_id: dict[str, Any]) -> list[Any]:
    """Write the provider's address into the records that lack one; a record deleted meanwhile is dropped."""
    fresh = []
    for r in records:
        vi = by_id.get(str(r.instance_id))
        if _needs_refresh(r) and vi is not None and (vi.public_ip or vi.ports):
            try:
                r = store.update_instance(r.instance_id, {"public_ip": vi.public_ip, "ports": dict(vi.ports)})
            except NotFound:
                continue
        fresh.append(r)
    return fresh
