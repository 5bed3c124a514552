"""Per-process resources for tasks: settings, Redis client, keys, store, events, clock.

Built lazily on first use and rebuilt in every forked pool process (``worker_process_init``
calls :func:`reset`; a pid check catches forks that skip the signal), because a Redis connection
pool inherited across ``fork()`` shares sockets between processes. Settings are loaded once per
process. Tests point everything elsewhere with :func:`configure`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import redis

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.settings import Settings, load_settings
from vastkeep.state.connection import connect
from vastkeep.state.keys import Keys
from worker.config import resolve_redis_url

_lock = threading.RLock()
_settings: Settings | None = None
_redis_url: str | None = None
_clock: Clock = SYSTEM_CLOCK
_keys_prefix = "vastkeep"
_resources: Resources | None = None


@dataclass
class Resources:
    """What a task needs, built once per process. ``store``/``events`` are built on first access."""

    settings: Settings
    redis: redis.Redis
    keys: Keys
    clock: Clock
    pid: int = field(default_factory=os.getpid)

    @cached_property
    def store(self) -> Any:
        """The shared ``vastkeep.state.store.StateStore``."""
        from vastkeep.state.store import StateStore  # noqa: PLC0415 - optional until the store module exists

        return StateStore(self.redis, self.keys, self.clock,
                          default_desired_size=self.settings.warm_pool_desired_size)

    @cached_property
    def events(self) -> Any:
        """The shared ``vastkeep.state.events.EventLog``."""
        from vastkeep.state.events import EventLog  # noqa: PLC0415

        return EventLog(self.redis, self.keys, self.clock)

    def close(self) -> None:
        """Drop the connection pool (safe to call in a child after fork)."""
        with contextlib.suppress(Exception):  # best effort on teardown
            self.redis.connection_pool.disconnect()


def settings() -> Settings:
    """This process's settings, loaded once from the environment (and .env)."""
    global _settings
    with _lock:
        if _settings is None:
            _settings = load_settings()
        return _settings


def redis_url() -> str:
    """The Redis URL tasks and the Celery app use in this process."""
    with _lock:
        return _redis_url or resolve_redis_url(settings())


def resources() -> Resources:
    """The per-process bundle; rebuilt when the pid changed (fork)."""
    global _resources
    with _lock:
        if _resources is not None and _resources.pid != os.getpid():
            _resources = None  # inherited from the parent: never reuse its sockets
        if _resources is None:
            _resources = Resources(settings=settings(), redis=connect(redis_url()),
                                   keys=Keys(_keys_prefix), clock=_clock)
        return _resources


def reset() -> None:
    """Forget the bundle (``worker_process_init``, tests); the next ``resources()`` builds a new one."""
    global _resources
    with _lock:
        if _resources is not None and _resources.pid == os.getpid():
            _resources.close()
        _resources = None


def configure(settings: Settings | None = None, *, redis_url: str | None = None, clock: Clock | None = None,
              keys_prefix: str | None = None) -> None:
    """Replace this process's settings/Redis/clock (tests, embedding). Resets the bundle."""
    global _settings, _redis_url, _clock, _keys_prefix
    with _lock:
        if settings is not None:
            _settings = settings
        if redis_url is not None:
            _redis_url = redis_url
        if clock is not None:
            _clock = clock
        if keys_prefix is not None:
            _keys_prefix = keys_prefix
        reset()
