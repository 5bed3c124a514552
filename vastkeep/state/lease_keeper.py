"""A lease kept alive from a daemon thread while blocking work runs under it.

A holder that blocks (an SSH read, a Vast.ai call) cannot renew its lease itself, and a TTL long enough for
its worst call would also be how long a *killed* holder blocks everyone else. So the TTL stays short and
:class:`LeaseKeeper` renews it every third of it in the background; ``lost`` is set the moment a renewal
fails (another owner, or the lease expired during a Redis outage), and the holder checks it between steps.
With ``max_hold_s`` the keeper also stops renewing once the holder has run that long, so a wedged holder
loses the lease within one TTL (its next fenced write then fails with ``LeaseLost``).
"""

from __future__ import annotations

import logging
import threading

import redis

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.errors import LeaseLost
from vastkeep.state.leases import Lease, LeaseManager

log = logging.getLogger("vastkeep.state")


class LeaseKeeper:
    """Renews ``lease`` every ``ttl/3`` until the ``with`` block ends, it is lost, or ``max_hold_s`` is up."""

    def __init__(self, leases: LeaseManager, lease: Lease, clock: Clock = SYSTEM_CLOCK, *,
                 ttl_ms: int | None = None, max_hold_s: float | None = None, what: str = "lease") -> None:
        self.leases, self.lease, self.clock = leases, lease, clock
        self.ttl_ms = int(ttl_ms if ttl_ms is not None else lease.ttl_ms)
        self.max_hold_s, self.what = max_hold_s, what
        self.started = clock.monotonic()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.name}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def overdue(self) -> bool:
        """The holder ran past ``max_hold_s`` (never, without one)."""
        return self.max_hold_s is not None and self.clock.monotonic() - self.started > self.max_hold_s

    def check(self) -> None:
        """A checkpoint of the holder: renew now, or ``LeaseLost`` (lease gone, or the holder overran)."""
        if self.lost.is_set() or self.overdue():
            self.lost.set()
            why = "given up: the holder ran past its time limit" if self.overdue() else "lost"
            raise LeaseLost(f"lease {self.lease.name!r} (fence {self.lease.fence}) {why}",
                            name=self.lease.name, fence=self.lease.fence)
        self.leases.ensure_renewed(self.lease, self.ttl_ms)

    def _run(self) -> None:
        every = self.ttl_ms / 3000.0
        while not self._stop.wait(every):
            if self.overdue():
                log.warning("%s lease %s: held past its time limit (%.0f s), no longer renewed", self.what,
                            self.lease.name, self.max_hold_s)
                self.lost.set()
                return
            try:
                if not self.leases.renew(self.lease, self.ttl_ms):
                    log.warning("%s lease %s (fence %s) lost", self.what, self.lease.name, self.lease.fence)
                    self.lost.set()
                    return
            except redis.RedisError as exc:  # a blip: try again next tick; expiry is caught by the fence
                log.warning("%s lease %s: renew failed (%s)", self.what, self.lease.name, type(exc).__name__)


__all__ = ["LeaseKeeper"]
