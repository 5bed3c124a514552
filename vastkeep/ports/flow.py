"""Layer 3 against the store: validate one instance or the whole pool and record the verdict.

The guide's integration, in Python: a validated instance gets its ``connection_url`` and turns "ready";
a failed one stays "loading" with ``port_validation`` saying why, and the next poll simply tries again.
Writes only set values (no counters), so a redelivered task writes the same thing twice, harmlessly;
events are emitted only when the verdict changes, so redelivery and steady polling do not flood the stream.

Who runs it: polling (Layer 5) queues ``validate_instance`` for a running instance without a validated port;
the warm pool queues it as the health check after a client lease ends (``vastkeep.pool.leasing``: the grant
waits for a verdict checked after that end); operators queue a whole-pool sweep through the admin API. There
is no periodic sweep on beat.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from vastkeep.core.clock import SYSTEM_CLOCK, Clock, iso
from vastkeep.core.errors import LeaseLost, NotFound, UnsafeTarget, VastkeepError, is_transient
from vastkeep.ports.refresh import (
    GONE_ERROR,
    GONE_STATUS,
    SKIPPED_STATUSES,
    GoneAtProvider,
    _apply_refresh,
    _needs_refresh,
    apply_provider_address,
    mark_gone,
    modify_live,
    provider_address,
    refresh_from_provider,
)
from vastkeep.ports.sweep import (
    Sweep,
    SweepProgress,
    interrupted_sweep,
    phase_ttl_ms,
    probe_budget_s,
    refresh_budget_s,
)
from vastkeep.ports.validator import (
    PortValidation,
    PortValidator,
    candidates_for,
    known_good,
    unsafe_validation,
)
from vastkeep.providers import Provider
from vastkeep.state import (
    PROVISIONING_STATUSES,
    EventSink,
    InstanceRecord,
    InstanceStatus,
    Lease,
    LeaseManager,
    Store,
    thread_owner,
)

log = logging.getLogger("vastkeep.ports")

#: Statuses a passing validation promotes to "ready" (the guide: loading → ready once a port works).
PROMOTABLE = PROVISIONING_STATUSES
#: The fenced lease one pool sweep holds at a time, and what a sweep that found it held returns.
SWEEP_LEASE = "ports-sweep"
SWEEP_BUSY = "another sweep is running"
SWEEP_LOST = "sweep lease lost; a newer sweep owns the verdicts"


def _verdict_key(pv: Mapping[str, object] | None) -> tuple[object, ...] | None:
    if not pv:
        return None
    return (pv.get("success"), pv.get("connection_url"), pv.get("error"))


def record_validation(store: Store, events: EventSink, instance_id: str, pv: PortValidation,
                      clock: Clock, *, lease: Lease | None = None) -> InstanceRecord | None:
    """Write the verdict: always ``port_validation``; on success also the URL and loading → ready.

    The decision is taken inside the store's compare-and-set (:meth:`StateStore.modify_instance`), on the
    record as it is at write time: an instance that turned "destroying" after we read it is never promoted,
    and one that vanished or is being destroyed is left alone (its fields untouched, never resurrected).
    With ``lease`` (a pool sweep's) the write is fenced: ``StaleFence`` once a newer sweep owns the verdicts.
    """
    entry = pv.to_dict() | {"checked_at": iso(clock.now())}

    def change(rec: InstanceRecord) -> bool:
        promoted = pv.success and rec.status in PROMOTABLE
        verdict_changed = promoted or _verdict_key(rec.port_validation) != _verdict_key(entry)
        rec.port_validation = entry
        if pv.success:
            rec.connection_url = pv.connection_url
            if promoted:
                rec.status, rec.status_reason = InstanceStatus.READY, None
        return verdict_changed

    rec, changed = modify_live(store, instance_id, change, lease=lease)
    if rec is None:
        return None
    if changed:
        if pv.success:
            events.emit("port-validated", instance_id=instance_id, port=pv.port, candidate=pv.kind,
                        connection_url=pv.connection_url, status=rec.status)
        else:
            events.emit("port-validation-failed", instance_id=instance_id, error=pv.error,
                        firewall=pv.firewall, status=rec.status)
    return rec


def result_dict(instance_id: str, pv: PortValidation) -> dict[str, object]:
    """The task result: small JSON, no secrets."""
    return {"instance_id": instance_id, "success": pv.success, "port": pv.port, "kind": pv.kind,
            "connection_url": pv.connection_url, "error": pv.error, "firewall": pv.firewall,
            "candidates": [{"kind": r.kind, "port": r.port, "outcome": r.outcome, "ms": round(r.ms, 1)}
                           for r in pv.candidates]}


def validate_instance(store: Store, events: EventSink, validator: PortValidator, instance_id: str, *,
                      vast: Provider | None = None, clock: Clock = SYSTEM_CLOCK) -> dict[str, object]:
    """Probe one stored instance and record the verdict; returns :func:`result_dict`.

    Raises NotFound when the record does not exist (and only then). An address refused by the SSRF guard
    is recorded as a failed validation (nothing is probed) rather than raised, so the caller sees it in the
    store. An instance Vast.ai no longer knows is marked (:func:`mark_gone`) and the result says
    ``gone_at_provider: true``.
    """
    rec = store.get_instance(instance_id)
    if rec is None:
        raise NotFound(f"no instance record {instance_id}", instance_id=instance_id)
    if rec.status == GONE_STATUS:  # the same answer as when it was found gone (redelivery, the next poll)
        return result_dict(instance_id, PortValidation(False, error=GONE_ERROR)) | {
            "gone_at_provider": True, "status": rec.status}
    if rec.status in SKIPPED_STATUSES:
        return result_dict(instance_id, PortValidation(False, error=f"instance is {rec.status}"))
    if vast is not None and _needs_refresh(rec):
        fresh = refresh_from_provider(store, vast, rec, events=events)
        if isinstance(fresh, GoneAtProvider):
            status = fresh.record.status if fresh.record is not None else None
            return result_dict(instance_id, PortValidation(False, error=GONE_ERROR)) | {
                "gone_at_provider": True, "status": status}
        rec = fresh
    cands = candidates_for(rec)
    try:
        pv = validator.validate(cands, instance_id, known_good=known_good(rec))
    except UnsafeTarget as exc:
        pv = unsafe_validation(cands, exc)
        log.warning("⚠️  Port validation failed: %s", pv.error, extra={"instance_id": instance_id})
    record_validation(store, events, instance_id, pv, clock)
    return result_dict(instance_id, pv)


def validate_pool(store: Store, events: EventSink, validator: PortValidator, *,
                  vast: Provider | None = None,
                  clock: Clock = SYSTEM_CLOCK, leases: LeaseManager | None = None,
                  probe_deadline_s: float | None = None,
                  progress: SweepProgress | None = None) -> dict[str, object]:
    """Every non-destroyed instance, concurrently (bounded by the validator's concurrency).

    With ``leases``, the sweep runs under the fenced lease :data:`SWEEP_LEASE` (operators queue it through
    the admin API, with no beat entry; two at once would double the probes and race on the verdicts): when
    another sweep holds it, nothing is done and ``{"skipped": SWEEP_BUSY}`` is returned.
    Every write of the sweep (addresses and verdicts) is fenced by that lease, so a sweep that stalls after
    its last lease check is refused by the store instead of overwriting a newer sweep's verdicts; it stops
    at the first refused write and returns ``{"skipped": SWEEP_LOST}``.

    With ``vast``, one ``Provider.instances()`` call per sweep refreshes the address of *every*
    record the provider lists (``public_ip``, ``ports``, the SSH gateway; see
    :func:`apply_provider_address`), so a reassigned address is not probed forever. If that call fails (a
    rejected key, or 429/5xx/network after the client's retries), records are probed at their stored
    address; the ones without one are skipped this sweep (the next retries) and the result carries
    ``skipped``, ``skipped_ids`` and ``refresh_error``. The error is reported, never raised.
    Returns counts plus the failed/skipped ids (small JSON even for thousands of instances).

    Each verdict is written as it arrives (not after the whole pool), so a sweep cut short keeps what it
    learned. With ``probe_deadline_s`` the probe phase stops then: instances not finished are left for the
    next sweep (``unfinished``, ``unfinished_ids``, ``interrupted: true``); instances whose last check is
    oldest go first, so a pool too large for one sweep is covered in turn. ``progress`` (a dict) is kept
    up to date as verdicts are written, for a caller interrupted mid-sweep (:func:`interrupted_sweep`).
    """
    records = [r for r in store.list_instances() if r.status not in SKIPPED_STATUSES]
    sweep = Sweep(probe_deadline_s, progress if progress is not None else SweepProgress())
    if leases is None:
        return _sweep(store, events, validator, records, vast, clock, None, sweep)
    lease = leases.acquire(SWEEP_LEASE, thread_owner(SWEEP_LEASE), phase_ttl_ms(refresh_budget_s(vast)))
    if lease is None:
        log.info("port sweep skipped: %s", SWEEP_BUSY)
        return {"skipped": SWEEP_BUSY}
    try:
        return _sweep(store, events, validator, records, vast, clock, (leases, lease), sweep)
    except LeaseLost as exc:  # StaleFence included: a write refused because a newer sweep holds the lease
        log.warning("⚠️  Port sweep stopped: %s", exc.message)
        return {"skipped": SWEEP_LOST}
    finally:
        leases.release(lease)


def _last_checked(rec: InstanceRecord) -> tuple[str, str]:
    """Sort key: never checked first, then the oldest verdict (ISO timestamps sort as text)."""
    pv = rec.port_validation or {}
    return (str(pv.get("checked_at") or ""), str(rec.instance_id))


def _sweep(store: Store, events: EventSink, validator: PortValidator, records: list[InstanceRecord],
           vast: Provider | None, clock: Clock,
           held: tuple[LeaseManager, Lease] | None, sweep: Sweep) -> dict[str, object]:
    lease = held[1] if held is not None else None
    skipped: list[str] = []
    refresh_error: dict[str, object] | None = None
    if vast is not None:
        try:
            by_id = {str(vi.id): vi for vi in vast.instances()}
        except VastkeepError as exc:
            skipped = [r.instance_id for r in records if _needs_refresh(r)]
            records = [r for r in records if not _needs_refresh(r)]
            refresh_error = exc.to_dict() | {"transient": is_transient(exc)}
            log.warning("⚠️  Vast.ai refresh failed (%s: %s); probing stored addresses, %d instance(s) "
                        "without one skipped this sweep", type(exc).__name__, exc.message, len(skipped))
        else:
            records = _apply_refresh(store, records, by_id, lease)
    targets = {r.instance_id: candidates_for(r) for r in sorted(records, key=_last_checked)}
    if held is not None:  # the probe phase (verdicts written as they come) gets its own deadline, from now
        probes = sum(len(c) for c in targets.values())
        phase_s = probe_budget_s(validator, probes)
        if sweep.deadline_s is not None:
            phase_s = min(phase_s, sweep.deadline_s)
        held[0].ensure_renewed(held[1], phase_ttl_ms(phase_s, len(targets)))

    def record(iid: str, pv: PortValidation) -> None:
        # fenced by the lease: a sweep that outlived it is refused here (StaleFence) and stops
        record_validation(store, events, iid, pv, clock, lease=lease)
        sweep.count(iid, pv)

    verdicts = validator.validate_many(targets, {r.instance_id: known_good(r) for r in records},
                                       on_verdict=record, deadline_s=sweep.deadline_s)
    result = sweep.progress.to_dict()
    unfinished = [iid for iid in targets if iid not in verdicts]
    if unfinished:
        log.warning("⚠️  Port sweep reached its %.0fs probe deadline: %d instance(s) left for the next sweep",
                    sweep.deadline_s or 0.0, len(unfinished))
        result |= {"interrupted": True, "reason": "probe deadline", "unfinished": len(unfinished),
                   "unfinished_ids": sorted(unfinished)[:100]}
    if refresh_error is not None:
        result |= {"skipped": len(skipped), "skipped_ids": sorted(skipped)[:100],
                   "refresh_error": refresh_error}
    return result


__all__ = [
    "GONE_ERROR", "GONE_STATUS", "PROMOTABLE", "SKIPPED_STATUSES", "SWEEP_BUSY", "SWEEP_LEASE", "SWEEP_LOST",
    "GoneAtProvider", "SweepProgress", "apply_provider_address", "interrupted_sweep", "mark_gone",
    "probe_budget_s", "provider_address", "record_validation", "refresh_budget_s", "refresh_from_provider",
    "result_dict", "validate_instance", "validate_pool",
]
