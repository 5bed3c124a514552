"""A worker's warm shutdown, told to the long-running daemons it runs, so they hand over instead of waiting.

Celery's warm shutdown (SIGTERM: ``systemctl stop``, Ctrl-C of ``vastkeep up``) waits for running tasks, and
our daemons run for minutes (an SSH collector's hold, a keepalive shard's 300 s run). Celery signals the
shutdown in the worker's main process only: its ``Resources.shutting_down`` is set there, which reaches the
tasks of a threads or solo pool (the SSH worker); prefork children never see it, so the main process also
marks itself stopping in Redis (its pid, under ``Keys.worker_stopping(hostname)``), which
:func:`stopping_check` reads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from celery.signals import worker_shutting_down

from worker import wiring
from worker.wiring import Resources

log = logging.getLogger("vastkeep.worker")

#: How long the Redis mark lives: longer than any warm shutdown (systemd's TimeoutStopSec=120).
STOPPING_TTL_MS = 600_000


@worker_shutting_down.connect
def _on_shutdown(sender: object = None, **_: object) -> None:
    res = wiring.resources()
    res.shutting_down.set()
    try:
        res.redis.set(res.keys.worker_stopping(str(sender)), str(os.getpid()), px=STOPPING_TTL_MS)
    except Exception as exc:  # noqa: BLE001 - stopping anyway; the daemons then end by their own bound
        log.warning("could not mark the worker stopping for its daemons (%s)", type(exc).__name__)


def stopping_check(res: Resources, hostname: str | None) -> Callable[[], bool]:
    """True once this task's worker began its warm shutdown: the in-process event, or the main process's mark
    (our parent under prefork). A restarted worker has another pid, so an old mark never stops it."""
    key = res.keys.worker_stopping(str(hostname))
    mine = {str(os.getppid()), str(os.getpid())}
    return lambda: res.shutting_down.is_set() or res.redis.get(key) in mine


__all__ = ["STOPPING_TTL_MS", "stopping_check"]
