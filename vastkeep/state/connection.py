"""Redis connections that never block forever and ride out a blip.

Every client gets a socket timeout, a connect timeout and a health check, and retries connection
errors a few times with full-jitter backoff (``uniform(0, min(cap, base·2^n))``) so that many
workers losing Redis together do not reconnect in lockstep. Commands that a retry could apply
twice are made safe at their source: lease acquisition is idempotent per owner.
"""

from __future__ import annotations

from typing import TypeAlias, overload

import redis
from redis.backoff import FullJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from vastkeep.core.settings import redact_url

SOCKET_TIMEOUT_S = 5.0
SOCKET_CONNECT_TIMEOUT_S = 5.0
HEALTH_CHECK_INTERVAL_S = 15
RETRY_ATTEMPTS = 3
RETRY_BASE_S = 0.05
RETRY_CAP_S = 1.0


#: A client made with or without ``decode_responses``: the library reads replies through :func:`as_text`.
RedisClient: TypeAlias = "redis.Redis[str] | redis.Redis[bytes]"


@overload
def as_text(value: str | bytes) -> str: ...
@overload
def as_text(value: str | bytes | None) -> str | None: ...
def as_text(value: str | bytes | None) -> str | None:
    """A reply as text: clients made with or without ``decode_responses`` both work with the library."""
    return value.decode() if isinstance(value, bytes) else value


def make_retry(
    attempts: int = RETRY_ATTEMPTS, base_s: float = RETRY_BASE_S, cap_s: float = RETRY_CAP_S
) -> Retry:
    """redis-py ``Retry`` with full jitter, retrying connection errors and timeouts only."""
    return Retry(FullJitterBackoff(cap=cap_s, base=base_s), attempts,
                 supported_errors=(RedisConnectionError, RedisTimeoutError, TimeoutError, ConnectionError))


def connect(
    url: str,
    *,
    decode_responses: bool = True,
    socket_timeout_s: float = SOCKET_TIMEOUT_S,
    socket_connect_timeout_s: float = SOCKET_CONNECT_TIMEOUT_S,
    health_check_interval_s: int = HEALTH_CHECK_INTERVAL_S,
    retry_attempts: int = RETRY_ATTEMPTS,
) -> RedisClient:
    """A client for ``url`` (redis://, rediss://, unix://) with timeouts, health checks and jittered retry.

    No I/O happens here; the first command connects. ``socket_timeout_s`` must exceed any
    blocking command's own timeout (e.g. XREAD BLOCK) you plan to issue on this client.
    """
    if not url or url.split("://", 1)[0] not in ("redis", "rediss", "unix"):
        raise ValueError(f"not a Redis URL: {redact_url(url)!r}")
    extra = {} if url.startswith("unix://") else {"socket_keepalive": True}  # TCP only
    # decode_responses is a bool here, not the Literal each overload of the stub wants: either kind results
    client: RedisClient = redis.Redis.from_url(  # type: ignore[call-overload]
        url,
        decode_responses=decode_responses,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_connect_timeout_s,
        health_check_interval=health_check_interval_s,
        retry=make_retry(retry_attempts),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        **extra,
    )
    return client


def describe(client: RedisClient) -> str:
    """Where a client points, with any password redacted (for logs and ``vastkeep status``)."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


__all__ = ["RedisClient", "as_text", "connect", "describe", "make_retry"]
