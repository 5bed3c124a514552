"""Beat's scheduler: celery-redbeat's, made to wait out a lost Redis instead of exiting.

redbeat extends its lock at the start of every tick through a redis-py ``Lock``; when Redis restarts, that
call raises ``ConnectionError`` and Celery's beat service treats any exception from ``tick`` as fatal
(``beat raised exception ... ConnectionError``, exit code 1). The soak's ``redis-restart`` saw it every time:
beat came back only because its supervisor restarted it. redbeat's own ``retry_period`` option does not help:
it retries calls on the client, not on the lock it made.

:class:`BeatScheduler` turns a Redis error in ``tick`` into a warning and a short wait
(:data:`REDIS_RETRY_S`), so beat reconnects by itself (redis-py reconnects on the next command). If the lock
lapsed meanwhile (a Redis away for longer than ``redbeat_lock_timeout``, or another beat took it), the
extension is refused (``LockNotOwnedError``): this beat then waits to hold the lock again, as a standby does
at start, and sends nothing until it does, so two beats never both send.

redbeat takes its lock in a ``beat_init`` handler, and Celery's signal dispatch logs a handler's exception
and goes on: a beat started while Redis restarted was left with no lock, and its first tick failed on
``None.extend`` (``AttributeError``, exit code 1; 30-minute soak, seed 280816024). A tick with no lock yet
takes it first, the same blocking way, and sends nothing before. A beat started while Redis is away at all
(its schedule is set up in Redis first) waits for it the same way instead of exiting.
"""

from __future__ import annotations

import logging
import random
import time
from types import SimpleNamespace
from typing import Any

from redbeat.schedulers import RedBeatScheduler, acquire_distributed_beat_lock  # type: ignore[import-untyped]
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("vastkeep.worker")
REDIS_RETRY_S = 2.0


class BeatScheduler(RedBeatScheduler):  # type: ignore[misc]  # redbeat ships no types: an Any base
    """redbeat's scheduler; a Redis outage or a lapsed lock is waited out (module docstring)."""

    def setup_schedule(self) -> None:
        """Redis away at start: wait for it (jittered) rather than exit (the supervisor waits longer)."""
        while True:
            try:
                super().setup_schedule()
                return
            except (RedisConnectionError, RedisTimeoutError) as exc:
                time.sleep(_unavailable(exc))

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if self.lock_key and self.lock is None:
            return self._take_lock()
        try:
            return float(super().tick(*args, **kwargs))
        except (RedisConnectionError, RedisTimeoutError) as exc:
            return _unavailable(exc)
        except LockError:
            return self._hold_lock_again()

    def _hold_lock_again(self) -> float:
        """The lock lapsed: wait (blocking, as redbeat does at start) until this beat holds it again."""
        log.warning("beat: the beat lock lapsed while Redis was away; sending nothing until it is held again")
        try:
            self.lock.acquire()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            return _unavailable(exc)
        log.info("beat: Acquired lock")
        return 0.0


    def _take_lock(self) -> float:
        """No lock yet: ``beat_init`` could not take it (module docstring); take it as it would have."""
        log.warning("beat: no beat lock yet (Redis unavailable at start); taking it before sending anything")
        try:
            acquire_distributed_beat_lock(SimpleNamespace(scheduler=self))
        except (RedisConnectionError, RedisTimeoutError) as exc:
            return _unavailable(exc)
        return 0.0


def _unavailable(exc: Exception) -> float:
    wait_s = random.uniform(REDIS_RETRY_S / 2, REDIS_RETRY_S)  # jittered: beats of many hosts spread out
    log.warning("beat: Redis unavailable (%s); trying again in %.1fs", type(exc).__name__, wait_s)
    return wait_s


__all__ = ["REDIS_RETRY_S", "BeatScheduler"]
