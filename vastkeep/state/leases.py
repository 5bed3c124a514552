"""Leases the redbeat way, fenced the Kleppmann way.

A lease is a Redis hash ``{owner, fence, ttl_ms, acquired_at}`` with a PX TTL. Acquire, renew and
release are Lua scripts, so "check the owner, then act" is one atomic step. Every new grant takes
a number from a per-name counter that never expires (INCR), so grants are strictly ordered: a
holder that paused past its TTL (GC, a stalled VM, a partitioned worker) still carries its old
fence, and every write it makes under the lease (see ``StateStore.update_instance``) is refused.
A TTL alone cannot give that guarantee; the fence can.

Owner tokens are capabilities (whoever knows one may renew or release), so errors, events, reprs
and :meth:`Lease.to_dict` never carry them: a lease's dict may travel (task arguments and results are
shown in Flower), its owner must not.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.errors import LeaseBusy, LeaseLost, StaleFence
from vastkeep.state.connection import RedisClient, as_text
from vastkeep.state.keys import Keys

_HERE = Path(__file__).parent


def _lua(name: str) -> str:
    return (_HERE / f"leases_{name}.lua").read_text(encoding="utf-8")



def new_owner(label: str = "") -> str:
    """A unique owner token: host, pid and a random part (plus an optional readable label)."""
    return _token(label, uuid.uuid4().hex[:16])


def _token(label: str, rand: str) -> str:
    base = f"{socket.gethostname()}:{os.getpid()}:{rand}"
    return f"{label}:{base}" if label else base


_THREAD = threading.local()


def thread_owner(label: str = "") -> str:
    """An owner token that stays the same for this thread of this process (random: still a capability).

    For a single-flight job whose ``release`` can fail (Redis restarted or away as the job ends): the job's
    next run in this thread takes the orphaned grant back (``acquire`` extends its owner's own grant)
    instead of every run skipping until a TTL sized for the job's worst case runs out. Only for a job a
    thread runs one at a time (a Celery prefork child, a request thread)."""
    rand = getattr(_THREAD, "rand", None)
    if rand is None:
        rand = _THREAD.rand = uuid.uuid4().hex[:16]
    return _token(label, rand)


class LeaseInfo(TypedDict):
    """A grant described without its owner token (:meth:`Lease.to_dict`)."""

    name: str
    fence: int
    ttl_ms: int
    acquired_at: float


@dataclass(frozen=True)
class Lease:
    """One grant: ``fence`` orders it against every other grant of the same ``name``.

    ``owner`` is the capability to renew or release the grant: it is kept out of ``repr`` and
    :meth:`to_dict`, and stays with the process that acquired it.
    """

    name: str
    owner: str = field(repr=False)
    fence: int
    ttl_ms: int
    acquired_at: float

    def to_dict(self) -> LeaseInfo:
        """JSON-safe description *without the owner token* (fit for logs, events, task results).

        It identifies the grant (``name`` + ``fence``) but cannot act on it. Do not pass a lease to
        another task to let it renew or release: its owner would have to travel in task arguments,
        which Flower shows. The next link acquires its own lease, or checks a fence it was given with
        :meth:`LeaseManager.check_fence`.
        """
        return {"name": self.name, "fence": self.fence, "ttl_ms": self.ttl_ms,
                "acquired_at": self.acquired_at}

    @classmethod
    def from_dict(cls, data: Mapping[str, str | int | float], *, owner: str) -> Lease:
        """Rebuild a lease from :meth:`to_dict` plus the ``owner`` token its holder kept to itself."""
        if not owner:
            raise ValueError("owner must be a non-empty token")
        return cls(name=str(data["name"]), owner=owner, fence=int(data["fence"]),
                   ttl_ms=int(data["ttl_ms"]), acquired_at=float(data["acquired_at"]))


def _check_ttl(ttl_ms: int) -> int:
    if not isinstance(ttl_ms, int) or isinstance(ttl_ms, bool) or ttl_ms <= 0:
        raise ValueError(f"ttl_ms must be a positive integer, got {ttl_ms!r}")
    return ttl_ms


class LeaseManager:
    """Acquire, renew, release and inspect fenced leases stored in Redis."""

    def __init__(
        self, redis_client: RedisClient, keys: Keys | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.redis = redis_client
        self.keys = keys or Keys()
        self.clock = clock
        self._acquire = redis_client.register_script(_lua("acquire"))
        self._renew = redis_client.register_script(_lua("renew"))
        self._release = redis_client.register_script(_lua("release"))

    def acquire(self, name: str, owner: str, ttl_ms: int) -> Lease | None:
        """Take the lease, or extend it if ``owner`` already holds it (same fence); None when busy.

        Idempotent per owner, so a retried call after a lost reply cannot burn a second fence.
        """
        _check_ttl(ttl_ms)
        if not owner:
            raise ValueError("owner must be a non-empty token")
        status, fence, extra = self._acquire(keys=[self.keys.lease(name), self.keys.fence(name)],
                                             args=[owner, ttl_ms, repr(self.clock.now())])
        if int(status) == 0:
            return None
        return Lease(name=name, owner=owner, fence=int(fence), ttl_ms=ttl_ms,
                     acquired_at=float(as_text(extra) or 0))

    def require(self, name: str, owner: str, ttl_ms: int) -> Lease:
        """Like :meth:`acquire` but raises ``LeaseBusy`` when held: transient, with ``retry_after_ms`` and
        the same in seconds as ``delay_s``, the jitter bound a task retry uses (``tasks.base``)."""
        lease = self.acquire(name, owner, ttl_ms)
        if lease is None:
            remaining = self.remaining_ms(name)
            retry_after_ms = max(0, remaining) if remaining is not None else 0
            raise LeaseBusy(f"lease {name!r} is held by another owner", name=name,
                            retry_after_ms=retry_after_ms, delay_s=retry_after_ms / 1000.0)
        return lease

    def renew(self, lease: Lease, ttl_ms: int | None = None) -> bool:
        """Extend the TTL (to ``ttl_ms`` or the lease's own) only while this exact grant still holds it."""
        ttl = _check_ttl(ttl_ms if ttl_ms is not None else lease.ttl_ms)
        return bool(self._renew(keys=[self.keys.lease(lease.name)], args=[lease.owner, lease.fence, ttl]))

    def ensure_renewed(self, lease: Lease, ttl_ms: int | None = None) -> None:
        """:meth:`renew`, raising ``LeaseLost`` when the grant is gone: the holder must stop working."""
        if not self.renew(lease, ttl_ms):
            raise LeaseLost(f"lease {lease.name!r} (fence {lease.fence}) was lost", name=lease.name,
                            fence=lease.fence)

    def release(self, lease: Lease) -> bool:
        """Delete the lease only if this exact grant still holds it (never someone else's)."""
        return bool(self._release(keys=[self.keys.lease(lease.name)], args=[lease.owner, lease.fence]))

    def current(self, name: str) -> Lease | None:
        """The live grant of ``name``, or None when free."""
        data = self.redis.hgetall(self.keys.lease(name))
        if not data:
            return None
        data = {as_text(k): as_text(v) for k, v in data.items()}
        try:
            return Lease(name=name, owner=data["owner"], fence=int(data["fence"]),
                         ttl_ms=int(data.get("ttl_ms") or 0), acquired_at=float(data.get("acquired_at") or 0))
        except (KeyError, ValueError):
            return None

    def remaining_ms(self, name: str) -> int | None:
        """Milliseconds until the lease expires, or None when free."""
        pttl = int(self.redis.pttl(self.keys.lease(name)))
        return pttl if pttl >= 0 else None

    def last_fence(self, name: str) -> int:
        """The newest fence ever granted for ``name`` (0 when never granted)."""
        value = self.redis.get(self.keys.fence(name))
        return int(value) if value is not None else 0

    def check_fence(self, name: str, fence: int) -> bool:
        """True when the live grant of ``name`` carries ``fence`` (i.e. that grant is still current)."""
        value = self.redis.hget(self.keys.lease(name), "fence")
        return value is not None and int(value) == int(fence)

    def is_held(self, lease: Lease) -> bool:
        """True while this exact grant (owner and fence) holds the lease."""
        owner, fence = self.redis.hmget(self.keys.lease(lease.name), ["owner", "fence"])
        return as_text(owner) == lease.owner and fence is not None and int(fence) == lease.fence

    def assert_held(self, lease: Lease) -> None:
        """Raise ``StaleFence`` if a newer grant exists, ``LeaseLost`` if the lease lapsed; else return."""
        if self.is_held(lease):
            return
        if self.last_fence(lease.name) > lease.fence:
            raise StaleFence(f"lease {lease.name!r} fence {lease.fence} is stale", name=lease.name,
                             fence=lease.fence)
        raise LeaseLost(f"lease {lease.name!r} (fence {lease.fence}) was lost", name=lease.name,
                        fence=lease.fence)

    @contextmanager
    def hold(self, name: str, owner: str, ttl_ms: int) -> Iterator[Lease]:
        """``with leases.hold(...) as lease:`` acquire (or raise ``LeaseBusy``), release on exit."""
        lease = self.require(name, owner, ttl_ms)
        try:
            yield lease
        finally:
            self.release(lease)


__all__ = ["Lease", "LeaseInfo", "LeaseManager", "new_owner", "thread_owner"]
