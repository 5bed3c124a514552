"""VastClient and request_with_retry against a real local HTTP server (tests/fixtures/vast_stub.py)."""

from __future__ import annotations

import logging
import random
import time
import traceback

import pytest
import requests

from tests.fixtures.helpers import free_port
from tests.fixtures.vast_stub import STUB_API_KEY, VastStub
from vastkeep.core.backoff import BackoffPolicy, backoff_ceiling
from vastkeep.core.clock import FakeClock
from vastkeep.core.errors import (
    AuthError,
    ConfigError,
    InvalidRequest,
    MalformedResponse,
    NetworkError,
    NotFound,
    PermanentError,
    RateLimited,
    RecordMissing,
    RentOutcomeUnknown,
    ServerError,
    TokenInvalid,
    TransientError,
    VastkeepError,
    is_transient,
)
from vastkeep.core.settings import Secret
from vastkeep.providers.http import RetryPolicy, make_session, request_with_retry, safe_url
from vastkeep.providers.vast import VastClient

RETRY = RetryPolicy(max_attempts=4, backoff=BackoffPolicy(base_s=0.5, cap_s=10.0))


class FakeSecret:
    """Stands in for vastkeep.core.settings.Secret: repr '***', .reveal() gives the value."""

    def __init__(self, value: str) -> None:
        self._v = value

    def reveal(self) -> str:
        return self._v

    def __repr__(self) -> str:
        return "'***'"


@pytest.fixture
def client(vast_stub: VastStub, clock: FakeClock) -> VastClient:
    c = VastClient(FakeSecret(STUB_API_KEY), vast_stub.url, timeout_s=(1.0, 2.0), retry=RETRY, clock=clock,
                   rng=random.Random(1))
    yield c
    c.close()


def assert_no_secret(exc: BaseException) -> None:
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    if isinstance(exc, VastkeepError):
        texts += [repr(exc.to_dict()), repr(exc.data)]
    for text in texts:
        assert STUB_API_KEY not in text


# ── the documented calls ────────────────────────────────────────────────────
def test_list_instances_sends_bearer_header_only(client: VastClient, vast_stub: VastStub) -> None:
    vast_stub.add_instance(101)
    vast_stub.add_instance(102, public_ipaddr="  198.51.100.9 ", ports={})
    instances = client.list_instances()
    assert [i.id for i in instances] == [101, 102]
    assert instances[0].host_port(8188) == 41234 and instances[1].public_ip == "198.51.100.9"
    (call,) = vast_stub.calls("GET", "/instances")
    assert call.headers["Authorization"] == f"Bearer {STUB_API_KEY}"
    assert call.query == {"owner": ["me"]}  # no ?api_key=
    assert call.headers["User-Agent"].startswith("vastkeep/")


def test_list_instances_skips_a_record_without_id(client: VastClient, vast_stub: VastStub,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    vast_stub.override("GET", "/instances", 200, {"instances": [{"id": "x"}, {"id": "9", "label": "ok"}]})
    with caplog.at_level(logging.WARNING):
        assert [(i.id, i.label) for i in client.list_instances()] == [(9, "ok")]
    assert "skipping" in caplog.text


def test_list_instances_empty_list_is_no_instances(client: VastClient, vast_stub: VastStub) -> None:
    vast_stub.override("GET", "/instances", 200, {"instances": []})
    assert client.list_instances() == []


@pytest.mark.parametrize("body", [{"instances": None}, {}])
def test_list_instances_without_a_list_is_an_error_not_an_empty_account(
        client: VastClient, vast_stub: VastStub, body: dict) -> None:
    vast_stub.override("GET", "/instances", 200, body)
    with pytest.raises(MalformedResponse) as info:
        client.list_instances()
    assert is_transient(info.value)


def test_show_instance_single_object(client: VastClient, vast_stub: VastStub) -> None:
    vast_stub.add_instance(7835610)
    inst = client.show_instance(7835610)
    assert inst.id == 7835610 and inst.is_ready and inst.public_ip == "203.0.113.7"
    (call,) = vast_stub.calls("GET", "/instances/7835610/")
    assert call.query == {"owner": ["me"]}


def test_show_instance_tolerates_a_one_element_list(client: VastClient, vast_stub: VastStub) -> None:
    one = [{"id": "55", "actual_status": "loading"}]
    vast_stub.override("GET", "/instances/55/", 200, {"instances": one})
    inst = client.show_instance(55)
    assert inst.id == 55 and inst.is_loading


@pytest.mark.parametrize("body", [{"instances": None}, {"instances": []}, {"instances": {}}])
def test_show_instance_empty_record_is_unknown_not_not_found(client: VastClient, vast_stub: VastStub,
                                                               body: dict) -> None:
    vast_stub.override("GET", "/instances/56/", 200, body)
    with pytest.raises(RecordMissing) as info:
        client.show_instance(56)
    assert info.value.instance_id == 56 and is_transient(info.value)


def test_show_instance_without_instances_key_is_malformed(client: VastClient, vast_stub: VastStub) -> None:
    vast_stub.override("GET", "/instances/59/", 200, {})
    with pytest.raises(MalformedResponse) as info:
        client.show_instance(59)
    assert not isinstance(info.value, RecordMissing | NotFound)


def test_show_instance_404_is_not_found_with_instance_id(client: VastClient, vast_stub: VastStub) -> None:
    with pytest.raises(NotFound) as info:
        client.show_instance(404404)
    assert info.value.instance_id == 404404 and isinstance(info.value, PermanentError)
    assert len(vast_stub.calls()) == 1  # a 404 is not retried


def test_show_instance_wrong_record_is_malformed(client: VastClient, vast_stub: VastStub) -> None:
    vast_stub.override("GET", "/instances/57/", 200, {"instances": {"id": 58}})
    with pytest.raises(MalformedResponse) as info:
        client.show_instance(57)
    assert info.value.instance_id == 57


def test_search_offers_posts_query_and_limit(client: VastClient, vast_stub: VastStub) -> None:
    for oid in (617, 618, 619):
        vast_stub.add_offer(oid)
    vast_stub.add_offer(620, gpu_name="RTX 3090")
    query = {"verified": {"eq": True}, "gpu_name": {"eq": "RTX 4090"}, "direct_port_count": {"gte": 1}}
    offers = client.search_offers(query, limit=2)
    assert [o.id for o in offers] == [617, 618]
    (call,) = vast_stub.calls("POST", "/bundles/")
    assert call.body == {**query, "limit": 2}


def test_rent_sends_the_documented_body(client: VastClient, vast_stub: VastStub) -> None:
    vast_stub.add_offer(617)
    env = {"-p 8188:8188": "1", "-p 22:22": "1"}
    iid = client.rent(617, image="vastai/comfy:latest", env=env, label="pool-a", onstart="echo hi", price=0.3)
    assert iid == 7_835_610
    (call,) = vast_stub.calls("PUT", "/asks/617/")
    assert call.body == {"client_id": "me", "image": "vastai/comfy:latest", "env": env, "disk": 80,
                         "label": "pool-a", "onstart": "echo hi", "runtype": "ssh", "price": 0.3}
    assert client.show_instance(iid).is_loading


def test_rent_refused_offer_is_invalid_request_with_provider_message(client: VastClient,
                                                                     vast_stub: VastStub) -> None:
    with pytest.raises(InvalidRequest) as info:
        client.rent(999, image="img")
    assert "offer 999 is not available" in str(info.value)
    assert info.value.offer_id == 999 and info.value.provider_error == "invalid_args"
    assert info.value.status == 400


def test_destroy_then_already_gone(client: VastClient, vast_stub: VastStub) -> None:
    vast_stub.add_instance(77)
    assert client.destroy(77) is True
    assert 77 not in vast_stub.instances
    assert client.destroy(77) is False  # 200 {"success": false, "error": "no_such_instance"}
    vast_stub.override("DELETE", "/instances/78/", 404, {"error": "not found"})
    assert client.destroy(78) is False


def test_start_stop_label(client: VastClient, vast_stub: VastStub) -> None:
    vast_stub.add_instance(80)
    client.stop(80)
    assert vast_stub.instances[80]["actual_status"] == "stopped"
    client.start(80)
    client.set_label(80, "pool-b")
    assert [c.body for c in vast_stub.calls("PUT", "/instances/80/")] == [
        {"state": "stopped"}, {"state": "running"}, {"label": "pool-b"}]
    inst = client.show_instance(80)
    assert inst.is_ready and inst.label == "pool-b"


def test_success_false_with_message_is_invalid_request(client: VastClient, vast_stub: VastStub) -> None:
    vast_stub.override("PUT", "/instances/81/", 200, {"success": False, "error": "invalid_args",
                                                       "message": "label too long"})
    with pytest.raises(InvalidRequest) as info:
        client.set_label(81, "x" * 500)
    assert "label too long" in str(info.value) and info.value.instance_id == 81


@pytest.mark.parametrize("bad", [0, -1, "abc", None])
def test_bad_ids_are_refused_before_any_request(client: VastClient, vast_stub: VastStub, bad: object) -> None:
    with pytest.raises(InvalidRequest):
        client.show_instance(bad)  # type: ignore[arg-type]
    assert vast_stub.calls() == []


# ── keys and auth ───────────────────────────────────────────────────────────
def test_check_key_ok_and_rejected(client: VastClient, vast_stub: VastStub, clock: FakeClock) -> None:
    client.check_key()
    bad = VastClient("wrong-key", vast_stub.url, retry=RETRY, clock=clock)
    with pytest.raises(AuthError) as info:
        bad.check_key()
    assert info.value.status == 401
    assert len(vast_stub.calls()) == 2 and clock.sleeps == []  # 401 is never retried
    vast_stub.override("GET", "/instances", 403, {"error": "forbidden"})
    with pytest.raises(AuthError):
        client.check_key()


def test_plain_string_key_and_empty_key(vast_stub: VastStub) -> None:
    VastClient(STUB_API_KEY, vast_stub.url).check_key()
    for empty in ("", "   ", FakeSecret("")):
        with pytest.raises(ConfigError):
            VastClient(empty, vast_stub.url)


def test_key_never_appears_in_errors_logs_or_repr(vast_stub: VastStub, clock: FakeClock,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    client = VastClient(STUB_API_KEY, vast_stub.url, timeout_s=(1.0, 0.3), retry=RETRY, clock=clock)
    assert STUB_API_KEY not in repr(client) and STUB_API_KEY not in repr(vars(client))
    vast_stub.add_instance(1)
    scripts = [
        dict(echo_auth=True),  # the provider echoes our header back in its error text
        dict(status=429, body=f"too frequent for Bearer {STUB_API_KEY}"),
        dict(status=502, body=f"<html>{STUB_API_KEY}</html>"),
        dict(status=200, body=f"not json {STUB_API_KEY}"),
        dict(status=404, body=f"{STUB_API_KEY}"),
        dict(delay_s=5, then_normal=True),
        dict(drop=True),
    ]
    raised = []
    with caplog.at_level(logging.DEBUG):
        for script in scripts:
            vast_stub.fail_next(RETRY.max_attempts, **script)
            with pytest.raises(VastkeepError) as info:
                client.show_instance(1)
            raised.append(info.value)
            vast_stub.faults.clear()
        bad = VastClient(FakeSecret(STUB_API_KEY + "x"), vast_stub.url, retry=RETRY, clock=clock)
        with pytest.raises(AuthError) as info:
            bad.list_instances()
        raised.append(info.value)
    assert [type(e) for e in raised] == [InvalidRequest, RateLimited, ServerError, MalformedResponse,
                                         NotFound, NetworkError, NetworkError, AuthError]
    assert "***" in str(raised[0])  # redacted, not dropped
    for exc in raised:
        assert_no_secret(exc)
    assert caplog.records, "the retries were logged"
    assert STUB_API_KEY not in caplog.text
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("vastkeep")]
    assert ours and not any("?" in m for m in ours)  # our log lines carry no query strings


# ── retries: bounded, jittered, on the fake clock ───────────────────────────
def test_429_then_success_is_retried_with_jitter(client: VastClient, vast_stub: VastStub,
                                                 clock: FakeClock) -> None:
    vast_stub.add_instance(5)
    vast_stub.fail_next(3, status=429, body="API requests too frequent")
    assert client.show_instance(5).id == 5
    assert len(vast_stub.calls()) == 4
    assert len(clock.sleeps) == 3
    for attempt, slept in enumerate(clock.sleeps):
        assert 0.0 <= slept <= backoff_ceiling(attempt, RETRY.backoff)
    assert len(set(clock.sleeps)) == 3 and clock.sleeps != [0.5, 1.0, 2.0]  # jittered, not plain doubling


def test_jitter_differs_between_clients(vast_stub: VastStub) -> None:
    vast_stub.add_instance(5)
    seen = []
    for seed in (1, 2):
        clock = FakeClock()
        c = VastClient(STUB_API_KEY, vast_stub.url, retry=RETRY, clock=clock, rng=random.Random(seed))
        vast_stub.fail_next(2, status=429, body="API requests too frequent")
        c.show_instance(5)
        seen.append(clock.sleeps)
    assert seen[0] != seen[1]


def test_429_forever_is_bounded_and_raises_rate_limited(client: VastClient, vast_stub: VastStub,
                                                        clock: FakeClock) -> None:
    vast_stub.fail_next(50, status=429, body="API requests too frequent")
    with pytest.raises(RateLimited) as info:
        client.show_instance(5)
    exc = info.value
    assert isinstance(exc, TransientError)
    assert len(vast_stub.calls()) == RETRY.max_attempts and len(clock.sleeps) == RETRY.max_attempts - 1
    assert exc.attempts == 4 and exc.status == 429 and exc.instance_id == 5 and exc.delay_s > 0
    assert "API requests too frequent" in str(exc)
    assert exc.url == f"{vast_stub.url}/instances/5/"  # no query string


def test_5xx_is_retried_then_server_error(client: VastClient, vast_stub: VastStub, clock: FakeClock) -> None:
    vast_stub.fail_next(10, status=503)
    with pytest.raises(ServerError) as info:
        client.destroy(9)
    assert info.value.status == 503 and info.value.instance_id == 9
    assert len(vast_stub.calls()) == 4 and len(clock.sleeps) == 3


def test_5xx_once_then_success(client: VastClient, vast_stub: VastStub, clock: FakeClock) -> None:
    vast_stub.add_instance(9)
    vast_stub.fail_next(1, status=500)
    assert client.destroy(9) is True and len(clock.sleeps) == 1


def test_read_timeout_is_honoured_and_bounded(vast_stub: VastStub, clock: FakeClock) -> None:
    client = VastClient(STUB_API_KEY, vast_stub.url, timeout_s=(1.0, 0.2),
                        retry=RetryPolicy(max_attempts=2), clock=clock)
    vast_stub.add_instance(3)
    vast_stub.fail_next(2, delay_s=10, then_normal=True)
    started = time.monotonic()
    with pytest.raises(NetworkError) as info:
        client.show_instance(3)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"two 0.2 s read timeouts took {elapsed:.2f}s"
    assert info.value.reason == "read timeout" and info.value.attempts == 2 and info.value.instance_id == 3
    assert len(vast_stub.calls()) == 2 and len(clock.sleeps) == 1


def test_one_slow_answer_then_success(vast_stub: VastStub, clock: FakeClock) -> None:
    client = VastClient(STUB_API_KEY, vast_stub.url, timeout_s=(1.0, 0.2), retry=RETRY, clock=clock)
    vast_stub.add_instance(3)
    vast_stub.fail_next(1, delay_s=10, then_normal=True)
    assert client.show_instance(3).id == 3 and len(vast_stub.calls()) == 2


def test_connection_refused_is_network_error(clock: FakeClock) -> None:
    url = f"http://127.0.0.1:{free_port()}/api/v0"
    client = VastClient(STUB_API_KEY, url, timeout_s=(0.5, 0.5), retry=RETRY, clock=clock)
    with pytest.raises(NetworkError) as info:
        client.list_instances()
    assert info.value.reason == "connection refused" and info.value.attempts == 4
    assert len(clock.sleeps) == 3
    assert_no_secret(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_garbage_json_is_malformed_and_transient(client: VastClient, vast_stub: VastStub) -> None:
    vast_stub.fail_next(1, status=200, body="<html>Bad Gateway</html>")
    with pytest.raises(MalformedResponse) as info:
        client.list_instances()
    assert isinstance(info.value, TransientError) and len(vast_stub.calls()) == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [(dict(status=502), "HTTP 502"),
     (dict(status=500, body="upstream crashed"), "HTTP 500"),
     (dict(status=503), "HTTP 503"),
     (dict(drop=True), "connection error"),
     (dict(delay_s=5, then_normal=True), "read timeout")],
    ids=["502", "500", "503", "dropped-after-send", "read-timeout"],
)
def test_rent_is_not_retried_when_vast_may_have_acted(vast_stub: VastStub, clock: FakeClock, fault: dict,
                                                      reason: str) -> None:
    """A 5xx, a read timeout or a connection lost after sending: Vast.ai may have rented. The error is
    permanent (a task retry would rent, and pay for, a second instance) and says how to find out."""
    client = VastClient(STUB_API_KEY, vast_stub.url, timeout_s=(1.0, 0.3), retry=RETRY, clock=clock)
    vast_stub.add_offer(617)
    vast_stub.fail_next(1, **fault)
    with pytest.raises(RentOutcomeUnknown) as info:
        client.rent(617, image="img", label="pool-x")
    exc = info.value
    assert isinstance(exc, PermanentError) and not isinstance(exc, TransientError)
    assert (exc.offer_id, exc.label) == (617, "pool-x") and reason in exc.reason
    assert "list_instances" in exc.message and "'pool-x'" in exc.message
    assert len(vast_stub.calls("PUT", "/asks/617/")) == 1 and clock.sleeps == []
    assert_no_secret(exc)


def test_rent_is_retried_only_when_vast_certainly_did_not_act(client: VastClient, vast_stub: VastStub,
                                                               clock: FakeClock) -> None:
    vast_stub.add_offer(617)
    vast_stub.fail_next(2, status=429, body="API requests too frequent")  # refused: safe to retry
    assert client.rent(617, image="img", label="pool-x") > 0
    assert len(vast_stub.calls("PUT")) == 3 and len(clock.sleeps) == 2
    vast_stub.fail_next(50, status=429, body="API requests too frequent")
    with pytest.raises(RateLimited) as info:  # still transient: nothing was rented
        client.rent(617, image="img", label="pool-x")
    assert info.value.offer_id == 617 and len(vast_stub.calls("PUT")) == 3 + RETRY.max_attempts


def test_rent_with_a_connection_that_never_opened_stays_transient(clock: FakeClock) -> None:
    client = VastClient(STUB_API_KEY, f"http://127.0.0.1:{free_port()}/api/v0", timeout_s=(0.5, 0.5),
                        retry=RETRY, clock=clock)
    with pytest.raises(NetworkError) as info:
        client.rent(617, image="img", label="pool-x")
    exc = info.value
    assert exc.reason == "connection refused" and exc.maybe_sent is False and exc.offer_id == 617
    assert exc.attempts == RETRY.max_attempts and len(clock.sleeps) == RETRY.max_attempts - 1


# ── the helper itself ───────────────────────────────────────────────────────
def test_request_with_retry_returns_non_retryable_responses(vast_stub: VastStub, clock: FakeClock) -> None:
    session = make_session("vk-test")
    url = f"{vast_stub.url}/instances/1/"
    resp = request_with_retry(session, "GET", url, headers={}, timeout_s=(1, 1), retry=RETRY, clock=clock,
                              rng=random.Random(0))
    assert resp.status_code == 401 and clock.sleeps == []
    vast_stub.fail_next(1, status=503)
    resp = request_with_retry(session, "GET", url, headers={}, timeout_s=(1, 1), retry=RETRY, clock=clock,
                              rng=random.Random(0), retry_on={429})
    assert resp.status_code == 503 and clock.sleeps == []
    assert isinstance(session, requests.Session)


@pytest.mark.parametrize(
    ("url", "expected"),
    [("https://user:pw@console.vast.ai/api/v0/instances?owner=me&api_key=k#x",
      "https://console.vast.ai/api/v0/instances"),
     ("http://127.0.0.1:8080/a/b/?q=1", "http://127.0.0.1:8080/a/b/"),
     ("http://[::1]:81/x", "http://[::1]:81/x")],
)
def test_safe_url_drops_credentials_and_query(url: str, expected: str) -> None:
    assert safe_url(url) == expected


def test_accepts_the_settings_secret(vast_stub: VastStub) -> None:
    client = VastClient(Secret(STUB_API_KEY), vast_stub.url)
    client.check_key()
    assert vast_stub.calls()[0].headers["Authorization"] == f"Bearer {STUB_API_KEY}"


@pytest.mark.parametrize("base", ["127.0.0.1:1/api/v0", "ftp://127.0.0.1/api/v0"])
def test_unusable_base_url_is_a_config_error_without_retries(base: str, clock: FakeClock) -> None:
    with pytest.raises(ConfigError):
        VastClient(STUB_API_KEY, base, retry=RETRY, clock=clock).list_instances()
    assert clock.sleeps == []


# ── renting: an unreadable answer is never retried into a second rental ─────
def test_rent_garbage_answer_is_outcome_unknown_and_permanent(client: VastClient, vast_stub: VastStub,
                                                              clock: FakeClock) -> None:
    """A 200 that is not JSON: Vast.ai got the request and may have rented; a retry could rent twice."""
    vast_stub.add_offer(617)
    vast_stub.fail_next(1, status=200, body="<html>Bad Gateway</html>")
    with pytest.raises(RentOutcomeUnknown) as info:
        client.rent(617, image="img", label="pool-x")
    exc = info.value
    assert isinstance(exc, PermanentError) and not isinstance(exc, TransientError)
    assert (exc.offer_id, exc.label) == (617, "pool-x")
    assert "list_instances" in exc.message and "'pool-x'" in exc.message
    assert exc.to_dict()["label"] == "pool-x" and exc.to_dict()["offer_id"] == 617
    assert len(vast_stub.calls("PUT", "/asks/617/")) == 1 and clock.sleeps == []
    assert_no_secret(exc)


@pytest.mark.parametrize("body", [{"success": True}, {"success": True, "new_contract": None},
                                  {"new_contract": 0}, {"new_contract": "soon"}, {"new_contract": -5}])
def test_rent_without_usable_new_contract_is_outcome_unknown(client: VastClient, vast_stub: VastStub,
                                                             body: dict) -> None:
    vast_stub.add_offer(617)
    vast_stub.override("PUT", "/asks/617/", 200, body)
    with pytest.raises(RentOutcomeUnknown) as info:
        client.rent(617, image="img")
    assert info.value.offer_id == 617 and info.value.label is None
    assert "list_instances" in info.value.message
    assert len(vast_stub.calls("PUT")) == 1


def test_rent_preflight_runs_first_and_can_refuse(vast_stub: VastStub, clock: FakeClock) -> None:
    vast_stub.add_offer(617)
    calls: list[int] = []

    def refuse() -> None:
        calls.append(len(vast_stub.calls()))
        raise TokenInvalid("VastAI API token invalid", service="vastai")

    with VastClient(STUB_API_KEY, vast_stub.url, retry=RETRY, clock=clock, preflight=refuse) as c:
        c.list_instances()  # only renting is guarded
        with pytest.raises(TokenInvalid):
            c.rent(617, image="img")
    assert calls == [1] and vast_stub.calls("PUT") == []
    with VastClient(STUB_API_KEY, vast_stub.url, retry=RETRY, clock=clock,
                    preflight=lambda: calls.append(-1)) as c:
        assert c.rent(617, image="img") > 0
    assert calls == [1, -1]
