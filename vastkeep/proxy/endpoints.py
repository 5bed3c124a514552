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
from dataclasses import dataclass
from typing import Any

from vastkeep.state import Keys, as_text

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


def endpoint_secret(redis_client: Any, keys: Keys) -> bytes:
    """The deployment's token key, made by the first caller (SET NX), the same for every process after."""
    key = keys.endpoint_secret()
    redis_client.set(key, secrets.token_hex(32), nx=True)
    return bytes.fromhex(as_text(redis_client.get(key)))


def is_token(value: Any) -> bool:
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


def _expire_at_ms(until_s: float) -> int:
    return max(1, int(until_s * 1000))


def issue(redis_client: Any, keys: Keys, pool: str, instance_id: str, fence: int, until_s: float) -> str:
    """Issue the token of a grant (the same token every time for the same grant: safe to repeat); both keys
    expire at the lease's end ``until_s`` (epoch s)."""
    token = grant_token(endpoint_secret(redis_client, keys), pool, str(instance_id), int(fence))
    d = digest(token)
    at = _expire_at_ms(until_s)
    grant = json.dumps({"pool": pool, "instance_id": str(instance_id), "fence": int(fence)})
    pipe = redis_client.pipeline(transaction=True)
    pipe.set(keys.endpoint(d), grant, pxat=at)
    pipe.set(keys.endpoint_grant(pool, instance_id, fence), d, pxat=at)
    pipe.execute()
    return token


def refresh(redis_client: Any, keys: Keys, pool: str, instance_id: str, fence: int, until_s: float) -> bool:
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


def follow_lease(redis_client: Any, keys: Keys, pool: str, instance_id: str, fence: int) -> bool:
    """After a renewal: set the token's expiry to the lease entry's end (True when a token was moved)."""
    until = lease_matches(redis_client.hget(keys.pool_leases(pool), instance_id),
                          Grant(pool, str(instance_id), int(fence)), 0.0)
    return until is not None and refresh(redis_client, keys, pool, instance_id, fence, until)


def with_endpoint(answer: dict[str, Any], redis_client: Any, keys: Keys, pool: str, proxy_url: str,
                  until_s: float) -> dict[str, Any]:
    """A grant's answer (``instanceId``, ``fence``) plus its ``endpointToken`` and ``endpointUrl``."""
    token = issue(redis_client, keys, pool, answer["instanceId"], int(answer["fence"]), until_s)
    return {**answer, "endpointToken": token, "endpointUrl": endpoint_url(proxy_url, token)}


def drop(redis_client: Any, keys: Keys, pool: str, instance_id: str, fence: int) -> bool:
    """The lease ended: delete its token (idempotent; False when there was none)."""
    gkey = keys.endpoint_grant(pool, instance_id, fence)
    d = as_text(redis_client.get(gkey))
    if not d:
        return False
    redis_client.delete(keys.endpoint(d), gkey)
    redis_client.publish(keys.endpoint_dropped(), d)
    return True


def parse_grant(raw: Any) -> Grant | None:
    try:
        data = json.loads(as_text(raw))
        return Grant(str(data["pool"]), str(data["instance_id"]), int(data["fence"]))
    except (TypeError, ValueError, KeyError):
        return None


def lease_matches(entry_raw: Any, grant: Grant, now_s: float) -> float | None:
    """The lease's end (epoch s) when the pool's lease entry is still ``grant``'s active, unexpired lease;
    None otherwise (released, expired, or the instance was leased again under another fence)."""
    if entry_raw is None:
        return None
    try:
        entry = json.loads(as_text(entry_raw))
        until = float(entry.get("until") or 0)
        fence = int(entry.get("fence"))
    except (TypeError, ValueError):
        return None
    if entry.get("state") != "active" or fence != grant.fence or until <= now_s:
        return None
    return until


def lease_endpoints(redis_client: Any, keys: Keys, pool: str, proxy_url: str | None,
                    now_s: float) -> list[dict[str, Any]]:
    """Each active lease of ``pool`` with its endpoint (token shown by fingerprint only) and where it points
    (the instance's connection URL), for ``vastkeep status``."""
    rows = []
    for iid, raw in sorted(redis_client.hgetall(keys.pool_leases(pool)).items()):
        iid = as_text(iid)
        try:
            entry = json.loads(as_text(raw))
        except ValueError:
            continue
        if entry.get("state") != "active" or float(entry.get("until") or 0) <= now_s:
            continue
        fence = int(entry.get("fence") or 0)
        d = as_text(redis_client.get(keys.endpoint_grant(pool, iid, fence)))
        record = redis_client.get(keys.instance(iid))
        try:
            target = json.loads(as_text(record)).get("connection_url") if record else None
        except ValueError:
            target = None
        rows.append({"instanceId": iid, "client": entry.get("client"), "fence": fence,
                     "leasedUntil": float(entry.get("until") or 0),
                     "endpoint": (f"{(proxy_url or '').rstrip('/')}/c/{REDACTED}/" if d else None),
                     "tokenFingerprint": fingerprint(d) if d else None, "target": target})
    return rows


__all__ = ["REDACTED", "TOKEN_PREFIX", "Grant", "digest", "drop", "endpoint_url", "fingerprint",
           "follow_lease", "grant_token", "is_token", "issue", "lease_endpoints", "lease_matches",
           "new_token",
           "parse_grant",
           "redact", "refresh", "with_endpoint"]
