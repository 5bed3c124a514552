"""Total deadlines and body caps on HTTP calls, against the real local Vast.ai stub.

requests' read timeout bounds each socket read, not a whole answer: a server that drips one byte
every half second never trips it. ``vastkeep.providers.http.read_body`` enforces a total deadline (on the
injected clock's ``monotonic()``) and a size cap; the Vast.ai client and the token checks both use it.
Deadlines are real time here, so the clock is the system clock (sleeps between retries are recorded
instead of slept, to keep the tests quick).
"""

from __future__ import annotations

import random
import time

import pytest

from tests.fixtures.vast_stub import STUB_API_KEY, VastStub
from vastkeep.core.backoff import BackoffPolicy
from vastkeep.core.clock import SystemClock
from vastkeep.core.errors import MalformedResponse, NetworkError, RentOutcomeUnknown, TransientError
from vastkeep.core.settings import Secret
from vastkeep.providers.http import DEFAULT_MAX_BODY_BYTES, RetryPolicy, make_session, request_with_retry
from vastkeep.providers.vast import VastClient
from vastkeep.tokens.checks import VASTAI, check_specs, run_check

SLACK_S = 0.6  # scheduling, connection set-up and one last in-flight read
DRIP_S = 0.25  # one byte every 0.25 s: each read returns well inside any read timeout


class RealTimeClock(SystemClock):
    """Real monotonic time (deadlines are real), but retry pauses are recorded, not slept."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def client_for(stub: VastStub, clock: RealTimeClock, *, attempts: int = 1, **kw: object) -> VastClient:
    return VastClient(STUB_API_KEY, stub.url, timeout_s=(1.0, 1.0), clock=clock, rng=random.Random(3),
                      retry=RetryPolicy(max_attempts=attempts, backoff=BackoffPolicy(0.01, 0.05)), **kw)


def many_instances(stub: VastStub, n: int) -> None:
    for iid in range(1, n + 1):
        stub.add_instance(iid)


def test_dripping_answer_fails_at_the_total_deadline(vast_stub: VastStub) -> None:
    """(1 s connect, 1 s read) → 2 s in all, although no single read ever waits 1 s."""
    many_instances(vast_stub, 1)  # ~900 bytes: ~4 minutes at this drip rate
    vast_stub.fail_next(1, drip_s=DRIP_S)
    clock = RealTimeClock()
    started = time.monotonic()
    with pytest.raises(NetworkError) as info:
        client_for(vast_stub, clock).list_instances()
    elapsed = time.monotonic() - started
    assert 2.0 - 0.05 <= elapsed < 2.0 + SLACK_S, f"took {elapsed:.2f}s against a 2 s deadline"
    exc = info.value
    assert isinstance(exc, TransientError) and exc.reason == "deadline exceeded"
    assert exc.maybe_sent is True and exc.status == 200 and exc.attempts == 1
    assert STUB_API_KEY not in str(exc) and exc.__cause__ is None


def test_a_missed_deadline_is_retried_like_a_timeout(vast_stub: VastStub) -> None:
    many_instances(vast_stub, 2)
    vast_stub.fail_next(1, drip_s=DRIP_S)
    clock = RealTimeClock()
    started = time.monotonic()
    assert [i.id for i in client_for(vast_stub, clock, attempts=3).list_instances()] == [1, 2]
    assert time.monotonic() - started < 2.0 + SLACK_S
    assert len(vast_stub.calls("GET")) == 2 and len(clock.sleeps) == 1


def test_explicit_deadline_for_one_request(vast_stub: VastStub) -> None:
    vast_stub.fail_next(1, drip_s=DRIP_S)
    started = time.monotonic()
    with pytest.raises(NetworkError) as info:
        request_with_retry(make_session("vk-test"), "GET", f"{vast_stub.url}/instances",
                           headers={"Authorization": f"Bearer {STUB_API_KEY}"}, timeout_s=(5.0, 5.0),
                           retry=RetryPolicy(max_attempts=1), clock=RealTimeClock(), rng=random.Random(0),
                           deadline_s=0.8)
    assert info.value.reason == "deadline exceeded"
    assert time.monotonic() - started < 0.8 + SLACK_S


def test_rent_that_misses_its_deadline_is_outcome_unknown(vast_stub: VastStub) -> None:
    """The PUT arrived; the answer did not: never retried into a second rental."""
    vast_stub.add_offer(617)
    vast_stub.fail_next(1, drip_s=DRIP_S)
    clock = RealTimeClock()
    started = time.monotonic()
    with pytest.raises(RentOutcomeUnknown) as info:
        client_for(vast_stub, clock, attempts=4).rent(617, image="img", label="pool-drip")
    assert time.monotonic() - started < 2.0 + SLACK_S
    assert info.value.label == "pool-drip" and "deadline exceeded" in info.value.reason
    assert len(vast_stub.calls("PUT")) == 1 and clock.sleeps == []


@pytest.mark.parametrize("no_length", [False, True], ids=["content-length", "read-to-close"])
def test_oversize_body_is_malformed(vast_stub: VastStub, no_length: bool) -> None:
    many_instances(vast_stub, 20)  # ~18 KB
    if no_length:
        vast_stub.fail_next(1, no_length=True)  # no Content-Length: caught while reading, not up front
    with pytest.raises(MalformedResponse) as info:
        client_for(vast_stub, RealTimeClock(), attempts=3, max_body_bytes=4096).list_instances()
    assert info.value.reason == "body too large" and info.value.status == 200
    assert len(vast_stub.calls("GET")) == 1  # a size problem is not cured by asking again at once
    # the same answer within the cap parses, with or without a Content-Length
    if no_length:
        vast_stub.fail_next(1, no_length=True)
    assert len(client_for(vast_stub, RealTimeClock()).list_instances()) == 20


def test_default_cap_is_32_mib() -> None:
    assert DEFAULT_MAX_BODY_BYTES == 32 * 1024 * 1024
    assert VastClient(STUB_API_KEY).max_body_bytes == DEFAULT_MAX_BODY_BYTES


def test_oversize_rent_answer_is_outcome_unknown(vast_stub: VastStub) -> None:
    vast_stub.add_offer(617)
    vast_stub.override("PUT", "/asks/617/", 200, {"success": True, "new_contract": 5, "pad": "x" * 8192})
    with pytest.raises(RentOutcomeUnknown) as info:
        client_for(vast_stub, RealTimeClock(), attempts=4, max_body_bytes=4096).rent(617, image="img")
    assert "too large" in info.value.reason and len(vast_stub.calls("PUT")) == 1


# ── the token checks read through the same code ─────────────────────────────
def test_token_check_ends_at_its_deadline_against_a_dripping_provider(vast_stub: VastStub) -> None:
    many_instances(vast_stub, 1)
    vast_stub.fail_next(1, drip_s=DRIP_S)
    spec = check_specs(vast_stub.url, vast_stub.url, vast_stub.url)[VASTAI]
    started = time.monotonic()
    result = run_check(spec, Secret(STUB_API_KEY), timeout_s=1.0, tested_at=lambda: "now",
                       clock=RealTimeClock())
    elapsed = time.monotonic() - started
    assert result["status"] == "unknown" and result["error"] == "timed out after 1s"
    assert 1.0 - 0.05 <= elapsed < 1.0 + SLACK_S
    # and without the drip the same check is valid
    ok = run_check(spec, Secret(STUB_API_KEY), timeout_s=1.0, tested_at=lambda: "now", clock=RealTimeClock())
    assert ok["status"] == "valid"


def test_token_check_oversize_body_is_unknown(vast_stub: VastStub, monkeypatch: pytest.MonkeyPatch) -> None:
    import vastkeep.tokens.checks as checks

    many_instances(vast_stub, 20)
    monkeypatch.setattr(checks, "MAX_BODY_BYTES", 4096)
    spec = check_specs(vast_stub.url, vast_stub.url, vast_stub.url)[VASTAI]
    for no_length in (False, True):
        if no_length:
            vast_stub.fail_next(1, no_length=True)
        result = run_check(spec, Secret(STUB_API_KEY), timeout_s=2.0, tested_at=lambda: "now")
        assert result["status"] == "unknown" and result["error"] == "response body too large"
