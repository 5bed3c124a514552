"""A lease kept alive from a daemon thread while blocking work runs under it.

A holder that blocks (an SSH read, a Vast.ai call) cannot renew its lease itself, and a TTL long enough for
its worst call would also be how long a *killed* holder blocks everyone else. So the TTL stays short and
:class:`LeaseKeeper` renews it every third of it in the background; ``lost`` is set the moment a renewal
fails (another owner, or the lease expired during a Redis outage), and the holder checks it between steps.
With ``max_hold_s`` the keeper also stops renewing once the holder has run that long, so a wedged holder
loses the lease within one TTL (its next fenced write then fails with ``LeaseLost``).

A thread that renews forever would keep a *hung* holder "alive" forever (DESIGN principle 12: liveness by
progress, not by a side thread). With a :class:`Progress`, the holder's loop beats it each time round,
saying how long its next step may take (that step's own deadline); once a beat is overdue by the
progress's ``grace_s`` the keeper stops renewing, **releases** the lease (so supervision can start a
successor at once instead of after a TTL; the hung holder's fenced writes fail from then on), sets
``stalled`` and ``lost``, and calls ``on_stall(overdue_s)`` once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

import redis

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.errors import LeaseLost
from vastkeep.state.leases import Lease, LeaseManager

log = logging.getLogger("vastkeep.state")

#: How often the keeper looks at the holder's progress (renewals keep their own ttl/3 rhythm).
PROGRESS_CHECK_EVERY_S = 1.0


class Progress:
    """The guarded loop's own beat: :meth:`beat` each time round, with the deadline of the step to come."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK, grace_s: float = 30.0) -> None:
        self.clock, self.grace_s = clock, float(grace_s)
        self._due = clock.monotonic() + self.grace_s

    def beat(self, within_s: float = 0.0) -> None:
        """The loop advanced; its next beat is due within ``within_s`` (+ ``grace_s``)."""
        self._due = self.clock.monotonic() + max(0.0, float(within_s)) + self.grace_s

    def overdue_s(self) -> float:
        """How long the next beat is overdue (≤ 0: the loop is on time)."""
        return self.clock.monotonic() - self._due


class LeaseKeeper:
    """Renews ``lease`` every ``ttl/3`` until the ``with`` block ends, it is lost, or ``max_hold_s`` is up."""

    def __init__(self, leases: LeaseManager, lease: Lease, clock: Clock = SYSTEM_CLOCK, *,
                 ttl_ms: int | None = None, max_hold_s: float | None = None, what: str = "lease",
                 progress: Progress | None = None,
                 on_stall: Callable[[float], object] | None = None) -> None:
        self.leases, self.lease, self.clock = leases, lease, clock
        self.progress, self.on_stall = progress, on_stall
        self.stalled = threading.Event()
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

    def _stall(self, overdue_s: float) -> None:
        """The holder's loop stopped beating: stop renewing, give the lease back, tell ``on_stall``."""
        assert self.progress is not None
        log.warning("%s lease %s (fence %s): its loop made no progress for %.1f s; no longer renewed, "
                    "released", self.what, self.lease.name, self.lease.fence,
                    self.progress.grace_s + overdue_s)
        self.stalled.set()
        self.lost.set()
        with contextlib.suppress(redis.RedisError):
            self.leases.release(self.lease)
        if self.on_stall is not None:
            try:
                self.on_stall(overdue_s)
            except Exception as exc:  # noqa: BLE001 - the lease is already given back; report and end
                log.warning("%s lease %s: on_stall failed (%s)", self.what, self.lease.name,
                            type(exc).__name__)

    def _run(self) -> None:
        every = self.ttl_ms / 3000.0
        ticks_per_renewal = 1 if self.progress is None else max(1, round(every / PROGRESS_CHECK_EVERY_S))
        tick = 0
        while not self._stop.wait(every / ticks_per_renewal):
            if self.progress is not None and (late := self.progress.overdue_s()) > 0:
                self._stall(late)
                return
            tick += 1
            if tick % ticks_per_renewal:
                continue
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


__all__ = ["LeaseKeeper", "Progress"]
