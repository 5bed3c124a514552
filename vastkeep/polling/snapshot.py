"""Layer 5's one view of the provider: a listing kept in Redis, refreshed by one worker at a time.

Polls never call the provider per instance: they read this snapshot. One ``instances()`` call refreshes it
(single-flight under the ``provider-snapshot`` lease), at most every :data:`ACTIVE_MAX_AGE_S` while
something is starting, loading or leased and every :data:`IDLE_MAX_AGE_S` otherwise, so the number of
Vast.ai calls per minute does not grow with the pool. Only a well-formed listing (``{"instances": [...]}``)
is written and counts absences: an empty body or ``{"instances": null}`` is an error (the client raises),
so it neither empties the snapshot nor makes anything look missing. ``show`` is asked only to tell "gone"
from listing lag (:func:`~vastkeep.polling.decide.absence_verdict`, :mod:`vastkeep.polling.absence`).

A refresh also *discovers*: a listed instance whose label is ``<prefix>:...`` (or that an operator
adopted), that has no record and that was not forgotten, gets one, so the pool is found again after
Redis lost everything. Rows whose status or address changed since the last listing are made due now
(the change matters: offline, exited, outbid... are noticed within one refresh, not one idle interval).

Rows are stored as normalised instances (:meth:`vastkeep.providers.Instance.to_json`); a row stored by a
version before the provider seam (the provider's own trimmed row) is still read
(:func:`vastkeep.providers.instance_from_stored`), and the first refresh after the upgrade rewrites it (every
instance then looks changed once and is polled at once: harmless).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.errors import VastkeepError
from vastkeep.polling.absence import ShowAnswers
from vastkeep.polling.decide import ABSENT_BEFORE_SHOW, ABSENT_CONFIRM_LISTINGS, is_ours, refresh_retry_s
from vastkeep.polling.schedule import PollSchedule
from vastkeep.providers import Instance, Provider, instance_from_stored, record_from_instance
from vastkeep.state import (
    InstanceRecord,
    InstanceStatus,
    Keys,
    Lease,
    LeaseManager,
    StateStore,
    as_text,
    thread_owner,
)
from vastkeep.state.flowmarks import RedisClient

log = logging.getLogger("vastkeep.polling")

SNAPSHOT_LEASE = "provider-snapshot"
SNAPSHOT_LEASE_TTL_MS = 120_000
ACTIVE_MAX_AGE_S = 5.0
IDLE_MAX_AGE_S = 30.0
_CHUNK = 1000


def trim(row: Instance) -> str:
    """The stored JSON of one row: the normalised instance without its raw record, keys sorted (equal
    rows → equal text, so a changed text is a changed row)."""
    return row.to_json()


@dataclass
class RefreshResult:
    """What one refresh did (small JSON via :meth:`to_dict`)."""

    refreshed: bool = False
    listed: int = 0
    changed: list[str] = field(default_factory=list)
    discovered: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"refreshed": self.refreshed, "listed": self.listed, "changed": len(self.changed),
                "discovered": len(self.discovered), "absent": len(self.absent), "error": self.error,
                "skipped": self.skipped}


class ProviderSnapshot:
    """Read and refresh the shared provider listing."""

    def __init__(self, redis_client: RedisClient, keys: Keys | None = None, clock: Clock = SYSTEM_CLOCK, *,
                 label_prefix: str = "vastkeep", active_max_age_s: float = ACTIVE_MAX_AGE_S,
                 idle_max_age_s: float = IDLE_MAX_AGE_S, rng: random.Random | None = None) -> None:
        self.redis = redis_client
        self.keys = keys or Keys()
        self.clock = clock
        self.label_prefix = label_prefix
        self.active_max_age_s = active_max_age_s
        self.idle_max_age_s = idle_max_age_s
        self.rng = rng if rng is not None else random.Random()
        self.leases = LeaseManager(redis_client, self.keys, clock)

    # ── reading ──────────────────────────────────────────────────────────────
    def fetched_at(self) -> float | None:
        value = self.redis.hget(self.keys.provider_snapshot_meta(), "fetched_at")
        return float(as_text(value)) if value is not None else None

    def meta(self) -> dict[str, str]:
        raw = self.redis.hgetall(self.keys.provider_snapshot_meta())
        return {as_text(k): as_text(v) for k, v in raw.items()}

    def rows(self, instance_ids: list[str]) -> dict[str, Instance]:
        """id → the provider's row in the last listing (ids it did not list are left out)."""
        if not instance_ids:
            return {}
        raws = self.redis.hmget(self.keys.provider_snapshot(), [str(i) for i in instance_ids])
        out = {}
        for iid, raw in zip(instance_ids, raws, strict=True):
            if raw is not None:
                try:
                    out[str(iid)] = instance_from_stored(json.loads(as_text(raw)))
                except (ValueError, VastkeepError):
                    log.warning("⚠️  Unreadable snapshot row for instance %s skipped", iid)
        return out

    def row(self, instance_id: str) -> Instance | None:
        return self.rows([str(instance_id)]).get(str(instance_id))

    def absent_counts(self, instance_ids: list[str]) -> dict[str, int]:
        """id → consecutive listings the instance was missing from (0 when listed)."""
        if not instance_ids:
            return {}
        values = self.redis.hmget(self.keys.provider_absent(), [str(i) for i in instance_ids])
        return {str(i): int(as_text(v)) for i, v in zip(instance_ids, values, strict=True) if v is not None}

    def max_age_s(self) -> float:
        """How old the snapshot may get: short while anything is active, longer when all is idle."""
        active = int(self.redis.scard(self.keys.poll_active())) > 0
        return self.active_max_age_s if active else self.idle_max_age_s

    def next_refresh_at(self) -> float:
        """The last good listing + the snapshot's age, or later after failed listings (``retry_at``)."""
        fetched, retry_at = self.redis.hmget(self.keys.provider_snapshot_meta(), ["fetched_at", "retry_at"])
        due = (float(as_text(fetched)) if fetched is not None else 0.0) + self.max_age_s()
        return max(due, float(as_text(retry_at))) if retry_at is not None else due

    def is_stale(self) -> bool:
        return self.clock.now() >= self.next_refresh_at()

    # ── refreshing ───────────────────────────────────────────────────────────
    def refresh(self, vast: Provider | None, store: StateStore, schedule: PollSchedule, *,
                force: bool = False) -> RefreshResult:
        """One listing, single-flight: skipped when fresh (unless ``force``) or another refresh runs."""
        if vast is None:
            return RefreshResult(skipped="no Vast.ai client (VAST_API_KEY unset)")
        if not force and not self.is_stale():
            return RefreshResult(skipped="fresh")
        lease = self.leases.acquire(SNAPSHOT_LEASE, thread_owner(SNAPSHOT_LEASE), SNAPSHOT_LEASE_TTL_MS)
        if lease is None:
            return RefreshResult(skipped="another refresh is running")
        try:
            if not force and not self.is_stale():  # refreshed while we waited for the lease
                return RefreshResult(skipped="fresh")
            return self._refresh(vast, store, schedule, lease)
        finally:
            self.leases.release(lease)

    def _refresh(self, vast: Provider, store: StateStore, schedule: PollSchedule,
                 lease: Lease) -> RefreshResult:
        started = self.clock.now()
        self.redis.hincrby(self.keys.poll_stats(), "vast_list_calls", 1)
        try:
            listed = vast.instances()
        except VastkeepError as exc:
            meta = self.keys.provider_snapshot_meta()
            failures = int(self.redis.hincrby(meta, "failures", 1))
            now = self.clock.now()
            retry_at = now + refresh_retry_s(failures, self.max_age_s(), self.rng)
            self.redis.hset(meta, mapping={"error": f"{type(exc).__name__}: {exc.message}"[:300],
                                           "error_at": repr(now), "retry_at": repr(retry_at)})
            log.warning("⚠️  Provider snapshot refresh failed (%s, %d in a row); polls keep the last listing, "
                        "next listing in %.1f s", type(exc).__name__, failures, retry_at - now)
            return RefreshResult(error=type(exc).__name__)
        new = {str(r.id): trim(r) for r in listed}
        old = {as_text(k): as_text(v) for k, v in self.redis.hgetall(self.keys.provider_snapshot()).items()}
        changed = [i for i, text in new.items() if old.get(i) != text]
        if not self.leases.is_held(lease):  # a refresh that outlived its lease must not write an old listing
            return RefreshResult(skipped="snapshot lease lost")
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.provider_snapshot())
            items = list(new.items())
            for start in range(0, len(items), _CHUNK):
                pipe.hset(self.keys.provider_snapshot(), mapping=dict(items[start:start + _CHUNK]))
            pipe.hset(self.keys.provider_snapshot_meta(),
                      mapping={"fetched_at": repr(started), "count": len(new), "error": ""})
            pipe.hdel(self.keys.provider_snapshot_meta(), "failures", "retry_at")
            pipe.execute()
        records = store.instance_ids()
        absent = self._count_absent(records, new)
        rows = {str(r.id): r for r in listed}
        discovered = self._discover(store, rows, records)
        ours = records | set(discovered)
        schedule.ensure(ours)  # every record has a due time (after a flush, a crash, a record made elsewhere)
        urgent = [i for i in changed if i in ours] + [i for i in absent if i in ours]
        for iid in urgent:
            schedule.poll_now(iid)
        return RefreshResult(refreshed=True, listed=len(new), changed=changed, discovered=discovered,
                             absent=absent)

    def _count_absent(self, records: set[str], listed: dict[str, str]) -> list[str]:
        """Count one more missing listing for each record not listed; return those that reached the bar."""
        missing = sorted(records - set(listed))
        key = self.keys.provider_absent()
        with self.redis.pipeline(transaction=False) as pipe:
            for iid in missing:
                pipe.hincrby(key, iid, 1)
            counts = pipe.execute() if missing else []
        back = [as_text(i) for i in self.redis.hkeys(key)]
        back = [i for i in back if i in listed or i not in records]
        if back:
            self.redis.hdel(key, *back)
            ShowAnswers(self.redis, self.keys).drop(back)  # listed again: what show said is moot
        due = (ABSENT_BEFORE_SHOW, ABSENT_CONFIRM_LISTINGS)
        return [iid for iid, n in zip(missing, counts, strict=True) if int(n) in due]

    def _discover(self, store: StateStore, rows: dict[str, Instance], records: set[str]) -> list[str]:
        """Create a record for every listed instance of ours that has none."""
        candidates = [i for i in rows if i not in records]
        if not candidates:
            return []
        adopted = {as_text(x) for x in self.redis.smembers(self.keys.adopted())}
        forgotten = {as_text(x) for x in self.redis.smembers(self.keys.forgotten())}
        found = []
        for iid in candidates:
            row = rows[iid]
            if iid in forgotten or not (is_ours(row.label, self.label_prefix) or iid in adopted):
                continue
            if store.create_instance(record_from_row(row)):
                found.append(iid)
                log.info("Discovered instance %s (label %r) at the provider", iid, row.label,
                         extra={"instance_id": iid})
        return found


def record_from_row(row: Instance, status: InstanceStatus = InstanceStatus.STARTING) -> InstanceRecord:
    """A new record for a listed instance (status from the first poll): :func:`record_from_instance`."""
    return record_from_instance(row, status)


__all__ = ["ABSENT_BEFORE_SHOW", "ABSENT_CONFIRM_LISTINGS", "ACTIVE_MAX_AGE_S", "IDLE_MAX_AGE_S",
           "ProviderSnapshot", "RefreshResult",
           "SNAPSHOT_LEASE", "record_from_row", "trim"]
