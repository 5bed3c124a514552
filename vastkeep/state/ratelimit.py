"""One rate limiter for every worker on every host: a "next allowed time" per (endpoint, key) in Redis.

Vast.ai enforces a minimum gap between two calls to one endpoint with one key and answers a call that
comes sooner with ``429 API requests too frequent`` (no Retry-After). Workers that each keep their own
pace still collide: eight processes listing instances in the same second see seven 429s. So the pace is
kept where every worker sees it: one Redis key per (service, endpoint, key fingerprint) holding the next
free slot. A caller reserves the slot atomically in Lua (the slot moves one gap further), learns how long
it must wait, and sleeps that long on the injected clock before sending. Callers are thereby spaced one
gap apart, in arrival order, across processes and hosts.

- Time comes from the Redis server's ``TIME`` (one time base, so hosts whose clocks differ still agree);
  ``server_time=False`` uses the injected clock instead (tests drive it with ``FakeClock``).
- A wait longer than ``max_wait_s`` is not reserved: :meth:`SharedRateLimiter.wait_turn` raises
  ``RateLimited`` (transient, ``delay_s`` = the wait) so a task retries later instead of blocking a worker.
- The API key never reaches Redis, a log or an error: only :func:`key_fingerprint`, a one-way hash.
- A 429 that names a larger threshold than ours (``endpoint threshold=N``) is remembered per endpoint for
  every worker (:meth:`SharedRateLimiter.learn`, an hour), so one refused call re-spaces all of them.
- A Redis error does not stop the call (fail open, with a warning): the provider's own 429 and the
  client's retry still protect it, and a Redis outage is reported by the health checks.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import redis

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.errors import RateLimited
from vastkeep.state.connection import RedisClient
from vastkeep.state.keys import RATE_GAP_LEARNED_TTL_MS, RATE_SLOT_GRACE_MS, Keys

log = logging.getLogger("vastkeep.state")

DEFAULT_MAX_WAIT_S = 10.0  # a caller never sleeps longer than this for its slot (else RateLimited)
MAX_LEARNED_GAP_S = 60.0  # a 429 naming more than this is believed only up to here
LEARNED_GAP_FACTOR = 1.2  # a named threshold is kept with 20 % to spare: calls arrive with jitter
KEY_FINGERPRINT_CHARS = 16
_HERE = Path(__file__).parent
_RESERVE_LUA = (_HERE / "ratelimit_reserve.lua").read_text(encoding="utf-8")
_LEARN_LUA = (_HERE / "ratelimit_learn.lua").read_text(encoding="utf-8")
_US = 1_000_000


def key_fingerprint(secret: str) -> str:
    """A one-way tag of an API key: the same key gives the same slot, Redis never sees the key."""
    return hashlib.sha256(b"vastkeep-rate:" + secret.encode()).hexdigest()[:KEY_FINGERPRINT_CHARS]


@dataclass(frozen=True)
class Reservation:
    """The answer of one reservation: ``granted`` (the slot is ours after ``wait_s``) or not (too far);
    ``gap_s`` the gap in force (ours, or a larger one a 429 named)."""

    granted: bool
    wait_s: float
    gap_s: float = 0.0


def _seconds(value: float, what: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{what} must be a finite number of seconds >= 0, got {value!r}")
    return number


class SharedRateLimiter:
    """Per (endpoint, key) a minimum gap between calls, kept in Redis for every process that shares it.

    ``min_gap_s`` is the gap of every endpoint (0 = no limit), ``gaps`` overrides it per endpoint name
    (``"GET /instances"``, ``"PUT /instances/{id}"``: method + route template, as the client names them).
    """

    def __init__(self, redis_client: RedisClient, keys: Keys | None = None, clock: Clock = SYSTEM_CLOCK, *,
                 min_gap_s: float, gaps: Mapping[str, float] | None = None,
                 max_wait_s: float = DEFAULT_MAX_WAIT_S, service: str = "vast",
                 server_time: bool = True) -> None:
        self.redis = redis_client
        self.keys = keys or Keys()
        self.clock = clock
        self.min_gap_s = _seconds(min_gap_s, "min_gap_s")
        self.gaps = {name: _seconds(v, f"the gap of {name}") for name, v in (gaps or {}).items()}
        self.max_wait_s = _seconds(max_wait_s, "max_wait_s")
        self.service = service
        self.server_time = server_time
        self._reserve = redis_client.register_script(_RESERVE_LUA)
        self._learn = redis_client.register_script(_LEARN_LUA)

    def __repr__(self) -> str:
        return f"SharedRateLimiter(service={self.service!r}, min_gap_s={self.min_gap_s:g})"

    def gap_s(self, endpoint: str) -> float:
        """The configured minimum gap between two calls to ``endpoint`` with one key (0 = not limited)."""
        return self.gaps.get(endpoint, self.min_gap_s)

    def reserve(self, endpoint: str, key_fp: str) -> Reservation:
        """Take the next free slot of (endpoint, key) if it is at most ``max_wait_s`` away (one Lua call)."""
        gap = self.gap_s(endpoint)
        if gap <= 0:
            return Reservation(True, 0.0)
        now = "" if self.server_time else str(int(self.clock.now() * _US))
        granted, wait_us, gap_us = self._reserve(
            keys=[self.keys.rate_slot(self.service, endpoint, key_fp),
                  self.keys.rate_gap(self.service, endpoint)],
            args=[int(gap * _US), int(self.max_wait_s * _US), now, RATE_SLOT_GRACE_MS])
        return Reservation(bool(int(granted)), int(wait_us) / _US, int(gap_us) / _US)

    def learn(self, endpoint: str, threshold_s: float | None) -> float:
        """A 429 named ``threshold_s`` for ``endpoint``: when larger than our gap, every worker keeps it, 20 %
        to spare (the arrival times of calls spaced exactly by it jitter), from now on (for
        RATE_GAP_LEARNED_TTL_MS, at most MAX_LEARNED_GAP_S). Returns the learned gap in force (0.0 when
        nothing was learned); a Redis error is logged and ignored."""
        gap = self.gap_s(endpoint)
        if threshold_s is None or gap <= 0 or not math.isfinite(threshold_s) or threshold_s <= gap:
            return 0.0
        wanted = min(threshold_s * LEARNED_GAP_FACTOR, MAX_LEARNED_GAP_S)
        try:
            in_force = int(self._learn(keys=[self.keys.rate_gap(self.service, endpoint)],
                                       args=[int(wanted * _US), RATE_GAP_LEARNED_TTL_MS])) / _US
        except redis.RedisError as exc:
            log.warning("rate limiter unavailable for %s %s (%s): threshold %.2f s not shared",
                        self.service, endpoint, type(exc).__name__, wanted)
            return 0.0
        log.info("%s %s: the provider named a threshold of %.2f s (ours: %.2f s); every worker keeps %.2f s",
                 self.service, endpoint, threshold_s, gap, in_force)
        return in_force

    def wait_turn(self, endpoint: str, key_fp: str) -> float:
        """Block (on the clock) until this caller's slot, and return the seconds waited.

        Raises ``RateLimited`` (transient, ``delay_s`` = the wait) when the slot is further away than
        ``max_wait_s``: the caller gives its worker back and retries later. A Redis error lets the call
        go at once (logged): pacing is a courtesy to the provider, not a reason to fail.
        """
        try:
            slot = self.reserve(endpoint, key_fp)
        except redis.RedisError as exc:
            log.warning("rate limiter unavailable for %s %s (%s): calling without the shared pace",
                        self.service, endpoint, type(exc).__name__)
            return 0.0
        if not slot.granted:
            raise RateLimited(f"{self.service} {endpoint}: the next free call slot is {slot.wait_s:.1f} s "
                              f"away (more than {self.max_wait_s:g} s)", endpoint=endpoint,
                              delay_s=slot.wait_s, reason="shared rate limit")
        if slot.wait_s > 0:
            self.clock.sleep(slot.wait_s)
        return slot.wait_s

    def for_key(self, secret: str) -> KeyPacer:
        """The limiter bound to one API key (by fingerprint): what a client is given."""
        return KeyPacer(self, key_fingerprint(secret))


class KeyPacer:
    """A :class:`SharedRateLimiter` bound to one key's fingerprint (never the key): a client's pacing hook."""

    __slots__ = ("_fp", "limiter")

    def __init__(self, limiter: SharedRateLimiter, key_fp: str) -> None:
        self.limiter = limiter
        self._fp = key_fp

    def __repr__(self) -> str:
        return f"KeyPacer({self.limiter!r})"

    def gap_s(self, endpoint: str) -> float:
        """The minimum gap of ``endpoint``: a retry after a 429 waits at least this long."""
        return self.limiter.gap_s(endpoint)

    def wait_turn(self, endpoint: str) -> float:
        """Wait for this key's next slot on ``endpoint`` (see :meth:`SharedRateLimiter.wait_turn`)."""
        return self.limiter.wait_turn(endpoint, self._fp)

    def learn(self, endpoint: str, threshold_s: float | None) -> float:
        """Share a larger threshold a 429 named (see :meth:`SharedRateLimiter.learn`)."""
        return self.limiter.learn(endpoint, threshold_s)


__all__ = ["DEFAULT_MAX_WAIT_S", "LEARNED_GAP_FACTOR", "MAX_LEARNED_GAP_S", "KeyPacer", "Reservation",
           "SharedRateLimiter", "key_fingerprint"]
