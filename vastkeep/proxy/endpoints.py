"""Endpoint tokens: the capability behind ``/c/{endpointToken}/``, issued with a client lease.

A token names a lease's *grant* (pool + instance id + fence), not the lease id: renewals and lease-id
rotations keep the grant, so the token stays the same, and the lease id (the capability to renew and
release) never travels in URLs. Only the token's SHA-256 is stored (``Keys.endpoint``: digest → JSON
grant; ``Keys.endpoint_grant``: grant → digest), both expiring when the lease does (moved on renewal,
deleted on release). The proxy trusts none of it on its own: each resolution reads the pool's lease entry
(``Keys.pool_leases``) and needs the same instance id and fence on an active, unexpired lease, so a token
dies with its lease even when its key outlives it.

The token is derived, not drawn: HMAC-SHA256 of the grant under a per-deployment secret kept in Redis
(``Keys.endpoint_secret``), so a grant answered twice (a re-sent script, a retried task, a client's
``Idempotency-Key``) answers the same token, and issuing is safe to repeat.

These functions run after the lease scripts (the admin route and the ``vastkeep.pool.*`` tasks call them);
they never change a lease.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vastkeep.state import Keys, as_text

if TYPE_CHECKING:
    from redis import Redis

    #: a synchronous client, made with or without ``decode_responses``
    SyncRedis = Redis[str] | Redis[bytes]

TOKEN_PREFIX = "ept_"
_TOKEN_RE = re.compile(r"^ept_[A-Za-z0-9_-]{32}$")
_ANY_TOKEN_RE = re.compile(r"ept_[A-Za-z0-9_-]+")
REDACTED = "ept_***"


def new_token() -> str:
    """A fresh random endpoint token: 192 random bits (tests; grants use :func:`grant_token`)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(24)


def grant_token(secret: bytes, pool: str, instance_id: str, fence: int) -> str:
    """The token of one grant: 192 bits of HMAC-SHA256(secret, pool/instance/fence), URL-safe."""
    mac = hmac.new(secret, f"{pool}\0{instance_id}\0{int(fence)}".encode(), hashlib.sha256).digest()
    return TOKEN_PREFIX + base64.urlsafe_b64encode(mac[:24]).decode()


def endpoint_secret(redis_client: SyncRedis, keys: Keys) -> bytes:
    """The deployment's token key, made by the first caller (SET NX), the same for every process after."""
    key = keys.endpoint_secret()
    redis_client.set(key, secrets.token_hex(32), nx=True)
    stored = redis_client.get(key)
    if stored is None:  # deleted between the two commands (a FLUSHDB): the next call makes another
        raise RuntimeError("the endpoint secret vanished from Redis")
    return bytes.fromhex(as_text(stored))


def is_token(value: object) -> bool:
    return isinstance(value, str) and bool(_TOKEN_RE.match(value))


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def fingerprint(token_digest: str) -> str:
    """A short, non-secret name of a token for operators (the first 8 hex digits of its SHA-256)."""
    return token_digest[:8]


def redact(text: str) -> str:
    """``text`` with every endpoint token replaced by ``ept_***`` (log lines, paths, URLs)."""
    return _ANY_TOKEN_RE.sub(REDACTED, text)


def endpoint_url(proxy_url: str, token: str) -> str:
    return f"{proxy_url.rstrip('/')}/c/{token}/"


@dataclass(frozen=True)
class Grant:
    """What a token points at: one lease grant of one pool."""

    pool: str
    instance_id: str
    fence: int
    resubmit: bool = False  # the lease's setting: prompts in flight are re-submitted after a failover


def _expire_at_ms(until_s: float) -> int:
    return max(1, int(until_s * 1000))


def issue(redis_client: SyncRedis, keys: Keys, pool: str, instance_id: str, fence: int,
          until_s: float, *, resubmit: bool = False) -> str:
    """Issue the token of a grant (the same token every time for the same grant: safe to repeat); both keys
    expire at the lease's end ``until_s`` (epoch s). ``resubmit``: the lease consents to its prompts in
    flight being re-submitted after a failover (kept across moves)."""
    token = grant_token(endpoint_secret(redis_client, keys), pool, str(instance_id), int(fence))
    d = digest(token)
    at = _expire_at_ms(until_s)
    fields: dict[str, object] = {"pool": pool, "instance_id": str(instance_id), "fence": int(fence)}
    if resubmit:
        fields["resubmit"] = True
    grant = json.dumps(fields)
    now_there = parse_grant(redis_client.get(keys.endpoint(d)))
    if now_there is not None and (now_there.instance_id, now_there.fence) != (str(instance_id), int(fence)):
        return token  # a failover moved this token to a later grant: a repeated grant answer keeps it there
    pipe = redis_client.pipeline(transaction=True)
    pipe.set(keys.endpoint(d), grant, pxat=at)
    pipe.set(keys.endpoint_grant(pool, instance_id, fence), d, pxat=at)
    pipe.execute()
    return token


def refresh(redis_client: SyncRedis, keys: Keys, pool: str, instance_id: str, fence: int,
            until_s: float) -> bool:
    """A renewal moved the lease's end: move the token's expiry with it (False: no token for that grant)."""
    gkey = keys.endpoint_grant(pool, instance_id, fence)
    d = as_text(redis_client.get(gkey))
    if not d:
        return False
    at = _expire_at_ms(until_s)
    pipe = redis_client.pipeline(transaction=True)
    pipe.pexpireat(gkey, at)
    pipe.pexpireat(keys.endpoint(d), at)
    pipe.execute()
    return True


def follow_lease(redis_client: SyncRedis, keys: Keys, pool: str, instance_id: str, fence: int) -> bool:
    """After a renewal: set the token's expiry to the lease entry's end (True when a token was moved)."""
    until = lease_matches(redis_client.hget(keys.pool_leases(pool), instance_id),
                          Grant(pool, str(instance_id), int(fence)), 0.0)
    return until is not None and refresh(redis_client, keys, pool, instance_id, fence, until)


def with_endpoint(answer: Mapping[str, object], redis_client: SyncRedis, keys: Keys, pool: str,
                  proxy_url: str, until_s: float, *, resubmit: bool = False) -> dict[str, object]:
    """A grant's answer (``instanceId``, ``fence``) plus its ``endpointToken`` and ``endpointUrl`` (and
    ``resubmitPrompts`` when the lease consents to re-submission after a failover)."""
    fence = answer["fence"]
    if not isinstance(fence, int):
        raise ValueError("a grant's fence is an integer")
    token = issue(redis_client, keys, pool, str(answer["instanceId"]), fence, until_s, resubmit=resubmit)
    out = {**answer, "endpointToken": token, "endpointUrl": endpoint_url(proxy_url, token)}
    return {**out, "resubmitPrompts": True} if resubmit else out


def grant_of(answer: Mapping[str, object]) -> tuple[str, int]:
    """The (instance id, fence) a lease answer names: what its endpoint token is keyed to."""
    fence = answer["fence"]
    if not isinstance(fence, int):
        raise TypeError("a lease answer's fence is not an integer")
    return str(answer["instanceId"]), fence


def drop(redis_client: SyncRedis, keys: Keys, pool: str, instance_id: str, fence: int) -> bool:
    """The lease ended: delete its token (idempotent; False when there was none)."""
    gkey = keys.endpoint_grant(pool, instance_id, fence)
    d = as_text(redis_client.get(gkey))
    if not d:
        return False
    redis_client.delete(keys.endpoint(d), gkey)
    redis_client.publish(keys.endpoint_dropped(), d)
    return True


def _json_object(raw: object) -> dict[str, object] | None:
    """A stored JSON object, or None when ``raw`` is missing, not JSON, or not an object."""
    if not isinstance(raw, str | bytes):
        return None
    try:
        data: object = json.loads(as_text(raw))
    except (TypeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _number(value: object, kind: type[int] | type[float]) -> int | float:
    """``kind(value)`` for a number or numeric string; ValueError for anything else."""
    if isinstance(value, int | float | str):
        return kind(value)
    raise ValueError(f"not a number: {type(value).__name__}")


def parse_grant(raw: object) -> Grant | None:
    data = _json_object(raw)
    try:
        return None if data is None else Grant(str(data["pool"]), str(data["instance_id"]),
                                               int(_number(data["fence"], int)), data.get("resubmit") is True)
    except (ValueError, KeyError):
        return None


def lease_matches(entry_raw: object, grant: Grant, now_s: float) -> float | None:
    """The lease's end (epoch s) when the pool's lease entry is still ``grant``'s active, unexpired lease;
    None otherwise (released, expired, or the instance was leased again under another fence)."""
    entry = _json_object(entry_raw) if entry_raw is not None else None
    if entry is None:
        return None
    try:
        until = float(_number(entry.get("until") or 0, float))
        fence = int(_number(entry.get("fence"), int))
    except ValueError:
        return None
    if entry.get("state") != "active" or fence != grant.fence or until <= now_s:
        return None
    return until


def lease_endpoints(redis_client: SyncRedis, keys: Keys, pool: str, proxy_url: str | None,
                    now_s: float) -> list[dict[str, object]]:
    """Each active lease of ``pool`` with its endpoint (token shown by fingerprint only) and where it points
    (the instance's connection URL), for ``vastkeep status``."""
    rows: list[dict[str, object]] = []
    leases = {as_text(k): v for k, v in redis_client.hgetall(keys.pool_leases(pool)).items()}
    for iid, raw in sorted(leases.items()):
        entry = _json_object(raw)
        try:
            until = float(_number(entry.get("until") or 0, float)) if entry is not None else 0.0
            fence = int(_number(entry.get("fence") or 0, int)) if entry is not None else 0
        except ValueError:
            continue
        if entry is None or entry.get("state") != "active" or until <= now_s:
            continue
        d = as_text(redis_client.get(keys.endpoint_grant(pool, iid, fence)))
        record = redis_client.get(keys.instance(iid))
        stored = _json_object(record) if record else None
        target = stored.get("connection_url") if stored is not None else None
        rows.append({"instanceId": iid, "client": entry.get("client"), "fence": fence,
                     "leasedUntil": until,
                     "endpoint": (f"{(proxy_url or '').rstrip('/')}/c/{REDACTED}/" if d else None),
                     "tokenFingerprint": fingerprint(d) if d else None, "target": target})
    return rows


__all__ = ["REDACTED", "TOKEN_PREFIX", "Grant", "digest", "drop", "endpoint_url", "fingerprint",
           "follow_lease", "grant_of", "grant_token", "is_token", "issue", "lease_endpoints", "lease_matches",
           "new_token",
           "parse_grant",
           "redact", "refresh", "with_endpoint"]
