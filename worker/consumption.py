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
from typing import Any

from celery import bootsteps
from celery.signals import task_received
from celery.worker import state as worker_state
from kombu.transport.redis import PRIORITY_STEPS, Channel

from vastkeep.core.clock import SYSTEM_CLOCK
from vastkeep.supervision import ConsumptionWatch, watch_consumption
from worker import wiring

log = logging.getLogger("vastkeep.worker")
_received = [0]  # messages this worker process has received (the consumer runs in the main process)


@task_received.connect
def _count_received(**_: Any) -> None:
    _received[0] += 1


def queue_keys(queue: str) -> list[str]:
    """The Redis lists kombu keeps one queue in (one per priority step)."""
    return [f"{queue}{Channel.sep}{p}" if p else queue for p in PRIORITY_STEPS]


def backlog(redis: Any, queues: list[str]) -> int:
    pipe = redis.pipeline(transaction=False)
    for q in queues:
        for key in queue_keys(q):
            pipe.llen(key)
    return sum(int(n or 0) for n in pipe.execute())


class ConsumptionWatchdog(bootsteps.StartStopStep):
    """Starts the watchdog thread with the worker (off when ``WORKER_STALL_TIMEOUT_MS`` is 0)."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        timeout_s = wiring.settings().worker_stall_timeout_ms / 1000
        consume_from = worker.app.amqp.queues.consume_from or {}
        queues = sorted(q.name for q in consume_from.values())
        if timeout_s <= 0 or not queues:
            return
        self._thread = threading.Thread(target=self._run, args=(worker, queues, timeout_s), daemon=True,
                                        name="vastkeep-consumption-watchdog")
        self._thread.start()

    def _run(self, worker: Any, queues: list[str], timeout_s: float) -> None:
        watch = ConsumptionWatch()
        concurrency = max(1, int(getattr(worker, "concurrency", 1) or 1))
        while not self._stop.wait(max(0.25, timeout_s / 4)):
            try:
                waiting = backlog(wiring.resources().redis, queues)
            except Exception as exc:  # noqa: BLE001 - Redis away: no evidence either way
                log.debug("consumption watchdog: no sample (%s)", type(exc).__name__)
                continue
            free = concurrency - len(worker_state.reserved_requests)
            watch, stalled = watch_consumption(watch, now_s=SYSTEM_CLOCK.monotonic(), backlog=waiting,
                                               received=_received[0], free_slots=free, timeout_s=timeout_s)
            if stalled:
                log.error("worker %s stopped consuming: %d message(s) wait in %s with %d free slot(s) and "
                          "nothing was received for %.0f s; shutting down so its supervisor restarts it",
                          worker.hostname, waiting, ",".join(queues), free, timeout_s)
                os.kill(os.getpid(), signal.SIGQUIT)
                return

    def stop(self, worker: Any) -> None:
        self._stop.set()

    shutdown = stop
