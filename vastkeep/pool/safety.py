"""Safe mode: stop spending when in doubt, say why, and leave it only when that is safe.

Entered by an operator, or automatically on an invalid Vast.ai key (the Layer 2 pre-flight refused a
rent), on ``WARM_POOL_SAFE_MODE_FAILURES`` rent/provision failures within ``WARM_POOL_SAFE_MODE_WINDOW_MS``,
or when one more rent would take the spend rate over ``WARM_POOL_MAX_SPEND_DPH``. While on, nothing is
rented; dead and excess instances are still destroyed (that only lowers the spend) and leases are honoured.

An automatic safe mode is left by itself, when ``WARM_POOL_SAFE_MODE_AUTO_EXIT`` allows, once its cause has
cleared (:func:`cause_cleared`); an operator's is left only by an operator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from vastkeep.core.errors import VastkeepError
from vastkeep.pool.book import CAUSE_FAILURES, CAUSE_OPERATOR, CAUSE_SPEND, CAUSE_TOKEN, PoolBook
from vastkeep.pool.plan import PendingRent, RecordLike, spend_rate
from vastkeep.state import EventSink, StateStore

log = logging.getLogger("vastkeep.pool")

AUTOMATIC_CAUSES = frozenset({CAUSE_TOKEN, CAUSE_FAILURES, CAUSE_SPEND})


def enter(store: StateStore, book: PoolBook, events: EventSink, cause: str, reason: str, now: float) -> bool:
    """Turn safe mode on for ``cause``; True when it was off (the ``safe-mode`` event is emitted only then).

    Already on: the first cause stays (so it is the one that must clear), except that an operator's request
    takes over an automatic safe mode (which then no longer ends by itself).
    """
    if store.get_pool().safe_mode:
        if cause == CAUSE_OPERATOR and book.cause() != CAUSE_OPERATOR:
            store.set_safe_mode(True, reason[:300])
            book.set_cause(CAUSE_OPERATOR, now)
        return False
    store.set_safe_mode(True, reason[:300])
    book.set_cause(cause, now)
    log.warning("🛑 Safe mode ON (%s): %s", cause, reason)
    events.emit("safe-mode", on=True, reason=reason[:300], cause=cause)
    return True


def leave(store: StateStore, book: PoolBook, events: EventSink, reason: str, now: float) -> bool:
    """Turn safe mode off; True when it was on. Clears the failure window so it does not re-trip at once."""
    pool = store.get_pool()
    cause = book.cause()
    store.set_safe_mode(False)
    book.set_cause(None, now)
    book.clear_failures()
    if pool.safe_mode:
        log.warning("✅ Safe mode OFF: %s", reason)
        events.emit("safe-mode", on=False, reason=reason[:300], cause=cause or CAUSE_OPERATOR)
    return pool.safe_mode


def cause_cleared(cause: str | None, *, failures: int, failure_limit: int, records: Sequence[RecordLike],
                  pending: Sequence[PendingRent], prefix: str, max_dph: float, cap_dph: float,
                  preflight: Callable[[], None] | None) -> str | None:
    """Why an automatic safe mode may end now, or None while its cause holds (or it is not automatic)."""
    if cause == CAUSE_FAILURES and failures < failure_limit:
        return f"failures in the window fell to {failures} (< {failure_limit})"
    if cause == CAUSE_SPEND:
        rate = spend_rate(records, pending, prefix)
        if rate + max_dph <= cap_dph + 1e-9:
            return f"spend rate {rate:.3f} $/h leaves room for one more rent under {cap_dph} $/h"
    if cause == CAUSE_TOKEN and preflight is not None:
        try:
            preflight()
        except VastkeepError:
            return None
        return "the Vast.ai key passes validation again"
    return None


__all__ = ["AUTOMATIC_CAUSES", "cause_cleared", "enter", "leave"]
