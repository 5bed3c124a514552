"""Carry the warm pool's plan out: one reconciler at a time across all workers, never paying twice.

One round, under the fenced ``pool-reconcile:<pool>`` lease:

1. list the instances at Vast.ai once;
2. resolve every rent in flight (``PoolBook`` pending entries) by its label: found → adopt it (and destroy
   any duplicate of that label); not found after ``WARM_POOL_RENT_SETTLE_MS`` → the rent never happened;
3. adopt labelled instances of this pool that have no record (Redis was flushed, a worker died between the
   rent's answer and the record), so their slots are never rented again;
4. client leases (:meth:`PoolLeases.settle`, first): expired ones noticed, post-lease health checks queued,
   an instance whose check failed marked ``failed`` (so this round's plan replaces it);
   safe mode: enter on too many failures in the window, leave an automatic one whose cause cleared;
5. plan (:func:`vastkeep.pool.plan.plan_pool`) and carry it out: destroy (mark ``destroying``, call
   Vast.ai, delete the record; fenced writes), then rent cheapest-first, each rent recorded as pending
   *before* its request is sent. A rent whose answer is lost (``RentOutcomeUnknown``) stays pending and
   stops this round's renting: the next round looks its label up before anything is rented again.

Only instances whose label starts with ``<WARM_POOL_LABEL_PREFIX>:<WARM_POOL_NAME>:`` are ever destroyed.
Polling (Layer 5) follows the rented instances from then on (status, address, ``failed``/``gone``), and
Layer 3 (queued by polling for a running instance) promotes them to ``ready``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.errors import (
    AuthError,
    InvalidRequest,
    LeaseLost,
    NotFound,
    TransientError,
)
from vastkeep.core.settings import Settings
from vastkeep.pool import safety
from vastkeep.pool.aftercare import with_lease
from vastkeep.pool.book import CAUSE_FAILURES, CAUSE_OPERATOR, CAUSE_TOKEN, PoolBook
from vastkeep.pool.leasing import PoolLeases
from vastkeep.pool.plan import (
    REASON_DUPLICATE,
    REASON_EXCESS,
    REASON_FAILED,
    REASON_LOST_REPLACED,
    REASON_PROVISION_TIMEOUT,
    REASON_RETRY_DESTROY,
    REPLACE_REASONS,
    DestroyReason,
    OfferParams,
    PendingRent,
    PlanParams,
    RecordLike,
    is_leased,
    plan_pool,
    slot_of,
)
from vastkeep.pool.renting import Renting, RentOutcome, rent_env
from vastkeep.pool.report import RoundReport
from vastkeep.pool.roundlease import DEFAULT_MAX_ROUND_S, RoundLeaseKeeper, round_lease_ttl_ms
from vastkeep.providers import Instance, Provider
from vastkeep.state import (
    EventSink,
    InstanceRecord,
    InstanceStatus,
    Lease,
    LeaseKeeper,
    LeaseManager,
    StateStore,
    new_owner,
)

log = logging.getLogger("vastkeep.pool")

LEASE_PREFIX = "pool-reconcile"
BUSY = "another reconciler is running"
#: Extra rounds one lease holder runs when woken meanwhile (then the next wake-up or beat).
MAX_RERUNS = 2
#: Failures counted towards safe mode.
_FAILURE_REASONS = frozenset({REASON_FAILED, REASON_PROVISION_TIMEOUT})
#: Destroyed only while idle: a lease granted meanwhile keeps the instance (the others break the lease).
_IDLE_ONLY_REASONS = frozenset({REASON_EXCESS, REASON_LOST_REPLACED})


def lease_name(pool: str) -> str:
    return f"{LEASE_PREFIX}:{pool}"


class Reconciler:
    """The warm pool's reconciler for one pool (``WARM_POOL_NAME``)."""

    def __init__(self, settings: Settings, store: StateStore, events: EventSink, leases: LeaseManager,
                 book: PoolBook, vast: Provider | None, clock: Clock = SYSTEM_CLOCK,
                 client_leases: PoolLeases | None = None, max_round_s: float = DEFAULT_MAX_ROUND_S) -> None:
        self.settings = settings
        #: the round lease: short TTL (a killed round frees the pool fast), renewed while the round runs,
        #: for at most ``max_round_s`` (the task's hard time limit)
        self.lease_ttl_ms = round_lease_ttl_ms(settings)
        self.max_round_s = max_round_s
        self.client_leases = client_leases or PoolLeases(
            book.redis, book.keys, settings.warm_pool_name, settings.warm_pool_label_prefix, clock, store,
            events)
        self.store = store
        self.events = events
        self.leases = leases
        self.book = book
        self.vast = vast
        self.clock = clock
        self.params = PlanParams.from_settings(settings)
        self.offers = OfferParams.from_settings(settings)

    def run(self, wake: bool = False) -> dict[str, object]:
        """One round, or ``{"skipped": ...}`` when another reconciler holds the lease or there is no key.

        ``wake``: an event (an instance failed, a keepalive loss passed its grace) asked for this round; if
        a round is running, it is asked to go once more (it may have listed before the event).
        """
        if self.vast is None:
            return {"skipped": "no Vast.ai key configured"}
        lease = self.leases.acquire(lease_name(self.params.pool), new_owner("pool"), self.lease_ttl_ms)
        if lease is None:
            if wake:  # a wake-up arrived while a round runs: that round goes once more before it ends
                self.book.request_rerun()
            return {"skipped": BUSY}
        try:
            with RoundLeaseKeeper(self.leases, lease, self.lease_ttl_ms, self.max_round_s,
                                  self.clock) as keeper:
                leases = self.client_leases.settle()  # expiries, post-lease checks, failed checks retired
                report = _Round(self, lease, keeper).go()
                rounds = 1
                for _ in range(MAX_RERUNS):  # woken meanwhile: a failure seen after this round listed
                    if not self.book.take_rerun():
                        break
                    report = report.then(_Round(self, lease, keeper).go())
                    rounds += 1
                out: dict[str, object] = {**report.to_dict(), "rounds": rounds, "leases": leases}
                last = {"wait": report.wait, "errors": report.errors, "rented": len(report.rented),
                        "destroyed": len(report.destroyed)}
        except (TransientError, LeaseLost) as exc:
            # Vast.ai or a lease hiccup ends the round; what it did so far is recorded (pending rents
            # included), and the next round (one beat interval later) carries on from there.
            log.warning("warm-pool round ended early: %s", exc.message[:200])
            out = {"error": type(exc).__name__, "message": exc.message[:300], "fence": lease.fence}
            last = {"wait": [], "errors": [type(exc).__name__], "rented": 0, "destroyed": 0}
        finally:
            self.leases.release(lease)
        self.book.put_last_round({"at": self.clock.now(), **last})
        return out


class _Round(Renting):
    def __init__(self, rc: Reconciler, lease: Lease, keeper: LeaseKeeper) -> None:
        self.rc = rc
        self.lease = lease
        self.keeper = keeper
        self.now = rc.clock.now()
        self.report = RoundReport(fence=lease.fence)
        assert rc.vast is not None  # Reconciler.run skips the round without a key
        self.vast: Provider = rc.vast
        self.used_machines: set[int] = set()
        self.leased_ids: set[str] = set()

    # ── the round ───────────────────────────────────────────────────────────
    def go(self) -> RoundReport:
        rc, p = self.rc, self.rc.params
        try:
            listing = self.vast.instances()
        except AuthError as exc:  # the key is rejected: nothing can be rented, and nothing should be
            safety.enter(rc.store, rc.book, rc.events, CAUSE_TOKEN,
                         f"Vast.ai rejects the API key ({exc.message[:120]})", self.now)
            self.report.errors.append(f"list: {type(exc).__name__}")
            self.report.safe_mode = True
            return self.report
        ours = [vi for vi in listing if slot_of(vi.label, p.prefix, p.pool) is not None]
        self.used_machines = {vi.host_id for vi in listing if vi.host_id is not None}
        by_label: dict[str, list[Instance]] = {}
        for vi in sorted(ours, key=lambda v: v.id):
            by_label.setdefault(vi.label or "", []).append(vi)
        pending_labels = self._resolve_pending(by_label)
        self.leased_ids = set(rc.client_leases.active(self.now))
        records = {r.instance_id: r for r in rc.store.list_instances()}
        self._adopt_and_dedupe(by_label, records, pending_labels)
        active = rc.client_leases.active(self.now)
        records_list = [with_lease(r, active.get(r.instance_id)) for r in rc.store.list_instances()]
        pending = rc.book.pending()
        self._safety(records_list, pending)
        pool = rc.store.get_pool()
        plan = plan_pool(records_list, pool.desired_size, pool.safe_mode, pending, self.now, p)
        self.report.plan = plan.to_dict()
        self.report.wait.extend(plan.wait_reasons)
        by_id = {r.instance_id: r for r in records_list}
        for instance_id, reason in plan.destroy:
            self._destroy(by_id[instance_id], reason)
        if plan.destroy:  # failures just counted may trip safe mode before anything is rented
            self._trip_on_failures()
        if plan.rent:
            self._rent(plan.rent, rc.store.list_instances())
        self.report.safe_mode = rc.store.get_pool().safe_mode
        return self.report

    # ── 3. labelled instances without a record; duplicate labels ───────────
    def _adopt_and_dedupe(self, by_label: dict[str, list[Instance]], records: dict[str, InstanceRecord],
                          pending_labels: set[str]) -> None:
        p = self.rc.params
        for label, found in by_label.items():
            if label in pending_labels:
                continue  # its rent is still in flight: resolved (and adopted) by label next round
            recorded = [vi for vi in found if str(vi.id) in records]
            leased = [vi for vi in recorded if str(vi.id) in self.leased_ids]
            keep = (leased or recorded or found)[0]  # a held one first: never pull it from its client
            if str(keep.id) not in records:
                slot = slot_of(label, p.prefix, p.pool)
                assert slot is not None
                self._adopt(keep, slot, None)
            for dup in found:
                if dup is not keep:
                    self._destroy_unrecorded_or(dup, records.get(str(dup.id)))

    def _destroy_unrecorded_or(self, vi: Instance, rec: InstanceRecord | None) -> None:
        if rec is not None:
            self._destroy(rec, REASON_DUPLICATE)
            return
        self._provider_destroy(str(vi.id), vi.label, REASON_DUPLICATE)

    # ── 4. safe mode ────────────────────────────────────────────────────────
    def _safety(self, records: Sequence[RecordLike], pending: Sequence[PendingRent]) -> None:
        rc, s = self.rc, self.rc.settings
        failures = rc.book.failures(self.now, s.warm_pool_safe_mode_window_s)
        if not rc.store.get_pool().safe_mode:
            self._trip_on_failures()
            return
        cause = rc.book.cause() or CAUSE_OPERATOR
        if cause == CAUSE_OPERATOR or not s.warm_pool_safe_mode_auto_exit:
            return
        why = safety.cause_cleared(cause, failures=failures, failure_limit=s.warm_pool_safe_mode_failures,
                                   records=records, pending=pending, prefix=rc.params.prefix,
                                   max_dph=s.warm_pool_max_dph, cap_dph=s.warm_pool_max_spend_dph,
                                   preflight=getattr(self.vast, "preflight", None))
        if why is not None:
            safety.leave(rc.store, rc.book, rc.events, f"automatic: {why}", self.now)

    def _trip_on_failures(self) -> None:
        rc, s = self.rc, self.rc.settings
        failures = rc.book.failures(self.now, s.warm_pool_safe_mode_window_s)
        if failures >= s.warm_pool_safe_mode_failures:
            safety.enter(rc.store, rc.book, rc.events, CAUSE_FAILURES,
                         f"{failures} rent/provision failures within {s.warm_pool_safe_mode_window_s:.0f} s "
                         f"(WARM_POOL_SAFE_MODE_FAILURES={s.warm_pool_safe_mode_failures})", self.now)

    # ── 5a. destroy ─────────────────────────────────────────────────────────
    def _destroy(self, rec: InstanceRecord, reason: DestroyReason) -> None:
        rc = self.rc
        self._renew()
        first = rec.status != InstanceStatus.DESTROYING
        cause = reason if first else (rec.error or reason)
        if not rc.client_leases.claim(rec.instance_id, cause, force=reason not in _IDLE_ONLY_REASONS):
            self.report.wait.append(f"instance {rec.instance_id} was leased meanwhile: kept")
            return
        if first:
            try:
                changes: dict[str, object] = {"status": InstanceStatus.DESTROYING, "error": reason}
                rc.store.update_instance(rec.instance_id, changes, lease=self.lease)
            except NotFound:
                return
            if reason in REPLACE_REASONS:
                leased = is_leased(rec, self.now)
                rc.events.emit("instance-replaced", instance_id=rec.instance_id, label=rec.label,
                               reason=reason, leased=leased, lease_owner=rec.lease_owner if leased else None)
                if leased:
                    rc.events.emit("lease-broken", instance_id=rec.instance_id, client=rec.lease_owner,
                                   reason=reason)
            if reason in _FAILURE_REASONS:
                rc.book.add_failure(f"provision:{rec.instance_id}", self.now)
        shown = cause if reason == REASON_RETRY_DESTROY else reason
        if self._provider_destroy(rec.instance_id, rec.label, shown):
            rc.store.delete_instance(rec.instance_id, lease=self.lease)
            rc.client_leases.forget(rec.instance_id)

    def _provider_destroy(self, instance_id: str, label: str | None, reason: str) -> bool:
        """Destroy at Vast.ai (only our labels); True when it is gone there now."""
        rc = self.rc
        if not (label or "").startswith(f"{rc.params.prefix}:"):
            log.error("refusing to destroy instance %s: label %r is not ours", instance_id, label)
            return False
        try:
            existed = self.vast.destroy(int(instance_id))
        except (TransientError, InvalidRequest) as exc:
            self.report.errors.append(f"destroy {instance_id}: {type(exc).__name__}")
            log.warning("destroy of instance %s failed (%s); the next round tries again", instance_id,
                        exc.message)
            return False
        self.report.destroyed.append([instance_id, reason])
        log.info("destroyed instance %s (%s)", instance_id, reason)
        rc.events.emit("instance-destroyed", instance_id=instance_id, label=label, reason=reason,
                       existed=existed)
        return True

__all__ = ["BUSY", "LEASE_PREFIX", "Reconciler", "RentOutcome", "RoundReport", "lease_name", "rent_env"]
