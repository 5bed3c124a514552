"""The shared Vast.ai rate limiter against a real redis-server: slots one gap apart across callers,
per endpoint and key, bounded waits, TTLs, fail-open on a Redis outage, and the client's use of it."""

from __future__ import annotations

import logging
import random
import threading

import pytest
import redis

from tests.fixtures.helpers import race_threads
from tests.fixtures.state import State
from tests.fixtures.vast_stub import STUB_API_KEY
from vastkeep.core.backoff import BackoffPolicy
from vastkeep.core.clock import SYSTEM_CLOCK, FakeClock
from vastkeep.core.errors import RateLimited
from vastkeep.core.settings import load_settings
from vastkeep.providers.http import RetryPolicy
from vastkeep.providers.vast import VastClient
from vastkeep.state import Keys, SharedRateLimiter, key_fingerprint
from vastkeep.state.ratelimit import Reservation
from vastkeep.tokens.manager import TokenManager
from vastkeep.tokens.preflight import vast_client

KEY = "k" * 40


def limiter(redis_client: redis.Redis, clock: FakeClock, **kw) -> SharedRateLimiter:
    return SharedRateLimiter(redis_client, Keys("rt"), clock, server_time=False,
                             **{"min_gap_s": 0.5, **kw})


def test_callers_take_slots_one_gap_apart(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    lim = limiter(redis_client, clock)
    waits = [lim.reserve("GET /instances", "fp1").wait_s for _ in range(4)]
    assert waits == [0.0, 0.5, 1.0, 1.5]  # four workers at once: spaced, in arrival order
    clock.advance(0.75)
    assert lim.reserve("GET /instances", "fp1").wait_s == pytest.approx(1.25)
    clock.advance(10)
    assert lim.reserve("GET /instances", "fp1").wait_s == 0.0  # idle for long: at once again


def test_endpoints_and_keys_have_their_own_slots(redis_client: redis.Redis) -> None:
    lim = limiter(redis_client, FakeClock(), gaps={"PUT /asks/{id}": 2.0, "GET /instances/{id}": 0})
    assert lim.reserve("GET /instances", "fp1").wait_s == 0.0
    assert lim.reserve("GET /instances", "fp2").wait_s == 0.0
    assert lim.reserve("POST /bundles", "fp1").wait_s == 0.0
    assert lim.reserve("PUT /asks/{id}", "fp1").wait_s == 0.0
    assert lim.reserve("PUT /asks/{id}", "fp1").wait_s == 2.0  # its own, longer gap
    for _ in range(3):  # a gap of 0 turns the endpoint's limit off: no key written
        assert lim.reserve("GET /instances/{id}", "fp1").wait_s == 0.0
    assert not redis_client.keys("rt:rate:vast:GET_/instances/_id_*")


def test_wait_turn_sleeps_on_the_clock_and_refuses_waits_past_the_maximum(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    lim = limiter(redis_client, clock, max_wait_s=1.0)
    other = limiter(redis_client, clock, max_wait_s=1.0)  # another worker, same Redis
    assert lim.wait_turn("GET /instances", "fp") == 0.0
    assert other.reserve("GET /instances", "fp").wait_s == 0.5  # taken by the other worker ...
    assert other.reserve("GET /instances", "fp").wait_s == 1.0
    with pytest.raises(RateLimited) as info:  # ... so this one would wait 1.5 s > 1.0: refused
        lim.wait_turn("GET /instances", "fp")
    assert info.value.delay_s == pytest.approx(1.5) and info.value.endpoint == "GET /instances"
    assert clock.sleeps == []  # nothing slept, nothing reserved by the refused call
    assert other.reserve("GET /instances", "fp") == Reservation(False, 1.5, 0.5)
    clock.advance(1.0)
    assert lim.wait_turn("GET /instances", "fp") == pytest.approx(0.5)
    assert clock.sleeps == [pytest.approx(0.5)]


def test_slot_keys_expire_and_hold_no_secret(redis_client: redis.Redis) -> None:
    lim = SharedRateLimiter(redis_client, Keys("rt"), SYSTEM_CLOCK, min_gap_s=0.5)  # Redis TIME
    pacer = lim.for_key(KEY)
    assert pacer.wait_turn("GET /instances") == 0.0
    (slot,) = redis_client.keys("rt:rate:*")
    assert slot == f"rt:rate:vast:GET_/instances:{key_fingerprint(KEY)}" and KEY not in slot
    assert KEY not in repr(pacer) and key_fingerprint(KEY) not in repr(pacer)
    assert 0 < redis_client.pttl(slot) <= 500 + 1000
    waited = lim.reserve("GET /instances", key_fingerprint(KEY)).wait_s  # server time: about one gap
    assert 0.3 < waited <= 0.5


def test_threads_on_the_server_clock_are_spaced(redis_client: redis.Redis) -> None:
    lim = SharedRateLimiter(redis_client, Keys("rt"), SYSTEM_CLOCK, min_gap_s=0.05)
    waits: list[float] = []
    lock = threading.Lock()

    def go() -> None:
        w = lim.reserve("GET /instances", "fp").wait_s
        with lock:
            waits.append(w)

    race_threads(go, [()] * 8)
    waits.sort()
    assert all(b - a > 0.03 for a, b in zip(waits, waits[1:], strict=False)), waits


def test_a_redis_outage_lets_the_call_through_with_a_warning(caplog) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    lim = SharedRateLimiter(dead, Keys("rt"), FakeClock(), min_gap_s=0.5)
    caplog.set_level(logging.WARNING, logger="vastkeep.state")
    assert lim.for_key(KEY).wait_turn("GET /instances") == 0.0
    assert "rate limiter unavailable" in caplog.text and KEY not in caplog.text


@pytest.mark.parametrize("bad", [{"min_gap_s": -1}, {"min_gap_s": float("nan")},
                                 {"min_gap_s": 1, "max_wait_s": -1},
                                 {"min_gap_s": 1, "gaps": {"GET /instances": -2}}])
def test_bad_gaps_are_refused(redis_client: redis.Redis, bad: dict) -> None:
    with pytest.raises(ValueError):
        SharedRateLimiter(redis_client, Keys("rt"), FakeClock(), **bad)


# ── the client: its attempts wait for their slot, its 429 retries wait at least the gap ──────────
def test_client_attempts_take_shared_slots_and_429_retries_wait_at_least_the_gap(
        redis_client: redis.Redis, vast_stub) -> None:
    clock = FakeClock()
    lim = limiter(redis_client, clock, min_gap_s=0.5)
    policy = RetryPolicy(max_attempts=4, backoff=BackoffPolicy(0.1, 10.0))  # no floor of its own
    with VastClient(STUB_API_KEY, vast_stub.url, clock=clock, rng=random.Random(1), retry=policy,
                    pacer=lim.for_key(STUB_API_KEY)) as client:
        vast_stub.fail_next(2, status=429, body="API requests too frequent")
        client.list_instances()
        assert len(vast_stub.calls()) == 3
        # each retry pause: the gap (0.5) + jitter; the slot was then free, so no extra limiter sleep
        assert len(clock.sleeps) == 2 and all(0.5 <= s <= 0.5 + 0.2 for s in clock.sleeps), clock.sleeps
        clock.sleeps.clear()
        vast_stub.fail_next(1, status=429, body="API requests too frequent: endpoint threshold=2")
        client.list_instances()
        # the slot of the first attempt (0.5, after the previous call), then the threshold the body names
        assert clock.sleeps[0] == pytest.approx(0.5) and 2.0 <= clock.sleeps[1] <= 2.2, clock.sleeps
        clock.sleeps.clear()
        client.list_instances()  # back to back: spaced by the threshold the 429 named (+20 %), now shared
        assert clock.sleeps == [pytest.approx(2.4)]
    assert lim.reserve("GET /instances", "another-key").gap_s == pytest.approx(2.4)  # every key and worker


def test_a_larger_threshold_named_by_a_429_is_shared_never_lowered_and_expires(
        redis_client: redis.Redis, caplog) -> None:
    clock = FakeClock()
    lim, other = limiter(redis_client, clock), limiter(redis_client, clock)
    assert lim.learn("PUT /asks/{id}", None) == 0.0 and lim.learn("PUT /asks/{id}", 0.4) == 0.0  # not larger
    assert not redis_client.keys("rt:rate-gap:*")
    caplog.set_level(logging.INFO, logger="vastkeep.state")
    assert lim.learn("PUT /asks/{id}", 1.5) == pytest.approx(1.8)  # 20 % to spare
    assert "named a threshold of 1.50 s" in caplog.text
    assert other.learn("PUT /asks/{id}", 1.0) == pytest.approx(1.8)  # never lowered
    assert other.reserve("PUT /asks/{id}", "fp").gap_s == pytest.approx(1.8)
    assert other.reserve("PUT /asks/{id}", "fp").wait_s == pytest.approx(1.8)  # the other worker too
    assert other.reserve("GET /instances", "fp").gap_s == 0.5  # only that endpoint
    assert lim.learn("PUT /asks/{id}", 3600) == 60.0  # believed only up to a minute
    (gap_key,) = redis_client.keys("rt:rate-gap:*")
    assert gap_key == "rt:rate-gap:vast:PUT_/asks/_id_"
    assert 3_500_000 < redis_client.pttl(gap_key) <= 3_600_000


def test_vast_client_shares_one_limiter_through_the_store(redis_client: redis.Redis, vast_stub) -> None:
    store = State(redis_client, keys=Keys("rt")).store
    env = {"VAST_API_KEY": STUB_API_KEY, "VAST_API_URL": vast_stub.url}
    settings = load_settings(env, env_file=False)
    with vast_client(settings, store, FakeClock()) as client:
        assert client.pacer is not None and client.pacer.gap_s("GET /instances") == 0.5
        client.list_instances()
    assert redis_client.keys("rt:rate:vast:GET_/instances:*")
    off = load_settings({**env, "VAST_API_MIN_GAP_MS": "0"}, env_file=False)
    with vast_client(off, store, FakeClock()) as client:
        assert client.pacer is None


def test_without_a_pacer_a_429_retry_still_waits_at_least_half_a_second(vast_stub) -> None:
    clock = FakeClock()  # the client's default policy: Vast.ai's gap as the 429 floor, jitter on top
    with VastClient(STUB_API_KEY, vast_stub.url, clock=clock, rng=random.Random(7)) as client:
        vast_stub.fail_next(3, status=429, body="API requests too frequent")
        client.list_instances()
    assert len(clock.sleeps) == 3 and all(s >= 0.5 for s in clock.sleeps), clock.sleeps
    assert sum(clock.sleeps) <= 3 * 0.5 + 0.5 + 1.0 + 2.0  # bounded: floor + full jitter per retry


def test_the_vast_token_check_takes_the_shared_slot_of_the_endpoint_it_calls(redis_client: redis.Redis,
                                                                             sim) -> None:
    """The Vast.ai check calls ``GET /instances``, as the poller's list does: unpaced, a check sent just
    after a list drew a 429 from the simulated cloud (its minimum gap on) and an "unknown" verdict (seen at
    every `vastkeep up` start). Fails without the check's pacing."""
    sim.control.set_rate_limit(min_gap_s=0.3)
    store = State(redis_client, keys=Keys("rt-check")).store
    settings = load_settings({**sim.env(), "VAST_API_MIN_GAP_MS": "400"}, env_file=False)
    manager = TokenManager.from_settings(settings, store)
    verdicts = []
    with vast_client(settings, store) as client:
        for _ in range(3):
            client.list_instances()
            verdicts.append(manager.validate_service("vastai", use_cache=False)["status"])
    assert verdicts == ["valid"] * 3
    assert sim.control.rate_limit()["refused"] == 0
