"""Layer 6, pure: has a worker stopped consuming its queues?

A Celery worker on Redis can stay alive, beat its heartbeat and answer remote control, yet take nothing
from its queues after a broker reconnect (celery#8030, #8082, #10205): nothing restarts a process that
has not exited. The worker watches itself: while messages wait in the queues it was started for, it has
a free pool slot, and it received nothing, the clock runs; once that has held for the timeout the worker
counts as stalled (and exits, so its supervisor starts a fresh one). A received message, an empty
backlog or a full pool resets the clock; a sample Redis could not answer is no evidence either way, and
the worker starts the clock again after it (no worker could consume while Redis was away).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConsumptionWatch:
    """What the last sample saw: the worker's received count, and since when it has waited in vain."""

    received: int = -1
    waiting_since_s: float | None = None


def watch_consumption(watch: ConsumptionWatch, *, now_s: float, backlog: int, received: int,
                      free_slots: int, timeout_s: float) -> tuple[ConsumptionWatch, bool]:
    """The next watch and whether the worker is stalled (``timeout_s`` <= 0: never).

    Parameters: ``backlog``: messages waiting in the worker's queues; ``received``: messages it has
    received since it started; ``free_slots``: pool slots holding no task.
    """
    if received != watch.received or backlog <= 0 or free_slots <= 0:
        return ConsumptionWatch(received, None), False
    since = watch.waiting_since_s if watch.waiting_since_s is not None else now_s
    return ConsumptionWatch(received, since), timeout_s > 0 and now_s - since >= timeout_s


__all__ = ["ConsumptionWatch", "watch_consumption"]
