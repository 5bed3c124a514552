"""The simulated Vast.ai rate limit: a minimum gap between two calls to one endpoint with one key.

Vast.ai limits each endpoint (method + route) per caller as a minimum interval between requests, and
answers a call that comes too soon with ``429`` and a plain-text body, ``API requests too frequent:
endpoint threshold=N`` (N in seconds), without a Retry-After header. A simulator without that rule lets
a client that retries 20 ms later, or eight workers that list instances at the same moment, pass every
test and fail against the real API. This module is the rule, pure: time comes in as numbers (the
simulator passes its clock's ``monotonic()``), so it is tested with a fake clock; the simulator's
middleware asks :meth:`MinGapRule.check` once per Vast.ai request.

Only accepted calls move an endpoint's clock: a refused call does not push the next allowed time
further out (the gentler reading of "a minimum interval between requests"; a client that keeps
hammering still sees 429 until it waits the gap).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from vastkeep.sim.faults import TOO_FREQUENT

API_PREFIX = "/api/v0"
MAX_GAP_S = 3600.0
_ID_SEGMENT = re.compile(r"/\d+(?=/|$)")
_ENDPOINT_RE = re.compile(r"^[A-Z]+ /\S*$")
_PRUNE_AT = 10_000  # (endpoint, caller) entries kept before old ones are dropped


def endpoint_of(method: str, path: str) -> str:
    """The endpoint a request belongs to: ``PUT /api/v0/asks/617/`` → ``PUT /asks/{id}``.

    Numeric path segments become ``{id}`` (one endpoint for every instance), the ``/api/v0`` prefix
    and a trailing slash are dropped (``/instances`` and ``/instances/`` are one endpoint, so a slash
    does not buy a second allowance); ``/api/v1/...`` keeps its prefix, a different endpoint.
    """
    if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
        path = path[len(API_PREFIX):]
    path = _ID_SEGMENT.sub("/{id}", path).rstrip("/") or "/"
    return f"{method.upper()} {path}"


def too_frequent(gap_s: float) -> str:
    """The 429 body Vast.ai sends: ``API requests too frequent: endpoint threshold=0.5``."""
    return f"{TOO_FREQUENT}: endpoint threshold={gap_s:g}"


def _gap(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number of seconds")
    gap = float(value)
    if not math.isfinite(gap) or not 0 <= gap <= MAX_GAP_S:
        raise ValueError(f"{what} must be between 0 and {MAX_GAP_S:g} seconds")
    return gap


class MinGapRule:
    """Per (endpoint, caller) the time of the last accepted call, and the gap each endpoint demands.

    ``min_gap_s`` applies to every endpoint (0 = no limit); ``endpoints`` overrides it per endpoint
    name as :func:`endpoint_of` writes it (``{"GET /instances": 1.0}``). :meth:`reset` goes back to
    the values given here.
    """

    def __init__(self, min_gap_s: float = 0.0, endpoints: Mapping[str, float] | None = None) -> None:
        self.min_gap_s = 0.0
        self.endpoints: dict[str, float] = {}
        self.configure(min_gap_s, endpoints or {})
        self._initial = (self.min_gap_s, dict(self.endpoints))
        self._last: dict[tuple[str, str], float] = {}
        self.refused = 0

    def configure(self, min_gap_s: float | None = None,
                  endpoints: Mapping[str, float] | None = None) -> None:
        """Change the default gap and/or replace the per-endpoint gaps (validated: all or nothing)."""
        default = self.min_gap_s if min_gap_s is None else _gap(min_gap_s, "min_gap_s")
        table = dict(self.endpoints)
        if endpoints is not None:
            if not isinstance(endpoints, Mapping):
                raise ValueError("endpoints must map 'METHOD /path' to seconds")
            table = {}
            for name, value in endpoints.items():
                if not isinstance(name, str) or not _ENDPOINT_RE.match(name):
                    raise ValueError(f"endpoint names look like 'GET /instances/{{id}}', got {name!r}")
                method, _, path = name.partition(" ")
                table[endpoint_of(method, path)] = _gap(value, f"the gap of {name}")
        self.min_gap_s, self.endpoints = default, table

    def gap_for(self, endpoint: str) -> float:
        """Seconds that must pass between two calls to ``endpoint`` by one caller."""
        return self.endpoints.get(endpoint, self.min_gap_s)

    def check(self, method: str, path: str, caller: str, now: float) -> str | None:
        """None when the call may proceed (and it is recorded), else the 429 body to answer with."""
        endpoint = endpoint_of(method, path)
        gap = self.gap_for(endpoint)
        if gap <= 0:
            return None
        slot = (endpoint, caller)
        last = self._last.get(slot)
        if last is not None and now - last < gap:
            self.refused += 1
            return too_frequent(gap)
        if len(self._last) >= _PRUNE_AT:
            self._prune(now)
        self._last[slot] = now
        return None

    def _prune(self, now: float) -> None:
        """Forget callers whose last call is older than the longest gap (they may call again anyway)."""
        longest = max([self.min_gap_s, *self.endpoints.values()])
        self._last = {k: t for k, t in self._last.items() if now - t < longest}

    def reset(self) -> None:
        """Back to the start-up gaps, no history, no refusals counted."""
        self.min_gap_s, self.endpoints = self._initial[0], dict(self._initial[1])
        self._last.clear()
        self.refused = 0

    def as_dict(self) -> dict[str, object]:
        """What the control API shows: the gaps and how many calls were refused so far."""
        return {"min_gap_s": self.min_gap_s, "endpoints": dict(self.endpoints), "refused": self.refused}


__all__ = ["MinGapRule", "endpoint_of", "too_frequent"]
