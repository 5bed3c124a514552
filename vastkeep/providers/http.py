"""HTTP session factory and a bounded, jittered retry of 429 / 5xx / connection errors.

Providers rate-limit by minimum gap and send no Retry-After (Vast.ai), go 5xx for a minute
during deploys, and drop connections. One helper retries those few times with full-jitter
delays from an injected clock, then maps the last failure onto the error tree, so every
client behaves the same and no secret (headers, keys, query strings) reaches a message or log; the
retry policy is an object, :class:`RetryingSender`. Bodies are read under a total deadline and a size cap
(:func:`read_body`, in :mod:`vastkeep.providers.body`), because a socket read
timeout alone lets a server that drips bytes hold a caller forever; each attempt as a whole, status line
and headers included, also ends at that deadline (:mod:`vastkeep.providers.deadline`).
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import requests
from urllib3.exceptions import NewConnectionError

from vastkeep.core.backoff import BackoffPolicy, backoff_ceiling, backoff_delay
from vastkeep.core.clock import Clock
from vastkeep.core.errors import ConfigError, MalformedResponse, NetworkError, RateLimited, ServerError
from vastkeep.providers.body import (
    BODY_EXCERPT_CHARS,
    DEADLINE_EXCEEDED,
    DEFAULT_MAX_BODY_BYTES,
    FailureReason,
    body_excerpt,
    read_body,
)
from vastkeep.providers.deadline import DeadlineWatchdog, call_deadline, session_watchdog, watch_session

#: Query parameters of one request.
Params = Mapping[str, str | int | float]

log = logging.getLogger("vastkeep.providers")

DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({429, *range(500, 600)})
ERROR_BODY_BYTES = 64 * 1024  # what we read of a 429/5xx body (only an excerpt is ever shown)


_THRESHOLD_RE = re.compile(r"threshold\s*=\s*([0-9]+(?:\.[0-9]+)?)")
_RESERVED_ERROR_KEYS = frozenset({"url", "method", "attempts", "reason", "status", "delay_s", "maybe_sent"})


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts in all (first try included) and the backoff between them.

    ``rate_limit_floor_s``: a retry after a 429 waits at least this long (a provider's minimum gap
    between calls), plus the full-jitter delay on top; see :func:`rate_limit_floor`.
    """

    max_attempts: int = 4
    backoff: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(base_s=0.5, cap_s=10.0))
    rate_limit_floor_s: float = 0.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be >= 1")
        if not (math.isfinite(self.rate_limit_floor_s) and self.rate_limit_floor_s >= 0):
            raise ValueError("RetryPolicy.rate_limit_floor_s must be a finite number >= 0")


def make_session(user_agent: str, *, watchdog: DeadlineWatchdog | None = None) -> requests.Session:
    """A session with our User-Agent whose calls honour whole-call deadlines (enforced by ``watchdog``, the
    process's shared one, else the session's own); keep one per client so connections are pooled."""
    session = watch_session(requests.Session(), watchdog)
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
        return FailureReason.CONNECT_TIMEOUT
    if isinstance(exc, requests.ReadTimeout):
        return FailureReason.READ_TIMEOUT
    if isinstance(exc, requests.ConnectionError):
        return FailureReason.CONNECTION_REFUSED if _never_sent(exc) else FailureReason.CONNECTION_ERROR
    return type(exc).__name__


@dataclass(frozen=True)
class _Target:
    """One logical call: what every attempt of it sends, and what its errors carry."""

    method: str
    url: str
    where: str  # the URL without its query, for messages
    headers: Mapping[str, str]
    json: object
    params: Params | None
    idempotent: bool
    extra: Mapping[str, object]


@dataclass(frozen=True)
class _Retry:
    """An attempt failed in a way worth another one (transport, deadline, a body that did not arrive)."""

    why: str


@dataclass(frozen=True)
class _Status:
    """An attempt answered a status in ``retry_on`` (429, 5xx), with a redacted excerpt of its body."""

    status: int
    detail: str


@dataclass(frozen=True)
class RetryingSender:
    """The retry policy of one client's calls, as an object: how to send, how long, how often.

    :meth:`send` sends one request, retrying 429/5xx/connection errors/timeouts at most
    ``retry.max_attempts`` times, and returns the response for any status not in ``retry_on`` (the caller
    maps 4xx), its body already read (at most ``max_body_bytes``, else ``MalformedResponse``) within
    ``deadline_s`` per attempt (default: connect + read timeout; a miss is a ``NetworkError`` with reason
    ``deadline exceeded``, retried like any timeout). After the last attempt it raises ``RateLimited`` (429),
    ``ServerError`` (other retryable status) or ``NetworkError`` (transport), carrying ``url`` (no query),
    ``method``, ``attempts``, ``status``, ``context``; a ``NetworkError`` also says ``maybe_sent`` (False
    only when the connection never opened). A non-``idempotent`` call (e.g. renting) is retried only when
    the server certainly did not act on it: a 429, or a connection that never opened. Each attempt as a
    whole (status line, headers, body) ends at its deadline: ``session`` gets a
    :class:`~vastkeep.providers.deadline.DeadlineAdapter` mounted if it lacks one.
    ``before_send`` runs before every attempt (a shared rate limiter waits for its slot there; what it
    raises propagates); a retry after a 429 waits at least :func:`rate_limit_floor`; ``on_rate_limited``
    hears every 429 with its redacted body excerpt (e.g. to share the threshold it names).
    """

    session: requests.Session
    timeout_s: tuple[float, float]
    retry: RetryPolicy
    clock: Clock
    rng: random.Random
    retry_on: Container[int] = DEFAULT_RETRY_STATUSES
    redact: Callable[[str], str] | None = None
    deadline_s: float | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    before_send: Callable[[], object] | None = None
    on_rate_limited: Callable[[str], object] | None = None

    def send(self, method: str, url: str, *, headers: Mapping[str, str], json: object = None,
             params: Params | None = None, idempotent: bool = True,
             context: Mapping[str, object] | None = None) -> requests.Response:
        """One logical call (see the class); returns the response or raises from the error tree."""
        extra = {k: v for k, v in (context or {}).items() if k not in _RESERVED_ERROR_KEYS}
        target = _Target(method, url, safe_url(url), headers, json, params, idempotent, extra)
        budget_s = float(self.deadline_s) if self.deadline_s is not None else \
            float(self.timeout_s[0]) + float(self.timeout_s[1])
        watch_session(self.session)
        attempts = self.retry.max_attempts
        for attempt in range(attempts):
            last = attempt + 1 >= attempts
            if self.before_send is not None:
                self.before_send()
            outcome = self._attempt(target, attempt, last, budget_s)
            if isinstance(outcome, requests.Response):
                return outcome
            if isinstance(outcome, _Retry):  # pause outside the deadline: the next attempt gets its own
                _pause(attempt, self.retry, self.clock, self.rng, method, target.where, outcome.why)
                continue
            self._answered(target, attempt, last, outcome)
        raise AssertionError("unreachable: the loop either returns or raises")  # pragma: no cover

    def _attempt(self, target: _Target, attempt: int, last: bool,
                 budget_s: float) -> requests.Response | _Retry | _Status:
        """One attempt under one deadline (headers, body, excerpt); raises what must not be retried."""
        # the connect itself cannot be interrupted: never let it wait longer than the whole budget
        timeouts = (min(float(self.timeout_s[0]), budget_s), float(self.timeout_s[1]))
        deadline = self.clock.monotonic() + budget_s
        with call_deadline(budget_s, session_watchdog(self.session, target.url)) as call:
            try:
                response = self.session.request(target.method, target.url, headers=dict(target.headers),
                                                json=target.json, params=target.params, timeout=timeouts,
                                                stream=True)
            except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                    requests.exceptions.InvalidSchema) as exc:
                raise ConfigError(f"{target.method} {target.where}: not a usable URL ({type(exc).__name__})",
                                  url=target.where, **target.extra) from None
            except requests.RequestException as exc:
                sent = not _never_sent(exc)
                kind = DEADLINE_EXCEEDED if call.expired else _failure_kind(exc)
                if last or (sent and not target.idempotent):
                    raise _network_error(target, attempt, kind, maybe_sent=sent) from None
                return _Retry(kind)
            status = response.status_code
            if status in self.retry_on:
                detail = _error_excerpt(response, self.redact, deadline, self.clock)
                response.close()
                return _Status(status, detail)
            try:
                read_body(response, deadline=deadline, clock=self.clock, limit_bytes=self.max_body_bytes)
                if call.expired:  # shut mid-body: what was read may look complete but is not
                    raise NetworkError("the body did not arrive before the deadline",
                                       reason=DEADLINE_EXCEEDED)
            except MalformedResponse as exc:
                response.close()
                raise MalformedResponse(
                    f"{target.method} {target.where} answered HTTP {status}: {exc.message}", url=target.where,
                    method=target.method, status=status, reason=exc.data["reason"], **target.extra) from None
            except NetworkError as exc:
                response.close()
                kind = DEADLINE_EXCEEDED if call.expired else str(exc.data["reason"])
                if last or not target.idempotent:
                    raise _network_error(target, attempt, kind, maybe_sent=True, status=status) from None
                return _Retry(kind)
            return response

    def _answered(self, target: _Target, attempt: int, last: bool, answer: _Status) -> None:
        """A 429/5xx: raise after the last attempt (or for a call not safe to repeat), else pause."""
        status, detail = answer.status, answer.detail
        retryable = target.idempotent or status == 429
        floor_s = rate_limit_floor(status, detail, self.retry)
        if status == 429 and self.on_rate_limited is not None:
            self.on_rate_limited(detail)
        if last or not retryable:
            suffix = f": {detail}" if detail else ""
            cls = RateLimited if status == 429 else ServerError
            # delay_s bounds the caller's own jittered wait (tasks.base.retry_delay_s): not a floor.
            raise cls(f"{target.method} {target.where} answered HTTP {status} after {attempt + 1} attempt(s)"
                      f"{suffix}", url=target.where, method=target.method, attempts=attempt + 1,
                      status=status, delay_s=max(backoff_ceiling(attempt + 1, self.retry.backoff), floor_s),
                      **target.extra)
        _pause(attempt, self.retry, self.clock, self.rng, target.method, target.where, f"HTTP {status}",
               floor_s=floor_s)


def _network_error(target: _Target, attempt: int, kind: str, *, maybe_sent: bool,
                   status: int | None = None) -> NetworkError:
    """The transport failure after ``attempt + 1`` attempts (no secret: the URL carries no query)."""
    data: dict[str, object] = {"url": target.where, "method": target.method, "attempts": attempt + 1,
                               "reason": kind}
    if status is not None:
        data["status"] = status
    return NetworkError(f"{target.method} {target.where} failed after {attempt + 1} attempt(s): {kind}",
                        **data, maybe_sent=maybe_sent, **target.extra)


def request_with_retry(
    session: requests.Session,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    json: object = None,
    params: Params | None = None,
    timeout_s: tuple[float, float],
    retry: RetryPolicy,
    clock: Clock,
    rng: random.Random,
    retry_on: Container[int] = DEFAULT_RETRY_STATUSES,
    redact: Callable[[str], str] | None = None,
    idempotent: bool = True,
    context: Mapping[str, object] | None = None,
    deadline_s: float | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    before_send: Callable[[], object] | None = None,
    on_rate_limited: Callable[[str], object] | None = None,
) -> requests.Response:
    """:meth:`RetryingSender.send` in one call (kept for callers of this name)."""
    sender = RetryingSender(session, timeout_s, retry, clock, rng, retry_on=retry_on, redact=redact,
                            deadline_s=deadline_s, max_body_bytes=max_body_bytes, before_send=before_send,
                            on_rate_limited=on_rate_limited)
    return sender.send(method, url, headers=headers, json=json, params=params, idempotent=idempotent,
                       context=context)


def _error_excerpt(response: requests.Response, redact: Callable[[str], str] | None, deadline: float,
                   clock: Clock) -> str:
    """A redacted excerpt of a 429/5xx body, read within the deadline and a small cap; "" on any trouble."""
    if redact is None:
        return ""
    try:
        read_body(response, deadline=deadline, clock=clock, limit_bytes=ERROR_BODY_BYTES)
    except (NetworkError, MalformedResponse):
        return ""
    return body_excerpt(response, redact)


def threshold_s(text: str) -> float | None:
    """The seconds in Vast.ai's 429 body ``API requests too frequent: endpoint threshold=N``, else None."""
    found = _THRESHOLD_RE.search(text or "")
    return float(found.group(1)) if found else None


def rate_limit_floor(status: int, detail: str, retry: RetryPolicy) -> float:
    """The least a retry after ``status`` waits: for a 429, the policy's floor or the threshold the body
    names, whichever is larger, bounded by the backoff cap (never an hour because a body says so); else 0."""
    if status != 429:
        return 0.0
    named = threshold_s(detail) or 0.0
    return min(max(retry.rate_limit_floor_s, named), max(retry.rate_limit_floor_s, retry.backoff.cap_s))


def _pause(attempt: int, retry: RetryPolicy, clock: Clock, rng: random.Random,
           method: str, where: str, why: str, floor_s: float = 0.0) -> None:
    """Sleep ``floor_s`` plus a full-jitter delay before the next attempt, and say so (without secrets)."""
    delay = floor_s + backoff_delay(attempt, retry.backoff, rng)
    log.warning("%s %s: %s (attempt %d/%d), retrying in %.2fs",
                method, where, why, attempt + 1, retry.max_attempts, delay)
    clock.sleep(delay)


__all__ = [
    "BODY_EXCERPT_CHARS", "DEADLINE_EXCEEDED", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_RETRY_STATUSES",
    "ERROR_BODY_BYTES", "FailureReason", "Params", "RetryPolicy", "RetryingSender", "body_excerpt",
    "make_session", "rate_limit_floor", "read_body", "request_with_retry", "safe_url", "threshold_s",
]
