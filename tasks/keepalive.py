"""Layer 4 tasks: ``vastkeep.keepalive.run_shard`` (long-lived, own queue) and ``...ensure_shards``.

A shard runner holds its shard for a bounded run (``KEEPALIVE_RUN_S``) and then hands over to its
continuation, so no task outlives the visibility timeout and a worker can be drained between runs. The
supervision sweep (``vastkeep.supervision.sweep``, Layer 6) makes sure every shard has an owner: a shard
whose heartbeat went stale and whose lease lapsed (a worker that died) is restarted with the guide's
backoff. ``ensure_shards`` is no longer on the beat schedule: it stays an operator's tool that sends
``run_shard`` at once for each shard whose lease is free. Two runners for one shard cannot both run: the
second finds the lease held and returns ``busy`` without a continuation.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import worker_shutting_down

from tasks.base import VastkeepTask, retry_on_redis
from vastkeep.keepalive import KeepalivePolicy, RunnerConfig, daemon_name, lease_name
from vastkeep.keepalive import run_shard as run_shard_once
from vastkeep.supervision import mark_handover
from worker import wiring
from worker.app import app
from worker.limits import KEEPALIVE_RUN_S, limits_for

log = logging.getLogger("vastkeep.worker")
RUN_S = KEEPALIVE_RUN_S
RUN_SHARD = "vastkeep.keepalive.run_shard"
POLL_NOW = "vastkeep.polling.poll_instance"


def _config(settings: Any) -> RunnerConfig:
    # A dead owner's shard must be free again well within one ping interval (at most 15 s).
    ttl_ms = int(min(15_000, max(2_000, settings.comfyui_keepalive_interval_ms / 2)))
    return RunnerConfig(shards=settings.comfyui_keepalive_shards, run_s=RUN_S, lease_ttl_ms=ttl_ms,
                        fast_path=settings.comfyui_keepalive_fast_path)


#: How long the "worker stopping" mark lives: longer than any warm shutdown (systemd's TimeoutStopSec=120).
STOPPING_TTL_MS = 600_000


@worker_shutting_down.connect
def _on_shutdown(sender: Any = None, **_: Any) -> None:
    """Warm shutdown began (main process): mark it in Redis for the shard runners in the pool's children,
    which hand over at their next refresh (≤ 5 s) rather than hold the worker for the rest of a 300 s run."""
    try:
        res = wiring.resources()
        res.redis.set(res.keys.worker_stopping(str(sender)), str(os.getpid()), px=STOPPING_TTL_MS)
    except Exception as exc:  # noqa: BLE001 - stopping anyway; the runs then end by their own bound
        log.warning("could not mark the worker stopping for its keepalive shards (%s)", type(exc).__name__)


def _stopping(res: Any, hostname: str | None) -> Any:
    """True once this worker's main process (our parent under prefork, ourselves under solo/threads) began
    its warm shutdown; a restarted worker has another pid, so an old mark never stops it."""
    key = res.keys.worker_stopping(str(hostname))
    mine = {str(os.getppid()), str(os.getpid())}
    return lambda: res.redis.get(key) in mine


def _poll_now(instance_id: str, fields: dict[str, Any]) -> None:
    """connection-lost → poll the instance now (Layer 5 decides whether it failed), once polling exists."""
    if POLL_NOW in app.tasks:
        app.send_task(POLL_NOW, args=[instance_id])


@app.task(name=RUN_SHARD, bind=True, base=VastkeepTask, ignore_result=True,
          **limits_for(RUN_SHARD, wiring.settings()))
def run_shard(self: Any, shard: int) -> dict[str, Any]:
    """Ping one shard for a bounded run, then send the continuation (unless another runner holds it)."""
    res = wiring.resources()
    n = int(shard)

    def go() -> dict[str, Any]:
        return run_shard_once(redis=res.redis, keys=res.keys, store=res.store, events=res.events, shard=n,
                              policy=KeepalivePolicy.from_settings(res.settings),
                              config=_config(res.settings), clock=res.clock, on_lost=_poll_now,
                              should_stop=_stopping(res, self.request.hostname))

    result = retry_on_redis(self, go, "keepalive shard")
    if result.get("result") == "done":
        # supervision (Layer 6) counts the shard alive while its continuation waits in the queue
        mark_handover(res.redis, res.keys, res.clock, daemon_name(n))
        self.apply_async(args=[n])
    return result


@app.task(name="vastkeep.keepalive.ensure_shards", bind=True, base=VastkeepTask, ignore_result=True,
          **limits_for("vastkeep.keepalive.ensure_shards", wiring.settings()))
def ensure_shards(self: Any) -> dict[str, Any]:
    """Send ``run_shard`` for every shard nobody holds now (an operator's tool; beat runs the supervision
    sweep instead, which adds the backoff; idempotent)."""
    res = wiring.resources()

    def go() -> dict[str, Any]:
        started = []
        for n in range(res.settings.comfyui_keepalive_shards):
            if not res.redis.exists(res.keys.lease(lease_name(n))):
                run_shard.apply_async(args=[n])
                started.append(n)
        return {"started": started}

    return retry_on_redis(self, go, "keepalive ensure")
