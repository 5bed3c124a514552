"""One keepalive shard's fenced lease, as its runner holds it.

The runner's loop renews it every tick and the flush renews it again just before each batch of writes (two
threads, one lock). A grant that lapsed while nobody else was granted the shard is taken back (a frozen
worker: SIGSTOP, a long GC or swap stall); a grant that passed through another runner's hands is lost for
good, and from then on nothing is written under it.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from vastkeep.core.clock import Clock
from vastkeep.state.leases import Lease, LeaseManager, new_owner

log = logging.getLogger("vastkeep.keepalive")

LEASE_PREFIX = "keepalive-shard"


def lease_name(shard: int) -> str:
    return f"{LEASE_PREFIX}-{int(shard)}"


def daemon_name(shard: int) -> str:
    """The heartbeat / supervision name of a shard's runner."""
    return f"keepalive-shard-{int(shard)}"


class ShardLease:
    """The grant one runner holds on its shard: ``current`` (None: not holding) and ``lost``."""

    def __init__(self, leases: LeaseManager, shard: int, ttl_ms: int, clock: Clock) -> None:
        self.leases, self.shard, self.ttl_ms, self.clock = leases, shard, ttl_ms, clock
        self.owner = new_owner(daemon_name(shard))
        self.current: Lease | None = None  # the grant every write is made under
        self.lost = False
        self._lock = threading.Lock()  # the loop's renewal and the flush's run in different threads

    async def acquire(self, wait_s: float) -> Lease | None:
        """Try for the shard for up to ``wait_s``; the grant becomes ``current``."""
        deadline = self.clock.monotonic() + wait_s
        while True:
            lease = await asyncio.to_thread(self.leases.acquire, lease_name(self.shard), self.owner,
                                            self.ttl_ms)
            if lease is not None or self.clock.monotonic() >= deadline:
                if lease is not None:
                    self.current, self.lost = lease, False
                return lease
            await asyncio.sleep(0.2)

    def hold(self) -> bool:
        """Renew the grant; if it lapsed while nobody else was granted the shard, take it again.

        When no other runner took the shard meanwhile (the next fence would be ours), this runner's memory
        is still the whole truth about the shard, and its held ``/ws`` are still open: giving them up would
        leave the shard unwatched until supervision restarts it (its backoff, 10 s and more), and a crash in
        that gap would be seen only by the next runner's handshake. Another runner's grant in between may
        have written newer state."""
        with self._lock:
            lease = self.current
            if lease is None or self.lost:
                return False
            if self.leases.renew(lease, self.ttl_ms):
                return True
            if self.leases.last_fence(lease.name) != lease.fence:
                return False
            again = self.leases.acquire(lease.name, self.owner, self.ttl_ms)
            if again is None:
                return False
            if again.fence != lease.fence + 1:  # another grant came and went in between
                self.leases.release(again)
                return False
            self.current = again
            log.warning("keepalive shard %d: lease lapsed while nobody else held the shard; held again",
                        self.shard)
            return True

    def release(self) -> None:
        """Give the shard back at the end of a run that did not lose it (then it is someone else's)."""
        if self.current is not None:
            self.leases.release(self.current)


__all__ = ["LEASE_PREFIX", "ShardLease", "daemon_name", "lease_name"]
