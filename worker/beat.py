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
"""

from __future__ import annotations

import logging
from typing import Any

from redbeat.schedulers import RedBeatScheduler  # type: ignore[import-untyped]
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("vastkeep.worker")
REDIS_RETRY_S = 2.0


class BeatScheduler(RedBeatScheduler):  # type: ignore[misc]  # redbeat ships no types: an Any base
    """redbeat's scheduler; a Redis outage or a lapsed lock is waited out (module docstring)."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
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


def _unavailable(exc: Exception) -> float:
    log.warning("beat: Redis unavailable (%s); trying again in %.0fs", type(exc).__name__, REDIS_RETRY_S)
    return REDIS_RETRY_S


__all__ = ["REDIS_RETRY_S", "BeatScheduler"]
