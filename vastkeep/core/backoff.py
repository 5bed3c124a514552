"""Backoff schedules as pure functions.

Plain doubling keeps instances that failed together retrying together (a thundering herd
against a provider that just came back). Every retry in vastkeep therefore sleeps a *full
jitter* delay, ``uniform(0, min(cap, base * multiplier**attempt))`` (AWS architecture blog,
"Exponential Backoff And Jitter"), and its attempt counter is reset only after a session that
stayed up past a gate time (autossh's GATETIME, gRPC's connection-backoff reset rule), so a
link that flaps every few seconds never gets a fresh, short delay.

Everything here is pure: time comes in as numbers, randomness as an explicit ``random.Random``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

# The guide's Layer-1 SSH schedule: 2^min(n - max, 10) seconds, capped at 300 s.
SSH_BACKOFF_UNIT_S = 1.0
SSH_BACKOFF_MAX_EXPONENT = 10
SSH_BACKOFF_CAP_S = 300.0

# The guide's Layer-7 watchdog schedule: 10 s, 20 s, 40 s, then 60 s; stable runs (>60 s) reset it.
RESTART_BASE_S = 10.0
RESTART_CAP_S = 60.0
RESTART_GATE_S = 60.0


@dataclass(frozen=True)
class BackoffPolicy:
    """Exponential backoff bounds: attempt ``n`` may wait up to ``min(cap_s, base_s * multiplier**n)``."""

    base_s: float
    cap_s: float
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not (self.base_s >= 0 and self.cap_s >= 0 and self.multiplier >= 1):
            raise ValueError("BackoffPolicy needs base_s >= 0, cap_s >= 0 and multiplier >= 1")
        if not all(math.isfinite(v) for v in (self.base_s, self.cap_s, self.multiplier)):
            raise ValueError("BackoffPolicy values must be finite")


def _capped_exponential(base: float, multiplier: float, exponent: int, cap: float) -> float:
    """``min(cap, base * multiplier**exponent)`` without overflowing for huge exponents."""
    if exponent <= 0 or base == 0 or multiplier == 1:
        return min(cap, base)
    # Compare in log space first: 2.0 ** 100_000 raises OverflowError.
    if cap <= base or math.log(cap / base) <= exponent * math.log(multiplier):
        return cap
    return min(cap, base * multiplier**exponent)


def backoff_ceiling(attempt: int, policy: BackoffPolicy) -> float:
    """The un-jittered upper bound for ``attempt`` (0-based): what logs and tests reason about."""
    return _capped_exponential(policy.base_s, policy.multiplier, max(0, int(attempt)), policy.cap_s)


def full_jitter(ceiling_s: float, rng: random.Random) -> float:
    """A delay drawn uniformly from ``[0, ceiling_s]``: spreads out callers that failed together."""
    if ceiling_s <= 0:
        return 0.0
    return rng.uniform(0.0, ceiling_s)


def backoff_delay(attempt: int, policy: BackoffPolicy, rng: random.Random) -> float:
    """Full-jitter delay before retry number ``attempt`` (0-based): ``uniform(0, backoff_ceiling)``."""
    return full_jitter(backoff_ceiling(attempt, policy), rng)


def ssh_backoff_ceiling_s(consecutive_failures: int, max_failures: int) -> float:
    """The guide's Layer-1 schedule: ``min(2**min(n - max, 10) * 1 s, 300 s)`` once ``n >= max``.

    Gives 1 → 2 → 4 → … → 256 → 300 s (cap). Below ``max_failures`` the guide adds no extra
    wait (0.0); callers still apply :func:`full_jitter` to whatever this returns.
    """
    over = int(consecutive_failures) - int(max_failures)
    if over < 0:
        return 0.0
    exponent = min(over, SSH_BACKOFF_MAX_EXPONENT)
    return min(SSH_BACKOFF_UNIT_S * 2.0**exponent, SSH_BACKOFF_CAP_S)


@dataclass(frozen=True)
class RestartPolicy:
    """The watchdog schedule: ``base_s * 2^(crashes-1)``, capped at ``cap_s``; reset after a stable run."""

    base_s: float = RESTART_BASE_S
    cap_s: float = RESTART_CAP_S
    stable_after_s: float = RESTART_GATE_S
    max_restarts: int = -1  # -1 = unlimited, as the guide's log collectors


def restart_delay(consecutive_crashes: int, policy: RestartPolicy = RestartPolicy()) -> float:
    """The guide's watchdog schedule: crash 1 → 10 s, 2 → 20 s, 3 → 40 s, 4+ → 60 s; no crash → 0.

    The one restart schedule of vastkeep: the ``vastkeep up`` watchdog and the supervision of the
    logical daemons both call it (the latter adds jitter across daemons on top).
    """
    crashes = int(consecutive_crashes)
    if crashes <= 0:
        return 0.0
    return _capped_exponential(policy.base_s, 2.0, crashes - 1, policy.cap_s)


def failures_after_session(failures: int, uptime_s: float | None, gate_s: float) -> int:
    """The reset-after-gate rule as a pure step.

    A session that stayed up at least ``gate_s`` proves the path works: the counter goes back to
    0 and the next attempt is immediate-ish. A session that died sooner (or never came up,
    ``uptime_s is None``) counts as one more failure, so a flapping link keeps backing off.
    """
    if uptime_s is not None and uptime_s >= gate_s:
        return 0
    return max(0, int(failures)) + 1
