"""Layer 4 decisions, table-driven: the guide's counters and alert rules, suspect mode, the fast path."""

from __future__ import annotations

import pytest

from vastkeep.core.clock import FakeClock
from vastkeep.keepalive import (
    CONNECTION_CLOSED,
    PING_FAILURES,
    KeepalivePolicy,
    KeepaliveState,
    after_close,
    after_ping,
    pool_view,
    shard_of,
    status_view,
)
from vastkeep.keepalive.decide import first_ping_at

GUIDE = KeepalivePolicy(interval_s=30, timeout_s=5, max_failures=5)


def run(outcomes: list[bool], policy: KeepalivePolicy = GUIDE) -> tuple[KeepaliveState, list[str]]:
    state, kinds, now = KeepaliveState(), [], 1000.0
    for ok in outcomes:
        state, signals = after_ping(state, ok, None if ok else "timeout", now, policy)
        kinds += [s.kind for s in signals]
        now = state.next_ping_at or now
    return state, kinds


@pytest.mark.parametrize(("outcomes", "kinds", "failures", "lost"), [
    ([True, True], [], 0, False),
    ([False], ["ping-failure"], 1, False),
    ([False] * 4, ["ping-failure"] * 4, 4, False),
    ([False] * 5, ["ping-failure"] * 5 + ["connection-lost"], 5, True),
    ([False] * 7, ["ping-failure"] * 5 + ["connection-lost"] + ["ping-failure"] * 2, 7, True),  # lost once
    ([False] * 5 + [True], ["ping-failure"] * 5 + ["connection-lost", "connection-restored"], 0, False),
    ([False] * 4 + [True] + [False] * 4, ["ping-failure"] * 8, 4, False),  # a success resets the count
    ([False, True] * 10, ["ping-failure"] * 10, 0, False),  # flapping below the threshold never alerts
])
def test_the_guides_counters(outcomes, kinds, failures, lost):
    state, seen = run(outcomes)
    assert seen == kinds
    assert (state.consecutive_failures, state.lost) == (failures, lost)
    assert state.total_pings == len(outcomes)
    assert state.total_successes == outcomes.count(True) and state.total_failures == outcomes.count(False)


def test_connection_lost_says_how_it_was_detected():
    state, _ = run([False] * 4)
    _, signals = after_ping(state, False, "HTTP 500", 2000.0, GUIDE)
    lost = [s for s in signals if s.kind == "connection-lost"][0]
    assert lost.fields == {"failures": 5, "last_error": "HTTP 500", "detectedBy": PING_FAILURES}


@pytest.mark.parametrize(("confirm_ok", "kinds", "lost"), [
    (True, [], False),  # a blip: the socket closed but ComfyUI answers
    (False, ["ping-failure", "connection-lost"], True),  # a crash: reported at once, after 1 failure
])
def test_a_closed_connection_is_confirmed_by_one_ping(confirm_ok, kinds, lost):
    state, signals = after_close(KeepaliveState(), confirm_ok, None if confirm_ok else "connection refused",
                                 10.0, GUIDE)
    assert [s.kind for s in signals] == kinds and state.lost is lost
    if lost:
        assert signals[-1].fields["detectedBy"] == CONNECTION_CLOSED
        assert state.detected_by == CONNECTION_CLOSED


def test_a_close_after_the_loss_does_not_report_it_twice():
    state, _ = run([False] * 5)
    _, signals = after_close(state, False, "connection refused", 5000.0, GUIDE)
    assert [s.kind for s in signals] == ["ping-failure"]


@pytest.mark.parametrize(("policy", "bound_s"), [
    (GUIDE, 30 + 4 * 30 + 5 * 5),  # the guide: ~150 s plus the timeouts
    (KeepalivePolicy(interval_s=30, timeout_s=5, max_failures=5, suspect_interval_s=5), 30 + 4 * 5 + 5 * 5),
    (KeepalivePolicy(interval_s=10, timeout_s=1, max_failures=1), 10 + 1),
])
def test_black_hole_detection_bound_on_a_fake_clock(policy, bound_s):
    """Every ping of a black-holed instance takes the full timeout; count the time to connection-lost."""
    clock = FakeClock(start=0.0)
    state, _ = after_ping(KeepaliveState(), True, None, clock.now(), policy)  # last good ping at t=0
    while True:
        clock.sleep(max(0.0, (state.next_ping_at or 0.0) - clock.now()))
        clock.sleep(policy.timeout_s)  # the ping hangs until its deadline
        state, signals = after_ping(state, False, "timeout", clock.now(), policy)
        if any(s.kind == "connection-lost" for s in signals):
            break
    assert clock.now() == pytest.approx(bound_s)
    assert clock.now() <= policy.detection_bound_s()


@pytest.mark.parametrize(("next_ping_at", "now", "expected"), [
    (None, 100.0, 100.0),  # never pinged: at once
    (120.0, 100.0, 120.0),  # the previous owner's schedule is kept across a handover
    (90.0, 100.0, 100.0),  # overdue: at once
    (10_000.0, 100.0, 130.0),  # a bogus far-future due time is capped at one interval
])
def test_a_new_owner_keeps_the_schedule(next_ping_at, now, expected):
    assert first_ping_at(KeepaliveState(next_ping_at=next_ping_at), now, GUIDE) == expected


def test_shards_are_stable_and_spread():
    assert shard_of("12345", 4) == shard_of(12345, 4)
    counts = [0] * 4
    for i in range(4000):
        counts[shard_of(i, 4)] += 1
    assert min(counts) > 800
    with pytest.raises(ValueError):
        shard_of(1, 0)


def test_the_guides_status_shape():
    state, _ = run([True, True, False])
    view = status_view(state, running=True)
    assert set(view) >= {"isRunning", "consecutiveFailures", "lastSuccessTime", "totalPings",
                         "totalSuccesses",
                         "totalFailures", "successRate"}
    assert (view["totalPings"], view["totalSuccesses"], view["successRate"]) == (3, 2, 66.7)
    pool = pool_view({"1": (state, True), "2": (KeepaliveState(), False)})
    assert pool["watched"] == 1 and pool["totalPings"] == 3 and pool["instances"]["2"]["successRate"] is None


def test_stored_state_is_read_tolerantly():
    good = KeepaliveState(consecutive_failures=2, total_pings=9, last_error="x", lost=True, next_ping_at=5.0)
    assert KeepaliveState.from_dict(good.to_dict()) == good
    bad = {"consecutive_failures": "two", "lost": "yes", "bogus": 1}
    assert KeepaliveState.from_dict(bad) == KeepaliveState()
    assert KeepaliveState.from_dict(None) == KeepaliveState()


def test_policy_refuses_nonsense():
    with pytest.raises(ValueError):
        KeepalivePolicy(interval_s=0)
