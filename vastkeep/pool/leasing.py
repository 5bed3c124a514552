"""Client leases: a client service takes a ready instance for a while, renews, and gives it back.

Grant, renew, release and the reconciler's destroy claim are Lua scripts (``lease_*.lua``) over the pool's own
keys, so across any number of API processes and workers no instance is ever leased twice, a leased instance
is never taken as excess, and every grant carries a fence from one per-pool counter (strictly increasing).
The lease entry is the truth; the record's ``leased_until`` / ``lease_owner`` mirror it (status, polling).

An ended lease (released, or expired) returns its instance to the pool only after a port validation that
passed *after* the lease ended: Layer 3 (the pool sweep) is the health check, so the next holder never gets
an instance the previous one left broken.

The lease id is the holder's capability to renew or release: it is returned once to the client and never
written to events or logs.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from vastkeep.core.clock import SYSTEM_CLOCK, Clock, iso
from vastkeep.core.errors import InvalidInput, LeaseBroken, LeaseBusy, NotFound, PermanentError
from vastkeep.state import EventSink, Keys, as_text

log = logging.getLogger("vastkeep.pool")

_HERE = Path(__file__).parent
MAX_LEASE_S = 86_400
_CLIENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")
_LEASE_ID_RE = re.compile(r"^lse_[A-Za-z0-9_-]{16,64}$")
#: When nothing is ready and nothing is leased: about one port sweep / poll away.
DEFAULT_RETRY_S = 30


@dataclass(frozen=True)
class ClientLease:
    """One grant (what the API answers with 201)."""

    lease_id: str
    instance_id: str
    connection_url: str | None
    leased_until: float
    fence: int
    client: str

    def to_dict(self) -> dict[str, Any]:
        return {"leaseId": self.lease_id, "instanceId": self.instance_id,
                "connectionUrl": self.connection_url, "leasedUntil": iso(self.leased_until),
                "fence": self.fence, "client": self.client}


def new_lease_id() -> str:
    """A fresh lease id: 144 random bits, the holder's capability to renew and release."""
    return "lse_" + secrets.token_urlsafe(18)


def parse_duration(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LEASE_S:
        raise InvalidInput(f"durationS must be a whole number of seconds from 1 to {MAX_LEASE_S}",
                           field="durationS")
    return value


def parse_client(value: Any) -> str:
    if not isinstance(value, str) or not _CLIENT_RE.fullmatch(value):
        raise InvalidInput("client must be 1-64 letters, digits or _ . @ : - (a service name)",
                           field="client")
    return value


def check_lease_id(value: Any) -> str:
    if not isinstance(value, str) or not _LEASE_ID_RE.match(value):
        raise NotFound("no such lease", field="leaseId")
    return value


class PoolLeases:
    """Client leases of one pool."""

    def __init__(self, redis_client: redis.Redis, keys: Keys, pool: str, prefix: str,
                 clock: Clock = SYSTEM_CLOCK, store: Any = None, events: EventSink | None = None,
                 retry_s: int = DEFAULT_RETRY_S) -> None:
        self.redis, self.keys, self.pool, self.prefix = redis_client, keys, pool, prefix
        self.clock, self.store, self.events, self.retry_s = clock, store, events, retry_s
        load = lambda name: redis_client.register_script(  # noqa: E731
            (_HERE / f"lease_{name}.lua").read_text(encoding="utf-8"))
        self._grant, self._renew, self._release, self._claim = (load(n) for n in
                                                               ("grant", "renew", "release", "claim"))

    # ── client operations ───────────────────────────────────────────────────
    def grant(self, duration_s: Any, client: Any) -> ClientLease:
        """Lease a ready idle instance, or ``LeaseBusy`` (all leased / none ready) with ``retry_after_s``."""
        duration = parse_duration(duration_s)
        name = parse_client(client)
        now = self.clock.now()
        until = now + duration
        lease_id = new_lease_id()
        instance_prefix = self.keys.instance("x")[:-1]
        k, pool = self.keys, self.pool
        reply = self._grant(keys=[k.instances(), k.pool_leases(pool), k.pool_lease_index(pool),
                                  k.pool_lease_fence(pool), k.pool_claims(pool)],
                            args=[instance_prefix, f"{self.prefix}:{self.pool}:", repr(now), repr(until),
                                  iso(until), lease_id, name, iso(now)])
        if int(reply[0]) == 1:
            grant = ClientLease(lease_id=lease_id, instance_id=as_text(reply[1]), fence=int(reply[2]),
                                connection_url=as_text(reply[3]) or None, leased_until=until, client=name)
            self._mirror(grant.instance_id, until, name)
            log.info("client lease granted: instance %s to %s until %s (fence %d)", grant.instance_id, name,
                     iso(until), grant.fence)
            if self.events is not None:
                self.events.emit("pool-lease-granted", instance_id=grant.instance_id, client=name,
                                 fence=grant.fence, leased_until=iso(until))
            return grant
        ready, leased, unchecked = int(reply[1]), int(reply[2]), int(reply[4])
        soonest = float(as_text(reply[3]))
        if leased and leased == ready and not unchecked:
            retry = min(max(1, int(soonest - now + 0.999)), self.retry_s)
            raise LeaseBusy(f"all {leased} ready instance(s) are leased", retry_after_s=retry,
                            delay_s=float(retry), reason="all-leased")
        unreachable = int(reply[5]) if len(reply) > 5 else 0
        why = ("instances are being health-checked after a lease" if unchecked else
               f"ComfyUI does not answer on {unreachable} ready instance(s) (keepalive lost; being replaced)"
               if unreachable else "no instance is ready yet")
        raise LeaseBusy(why, retry_after_s=self.retry_s, delay_s=float(self.retry_s), reason="none-ready")

    def renew(self, lease_id: Any, duration_s: Any, *, rotate: bool = False) -> dict[str, Any]:
        """Extend a live lease to now + ``duration_s``; ``NotFound`` when unknown or expired.

        ``rotate``: the id was exposed (sent where events show it): the same step replaces it with a new id,
        returned as ``leaseId``; the exposed one is dead from then on.
        """
        lid = check_lease_id(lease_id)
        duration = parse_duration(duration_s)
        now = self.clock.now()
        until = now + duration
        new_id = new_lease_id() if rotate else ""
        k, pool = self.keys, self.pool
        reply = self._renew(keys=[k.pool_leases(pool), k.pool_lease_index(pool), k.pool_claims(pool)],
                            args=[lid, repr(now), repr(until), iso(until), new_id])
        status = int(reply[0])
        if status == 0:
            raise NotFound("no such lease (unknown, released or expired)", field="leaseId")
        instance_id = as_text(reply[1])
        if status == -1:
            raise LeaseBroken(f"instance {instance_id} is being destroyed; take a new lease",
                              instance_id=instance_id)
        self._mirror(instance_id, until, None)
        out = {"instanceId": instance_id, "leasedUntil": iso(until), "fence": int(reply[2])}
        return {**out, "leaseId": new_id, "rotated": True} if new_id else out

    def release(self, lease_id: Any) -> dict[str, Any]:
        """End a live lease now; ``NotFound`` when unknown, released already or expired."""
        lid = check_lease_id(lease_id)
        now = self.clock.now()
        reply = self._release(keys=[self.keys.pool_leases(self.pool), self.keys.pool_lease_index(self.pool)],
                              args=[lid, repr(now), iso(now)])
        if int(reply[0]) != 1:
            raise NotFound("no such lease (unknown, released or expired)", field="leaseId")
        instance_id, fence, client = as_text(reply[1]), int(reply[2]), as_text(reply[3])
        self._mirror(instance_id, None, None)
        if self.events is not None:
            self.events.emit("pool-lease-ended", instance_id=instance_id, client=client, fence=fence,
                             reason="released")
        return {"instanceId": instance_id, "released": True, "fence": fence}

    # ── the reconciler's side ───────────────────────────────────────────────
    def active(self, now: float) -> dict[str, dict[str, Any]]:
        """Instance id → live lease entry (the truth the plan reads, over the records' mirror)."""
        out = {}
        for iid, raw in self.redis.hgetall(self.keys.pool_leases(self.pool)).items():
            try:
                entry = json.loads(as_text(raw))
            except ValueError:
                continue
            if entry.get("state") == "active" and float(entry.get("until") or 0) > now:
                out[as_text(iid)] = entry
        return out

    def claim(self, instance_id: str, reason: str, *, force: bool) -> bool:
        """Claim for destruction: refused (False) while leased unless ``force`` (the instance died)."""
        return int(self._claim(keys=[self.keys.pool_leases(self.pool), self.keys.pool_claims(self.pool)],
                               args=[instance_id, repr(self.clock.now()), reason,
                                     "force" if force else ""])) == 1

    def forget(self, instance_id: str) -> None:
        """The instance is destroyed: drop its claim and lease entry (and the index of a live lease)."""
        raw = self.redis.hget(self.keys.pool_leases(self.pool), instance_id)
        pipe = self.redis.pipeline(transaction=True)
        if raw is not None:
            try:
                lid = json.loads(as_text(raw)).get("lease_id")
            except ValueError:
                lid = None
            if lid:
                pipe.hdel(self.keys.pool_lease_index(self.pool), lid)
        pipe.hdel(self.keys.pool_leases(self.pool), instance_id)
        pipe.hdel(self.keys.pool_claims(self.pool), instance_id)
        pipe.execute()

    def _mirror(self, instance_id: str, until: float | None, client: str | None) -> None:
        """Copy the lease into the record (status and polling read it there); best effort."""
        if self.store is None:
            return
        changes: dict[str, Any] = {"leased_until": until}
        if client is not None or until is None:
            changes["lease_owner"] = client
        try:
            self.store.update_instance(instance_id, changes)
        except (NotFound, PermanentError) as exc:
            log.warning("lease mirror on instance %s not written: %s", instance_id, exc.message[:120])


__all__ = ["MAX_LEASE_S", "ClientLease", "PoolLeases", "new_lease_id", "parse_client", "parse_duration"]
