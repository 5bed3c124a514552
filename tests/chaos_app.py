"""The real vastkeep Celery app plus one test-only slow task, for the chaos tests.

``celery -A tests.chaos_app worker`` runs *the product's* ``worker.app`` (same configuration built by
``worker.config.celery_config`` from the environment's Settings: acks_late, reject_on_worker_lost,
prefetch 1, visibility timeout, queues, routing, the heartbeat bootstep, the per-fork wiring reset)
with one extra task that blocks until the test opens a gate. Nothing is added to the product: this
module is imported only by worker subprocesses the chaos tests start (the tests take the task name and
marker keys from :mod:`tests.chaos_support`, so the pytest process never registers this task).

The task waits for a gate file and leaves markers in the library's Redis (db of ``REDIS_URL``), so a
test can count from the outside how many times it started, how many times it ran to completion, and
which process ran it.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from tasks.base import VastkeepTask
from tests.chaos_support import SLOW_TASK, marker_keys
from worker import wiring
from worker.app import app


@app.task(name=SLOW_TASK, bind=True, base=VastkeepTask)
def slow(self: Any, run_id: str, gate_path: str, max_wait_s: float = 30.0) -> dict[str, Any]:
    """Idempotent by construction: count the start, wait for the gate, count the completion.

    The gate is a file, not a Redis key, so that while the task waits it makes no Redis call: a broker
    outage then affects the task only through what Celery itself does, never through the task's body.
    """
    r = wiring.resources().redis
    keys = marker_keys(run_id)
    info = {"pid": os.getpid(), "worker": self.request.hostname, "at": time.time(),
            "redelivered": bool((self.request.delivery_info or {}).get("redelivered"))}
    r.rpush(keys["runs"], json.dumps(info))
    r.incr(keys["started"])
    deadline = time.monotonic() + max_wait_s
    while not os.path.exists(gate_path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate of {run_id} never opened")
        time.sleep(0.02)
    r.incr(keys["done"])
    return info


__all__ = ["SLOW_TASK", "app", "marker_keys", "slow"]
