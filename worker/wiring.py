"""Per-process resources for tasks: one :class:`Resources` object per process, rebuilt after ``fork()``.

Everything a task hands the library (settings, Redis clients, keys, store, events, clock, the bounded
token-check threads, the HTTP deadline watchdog, private keys read once) lives on that object and
reaches the library as plain parameters. A Redis connection pool or a thread inherited across
``fork()`` shares sockets or does not exist, so a forked pool process starts afresh:
``os.register_at_fork`` drops the parent's bundle in the child (without touching its sockets),
Celery's ``worker_process_init`` calls :func:`reset`, and a pid check catches anything that forks
around both. Tests point everything elsewhere with :func:`configure`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import paramiko
from redis import Redis

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.settings import Settings, load_settings
from vastkeep.providers.deadline import DeadlineWatchdog
from vastkeep.ssh import load_private_key
from vastkeep.state.connection import connect
from vastkeep.state.events import EventLog
from vastkeep.state.keys import Keys
from vastkeep.state.store import StateStore
from vastkeep.tokens import CheckPools, TokenManager
from worker.config import resolve_redis_url

DEFAULT_KEYS_PREFIX = "vastkeep"
#: how long the admin API's broker pre-check may take before a request is answered 503
BROKER_CHECK_TIMEOUT_S = 1.0


@dataclass
class Resources:
    """What a task needs, built once per process; the Redis-backed parts connect on first use."""

    settings: Settings
    redis_url: str
    redis: Redis[str]
    keys: Keys
    clock: Clock
    check_pools: CheckPools = field(default_factory=CheckPools)
    deadline_watchdog: DeadlineWatchdog = field(default_factory=DeadlineWatchdog)
    #: messages this worker process received (``task_received``), what its consumption watchdog watches
    received_messages: int = 0
    #: the guide's once-per-process start lines already logged ("[Polling] Starting ...", "[Keepalive] ...")
    announced: set[str] = field(default_factory=set)
    #: set in a worker's main process when its warm shutdown begins (tasks/shutdown.py)
    shutting_down: threading.Event = field(default_factory=threading.Event)
    pid: int = field(default_factory=os.getpid)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _private_keys: dict[str, paramiko.PKey] = field(default_factory=dict, repr=False)

    @cached_property
    def store(self) -> StateStore:
        """The shared state store on this process's Redis client."""
        return StateStore(self.redis, self.keys, self.clock,
                          default_desired_size=self.settings.warm_pool_desired_size)

    @cached_property
    def events(self) -> EventLog:
        """The shared event stream."""
        return EventLog(self.redis, self.keys, self.clock)

    @cached_property
    def raw_redis(self) -> Redis[bytes]:
        """A bytes client on the same Redis (log lines are raw bytes)."""
        return connect(self.redis_url, decode_responses=False)

    @cached_property
    def broker_probe(self) -> Redis[bytes]:
        """A client with short timeouts and no retries, only for the admin API's broker pre-check."""
        return Redis.from_url(self.redis_url, socket_timeout=BROKER_CHECK_TIMEOUT_S,
                              socket_connect_timeout=BROKER_CHECK_TIMEOUT_S, retry=None)

    def token_manager(self) -> TokenManager:
        """A token manager on this process's store, events, check threads and deadline watchdog."""
        return TokenManager.from_settings(self.settings, self.store, events=self.events, clock=self.clock,
                                          pools=self.check_pools, watchdog=self.deadline_watchdog)

    def private_key(self, path: Path) -> paramiko.PKey:
        """The SSH private key at ``path``, read once per process (its content never leaves it)."""
        with self._lock:
            key = self._private_keys.get(str(path))
            if key is None:
                key = self._private_keys[str(path)] = load_private_key(path)
            return key

    def close(self) -> None:
        """Drop the connection pools and the check pools (only in the process that built them)."""
        with contextlib.suppress(Exception):  # best effort on teardown
            self.redis.connection_pool.disconnect()
        for extra in ("raw_redis", "broker_probe"):
            client = self.__dict__.get(extra)
            if client is not None:
                with contextlib.suppress(Exception):
                    client.connection_pool.disconnect()
        self.check_pools.shutdown()


@dataclass(frozen=True)
class _Config:
    """What :func:`configure` may override; the rest comes from the environment once per process."""

    settings: Settings | None = None
    redis_url: str | None = None
    clock: Clock = SYSTEM_CLOCK
    keys_prefix: str = DEFAULT_KEYS_PREFIX


class _Process:
    """This process's configuration and its one :class:`Resources` bundle, behind one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.config = _Config()
        self.bundle: Resources | None = None

    def after_fork_in_child(self) -> None:
        """The parent's bundle holds its sockets and thread pools: forget it, never close it here."""
        self.lock = threading.RLock()
        self.bundle = None


_PROCESS = _Process()
os.register_at_fork(after_in_child=_PROCESS.after_fork_in_child)


def settings() -> Settings:
    """This process's settings, loaded once from the environment (and .env)."""
    with _PROCESS.lock:
        loaded = _PROCESS.config.settings
        if loaded is None:
            loaded = load_settings()
            _PROCESS.config = replace(_PROCESS.config, settings=loaded)
        return loaded


def redis_url() -> str:
    """The Redis URL tasks and the Celery app use in this process."""
    with _PROCESS.lock:
        return _PROCESS.config.redis_url or resolve_redis_url(settings())


def resources() -> Resources:
    """The per-process bundle; rebuilt when the pid changed (fork)."""
    with _PROCESS.lock:
        bundle = _PROCESS.bundle
        if bundle is None or bundle.pid != os.getpid():  # inherited from the parent: never reuse its sockets
            url = redis_url()
            bundle = Resources(settings=settings(), redis_url=url, redis=connect(url),
                               keys=Keys(_PROCESS.config.keys_prefix), clock=_PROCESS.config.clock)
            _PROCESS.bundle = bundle
        return bundle


def reset() -> None:
    """Forget the bundle (``worker_process_init``, tests); the next ``resources()`` builds a new one."""
    with _PROCESS.lock:
        bundle, _PROCESS.bundle = _PROCESS.bundle, None
    if bundle is not None and bundle.pid == os.getpid():
        bundle.close()


def configure(settings: Settings | None = None, *, redis_url: str | None = None, clock: Clock | None = None,
              keys_prefix: str | None = None) -> None:
    """Replace this process's settings/Redis/clock (tests, embedding). Resets the bundle."""
    with _PROCESS.lock:
        config = _PROCESS.config
        _PROCESS.config = _Config(
            settings=settings if settings is not None else config.settings,
            redis_url=redis_url if redis_url is not None else config.redis_url,
            clock=clock if clock is not None else config.clock,
            keys_prefix=keys_prefix if keys_prefix is not None else config.keys_prefix)
        reset()
