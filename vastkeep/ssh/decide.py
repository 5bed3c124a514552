"""What the collector does after a failure or a session (pure, table-tested).

The guide's Layer 1 schedule is ``min(2^min(n - max, 10) s, 300 s)`` once ``n`` reaches
``SSH_MAX_CONSECUTIVE_FAILURES``; with its default of 999999 that formula would never wait at all, so
vastkeep counts the exponent from the first failure (1 s, 2 s, 4 s … 256 s, 300 s), draws the delay with
**full jitter** (``uniform(0, ceiling)``: instances that lost SSH together do not retry together), and when
``n`` reaches ``SSH_MAX_CONSECUTIVE_FAILURES`` it keeps retrying at the 300 s cap instead of giving up.
The failure count returns to 0 only after a session that stayed up past a gate time
(``SSH_BACKOFF_GATE_S``), so a link that flaps every few seconds keeps backing off.

A healthy link that drops (no failures counted) reconnects **at once**, unless it drops in a **herd**: when
at least :data:`HERD_DROPS` instances' sessions (a shared count in Redis,
:func:`vastkeep.ssh.drops.record_drop`) fall within ``SSH_RECONNECT_WINDOW_S``, each waits
``uniform(0, window)`` (200 links dropped by one host or proxy then reconnect at ~20 handshakes/s instead of
in one instant). A flapping link keeps its full-jitter backoff, and in a herd the larger of the two bounds,
so it never reconnects sooner than a healthy link would.
"""

from __future__ import annotations

import random

from vastkeep.core.backoff import (
    SSH_BACKOFF_CAP_S,
    failures_after_session,
    full_jitter,
    ssh_backoff_ceiling_s,
)

__all__ = ["HERD_DROPS", "RECONNECT_WINDOW_S", "backing_off_line", "backoff_ceiling_s", "backoff_delay_s",
           "failures_after", "is_herd", "reconnect_ceiling_s", "reconnect_delay_s", "use_fallback"]

#: A herd's reconnects spread over ``uniform(0, RECONNECT_WINDOW_S)`` (``SSH_RECONNECT_WINDOW_S``): when a
#: host or the proxy drops 200 links at once, their handshakes come at ~20/s instead of in one instant.
#: bench/bench_ssh_herd.py measures it.
RECONNECT_WINDOW_S = 10.0
#: Instances whose SSH session dropped within the window that make a herd: fewer reconnect at once.
HERD_DROPS = 5


def backoff_ceiling_s(failures: int, max_failures: int) -> float:
    """The un-jittered bound after ``failures`` consecutive failures (0 → no wait)."""
    n = int(failures)
    if n <= 0:
        return 0.0
    if n >= int(max_failures):
        return SSH_BACKOFF_CAP_S
    return ssh_backoff_ceiling_s(n, 1)


def backoff_delay_s(failures: int, max_failures: int, rng: random.Random) -> float:
    """The jittered wait before the next connection attempt."""
    return full_jitter(backoff_ceiling_s(failures, max_failures), rng)


def is_herd(recent_drops: int, herd_drops: int = HERD_DROPS) -> bool:
    """Many links dropped within the window (this one included): spread the reconnects."""
    return int(recent_drops) >= max(1, int(herd_drops))


def reconnect_ceiling_s(failures: int, max_failures: int, recent_drops: int = 0,
                        window_s: float = RECONNECT_WINDOW_S, herd_drops: int = HERD_DROPS) -> float:
    """The bound of the wait before reconnecting: the backoff after failures (0 for a healthy link), raised
    to the window in a herd."""
    ceiling = backoff_ceiling_s(failures, max_failures)
    return max(ceiling, float(window_s)) if is_herd(recent_drops, herd_drops) else ceiling


def reconnect_delay_s(failures: int, max_failures: int, rng: random.Random, recent_drops: int = 0,
                      window_s: float = RECONNECT_WINDOW_S, herd_drops: int = HERD_DROPS) -> float:
    """The wait before reconnecting: ``uniform(0, reconnect_ceiling_s(...))`` (a lone healthy drop: 0)."""
    return full_jitter(reconnect_ceiling_s(failures, max_failures, recent_drops, window_s, herd_drops), rng)


def failures_after(failures: int, uptime_s: float | None, gate_s: float) -> int:
    """The failure count after a session that lasted ``uptime_s`` (None: never connected)."""
    return failures_after_session(failures, uptime_s, gate_s)


def backing_off_line(failures: int, delay_s: float) -> str:
    """The guide's log line, e.g. ``[LogCollector] 10 consecutive failures, backing off 32s before retry``."""
    return f"[LogCollector] {int(failures)} consecutive failures, backing off {round(delay_s)}s before retry"


def use_fallback(ssh_down_since: float | None, now: float, fallback_after_s: float) -> bool:
    """True when no SSH route has worked for ``fallback_after_s``: read the provider's log API instead."""
    return ssh_down_since is not None and now - ssh_down_since >= fallback_after_s
