"""Backoff schedules: table-driven, pure, no clock needed."""

from __future__ import annotations

import random
import statistics

import pytest

from vastkeep.core.backoff import (
    BackoffPolicy,
    RestartPolicy,
    backoff_ceiling,
    backoff_delay,
    failures_after_session,
    full_jitter,
    restart_delay,
    ssh_backoff_ceiling_s,
)

POLICY = BackoffPolicy(base_s=0.5, cap_s=10.0)


@pytest.mark.parametrize(
    ("attempt", "policy", "expected"),
    [
        (0, POLICY, 0.5),
        (1, POLICY, 1.0),
        (2, POLICY, 2.0),
        (4, POLICY, 8.0),
        (5, POLICY, 10.0),  # 16 capped at 10
        (-3, POLICY, 0.5),  # negative attempts behave as the first
        (10**6, POLICY, 10.0),  # 2.0 ** 10**6 would overflow
        (10**18, POLICY, 10.0),
        (3, BackoffPolicy(base_s=1.0, cap_s=100.0, multiplier=3.0), 27.0),
        (7, BackoffPolicy(base_s=1.0, cap_s=100.0, multiplier=3.0), 100.0),
        (9, BackoffPolicy(base_s=2.0, cap_s=5.0, multiplier=1.0), 2.0),  # constant backoff
        (0, BackoffPolicy(base_s=20.0, cap_s=5.0), 5.0),  # cap below base wins
        (50, BackoffPolicy(base_s=0.0, cap_s=5.0), 0.0),
    ],
)
def test_backoff_ceiling_table(attempt: int, policy: BackoffPolicy, expected: float) -> None:
    assert backoff_ceiling(attempt, policy) == pytest.approx(expected)


@pytest.mark.parametrize("attempt", [0, 1, 3, 6, 50, 10**9])
def test_backoff_delay_is_full_jitter_within_ceiling(attempt: int) -> None:
    rng = random.Random(attempt)
    ceiling = backoff_ceiling(attempt, POLICY)
    delays = [backoff_delay(attempt, POLICY, rng) for _ in range(2000)]
    assert all(0.0 <= d <= ceiling for d in delays)
    # Full jitter: spread over the whole [0, ceiling] range, mean near ceiling/2.
    assert min(delays) < 0.05 * ceiling
    assert max(delays) > 0.95 * ceiling
    assert statistics.fmean(delays) == pytest.approx(ceiling / 2, rel=0.08)


def test_backoff_delay_is_deterministic_for_a_seed_and_differs_between_callers() -> None:
    a = [backoff_delay(n, POLICY, random.Random(7)) for n in range(6)]
    b = [backoff_delay(n, POLICY, random.Random(7)) for n in range(6)]
    c = [backoff_delay(n, POLICY, random.Random(8)) for n in range(6)]
    assert a == b
    assert a != c  # two instances failing together do not retry in lockstep


@pytest.mark.parametrize("ceiling", [0.0, -1.0])
def test_full_jitter_of_nothing_is_zero(ceiling: float) -> None:
    assert full_jitter(ceiling, random.Random(1)) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [dict(base_s=-1, cap_s=1), dict(base_s=1, cap_s=-1), dict(base_s=1, cap_s=1, multiplier=0.5),
     dict(base_s=float("inf"), cap_s=1), dict(base_s=1, cap_s=float("nan"))],
)
def test_policy_rejects_nonsense(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(**kwargs)


def test_policy_is_frozen() -> None:
    with pytest.raises(AttributeError):
        POLICY.base_s = 3.0  # type: ignore[misc]


# The guide, Layer 1: "1s → 2s → 4s → 8s → 16s → 32s → 64s → 128s → 256s → 300s (max)".
@pytest.mark.parametrize(
    ("failures", "max_failures", "expected"),
    [
        (4, 5, 0.0),  # below the limit: no extra wait
        (0, 0, 1.0),
        (5, 5, 1.0),
        (6, 5, 2.0),
        (7, 5, 4.0),
        (8, 5, 8.0),
        (9, 5, 16.0),
        (10, 5, 32.0),  # the guide's log line: "10 consecutive failures, backing off 32s"
        (11, 5, 64.0),
        (12, 5, 128.0),
        (13, 5, 256.0),
        (14, 5, 300.0),  # 512 capped
        (15, 5, 300.0),  # exponent capped at 10 (1024) then 300
        (10**12, 5, 300.0),
        (999_999, 999_999, 1.0),  # the default limit
        (3, 999_999, 0.0),
    ],
)
def test_ssh_backoff_schedule_matches_the_guide(failures: int, max_failures: int, expected: float) -> None:
    assert ssh_backoff_ceiling_s(failures, max_failures) == expected


def test_ssh_schedule_sequence() -> None:
    seq = [ssh_backoff_ceiling_s(n, 0) for n in range(11)]
    assert seq == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]


# The guide, Layer 7: 10 s, 20 s, 40 s, then 60 s.
@pytest.mark.parametrize(
    ("crashes", "expected"),
    [(0, 0.0), (-1, 0.0), (1, 10.0), (2, 20.0), (3, 40.0), (4, 60.0), (5, 60.0), (10**9, 60.0)],
)
def test_restart_delay_matches_the_guide(crashes: int, expected: float) -> None:
    assert restart_delay(crashes) == expected


def test_restart_delay_custom_bounds() -> None:
    assert [restart_delay(n, RestartPolicy(base_s=1, cap_s=5)) for n in range(1, 6)] == [1, 2, 4, 5, 5]


@pytest.mark.parametrize(
    ("failures", "uptime_s", "gate_s", "expected"),
    [
        (0, None, 60, 1),  # never came up
        (4, None, 60, 5),
        (4, 59.9, 60, 5),  # died before the gate: still failing
        (4, 60.0, 60, 0),  # stayed up to the gate: reset
        (9, 3600.0, 60, 0),
        (-2, None, 60, 1),
    ],
)
def test_failures_after_session(failures: int, uptime_s: float | None, gate_s: float, expected: int) -> None:
    assert failures_after_session(failures, uptime_s, gate_s) == expected
