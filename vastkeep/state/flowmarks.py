"""Small pieces of state the polling and keepalive flows keep beside the records.

The flows never send Redis commands themselves: the poller's once-only markers and counters, the adopted
and forgotten sets, a shard's records read in one MGET (decoding only those whose stored text changed) and
the keepalive counters live here, next to the layout they touch.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping

from vastkeep.core.errors import PermanentError
from vastkeep.state.connection import RedisClient, as_text
from vastkeep.state.keys import KEEPALIVE_STATUS_TTL_MS, Keys
from vastkeep.state.records import InstanceRecord, _decode


class PollMarks:
    """The poller's once-only markers (a ``SET NX PX`` each, dropped again when the send failed) and its
    per-batch counters."""

    def __init__(self, redis_client: RedisClient, keys: Keys) -> None:
        self.redis = redis_client
        self.keys = keys

    def _once(self, key: str, ttl_ms: int) -> bool:
        return bool(self.redis.set(key, "1", nx=True, px=max(1, int(ttl_ms))))

    def validate_once(self, instance_id: str, ttl_ms: int) -> bool:
        """True when port validation was not queued for this instance within ``ttl_ms`` (now it is)."""
        return self._once(self.keys.poll_l3(instance_id), ttl_ms)

    def drop_validate(self, instance_id: str) -> None:
        self.redis.delete(self.keys.poll_l3(instance_id))

    def wake_once(self, due_s: int, ttl_ms: int) -> bool:
        """True when nobody has woken the pool's reconciler for this due second yet (now it is)."""
        return self._once(self.keys.pool_wake(due_s), ttl_ms)

    def drop_wake(self, due_s: int) -> None:
        self.redis.delete(self.keys.pool_wake(due_s))

    def refresh_queued_once(self, ttl_ms: int) -> bool:
        """True when no snapshot refresh is queued (now one is)."""
        return self._once(self.keys.poll_refresh_queued(), ttl_ms)

    def drop_refresh_queued(self) -> None:
        self.redis.delete(self.keys.poll_refresh_queued())

    def record_batch(self, *, active: Iterable[str], idle: Iterable[str], polled: Iterable[str],
                     lateness: Mapping[str, int], stale: int) -> None:
        """One batch's bookkeeping in one round trip: the active set, the poll counters, the lateness
        histogram and the finishes that lost their claim."""
        active, idle, polled = list(active), list(idle), list(polled)
        with self.redis.pipeline(transaction=False) as pipe:
            if active:
                pipe.sadd(self.keys.poll_active(), *active)
            if idle:
                pipe.srem(self.keys.poll_active(), *idle)
            pipe.hincrby(self.keys.poll_stats(), "polls", len(polled))
            for bucket, n in lateness.items():
                pipe.hincrby(self.keys.poll_stats(), bucket, n)
            for iid in polled:
                pipe.hincrby(self.keys.poll_counts(), iid, 1)
            if stale:
                pipe.hincrby(self.keys.poll_stats(), "stale_finishes", stale)
            pipe.execute()

    def adopt(self, instance_id: str) -> None:
        """Discovery takes this instance in from now on (and no longer leaves it alone)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(self.keys.adopted(), instance_id)
            pipe.srem(self.keys.forgotten(), instance_id)
            pipe.execute()

    def forget(self, instance_id: str) -> None:
        """Discovery leaves this instance alone from now on."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(self.keys.forgotten(), instance_id)
            pipe.srem(self.keys.adopted(), instance_id)
            pipe.execute()


class RecordCache:
    """Reads many records in one MGET and decodes only those whose stored text changed since the last read
    (a runner re-reading its shard every few seconds would otherwise decode the whole pool each time).

    The records it answers are shared between reads: treat them as read-only.
    """

    def __init__(self, redis_client: RedisClient, keys: Keys) -> None:
        self.redis = redis_client
        self.keys = keys
        self._seen: dict[str, tuple[str, InstanceRecord]] = {}

    def read(self, instance_ids: list[str]) -> dict[str, InstanceRecord]:
        """id → record for the ids that have a readable record (missing and unreadable ones left out)."""
        raws = self.redis.mget([self.keys.instance(i) for i in instance_ids]) if instance_ids else []
        seen: dict[str, tuple[str, InstanceRecord]] = {}
        for iid, value in zip(instance_ids, raws, strict=True):
            if value is None:
                continue
            raw = as_text(value)
            hit = self._seen.get(iid)
            if hit is None or hit[0] != raw:
                try:
                    hit = (raw, _decode(iid, raw))
                except PermanentError:
                    continue  # unreadable: the store logs it where it is read for status
            seen[iid] = hit
        self._seen = seen
        return {iid: rec for iid, (_, rec) in seen.items()}


class KeepaliveDocs:
    """Each instance's keepalive counters (``keepalive:<id>``, JSON with a TTL): read for many in one MGET,
    written for many in one pipeline. The keepalive layer owns what the documents mean."""

    def __init__(self, redis_client: RedisClient, keys: Keys) -> None:
        self.redis = redis_client
        self.keys = keys

    def read(self, instance_ids: list[str]) -> dict[str, object]:
        """id → the stored JSON document; ids without one (or with an unreadable one) are left out."""
        if not instance_ids:
            return {}
        out: dict[str, object] = {}
        for iid, value in zip(instance_ids, self.redis.mget([self.keys.keepalive(i) for i in instance_ids]),
                              strict=True):
            if value is not None:
                with contextlib.suppress(ValueError, TypeError):
                    out[iid] = json.loads(as_text(value))
        return out

    def write(self, docs: Mapping[str, Mapping[str, object]], ttl_ms: int = KEEPALIVE_STATUS_TTL_MS) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for iid, doc in docs.items():
            pipe.set(self.keys.keepalive(iid), json.dumps(doc), px=ttl_ms)
        pipe.execute()


__all__ = ["KeepaliveDocs", "PollMarks", "RecordCache", "RedisClient"]
