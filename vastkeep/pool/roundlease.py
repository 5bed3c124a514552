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

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.settings import Settings
from vastkeep.state import Lease, LeaseKeeper, LeaseManager

MIN_TTL_MS = 3_000
MAX_TTL_MS = 30_000
#: A round whose task carries no limit (tests, the bench): the reconcile task's default hard limit or so.
DEFAULT_MAX_ROUND_S = 240.0


def round_lease_ttl_ms(settings: Settings) -> int:
    """One reconcile interval, clamped to 3..30 s: a killed round's lease lapses before the next beat or
    the one after, and a renewal every third of it rides out a Redis blip."""
    interval_ms = float(settings.warm_pool_reconcile_interval_s) * 1000
    return int(min(MAX_TTL_MS, max(MIN_TTL_MS, interval_ms)))


class RoundLeaseKeeper(LeaseKeeper):
    """The shared :class:`~vastkeep.state.LeaseKeeper` with the round's TTL and its time limit."""

    def __init__(self, leases: LeaseManager, lease: Lease, ttl_ms: int, max_round_s: float,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(leases, lease, clock, ttl_ms=ttl_ms, max_hold_s=max_round_s, what="reconcile")
        self.max_round_s = max_round_s


__all__ = ["DEFAULT_MAX_ROUND_S", "RoundLeaseKeeper", "round_lease_ttl_ms"]
