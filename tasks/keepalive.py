"""Layer 4 tasks: ``vastkeep.keepalive.run_shard`` (long-lived, own queue) and ``...ensure_shards``.

A shard runner holds its shard for a bounded run (``KEEPALIVE_RUN_S``) and then hands over to its
continuation, so no task outlives the visibility timeout and a worker can be drained between runs. The
supervision sweep (``vastkeep.supervision.sweep``, Layer 6) makes sure every shard has an owner: a shard
whose heartbeat went stale and whose lease lapsed (a worker that died, a host paused or cut off) is
started again at the next sweep, on whichever host takes the message; a run that ended in an error marks
its heartbeat ``crashed`` and is restarted with the guide's backoff. ``ensure_shards`` is no longer on the
beat schedule: it stays an operator's tool that sends ``run_shard`` at once for each shard whose lease is
free. Two runners for one shard cannot both run: the second finds the lease held and returns ``busy``
without a continuation.
"""

from __future__ import annotations

import logging

from tasks.base import VastkeepTask, retry_on_redis, run_supervised
from tasks.shutdown import stopping_check
from vastkeep.core.settings import Settings
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


def _config(settings: Settings) -> RunnerConfig:
    # A dead owner's shard must be free again well within one ping interval (at most 15 s).
    ttl_ms = int(min(15_000, max(2_000, settings.comfyui_keepalive_interval_ms / 2)))
    return RunnerConfig(shards=settings.comfyui_keepalive_shards, run_s=RUN_S, lease_ttl_ms=ttl_ms,
                        fast_path=settings.comfyui_keepalive_fast_path)


def _poll_now(instance_id: str, fields: dict[str, object]) -> None:
    """connection-lost → poll the instance now (Layer 5 decides whether it failed), once polling exists."""
    if POLL_NOW in app.tasks:
        app.send_task(POLL_NOW, args=(instance_id,))


@app.task(name=RUN_SHARD, bind=True, base=VastkeepTask, ignore_result=True,
          **limits_for(RUN_SHARD, wiring.settings()))
def run_shard(self: VastkeepTask, shard: int) -> dict[str, object]:
    """Ping one shard for a bounded run, then send the continuation (unless another runner holds it)."""
    res = wiring.resources()
    n = int(shard)

    def go() -> dict[str, object]:
        return run_shard_once(redis=res.redis, keys=res.keys, store=res.store, events=res.events, shard=n,
                              policy=KeepalivePolicy.from_settings(res.settings),
                              config=_config(res.settings), clock=res.clock, on_lost=_poll_now,
                              should_stop=stopping_check(res, self.request.hostname),
                              announced=res.announced)

    result = run_supervised(self, go, "keepalive shard", res, daemon_name(n))
    if result.get("result") == "done":
        # supervision (Layer 6) counts the shard alive while its continuation waits in the queue
        mark_handover(res.redis, res.keys, res.clock, daemon_name(n))
        self.apply_async(args=(n,))
    return result


@app.task(name="vastkeep.keepalive.ensure_shards", bind=True, base=VastkeepTask, ignore_result=True,
          **limits_for("vastkeep.keepalive.ensure_shards", wiring.settings()))
def ensure_shards(self: VastkeepTask) -> dict[str, object]:
    """Send ``run_shard`` for every shard nobody holds now (an operator's tool; beat runs the supervision
    sweep instead, which adds the backoff; idempotent)."""
    res = wiring.resources()

    def go() -> dict[str, object]:
        started: list[int] = []
        for n in range(res.settings.comfyui_keepalive_shards):
            if not res.redis.exists(res.keys.lease(lease_name(n))):
                run_shard.apply_async(args=(n,))
                started.append(n)
        return {"started": started}

    return retry_on_redis(self, go, "keepalive ensure")
