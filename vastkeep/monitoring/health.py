"""Health checks shared by ``/health`` (admin API) and ``vastkeep check`` (CLI): one set, two front ends.

Each check costs a fixed number of Redis calls whatever the number of instances or keys (PING; the
heartbeats hash read by name), because ``/health`` is unauthenticated and polled by load balancers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import redis as redis_py

from vastkeep.core.clock import Clock
from vastkeep.state import Keys, read_heartbeats

#: A client made with or without ``decode_responses``.
Redis = Union["redis_py.Redis[str]", "redis_py.Redis[bytes]"]

#: a worker heartbeat older than this fails the worker check (workers write one every 15 s)
WORKER_MAX_AGE_S = 60.0


@dataclass(frozen=True)
class Check:
    """One check's verdict: ``name`` (``redis``, ``workers``), ``ok`` and a line for humans."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, object]:
        """Plain JSON for ``/health``."""
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def check_redis(client: Redis | None) -> Check:
    """PING: one call. Every failure means "down"; its type is enough to say why (no URL, no secret)."""
    if client is None:
        return Check("redis", False, "redis not configured")
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001 - report, never raise
        return Check("redis", False, f"redis does not answer ({type(exc).__name__})")
    return Check("redis", True, "redis answers PING")


def check_workers(client: Redis, keys: Keys, clock: Clock, expected: Sequence[str] | None = None, *,
                  max_age_s: float = WORKER_MAX_AGE_S) -> Check:
    """Every ``expected`` worker (or, without a list, at least one) has a fresh heartbeat: two calls."""
    try:
        beats = read_heartbeats(client, keys, clock, list(expected) if expected else None,
                                max_age_s=max_age_s)
    except Exception as exc:  # noqa: BLE001 - report, never raise
        return Check("workers", False, f"heartbeats unreadable ({type(exc).__name__})")
    workers = sorted(n for n, b in beats.items() if b.get("kind") == "worker")
    if expected:
        missing = [n for n in expected if n not in beats]
        if missing:
            return Check("workers", False, f"no fresh heartbeat from worker(s): {', '.join(missing)}")
        return Check("workers", True, f"workers alive: {', '.join(expected)}")
    if workers:
        return Check("workers", True, f"workers alive: {', '.join(workers)}")
    return Check("workers", False, "no worker has a fresh heartbeat")


def run_checks(client: Redis | None, keys: Keys, clock: Clock, *,
               expected_workers: Sequence[str] | None = None,
               max_age_s: float = WORKER_MAX_AGE_S) -> list[Check]:
    """Redis, then the workers (skipped when Redis is down: nothing else can be read)."""
    redis_check = check_redis(client)
    if not redis_check.ok or client is None:
        return [redis_check]
    return [redis_check, check_workers(client, keys, clock, expected_workers, max_age_s=max_age_s)]


__all__ = ["WORKER_MAX_AGE_S", "Redis", "Check", "check_redis", "check_workers", "run_checks"]
