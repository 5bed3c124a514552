"""Warm-pool task: ``vastkeep.pool.reconcile`` (beat, every WARM_POOL_RECONCILE_INTERVAL_MS).

Thin: build the reconciler from the process's resources and run one round. A round that finds another one
running returns ``{"skipped": "another reconciler is running"}``. A Vast.ai hiccup (TransientError) or a lost
lease ends the round with ``{"error": ...}`` and is *not* retried: the next beat, one interval later, is the
retry, and a retry queued beside it would only find the lease held. A Redis blip is retried with jitter.
"""

from __future__ import annotations

from typing import Any

from tasks.base import VastkeepTask, retry_on_redis
from vastkeep.pool import build_reconciler
from vastkeep.tokens import vast_client
from worker import wiring
from worker.app import app

WHAT = "warm-pool reconcile"


@app.task(name="vastkeep.pool.reconcile", bind=True, base=VastkeepTask, time_limit=240, soft_time_limit=200)
def reconcile(self: Any) -> dict[str, Any]:
    """One reconcile round: rent to the desired size, replace what died, destroy idle excess."""

    def go() -> dict[str, Any]:
        res = wiring.resources()
        vast = vast_client(res.settings, res.store, res.clock, events=res.events)
        try:
            return build_reconciler(res.settings, res.store, res.events, res.redis, res.keys, vast,
                                    res.clock).run()
        finally:
            if vast is not None:
                vast.close()

    return retry_on_redis(self, go, WHAT)
