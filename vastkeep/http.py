"""HTTP session factory and a bounded, jittered retry of 429 / 5xx / connection errors.

Providers rate-limit by minimum gap and send no Retry-After (Vast.ai), go 5xx for a minute
during deploys, and drop connections. One helper retries those few times with full-jitter
delays from an injected clock, then maps the last failure onto the error tree, so every
client behaves the same and no secret (headers, keys, query strings) reaches a message or log.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from urllib3.exceptions import NewConnectionError

from vastkeep.backoff import BackoffPolicy, backoff_ceiling, backoff_delay
from vastkeep.clock import Clock
from vastkeep.errors import ConfigError, NetworkError, RateLimited, ServerError

log = logging.getLogger(__name__)

DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({429, *range(500, 600)})
BODY_EXCERPT_CHARS = 200
_RESERVED_ERROR_KEYS = frozenset({"url", "method", "attempts", "reason", "status", "delay_s"})


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts in all (first try included) and the backoff between them."""

    max_attempts: int = 4
    backoff: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(base_s=0.5, cap_s=10.0))

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be >= 1")


def make_session(user_agent: str) -> requests.Session:
    """A session with our User-Agent; keep one per client so connections are pooled."""
    session = requests.Session()
    session.headers["User-Agent"] = user_agent
    return session


def safe_url(url: str) -> str:
    """The URL without credentials, query string or fragment: fit for logs and exceptions."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<unparseable url>"


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request certainly never reached the server (safe to retry a non-idempotent call)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, NewConnectionError):
            return True
        nxt = getattr(cur, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = cur.args[0] if cur.args and isinstance(cur.args[0], BaseException) else None
        cur = nxt or cur.__cause__ or cur.__context__
    return False


def _failure_kind(exc: requests.RequestException) -> str:
    """A short, secret-free name for a transport failure (requests' own text embeds the URL)."""
    if isinstance(exc, requests.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.ReadTimeout):
        return "read timeout"
    if isinstance(exc, requests.ConnectionError):
        return "connection refused" if _never_sent(exc) else "connection error"
    return type(exc).__name__


def body_excerpt(response: requests.Response, redact: Callable[[str], str] | None) -> str:
    """The first characters of a response body, passed through ``redact``; empty without a redactor."""
    if redact is None:
        return ""
    try:
        text = response.text[:BODY_EXCERPT_CHARS]
    except Exception:  # noqa: BLE001 - a body we cannot decode is simply not shown
        return ""
    return redact(text).strip()


def request_with_retry(
    session: requests.Session,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    json: Any = None,
    params: Mapping[str, Any] | None = None,
    timeout_s: tuple[float, float],
    retry: RetryPolicy,
    clock: Clock,
    rng: random.Random,
    retry_on: Container[int] = DEFAULT_RETRY_STATUSES,
    redact: Callable[[str], str] | None = None,
    idempotent: bool = True,
    context: Mapping[str, object] | None = None,
) -> requests.Response:
    """Send one request, retrying 429/5xx/connection errors/timeouts at most ``retry.max_attempts`` times.

    Returns the response for any status not in ``retry_on`` (the caller maps 4xx). After the last
    attempt raises ``RateLimited`` (429), ``ServerError`` (other retryable status) or ``NetworkError``
    (transport), carrying ``url`` (no query), ``method``, ``attempts``, ``status`` and ``context``.
    A non-``idempotent`` call (e.g. renting) is retried only when the server certainly did not act
    on it: a 429, or a connection that never opened.
    """
    where = safe_url(url)
    extra = {k: v for k, v in (context or {}).items() if k not in _RESERVED_ERROR_KEYS}
    attempts = retry.max_attempts
    for attempt in range(attempts):
        last = attempt + 1 >= attempts
        try:
            response = session.request(method, url, headers=dict(headers), json=json, params=params,
                                       timeout=timeout_s)
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            raise ConfigError(f"{method} {where}: not a usable URL ({type(exc).__name__})", url=where,
                              **extra) from None
        except requests.RequestException as exc:
            kind = _failure_kind(exc)
            retryable = idempotent or _never_sent(exc)
            if last or not retryable:
                raise NetworkError(f"{method} {where} failed after {attempt + 1} attempt(s): {kind}",
                                   url=where, method=method, attempts=attempt + 1, reason=kind,
                                   **extra) from None
            _pause(attempt, retry, clock, rng, method, where, kind)
            continue

        status = response.status_code
        if status not in retry_on:
            return response
        retryable = idempotent or status == 429
        if last or not retryable:
            detail = body_excerpt(response, redact)
            suffix = f": {detail}" if detail else ""
            response.close()
            cls = RateLimited if status == 429 else ServerError
            raise cls(f"{method} {where} answered HTTP {status} after {attempt + 1} attempt(s){suffix}",
                      url=where, method=method, attempts=attempt + 1, status=status,
                      delay_s=backoff_ceiling(attempt + 1, retry.backoff), **extra)
        response.close()
        _pause(attempt, retry, clock, rng, method, where, f"HTTP {status}")
    raise AssertionError("unreachable: the loop either returns or raises")  # pragma: no cover


def _pause(attempt: int, retry: RetryPolicy, clock: Clock, rng: random.Random,
           method: str, where: str, why: str) -> None:
    """Sleep a full-jitter delay before the next attempt, and say so (without secrets)."""
    delay = backoff_delay(attempt, retry.backoff, rng)
    log.warning("%s %s: %s (attempt %d/%d), retrying in %.2fs",
                method, where, why, attempt + 1, retry.max_attempts, delay)
    clock.sleep(delay)
