"""The simulator's Vast.ai rate-limit rule (pure): a minimum gap per endpoint and key, on a fake clock."""

from __future__ import annotations

import pytest

from vastkeep.core.clock import FakeClock
from vastkeep.sim.ratelimit import MinGapRule, endpoint_of, too_frequent


@pytest.mark.parametrize("method,path,endpoint", [
    ("GET", "/api/v0/instances", "GET /instances"),
    ("GET", "/api/v0/instances/", "GET /instances"),
    ("get", "/api/v0/instances/7835610/", "GET /instances/{id}"),
    ("PUT", "/api/v0/asks/617/", "PUT /asks/{id}"),
    ("PUT", "/api/v0/instances/request_logs/42/", "PUT /instances/request_logs/{id}"),
    ("GET", "/api/v1/instances/", "GET /api/v1/instances"),
    ("POST", "/api/v0/bundles/", "POST /bundles"),
    ("GET", "/api/v0/instances/12abc/", "GET /instances/12abc"),
])
def test_endpoint_names_fold_ids_prefix_and_trailing_slash(method: str, path: str, endpoint: str) -> None:
    assert endpoint_of(method, path) == endpoint


def test_the_429_body_names_the_threshold_in_seconds() -> None:
    assert too_frequent(0.5) == "API requests too frequent: endpoint threshold=0.5"
    assert too_frequent(2.0) == "API requests too frequent: endpoint threshold=2"


def test_a_second_call_within_the_gap_is_refused_and_one_after_it_passes() -> None:
    clock = FakeClock()
    rule = MinGapRule(0.5)
    assert rule.check("GET", "/api/v0/instances", "key-a", clock.monotonic()) is None
    clock.advance(0.49)
    assert rule.check("GET", "/api/v0/instances/", "key-a", clock.monotonic()) == too_frequent(0.5)
    clock.advance(0.01)
    assert rule.check("GET", "/api/v0/instances", "key-a", clock.monotonic()) is None
    assert rule.refused == 1


def test_a_refused_call_does_not_move_the_clock() -> None:
    clock = FakeClock()
    rule = MinGapRule(1.0)
    assert rule.check("GET", "/api/v0/instances", "k", clock.monotonic()) is None
    for _ in range(9):
        clock.advance(0.1)
        assert rule.check("GET", "/api/v0/instances", "k", clock.monotonic()) is not None
    clock.advance(0.1)  # 1.0 s after the accepted call, whatever was refused in between
    assert rule.check("GET", "/api/v0/instances", "k", clock.monotonic()) is None


def test_endpoints_and_keys_are_counted_apart() -> None:
    rule = MinGapRule(1.0)
    now = 100.0
    assert rule.check("GET", "/api/v0/instances", "k1", now) is None
    assert rule.check("GET", "/api/v0/instances", "k2", now) is None  # another key
    assert rule.check("GET", "/api/v0/instances/5/", "k1", now) is None  # another endpoint
    assert rule.check("PUT", "/api/v0/instances/5/", "k1", now) is None  # another method
    assert rule.check("GET", "/api/v0/instances/6/", "k1", now) is not None  # same route, another id
    assert rule.refused == 1


def test_per_endpoint_gaps_override_the_default_and_zero_turns_the_rule_off() -> None:
    rule = MinGapRule(0.0, {"PUT /asks/{id}/": 2.0})
    assert rule.gap_for("PUT /asks/{id}") == 2.0 and rule.gap_for("GET /instances") == 0.0
    for _ in range(5):
        assert rule.check("GET", "/api/v0/instances", "k", 0.0) is None
    assert rule.check("PUT", "/api/v0/asks/1/", "k", 0.0) is None
    assert rule.check("PUT", "/api/v0/asks/2/", "k", 1.9) == too_frequent(2.0)


@pytest.mark.parametrize("min_gap_s,endpoints", [
    (-1, None), (float("nan"), None), (True, None), ("1", None), (4000, None),
    (None, {"instances": 1.0}), (None, {"GET /instances": -1}), (None, ["GET /instances"]),
])
def test_bad_configuration_is_refused_and_changes_nothing(min_gap_s, endpoints) -> None:
    rule = MinGapRule(0.5, {"GET /instances": 1.0})
    with pytest.raises(ValueError):
        rule.configure(min_gap_s, endpoints)
    assert rule.as_dict() == {"min_gap_s": 0.5, "endpoints": {"GET /instances": 1.0}, "refused": 0}


def test_reset_restores_the_start_up_gaps_and_forgets_history() -> None:
    rule = MinGapRule(0.5)
    rule.configure(3.0, {"GET /instances": 9.0})
    assert rule.check("GET", "/api/v0/instances", "k", 0.0) is None
    assert rule.check("GET", "/api/v0/instances", "k", 1.0) is not None
    rule.reset()
    assert rule.as_dict() == {"min_gap_s": 0.5, "endpoints": {}, "refused": 0}
    assert rule.check("GET", "/api/v0/instances", "k", 1.0) is None


def test_old_callers_are_pruned_so_the_table_stays_bounded() -> None:
    rule = MinGapRule(1.0)
    for i in range(10_000):
        rule.check("GET", "/api/v0/instances", f"k{i}", 0.0)
    rule.check("GET", "/api/v0/instances", "late", 5.0)
    assert len(rule._last) == 1
