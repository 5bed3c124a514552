"""Pure parts of Vast.ai rate-limit handling on the client side: endpoint names, the 429 threshold, the
retry floor after a 429."""

from __future__ import annotations

import pytest

from vastkeep.core.backoff import BackoffPolicy
from vastkeep.providers.http import RetryPolicy, rate_limit_floor, threshold_s
from vastkeep.providers.vast import endpoint_name
from vastkeep.state.keys import Keys
from vastkeep.state.ratelimit import key_fingerprint


@pytest.mark.parametrize("method,path,name", [
    ("GET", "/instances", "GET /instances"),
    ("GET", "/instances/7835610/", "GET /instances/{id}"),
    ("put", "/asks/617/", "PUT /asks/{id}"),
    ("DELETE", "/instances/5/", "DELETE /instances/{id}"),
    ("POST", "/bundles/", "POST /bundles"),
])
def test_endpoint_name_is_method_and_route(method: str, path: str, name: str) -> None:
    assert endpoint_name(method, path) == name


@pytest.mark.parametrize("text,seconds", [
    ("API requests too frequent: endpoint threshold=2", 2.0),
    ("API requests too frequent: endpoint threshold=0.5", 0.5),
    ("API requests too frequent: endpoint threshold = 1.25 ", 1.25),
    ("API requests too frequent", None),
    ("", None),
    ("threshold=abc", None),
])
def test_threshold_is_read_from_the_429_body(text: str, seconds: float | None) -> None:
    assert threshold_s(text) == seconds


def test_the_floor_is_the_policy_gap_or_the_named_threshold_and_only_for_429() -> None:
    policy = RetryPolicy(max_attempts=4, backoff=BackoffPolicy(0.5, 10.0), rate_limit_floor_s=0.5)
    assert rate_limit_floor(429, "API requests too frequent", policy) == 0.5
    assert rate_limit_floor(429, "API requests too frequent: endpoint threshold=2", policy) == 2.0
    assert rate_limit_floor(429, "API requests too frequent: endpoint threshold=0.1", policy) == 0.5
    assert rate_limit_floor(503, "threshold=2", policy) == 0.0
    # bounded: a body naming an hour waits the backoff cap, not an hour
    assert rate_limit_floor(429, "endpoint threshold=3600", policy) == 10.0
    assert rate_limit_floor(429, "", RetryPolicy()) == 0.0  # no floor configured, nothing named


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_a_bad_floor_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="rate_limit_floor_s"):
        RetryPolicy(rate_limit_floor_s=bad)


def test_slot_keys_carry_a_fingerprint_never_the_key() -> None:
    secret = "a" * 64
    fp = key_fingerprint(secret)
    assert len(fp) == 16 and fp == key_fingerprint(secret) and fp != key_fingerprint(secret + "b")
    key = Keys("vk").rate_slot("vast", "PUT /asks/{id}", fp)
    assert key == f"vk:rate:vast:PUT_/asks/_id_:{fp}" and secret not in key
    assert Keys("vk").rate_slot_pattern() == "vk:rate:*"


def test_vast_api_min_gap_ms_defaults_to_half_a_second_and_zero_turns_it_off() -> None:
    from vastkeep.core.errors import ConfigError  # noqa: PLC0415
    from vastkeep.core.settings import load_settings  # noqa: PLC0415

    assert load_settings({}, env_file=False).vast_api_min_gap_s == 0.5
    assert load_settings({"VAST_API_MIN_GAP_MS": "0"}, env_file=False).vast_api_min_gap_ms == 0
    for bad in ("-1", "fast", "60001"):
        with pytest.raises(ConfigError) as info:
            load_settings({"VAST_API_MIN_GAP_MS": bad}, env_file=False)
        assert info.value.variable == "VAST_API_MIN_GAP_MS" and "expected milliseconds" in str(info.value)
