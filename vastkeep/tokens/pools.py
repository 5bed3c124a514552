"""Where token checks run: bounded thread pools per service, and the shared pace of the Vast.ai key.

A provider that hangs must cost a bounded number of threads and never queue another provider's checks; the
Vast.ai check calls the endpoint the poller lists instances with, so it takes its turn in the same
Redis-backed pace as every other call made with that key.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.providers.vast import endpoint_name
from vastkeep.state import KeyPacer, SharedRateLimiter
from vastkeep.tokens.checks import SERVICES

CHECK_POOL_SIZE = 8  # threads per service for token checks in one process, however many are asked for
MAX_CHECK_THREADS = CHECK_POOL_SIZE * len(SERVICES)  # the most token-check threads a process ever has
#: what the Vast.ai token check calls (``GET /instances``): paced with the client's calls to the same endpoint
VAST_CHECK_ENDPOINT = endpoint_name("GET", "/instances")


class CheckPools:
    """Bounded thread pools for token checks, one per service, each made on first use.

    Bounded so that repeated validations against a provider that hangs cannot grow threads without
    limit; one pool per service so that checks hung on one provider never queue another provider's
    checks behind them. A check ends by its own whole-call deadline (``run_check``), headers included,
    so it frees its thread then; one still queued when its caller's deadline passes is cancelled.
    Share one per process (the worker's wiring, the admin app): managers are built per request and per
    task. Threads do not survive ``fork()``: a process that forks builds its own after the fork.
    """

    def __init__(self, size: int = CHECK_POOL_SIZE) -> None:
        self.size = int(size)
        self._lock = threading.Lock()
        self._pools: dict[str, ThreadPoolExecutor] = {}

    def for_service(self, service: str) -> ThreadPoolExecutor:
        """The bounded pool of ``service``'s checks."""
        with self._lock:
            pool = self._pools.get(service)
            if pool is None:
                pool = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix=f"token-check-{service}")
                self._pools[service] = pool
            return pool

    def shutdown(self) -> None:
        """Stop taking checks; queued ones are cancelled, running ones end by their own deadline."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)


def key_pacer(store: object, min_gap_s: float, key: str, clock: Clock = SYSTEM_CLOCK) -> KeyPacer | None:
    """The Redis-backed pace of ``key`` (by fingerprint) on the store's Redis, shared by every worker; None
    when the gap is 0 or the store has no Redis."""
    redis_client = getattr(store, "redis", None)
    if min_gap_s <= 0 or redis_client is None:
        return None
    limiter = SharedRateLimiter(redis_client, getattr(store, "keys", None), clock, min_gap_s=min_gap_s)
    return limiter.for_key(key)


__all__ = ["CHECK_POOL_SIZE", "MAX_CHECK_THREADS", "VAST_CHECK_ENDPOINT", "CheckPools", "key_pacer"]
