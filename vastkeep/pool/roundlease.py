"""The reconcile round's lease: short, so a killed round frees the pool at once; kept up for a long round.

A round holds ``pool-reconcile:<pool>`` for as long as it runs, and a round can run long: one listing with
its retries, rents (a read deadline each, never retried), destroys. A fixed TTL long enough for the worst
round would also be how long a *killed* round blocks the pool. So the TTL is short
(:func:`round_lease_ttl_ms`: one reconcile interval, 3 s to 30 s), and :class:`RoundLeaseKeeper` renews it
every third of that from a daemon thread while the round works (a blocking Vast.ai call included). The
keeper stops renewing once the round has run its time limit (``max_round_s``: the task's hard limit from
``worker/limits.py``, passed in by the task): a wedged round then loses the lease within one TTL, and its
next fenced write or checkpoint fails with ``LeaseLost``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.errors import LeaseLost
from vastkeep.state import Lease, LeaseManager

log = logging.getLogger("vastkeep.pool")

MIN_TTL_MS = 3_000
MAX_TTL_MS = 30_000
#: A round whose task carries no limit (tests, the bench): the reconcile task's default hard limit or so.
DEFAULT_MAX_ROUND_S = 240.0


def round_lease_ttl_ms(settings: Any) -> int:
    """One reconcile interval, clamped to 3..30 s: a killed round's lease lapses before the next beat or
    the one after, and a renewal every third of it rides out a Redis blip."""
    interval_ms = float(settings.warm_pool_reconcile_interval_s) * 1000
    return int(min(MAX_TTL_MS, max(MIN_TTL_MS, interval_ms)))


class RoundLeaseKeeper:
    """Renews one round's lease every ``ttl/3`` from a daemon thread until stopped or past ``max_round_s``."""

    def __init__(self, leases: LeaseManager, lease: Lease, ttl_ms: int, max_round_s: float,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.leases, self.lease, self.ttl_ms = leases, lease, ttl_ms
        self.max_round_s, self.clock = max_round_s, clock
        self.started = clock.monotonic()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.name}", daemon=True)

    def __enter__(self) -> RoundLeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def overdue(self) -> bool:
        return self.clock.monotonic() - self.started > self.max_round_s

    def check(self) -> None:
        """A checkpoint of the round: renew now, or ``LeaseLost`` (lease gone, or the round overran)."""
        if self.lost.is_set() or self.overdue():
            self.lost.set()
            why = "given up: the round ran past its time limit" if self.overdue() else "lost"
            raise LeaseLost(f"lease {self.lease.name!r} (fence {self.lease.fence}) {why}",
                            name=self.lease.name, fence=self.lease.fence)
        self.leases.ensure_renewed(self.lease, self.ttl_ms)

    def _run(self) -> None:
        every = self.ttl_ms / 3000.0
        while not self._stop.wait(every):
            if self.overdue():
                log.warning("reconcile round over its time limit (%.0f s): lease %s no longer renewed",
                            self.max_round_s, self.lease.name)
                self.lost.set()
                return
            try:
                if not self.leases.renew(self.lease, self.ttl_ms):
                    log.warning("reconcile lease %s (fence %s) lost", self.lease.name, self.lease.fence)
                    self.lost.set()
                    return
            except redis.RedisError as exc:  # a blip: try again next tick; expiry is caught by the fence
                log.warning("reconcile lease %s: renew failed (%s)", self.lease.name, type(exc).__name__)


__all__ = ["DEFAULT_MAX_ROUND_S", "RoundLeaseKeeper", "round_lease_ttl_ms"]
