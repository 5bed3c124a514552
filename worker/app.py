"""The Celery app: ``celery -A worker worker|beat|flower`` finds it as ``worker.app``.

Configuration comes from :mod:`worker.config` (built from Settings); per-process resources from
:mod:`worker.wiring`. A small bootstep writes this worker's heartbeat into Redis every
``HEARTBEAT_INTERVAL_S`` (and removes it on a clean stop), which is what ``vastkeep check`` and
``/metrics`` read to know that every worker is alive without a broadcast round-trip.
"""

from __future__ import annotations

import logging
from typing import Protocol

from celery import Celery, bootsteps
from celery.signals import worker_init, worker_process_init
from celery.utils.timer2 import Entry, Timer

from vastkeep.core.limits import raise_nofile_limit
from vastkeep.core.settings import Settings
from vastkeep.state.heartbeats import clear_heartbeat, write_heartbeat
from worker import broker_guard, pool_guard, wiring
from worker.config import celery_config
from worker.consumption import ConsumptionWatchdog
from worker.limits import apply_time_limits, limits_over_visibility

HEARTBEAT_INTERVAL_S = 15.0
log = logging.getLogger("vastkeep.worker")
broker_guard.install()  # a worker holding unacked messages must survive a Redis restart
pool_guard.install()  # a late soft time limit must not tear a result frame (a 60 s Redis outage)


def apply_settings(celery_app: Celery, settings: Settings, redis_url: str | None = None) -> None:
    """(Re)configure the app and the wiring from ``settings``, so tasks and broker share one Redis.

    Safe before or after first use: cached broker pools and result backends are dropped so the
    next call connects to the new URL (the test fixture relies on this).
    """
    wiring.configure(settings, redis_url=redis_url)
    celery_app.conf.update(celery_config(settings, redis_url=wiring.redis_url()))
    # Celery has no public "reconnect" hook, and celery-types leaves these private attributes out
    pool = celery_app._pool  # type: ignore[attr-defined]  # private: the broker connection pool
    if pool is not None:
        pool.force_close_all()
        celery_app._pool = None  # type: ignore[attr-defined]  # private, as above
    if "amqp" in celery_app.__dict__:
        celery_app.amqp._producer_pool = None  # type: ignore[attr-defined]  # private producer pool
    celery_app._backend_cache = None  # type: ignore[attr-defined]  # private result-backend cache
    celery_app._local.backend = None  # type: ignore[attr-defined]  # private per-thread backend
    apply_time_limits(celery_app, settings)  # the limits follow the budgets of the new settings


class _Worker(Protocol):
    """What the heartbeat step uses of Celery's WorkController (its stub lacks ``hostname``)."""

    hostname: str
    timer: Timer
    app: Celery


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Write this worker's heartbeat (``heartbeats`` hash, field = hostname) now and every few seconds."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, parent: _Worker, **kwargs: object) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Entry | None = None

    def _beat(self, worker: _Worker) -> None:
        try:
            res = wiring.resources()
            queues = sorted(q.name for q in worker.app.amqp.queues.consume_from.values()) \
                if worker.app.amqp.queues.consume_from else []
            write_heartbeat(res.redis, res.keys, res.clock, worker.hostname, kind="worker",
                            queues=",".join(queues))
        except Exception as exc:  # noqa: BLE001 - a missed heartbeat must never stop the worker
            log.warning("heartbeat write failed: %s", type(exc).__name__)

    def start(self, worker: _Worker) -> None:
        self._beat(worker)
        self.tref = worker.timer.call_repeatedly(HEARTBEAT_INTERVAL_S, self._beat, (worker,), priority=10)

    def stop(self, worker: _Worker) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        try:
            res = wiring.resources()
            clear_heartbeat(res.redis, res.keys, worker.hostname)
        except Exception:  # noqa: BLE001 - shutting down anyway
            pass

    shutdown = stop


def create_app() -> Celery:
    """Build the app from this process's settings."""
    celery_app = Celery("vastkeep")
    celery_app.conf.update(celery_config(wiring.settings(), redis_url=wiring.redis_url()))
    celery_app.steps["worker"].add(WorkerHeartbeat)
    celery_app.steps["worker"].add(ConsumptionWatchdog)
    too_long = limits_over_visibility(wiring.settings())
    if too_long:
        log.warning("⚠️  time limit of %s reaches CELERY_VISIBILITY_TIMEOUT_S=%s: Redis would redeliver them "
                    "while they run; raise CELERY_VISIBILITY_TIMEOUT_S or lower PORT_TCP/HTTP_TIMEOUT_MS",
                    ", ".join(too_long), wiring.settings().celery_visibility_timeout_s)
    return celery_app


app = create_app()


@worker_process_init.connect
def _fresh_resources_after_fork(**_: object) -> None:
    """A forked pool process must not reuse the parent's Redis sockets."""
    wiring.reset()


@worker_init.connect
@worker_process_init.connect
def _raise_fd_limit(**_: object) -> None:
    """Each port probe holds one fd: lift the soft RLIMIT_NOFILE to the hard limit before any task runs."""
    soft, hard = raise_nofile_limit()
    log.info("open-file limit: soft %d, hard %d", soft, hard)
