"""Client leases: a client service takes a ready instance for a while, renews, and gives it back.

Grant, renew, release and the reconciler's destroy claim are Lua scripts (``lease_*.lua``) over the pool's own
keys, so across any number of API processes and workers no instance is ever leased twice, a leased instance
is never taken as excess, and every grant carries a fence from one per-pool counter (strictly increasing).
The lease entry is the truth; the record's ``leased_until`` / ``lease_owner`` mirror it (status, polling).

Safe to re-send: every grant, renewal and release carries a request id fixed once per logical call (made by
the caller before its first attempt: the admin route per HTTP request, a task from its Celery task id, which
retries keep). The script stores its first answer that changed something (granted, renewed, released;
a refusal changed nothing and may be asked again) under that id for ``POOL_LEASE_REQUEST_TTL_MS``
(``lease_memo.lua``); a re-sent script (redis-py after a timeout) or a retried task gets that answer again,
so one call never grants twice, and a rotation or release that went through is answered as it happened.

After a lease: an ended lease returns its instance to the pool only after a health check (Layer 3's port
validation) that ran *after* the end (:mod:`vastkeep.pool.aftercare`). The check is queued through the
injected ``check`` port (the task and API wiring send ``vastkeep.ports.validate_instance`` by name; the
library never imports Celery): by :meth:`PoolLeases.release` at once; by :meth:`PoolLeases.grant` for every
ended, unchecked lease it walks past (a client asking after an expiry waits one check, not one round); by
:meth:`PoolLeases.settle`, the reconcile round's pass, which is what notices an expiry. A check is queued
once per ended lease (a Redis marker, ``POOL_LEASE_CHECK_QUEUED_TTL_MS``: re-queued after it if lost).

The lease id is the holder's capability to renew or release: it is returned once to the client and never
written to events or logs (the memo stores it in Redis, beside the index that already holds it).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.commands.core import Script

from vastkeep.core.clock import SYSTEM_CLOCK, Clock, iso
from vastkeep.core.errors import InvalidInput, LeaseBroken, LeaseBusy, NotFound, PermanentError
from vastkeep.pool import aftercare
from vastkeep.pool.aftercare import LeaseEntry
from vastkeep.state import NULL_EVENTS, EventSink, Keys, StateStore, as_text
from vastkeep.state.flowmarks import RedisClient
from vastkeep.state.keys import POOL_LEASE_CHECK_QUEUED_TTL_MS, POOL_LEASE_REQUEST_TTL_MS

log = logging.getLogger("vastkeep.pool")

_HERE = Path(__file__).parent
MAX_LEASE_S = 86_400
_CLIENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")
_LEASE_ID_RE = re.compile(r"^lse_[A-Za-z0-9_-]{16,64}$")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
#: When nothing is ready and nothing is leased: about one poll (and its port validation) away.
DEFAULT_RETRY_S = 30
#: When an instance waits for its post-lease check: one check (a port probe) away.
CHECK_RETRY_S = 1
#: The health-check port: queue a check of this instance (a port validation by name, in the wiring).
CheckPort = Callable[[str], object]


@dataclass(frozen=True)
class ClientLease:
    """One grant (what the API answers with 201)."""

    lease_id: str
    instance_id: str
    connection_url: str | None
    leased_until: float
    fence: int
    client: str

    def to_dict(self) -> dict[str, object]:
        return {"leaseId": self.lease_id, "instanceId": self.instance_id,
                "connectionUrl": self.connection_url, "leasedUntil": iso(self.leased_until),
                "fence": self.fence, "client": self.client}


def new_lease_id() -> str:
    """A fresh lease id: 144 random bits, the holder's capability to renew and release."""
    return "lse_" + secrets.token_urlsafe(18)


def parse_duration(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LEASE_S:
        raise InvalidInput(f"durationS must be a whole number of seconds from 1 to {MAX_LEASE_S}",
                           field="durationS")
    return value


def parse_client(value: object) -> str:
    if not isinstance(value, str) or not _CLIENT_RE.fullmatch(value):
        raise InvalidInput("client must be 1-64 letters, digits or _ . @ : - (a service name)",
                           field="client")
    return value


def check_lease_id(value: object) -> str:
    if not isinstance(value, str) or not _LEASE_ID_RE.match(value):
        raise NotFound("no such lease", field="leaseId")
    return value


def new_request_id() -> str:
    """A request id for one logical call whose caller has none (made once, before the first attempt)."""
    return uuid.uuid4().hex


def check_request_id(value: object) -> str:
    if not isinstance(value, str) or not _REQUEST_ID_RE.fullmatch(value):
        raise InvalidInput("a request id is 1-128 letters, digits or _ . : - (e.g. a UUID)",
                           field="requestId")
    return value


def _pairs(value: object) -> list[tuple[str, int]]:
    """(instance id, fence) pairs from a script's flat JSON array (cjson encodes an empty one as ``{}``)."""
    flat = value if isinstance(value, list) else []
    return [(str(flat[i]), int(flat[i + 1])) for i in range(0, len(flat) - 1, 2)]


def _iso(at: float) -> str:
    """A script argument: the ISO time of a real instant (never empty)."""
    return iso(at) or ""


class PoolLeases:
    """Client leases of one pool."""

    def __init__(self, redis_client: RedisClient, keys: Keys, pool: str, prefix: str,
                 clock: Clock = SYSTEM_CLOCK, store: StateStore | None = None,
                 events: EventSink = NULL_EVENTS, retry_s: int = DEFAULT_RETRY_S,
                 check: CheckPort | None = None) -> None:
        self.redis, self.keys, self.pool, self.prefix = redis_client, keys, pool, prefix
        self.clock, self.store, self.retry_s = clock, store, retry_s
        self.events: EventSink = events or NULL_EVENTS  # a caller still passing None gets the null sink
        #: the health-check port; None: checks are left to the reconcile round's wiring
        self.check = check
        memo = (_HERE / "lease_memo.lua").read_text(encoding="utf-8")

        def load(name: str, tail: str = "") -> Script:
            source = (_HERE / f"lease_{name}.lua").read_text(encoding="utf-8")
            return redis_client.register_script(source + tail)

        self._grant, self._renew, self._release = (load(n, "\n" + memo)
                                                   for n in ("grant", "renew", "release"))
        self._claim, self._settle, self._clear = load("claim"), load("settle"), load("clear")

    def _once(self, script: Script, op: str, request_id: str | None, keys: Sequence[str],
              args: Sequence[str]) -> tuple[bool, list[Any], str]:  # the script's answer: raw JSON
        """Run a memoised op script: (replayed, its answer, the request id). The request id is fixed
        before the first attempt, so redis-py's re-send of this very call finds the first answer."""
        rid = check_request_id(request_id) if request_id is not None else new_request_id()
        raw = script(keys=[*keys, self.keys.pool_lease_request(self.pool, op, rid)],
                     args=[*args, str(POOL_LEASE_REQUEST_TTL_MS)])
        answer = json.loads(as_text(raw[1]))
        return int(raw[0]) == 1, answer if isinstance(answer, list) else [], rid

    def _first_report(self, op: str, rid: str) -> bool:
        """True once per request id: the event of an answer is emitted by the first caller that got it (a
        replay after a lost reply still emits it; a client's repeat of an answered call does not)."""
        key = self.keys.pool_lease_request(self.pool, f"{op}-reported", rid)
        return bool(self.redis.set(key, "1", nx=True, px=POOL_LEASE_REQUEST_TTL_MS))

    # ── client operations ───────────────────────────────────────────────────
    def grant(self, duration_s: object, client: object, *, request_id: str | None = None) -> ClientLease:
        """Lease a ready idle instance, or ``LeaseBusy`` (all leased / none ready) with ``retry_after_s``.

        ``request_id``: the same id answers a repeat of this call (a retried task) with the first grant.
        """
        duration = parse_duration(duration_s)
        name = parse_client(client)
        now = self.clock.now()
        until = round(now + duration, 3)  # ms: what cjson keeps of it (a replay reads it back)
        instance_prefix = self.keys.instance("x")[:-1]
        k, pool = self.keys, self.pool
        replayed, reply, rid = self._once(
            self._grant, "grant", request_id,
            [k.instances(), k.pool_leases(pool), k.pool_lease_index(pool), k.pool_lease_fence(pool),
             k.pool_claims(pool)],
            [instance_prefix, f"{self.prefix}:{self.pool}:", repr(now), repr(until), _iso(until),
             new_lease_id(), name, _iso(now)])
        if int(reply[0]) == 1:
            held = True
            if replayed:  # the first attempt's answer was lost: its until, and mirror only a lease still held
                entry = self._entry(str(reply[1]))
                until = float(entry.get("until") or until)
                held = entry.get("lease_id") == reply[4] and entry.get("state") == "active"
            grant = ClientLease(lease_id=str(reply[4]), instance_id=str(reply[1]), fence=int(reply[2]),
                                connection_url=str(reply[3]) or None, leased_until=until, client=name)
            if replayed and not held:
                return grant
            self.mirror(grant.instance_id, until, name)
            if not self._first_report("grant", rid):
                return grant
            log.info("client lease granted: instance %s to %s until %s (fence %d)", grant.instance_id, name,
                     iso(until), grant.fence)
            self.events.emit("pool-lease-granted", instance_id=grant.instance_id, client=name,
                             fence=grant.fence, leased_until=iso(until))
            return grant
        ready, leased, unchecked, unreachable = int(reply[1]), int(reply[2]), int(reply[4]), int(reply[5])
        failed = int(reply[7]) if len(reply) > 7 else 0
        for iid, fence in _pairs(reply[6] if len(reply) > 6 else None):
            self.request_check(iid, fence)
        soonest = float(reply[3])
        if leased and leased == ready and not (unchecked or failed):
            retry = min(max(1, int(soonest - now + 0.999)), self.retry_s)
            raise LeaseBusy(f"all {leased} ready instance(s) are leased", retry_after_s=retry,
                            delay_s=float(retry), reason="all-leased")
        if unchecked:
            raise LeaseBusy("instances are being health-checked after a lease", retry_after_s=CHECK_RETRY_S,
                            delay_s=float(CHECK_RETRY_S), reason="checking")
        why = (f"{failed} instance(s) failed their health check after a lease (being replaced)" if failed else
               f"ComfyUI does not answer on {unreachable} ready instance(s) (keepalive lost; being replaced)"
               if unreachable else "no instance is ready yet")
        raise LeaseBusy(why, retry_after_s=self.retry_s, delay_s=float(self.retry_s), reason="none-ready")

    def renew(self, lease_id: object, duration_s: object, *, rotate: bool = False,
              request_id: str | None = None) -> dict[str, object]:
        """Extend a live lease to now + ``duration_s``; ``NotFound`` when unknown or expired.

        ``rotate``: the id was exposed (sent where events show it): the same step replaces it with a new id,
        returned as ``leaseId``; the exposed one is dead from then on. A repeat with the same ``request_id``
        answers as the first call did (the new id included).
        """
        lid = check_lease_id(lease_id)
        duration = parse_duration(duration_s)
        now = self.clock.now()
        until = round(now + duration, 3)  # ms: what cjson keeps of it (a replay reads it back)
        k, pool = self.keys, self.pool
        replayed, reply, _ = self._once(self._renew, "renew", request_id,
                                     [k.pool_leases(pool), k.pool_lease_index(pool), k.pool_claims(pool)],
                                     [lid, repr(now), repr(until), _iso(until),
                                      new_lease_id() if rotate else ""])
        status = int(reply[0])
        if status == 0:
            raise NotFound("no such lease (unknown, released or expired)", field="leaseId")
        instance_id = str(reply[1])
        if status == -1:
            raise LeaseBroken(f"instance {instance_id} is being destroyed; take a new lease",
                              instance_id=instance_id)
        if replayed:
            until = float(self._entry(instance_id).get("until") or until)
        self.mirror(instance_id, until, None)
        new_id = str(reply[3]) if len(reply) > 3 else ""
        out: dict[str, object] = {"instanceId": instance_id, "leasedUntil": iso(until),
                                  "fence": int(reply[2])}
        return {**out, "leaseId": new_id, "rotated": True} if new_id else out

    def release(self, lease_id: object, *, request_id: str | None = None) -> dict[str, object]:
        """End a live lease now and queue the instance's health check; ``NotFound`` when unknown, released
        already or expired. A repeat with the same ``request_id`` answers as the first call did."""
        lid = check_lease_id(lease_id)
        now = self.clock.now()
        k = self.keys
        replayed, reply, rid = self._once(self._release, "release", request_id,
                                     [k.pool_leases(self.pool), k.pool_lease_index(self.pool)],
                                     [lid, repr(now), _iso(now)])
        if int(reply[0]) != 1:
            raise NotFound("no such lease (unknown, released or expired)", field="leaseId")
        instance_id, fence, client = str(reply[1]), int(reply[2]), str(reply[3])
        if not (replayed and self._entry(instance_id).get("state") == "active"):  # not re-granted meanwhile
            self.mirror(instance_id, None, None)
        if self._first_report("release", rid):
            self.events.emit("pool-lease-ended", instance_id=instance_id, client=client, fence=fence,
                             reason="released")
        self.request_check(instance_id, fence)
        return {"instanceId": instance_id, "released": True, "fence": fence}

    # ── after a lease: the health check ─────────────────────────────────────
    def request_check(self, instance_id: str, fence: int) -> bool:
        """Queue the health check of ``instance_id`` after its lease ``fence`` ended, through the ``check``
        port, at most once per ``POOL_LEASE_CHECK_QUEUED_TTL_MS`` (a Redis marker); True when queued now."""
        if self.check is None:
            return False
        marker = self.keys.pool_lease_check(self.pool, instance_id, fence)
        if not self.redis.set(marker, "1", nx=True, px=POOL_LEASE_CHECK_QUEUED_TTL_MS):
            return False
        try:
            self.check(instance_id)
        except Exception as exc:  # noqa: BLE001 - the marker goes; the next grant or round queues it again
            self.redis.delete(marker)
            log.warning("could not queue the health check of instance %s after a lease: %s", instance_id,
                        type(exc).__name__)
            return False
        return True

    def settle(self) -> dict[str, object]:
        """The reconcile round's pass over the leases (:func:`vastkeep.pool.aftercare.settle`)."""
        return aftercare.settle(self, self._settle, self._clear)

    # ── the reconciler's side ───────────────────────────────────────────────
    def active(self, now: float) -> dict[str, LeaseEntry]:
        """Instance id → live lease entry (the truth the plan reads, over the records' mirror)."""
        out: dict[str, LeaseEntry] = {}
        for iid, raw in self.redis.hgetall(self.keys.pool_leases(self.pool)).items():
            try:
                entry: LeaseEntry = json.loads(as_text(raw))
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

    def _entry(self, instance_id: str) -> LeaseEntry:
        """The lease entry of ``instance_id`` ({} when none or unreadable)."""
        raw = self.redis.hget(self.keys.pool_leases(self.pool), instance_id)
        try:
            entry: LeaseEntry = json.loads(as_text(raw)) if raw else {}
        except ValueError:
            return {}
        return entry if isinstance(entry, dict) else {}

    def mirror(self, instance_id: str, until: float | None, client: str | None) -> None:
        """Copy the lease into the record (status and polling read it there); best effort."""
        if self.store is None:
            return
        changes: dict[str, object] = {"leased_until": until}
        if client is not None or until is None:
            changes["lease_owner"] = client
        try:
            self.store.update_instance(instance_id, changes)
        except (NotFound, PermanentError) as exc:
            log.warning("lease mirror on instance %s not written: %s", instance_id, exc.message[:120])


__all__ = ["CHECK_RETRY_S", "MAX_LEASE_S", "CheckPort", "ClientLease", "PoolLeases", "check_request_id",
           "new_lease_id", "new_request_id", "parse_client", "parse_duration"]
