"""Layer 6 task: ``vastkeep.supervision.sweep`` (beat, every ``SUPERVISION_SWEEP_INTERVAL_MS``).

Thin: list the wanted daemons (:func:`vastkeep.supervision.wanted_daemons`), run one sweep under the
``supervisor`` lease (:func:`vastkeep.supervision.sweep`) and give it the one thing the library cannot do,
sending a daemon's Celery task:

- a keepalive shard → ``vastkeep.keepalive.run_shard(n)`` (queue ``vastkeep.keepalive``);
- the poll dispatcher → ``vastkeep.polling.dispatch`` (``vastkeep.control``);
- an instance's SSH collector → ``vastkeep.ssh.collect(id)`` (``vastkeep.ssh``).

Each start expires after the start timeout: a start still queued when supervision has already called
it crashed is dropped rather than run late (a duplicate would find the daemon's lease held anyway).
The sweep replaces the three ``ensure`` beat entries of Layers 1, 4 and 5; those tasks stay callable by
name as operators' tools ("start whatever has no holder right now", no backoff, no book).
"""

from __future__ import annotations

from tasks.base import VastkeepTask, retry_on_redis
from tasks.keepalive import run_shard
from tasks.polling import dispatch
from tasks.ssh import collect, send_options
from vastkeep import supervision
from vastkeep.core.settings import Settings
from vastkeep.supervision import (
    KEEPALIVE_SHARD,
    POLL_DISPATCHER,
    SSH_COLLECTOR,
    DaemonSpec,
    SupervisionPolicy,
)
from worker import wiring
from worker.app import app
from worker.limits import limits_for

SWEEP = "vastkeep.supervision.sweep"
WHAT = "supervision"


def starter(settings: Settings) -> supervision.flow.Start:
    """The ``start(spec)`` the sweep calls: send the daemon's task, expiring after the start timeout."""
    expires = max(1.0, settings.supervision_start_timeout_ms / 1000)

    def start(spec: DaemonSpec) -> None:
        if spec.kind == KEEPALIVE_SHARD:
            run_shard.apply_async(args=(int(str(spec.arg)),), expires=expires)
        elif spec.kind == POLL_DISPATCHER:
            dispatch.apply_async(expires=expires)
        elif spec.kind == SSH_COLLECTOR:
            collect.apply_async((str(spec.arg),), expires=expires, **send_options(settings))
        else:
            raise ValueError(f"unknown daemon kind {spec.kind!r}")

    return start


@app.task(name=SWEEP, bind=True, base=VastkeepTask, ignore_result=True,
          **limits_for(SWEEP, wiring.settings()))
def sweep(self: VastkeepTask) -> dict[str, object]:
    """Supervise every logical daemon once: start the missing, restart the stale with backoff (idempotent)."""
    res = wiring.resources()

    def go() -> dict[str, object]:
        settings = res.settings
        records = res.store.list_instances() if settings.ssh_key_path is not None else []
        specs = supervision.wanted_daemons(settings, records)
        return supervision.sweep(redis=res.redis, keys=res.keys, specs=specs,
                                 policy=SupervisionPolicy.from_settings(settings), start=starter(settings),
                                 events=res.events, clock=res.clock)

    return retry_on_redis(self, go, WHAT)
