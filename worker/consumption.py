"""The worker's own consumption watchdog: exit when it stopped taking messages from its queues.

After a broker reconnect a Celery worker on Redis can stay alive (heartbeat, remote control) yet consume
nothing (celery#8030, #8082, #10205); no supervisor restarts a process that did not exit. A thread in the
worker's main process samples, every quarter of ``WORKER_STALL_TIMEOUT_MS``: the messages waiting in the
queues the worker was started for (``LLEN`` of each, with kombu's priority lists), how many messages it
has received (``task_received``), and its free pool slots. :func:`vastkeep.supervision.watch_consumption`
decides; a stalled worker logs why and shuts down cold (SIGQUIT, exit code 1), and ``vastkeep up``'s
supervisor, systemd or compose starts a fresh one. A thread, not a timer on the worker's event loop: the
loop itself may be what stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Protocol

from celery import Celery, bootsteps
from celery.signals import task_received
from celery.worker import state as worker_state
from kombu.transport.redis import PRIORITY_STEPS, Channel
from redis import Redis

from vastkeep.core.clock import SYSTEM_CLOCK
from vastkeep.supervision import ConsumptionWatch, watch_consumption
from worker import wiring

log = logging.getLogger("vastkeep.worker")


@task_received.connect
def _count_received(**_: object) -> None:
    """Count a message this worker process received (the consumer runs in the main process)."""
    wiring.resources().received_messages += 1


def queue_keys(queue: str) -> list[str]:
    """The Redis lists kombu keeps one queue in (one per priority step)."""
    return [f"{queue}{Channel.sep}{p}" if p else queue for p in PRIORITY_STEPS]


def backlog(redis: Redis[str], queues: list[str]) -> int:
    pipe = redis.pipeline(transaction=False)
    for q in queues:
        for key in queue_keys(q):
            pipe.llen(key)
    return sum(int(n or 0) for n in pipe.execute())


class _Worker(Protocol):
    """What the watchdog uses of Celery's WorkController (its stub lacks ``hostname`` and ``concurrency``)."""

    hostname: str
    concurrency: int
    app: Celery


class ConsumptionWatchdog(bootsteps.StartStopStep):
    """Starts the watchdog thread with the worker (off when ``WORKER_STALL_TIMEOUT_MS`` is 0)."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: _Worker, **kwargs: object) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: _Worker) -> None:
        timeout_s = wiring.settings().worker_stall_timeout_ms / 1000
        consume_from = worker.app.amqp.queues.consume_from or {}
        queues = sorted(q.name for q in consume_from.values())
        if timeout_s <= 0 or not queues:
            return
        self._thread = threading.Thread(target=self._run, args=(worker, queues, timeout_s), daemon=True,
                                        name="vastkeep-consumption-watchdog")
        self._thread.start()

    def _run(self, worker: _Worker, queues: list[str], timeout_s: float) -> None:
        watch = ConsumptionWatch()
        concurrency = max(1, int(getattr(worker, "concurrency", 1) or 1))
        while not self._stop.wait(max(0.25, timeout_s / 4)):
            try:
                waiting = backlog(wiring.resources().redis, queues)
            except Exception as exc:  # noqa: BLE001 - Redis away: no evidence either way
                log.debug("consumption watchdog: no sample (%s)", type(exc).__name__)
                # the clock starts again once Redis answers: nobody could consume while it was away, and a
                # clock run on through a 60 s outage would shut the worker down at its first sample after
                watch = ConsumptionWatch(watch.received, None)
                continue
            free = concurrency - len(worker_state.reserved_requests)
            watch, stalled = watch_consumption(watch, now_s=SYSTEM_CLOCK.monotonic(), backlog=waiting,
                                               received=wiring.resources().received_messages, free_slots=free,
                                               timeout_s=timeout_s)
            if stalled:
                log.error("worker %s stopped consuming: %d message(s) wait in %s with %d free slot(s) and "
                          "nothing was received for %.0f s; shutting down so its supervisor restarts it",
                          worker.hostname, waiting, ",".join(queues), free, timeout_s)
                os.kill(os.getpid(), signal.SIGQUIT)
                return

    def stop(self, worker: _Worker) -> None:
        self._stop.set()

    shutdown = stop
