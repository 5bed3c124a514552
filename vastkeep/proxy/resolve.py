"""Where a request goes: an endpoint token → its lease's instance, or ``/pool`` → the ready instances.

Read from Redis (asyncio client), never written except to move a token's expiry to its lease's end
(a renewal made anywhere is then honoured). A resolution is cached for at most ``cache_s`` and never past
the lease's end; a release also publishes the token's digest (``Keys.endpoint_dropped``), which evicts it at
once (:meth:`Resolver.watch_drops`; while that subscription is down the whole cache is dropped instead).
The SSRF guard judges every upstream address before it is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.ports import unsafe_reason
from vastkeep.proxy import endpoints
from vastkeep.proxy.decide import Candidate, split_base
from vastkeep.proxy.failplan import verdict
from vastkeep.state import InstanceStatus, Keys, as_text

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("vastkeep.proxy")


@dataclass(frozen=True)
class Target:
    """One upstream: the instance and its ComfyUI base URL (``http://host:port``), already judged safe."""

    instance_id: str
    url: str
    until_s: float | None = None
    fence: int | None = None  # the grant's fence (what a failover's move compares)
    lost: str | None = None  # why the instance is gone (``failplan.Why``), read from its record
    resubmit: bool = False  # the lease's setting: prompts in flight are re-submitted after a failover


def safe_base(url: object, *, simulated: bool) -> str | None:
    """``url`` as ``scheme://host:port`` when the SSRF guard lets it be contacted, else None."""
    if not isinstance(url, str):
        return None
    parts = split_base(url)
    if parts is None:
        return None
    scheme, host, port = parts
    if unsafe_reason(host, simulated=simulated) is not None:
        return None
    return f"{scheme}://{host}:{port}"


class Resolver:
    """Token → target and pool → candidates over one asyncio Redis client."""

    def __init__(self, redis_client: Redis[bytes], keys: Keys, pool: str, label_prefix: str, *,
                 simulated: bool, clock: Clock = SYSTEM_CLOCK, cache_s: float = 1.0) -> None:
        self.redis, self.keys, self.pool, self.clock = redis_client, keys, pool, clock
        self.label_head = f"{label_prefix}:{pool}:"
        self.simulated, self.cache_s = simulated, cache_s
        self._tokens: dict[str, tuple[float, Target | None]] = {}
        self._pool: tuple[float, list[Candidate]] | None = None
        self.refused_unsafe = 0

    def forget(self, token: str) -> None:
        self._tokens.pop(endpoints.digest(token), None)

    async def watch_drops(self, subscriber: Redis[bytes], stop: asyncio.Event, *,
                          max_backoff_s: float = 5.0) -> None:
        """Evict each token a release drops, until ``stop``; reconnects with full jitter after an error."""
        attempt = 0
        while not stop.is_set():
            pubsub = subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.keys.endpoint_dropped())
                self._tokens.clear()  # drops missed while unsubscribed
                attempt = 0
                while not stop.is_set():
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg and msg.get("type") == "message":
                        self._tokens.pop(as_text(msg["data"]), None)
            except Exception as exc:  # noqa: BLE001 - any Redis error: the next subscription starts clean
                self._tokens.clear()
                attempt += 1
                log.warning("endpoint drop subscription lost (%s); cache cleared, resubscribing",
                            type(exc).__name__)
                pause_s = random.uniform(0, min(max_backoff_s, 0.1 * 2**attempt))  # full jitter
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause_s)
            finally:
                with contextlib.suppress(Exception):  # closing a broken connection
                    await pubsub.aclose()  # type: ignore[attr-defined]  # types-redis predates aclose

    async def token(self, token: str) -> Target | None:
        """The lease's instance, or None: unknown token, lease ended or expired, fence moved, no safe URL."""
        if not endpoints.is_token(token):
            return None
        d = endpoints.digest(token)
        now, mono = self.clock.now(), self.clock.monotonic()
        hit = self._tokens.get(d)
        if hit is not None and hit[0] > mono and (hit[1] is None or (hit[1].until_s or 0) > now):
            return hit[1]
        target = await self._lookup(d, now)
        if len(self._tokens) > 10_000:
            self._tokens.clear()
        self._tokens[d] = (mono + self.cache_s, target)
        return target

    async def _lookup(self, d: str, now: float) -> Target | None:
        grant = endpoints.parse_grant(await self.redis.get(self.keys.endpoint(d)))
        if grant is None or grant.pool != self.pool:
            return None
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.keys.pool_leases(grant.pool), grant.instance_id)
        pipe.get(self.keys.instance(grant.instance_id))
        entry_raw, record_raw = await pipe.execute()
        until = endpoints.lease_matches(entry_raw, grant, now)
        if until is None:
            return None
        at = int(until * 1000)  # the lease may have been renewed: its token lives as long
        pipe = self.redis.pipeline(transaction=False)
        pipe.pexpireat(self.keys.endpoint(d), at)
        pipe.pexpireat(self.keys.endpoint_grant(grant.pool, grant.instance_id, grant.fence), at)
        await pipe.execute()
        record = _record(record_raw)
        url = record.get("connection_url")
        base = safe_base(url, simulated=self.simulated)
        why = verdict(record if record_raw is not None else None, False)
        if base is None and why is not None and grant.instance_id:
            return Target(grant.instance_id, "", until, grant.fence, str(why), grant.resubmit)
        if base is None:
            if url:
                self.refused_unsafe += 1
                log.warning("endpoint of instance %s: upstream address refused (SSRF guard or not http)",
                            grant.instance_id)
            return None
        return Target(grant.instance_id, base, until, grant.fence, str(why) if why else None, grant.resubmit)

    async def pool_candidates(self) -> list[Candidate]:
        """Ready instances of the pool, unleased, ComfyUI answering (cached ``cache_s``)."""
        mono = self.clock.monotonic()
        if self._pool is not None and self._pool[0] > mono:
            return self._pool[1]
        ids = sorted(as_text(i) for i in await self.redis.smembers(self.keys.instances()))
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.pool_leases(self.pool))
        for iid in ids:
            pipe.get(self.keys.instance(iid))
        leases_raw, *records = await pipe.execute()
        now = self.clock.now()
        leased = {as_text(k) for k, v in (leases_raw or {}).items() if _live(v, now)}
        out = []
        for iid, raw in zip(ids, records, strict=False):
            rec = _record(raw)
            extra = rec.get("extra")
            lost = isinstance(extra, dict) and extra.get("keepalive_lost_since")
            if (rec.get("status") != InstanceStatus.READY or iid in leased or lost
                    or not str(rec.get("label") or "").startswith(self.label_head)):
                continue
            base = safe_base(rec.get("connection_url"), simulated=self.simulated)
            if base is not None:
                out.append(Candidate(iid, base))
        self._pool = (mono + self.cache_s, out)
        return out


def _record(raw: object) -> dict[str, object]:
    if not isinstance(raw, str | bytes):
        return {}
    try:
        data: object = json.loads(as_text(raw)) if raw is not None else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _live(raw: object, now: float) -> bool:
    if not isinstance(raw, str | bytes):
        return False
    try:
        entry: object = json.loads(as_text(raw))
    except (TypeError, ValueError):
        return False
    if not isinstance(entry, dict) or entry.get("state") != "active":
        return False
    until = entry.get("until") or 0
    return isinstance(until, int | float | str) and _float(until) > now


def _float(value: float | str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


__all__ = ["Resolver", "Target", "safe_base"]
