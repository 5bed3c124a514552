"""Layer 5 against the store: apply the provider's word to due instances, reschedule them, dispatch.

:class:`Poller` polls claimed instances in batches: for each it reads the record and the snapshot row,
asks :func:`~vastkeep.polling.decide.provider_verdict`, writes the change (compare-and-set on the record
as it is at write time, fenced by the dispatcher's lease), emits ``instance-status`` once per change,
queues Layer 3 (``vastkeep.ports.validate_instance``) for running-but-unvalidated instances at most once
per active interval, and reschedules with :func:`~vastkeep.polling.decide.next_poll_interval`. A poll
needs no network at all: an instance missing from the listing is asked about by its own task
(:mod:`vastkeep.polling.absence`), so a slow provider never holds the loop. :meth:`Poller.run` is the
bounded dispatcher loop a single Celery task runs under the ``poll-dispatcher`` lease, renewed by the loop
itself at every turn (at most :data:`MAX_WAIT_S` plus one batch of Redis work apart).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.errors import LeaseLost, NotFound
from vastkeep.core.settings import Settings
from vastkeep.polling.absence import CONFIRM_TASK, ShowAnswers, confirm_absence
from vastkeep.polling.decide import (
    ACTIVE_STATUSES,
    HANDS_OFF,
    NOT_LIVE,
    Absence,
    absence_verdict,
    apply_provider_word,
    is_leased,
    needs_port_validation,
    next_poll_interval,
    pool_wake_at,
)
from vastkeep.polling.lateness import LATENESS_BOUNDS_S, lateness_buckets, lateness_summary
from vastkeep.polling.schedule import Claim, PollSchedule
from vastkeep.polling.snapshot import ProviderSnapshot
from vastkeep.providers import Instance, Provider
from vastkeep.state import (
    DEAD_STATUSES,
    NULL_EVENTS,
    EventSink,
    InstanceRecord,
    InstanceStatus,
    Lease,
    LeaseManager,
    PollMarks,
    StateStore,
    new_owner,
)
from vastkeep.state import write_heartbeat as _beat

log = logging.getLogger("vastkeep.polling")

DISPATCH_LEASE = "poll-dispatcher"
DISPATCH_LEASE_TTL_MS = 10_000
DISPATCH_BUSY = "another dispatcher is running"
#: the dispatcher beats its heartbeat (named like its lease) this often; supervision (Layer 6) reads it
DISPATCH_HEARTBEAT_EVERY_S = 2.0
DISPATCH_HEARTBEAT_TTL_MS = 60_000
BATCH = 200
MAX_WAIT_S = 1.0
LATENESS_SAMPLES = 200_000
VALIDATE_TASK = "vastkeep.ports.validate_instance"
REFRESH_TASK = "vastkeep.polling.refresh"
RECONCILE_TASK = "vastkeep.pool.reconcile"
#: A wake-up marker outlives its due time by this (a late worker still finds it: no second send).
WAKE_MARK_MS = 60_000
REFRESH_QUEUED_TTL_MS = 30_000
REFRESH_RECHECK_S = 0.25

#: queue a task by name with its keyword arguments (what it answers is not used)
Send = Callable[[str, dict[str, object]], object]
Notify = Callable[[str, dict[str, object]], None]
#: a batch's counts, a dispatcher run's totals and a refresh's answer (JSON for the task result)
Counts = dict[str, object]


@dataclass(frozen=True)
class PollPolicy:
    """The intervals (seconds) and the label prefix; built from Settings by :meth:`from_settings`."""

    poll_active_interval_s: float = 30.0
    poll_idle_interval_s: float = 180.0
    poll_interval_s: float = 120.0
    label_prefix: str = "vastkeep"
    #: WARM_POOL_UNHEALTHY_GRACE_MS: a keepalive loss this old gets the pool's reconciler woken
    pool_grace_s: float = 300.0
    #: WARM_POOL_NAME: only instances labelled ``<prefix>:<pool>:`` wake the pool's reconciler
    pool_name: str = "default"

    @classmethod
    def from_settings(cls, settings: Settings) -> PollPolicy:
        return cls(settings.poll_active_interval_s, settings.poll_idle_interval_s, settings.poll_interval_s,
                   settings.warm_pool_label_prefix, settings.warm_pool_unhealthy_grace_s,
                   settings.warm_pool_name)


class Poller:
    """Polls instances from the shared snapshot; see the module docstring."""

    def __init__(self, store: StateStore, policy: PollPolicy, *, events: EventSink = NULL_EVENTS,
                 clock: Clock = SYSTEM_CLOCK, send: Send | None = None, notify: Notify | None = None,
                 vast: Provider | None = None, schedule: PollSchedule | None = None,
                 snapshot: ProviderSnapshot | None = None, announced: set[str] | None = None) -> None:
        self.store = store
        #: the guide's start lines this process has logged (the worker owns it: once per process)
        self.announced = announced if announced is not None else set()
        self.redis = store.redis  # for the polling parts and the heartbeat; no command goes through it here
        self.keys = store.keys
        self.marks = PollMarks(self.redis, self.keys)
        self.policy = policy
        self.events = events
        self.clock = clock
        self.send = send
        self.notify = notify
        self.vast = vast
        self.schedule = schedule or PollSchedule(self.redis, self.keys, clock)
        self.answers = ShowAnswers(self.redis, self.keys)
        #: how late each claimed poll started against its due time (recent ones; reported by ``run``)
        self.lateness_s: deque[float] = deque(maxlen=LATENESS_SAMPLES)
        self.snapshot = snapshot or ProviderSnapshot(
            self.redis, self.keys, clock, label_prefix=policy.label_prefix,
            idle_max_age_s=min(30.0, policy.poll_active_interval_s),
            active_max_age_s=min(5.0, policy.poll_active_interval_s))

    # ── one batch ────────────────────────────────────────────────────────────
    def poll_batch(self, claimed: list[Claim], *, lease: Lease | None = None) -> dict[str, int]:
        """Poll the claimed instances and reschedule them; returns counts."""
        ids = [c.instance_id for c in claimed]
        self.lateness_s.extend(c.lateness_s for c in claimed)
        records = self.store.get_instances(ids)
        rows = self.snapshot.rows(ids)
        absent = self.snapshot.absent_counts(ids)
        answers = self.answers.get([i for i in ids if i not in rows and i in absent])
        fetched_at = self.snapshot.fetched_at()
        asked = 0
        done: list[tuple[str, str, float]] = []
        dropped: list[str] = []
        active: list[str] = []
        idle: list[str] = []
        changed = 0
        for iid, token, _, _ in claimed:
            rec = records.get(iid)
            if rec is None:  # forgotten or deleted meanwhile: stop polling it
                dropped.append(iid)
                continue
            row = rows.get(iid)
            confirmed = False
            if row is None and rec.status not in NOT_LIVE:
                verdict = absence_verdict(absent.get(iid, 0), answers.get(iid))
                if verdict is Absence.ASK:
                    asked += self._ask(iid)
                    verdict = absence_verdict(absent.get(iid, 0), self.answers.get([iid]).get(iid))
                confirmed = verdict is Absence.GONE
            now = self.clock.now()
            new = self._apply(rec, row, absence_confirmed=confirmed, seen_at=fetched_at, lease=lease)
            if new is None:
                dropped.append(iid)
                continue
            changed += new is not rec
            self._wake_pool(new, now)
            if needs_port_validation(row, new):
                self._queue_layer3(iid)
            interval = next_poll_interval(new, now, self.policy)
            (active if interval <= self.policy.poll_active_interval_s else idle).append(iid)
            done.append((iid, token, now + interval))
        stale = self.schedule.finish(done)
        for iid in dropped:
            self.schedule.remove(iid)
        self.marks.record_batch(active=active, idle=idle, polled=[iid for iid, _, _ in done],
                                lateness=lateness_buckets(c.lateness_s for c in claimed), stale=stale)
        return {"polled": len(done), "changed": changed, "dropped": len(dropped), "stale": stale,
                "asked": asked}

    def _ask(self, iid: str) -> int:
        """Ask ``show`` about an unlisted instance, once per :data:`~vastkeep.polling.absence.ASK_TTL_MS`:
        as its own task with ``send`` (a worker: the loop never waits for the provider), else here (a
        library caller without workers). Returns 1 when a question was asked."""
        if not self.answers.mark_asked(iid):
            return 0
        if self.send is not None:
            try:
                self.send(CONFIRM_TASK, {"instance_id": iid})
            except Exception as exc:  # noqa: BLE001 - the next poll asks again
                self.answers.drop([iid])
                log.warning("⚠️  could not queue %s: %s", CONFIRM_TASK, type(exc).__name__)
                return 0
            return 1
        if self.vast is None:
            self.answers.drop([iid])
            return 0
        confirm_absence(self.redis, self.keys, self.vast, self.schedule, iid)
        return 1

    def _queue_layer3(self, iid: str) -> None:
        """Queue port validation, at most once per active interval per instance."""
        if self.send is None:
            return
        ttl_ms = max(1, int(self.policy.poll_active_interval_s * 1000))
        if self.marks.validate_once(iid, ttl_ms):
            try:
                self.send(VALIDATE_TASK, {"instance_id": iid})
            except Exception as exc:  # noqa: BLE001 - the next poll queues it again
                self.marks.drop_validate(iid)
                log.warning("⚠️  could not queue %s for %s: %s", VALIDATE_TASK, iid, type(exc).__name__)

    def _wake_pool(self, rec: InstanceRecord, now: float) -> None:
        """Wake the warm pool's reconciler for a failed instance (now) or a keepalive loss (at once, and at
        its grace's end) instead of leaving the replacement to the next beat; one send per due second (a
        Redis marker)."""
        head = f"{self.policy.label_prefix}:{self.policy.pool_name}:"
        if self.send is None:
            return
        for due in pool_wake_at(rec, now, self.policy.pool_grace_s, head):
            if not self.marks.wake_once(int(due), int(max(0.0, due - now) * 1000) + WAKE_MARK_MS):
                continue
            try:
                self.send(RECONCILE_TASK, {"wake_at": due})
            except Exception as exc:  # noqa: BLE001 - the beat runs the round anyway
                self.marks.drop_wake(int(due))
                log.warning("⚠️  could not wake %s: %s", RECONCILE_TASK, type(exc).__name__)

    def _apply(self, rec: InstanceRecord, row: Instance | None, *, absence_confirmed: bool,
               seen_at: float | None, lease: Lease | None) -> InstanceRecord | None:
        """Write what the provider's word changes (nothing when nothing changes); emit the event once."""
        now = self.clock.now()
        if rec.status in HANDS_OFF:
            return rec
        probe = InstanceRecord.from_dict(rec.to_dict())
        if _change(probe, row, absence_confirmed, seen_at, now) is None and probe == rec:
            return rec
        outcome: tuple[str, str, str | None] | None = None

        def fn(cur: InstanceRecord) -> InstanceRecord:
            nonlocal outcome
            outcome = None
            if cur.status in HANDS_OFF:
                return cur
            outcome = _change(cur, row, absence_confirmed, seen_at, now)
            cur.last_poll_at = now
            cur.next_poll_at = now + next_poll_interval(cur, now, self.policy)
            return cur

        try:
            new = self.store.modify_instance(rec.instance_id, fn, lease=lease)
        except NotFound:
            return None
        if outcome is not None:
            old, status, reason = outcome
            level = logging.WARNING if status in _WARN_STATUSES else logging.INFO
            log.log(level, "%sInstance %s: %s -> %s (%s)", "⚠️  " if level == logging.WARNING else "",
                    rec.instance_id, old, status, reason or "provider",
                    extra={"instance_id": rec.instance_id})
            fields: dict[str, object] = {"instance_id": rec.instance_id, "old": old, "new": status,
                                         "reason": reason}
            self.events.emit("instance-status", **fields)
            if self.notify is not None:
                try:
                    self.notify("instance-status", fields)
                except Exception as exc:  # noqa: BLE001 - the durable record is the event stream
                    log.warning("could not announce instance-status: %s", type(exc).__name__)
        return new

    # ── the dispatcher ───────────────────────────────────────────────────────
    def run(self, leases: LeaseManager, budget_s: float,
            should_stop: Callable[[], bool] | None = None) -> Counts:
        """Claim and poll due instances for up to ``budget_s``, under the fenced dispatcher lease.

        Returns ``{"skipped": DISPATCH_BUSY}`` when another dispatcher holds it. The loop refreshes the
        snapshot when it is due, polls every due batch, then sleeps until the next due time, the next
        snapshot refresh or a "poll now" wake-up, whichever comes first (at most :data:`MAX_WAIT_S`, so
        the lease is renewed often). ``should_stop`` (the worker's warm shutdown) is asked at every turn: a
        stopped run ends there with ``"stopped": True`` and releases the lease for its continuation.
        """
        lease = leases.acquire(DISPATCH_LEASE, new_owner(DISPATCH_LEASE), DISPATCH_LEASE_TTL_MS)
        if lease is None:
            return {"skipped": DISPATCH_BUSY}
        if DISPATCH_LEASE not in self.announced:  # the guide's line, once per process (a run lasts 50 s)
            self.announced.add(DISPATCH_LEASE)
            log.info("[Polling] Starting adaptive polling loop (dispatcher fence %d)", lease.fence)
        counts = {"polled": 0, "changed": 0, "batches": 0, "refreshes": 0, "stale": 0}
        ended: dict[str, bool] = {}
        deadline = self.clock.monotonic() + budget_s
        beat_at = -float("inf")
        try:
            while self.clock.monotonic() < deadline:
                if should_stop is not None and should_stop():
                    ended["stopped"] = True
                    break
                if not leases.renew(lease):
                    ended["lost"] = True
                    break
                if self.clock.monotonic() - beat_at >= DISPATCH_HEARTBEAT_EVERY_S:
                    beat_at = self.clock.monotonic()
                    _beat(self.redis, self.keys, self.clock, DISPATCH_LEASE, kind="poll-dispatcher",
                          fence=lease.fence, ttl_ms=DISPATCH_HEARTBEAT_TTL_MS)
                refreshed = self.refresh()
                counts["refreshes"] += int(bool(refreshed.get("refreshed") or refreshed.get("queued")))
                claimed = self.schedule.claim_due(BATCH)
                if claimed:
                    result = self.poll_batch(claimed, lease=lease)
                    counts["batches"] += 1
                    for k in ("polled", "changed", "stale"):
                        counts[k] += result[k]
                    continue
                now = self.clock.now()
                next_due = self.schedule.next_due()
                refresh_at = self.snapshot.next_refresh_at()
                if refresh_at <= now:  # being refreshed by the refresh task: look again shortly
                    refresh_at = now + REFRESH_RECHECK_S
                wake_at = min(x for x in (next_due, refresh_at, now + MAX_WAIT_S) if x is not None)
                remaining = deadline - self.clock.monotonic()
                self.schedule.wait(min(max(0.0, wake_at - now), remaining, MAX_WAIT_S))
        except LeaseLost:  # StaleFence: a newer dispatcher owns the records now
            ended["lost"] = True
        finally:
            leases.release(lease)
        return {**counts, **ended, **lateness_summary(list(self.lateness_s))}

    def refresh(self, *, force: bool = False, inline: bool | None = None) -> Counts:
        """Refresh the snapshot if due (single-flight); a Redis-level error propagates, a provider one not.

        With a ``send`` callable (the dispatcher in a worker) the refresh runs as its own task
        (:data:`REFRESH_TASK`, queued at most once per :data:`REFRESH_QUEUED_TTL_MS`) in another worker
        process, so parsing a 10,000-row listing never delays the polls; ``inline=True`` (the refresh task
        itself, tests) runs it here.
        """
        send = self.send
        run_here = inline if inline is not None else send is None
        if run_here or send is None:
            result = self.snapshot.refresh(self.vast, self.store, self.schedule, force=force).to_dict()
            if self.send is not None or inline:
                self.marks.drop_refresh_queued()
            return result
        if not force and not self.snapshot.is_stale():
            return {"skipped": "fresh"}
        if self.marks.refresh_queued_once(REFRESH_QUEUED_TTL_MS):
            try:
                send(REFRESH_TASK, {})
            except Exception as exc:  # noqa: BLE001 - the next loop queues it again
                self.marks.drop_refresh_queued()
                log.warning("⚠️  could not queue %s: %s", REFRESH_TASK, type(exc).__name__)
            return {"queued": True}
        return {"skipped": "queued"}

    # ── operators ────────────────────────────────────────────────────────────
    def request_poll(self, instance_id: str) -> bool:
        """Poll now (a lease taken, a keepalive failure, an operator): False when there is no record."""
        if self.store.get_instance(instance_id) is None:
            return False
        self.schedule.poll_now(str(instance_id))
        return True


#: A status change into one of these is logged as a warning.
_WARN_STATUSES = DEAD_STATUSES | {InstanceStatus.UNHEALTHY}

#: what this process has announced with the guide's start line (the dispatcher, once)


#: the provider's word applied to a record (pure; :func:`vastkeep.polling.decide.apply_provider_word`)
_change = apply_provider_word


def is_active(record: InstanceRecord, now: float) -> bool:
    return record.status in ACTIVE_STATUSES or is_leased(record, now)


__all__ = ["BATCH", "DISPATCH_BUSY", "DISPATCH_LEASE", "LATENESS_BOUNDS_S", "PollPolicy", "Poller",
           "is_active", "lateness_buckets", "lateness_summary"]
