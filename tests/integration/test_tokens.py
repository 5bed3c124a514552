"""Layer 2 against the simulated cloud's real HTTP port and a real redis-server.

Every token state for every service (valid, 401, 403, 429, 5xx, timeout, refused, malformed,
unconfigured), the shared cache and its expiry, the concurrency bound, the pre-flight refusal,
runtime updates seen by a second OS process, and no token string in any captured log line.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.helpers import wait_for
from tests.fixtures.state import State
from tests.fixtures.token_cloud import SimCloud
from tests.fixtures.vast_stub import STUB_API_KEY, VastStub
from vastkeep.core.clock import FakeClock
from vastkeep.core.errors import InvalidInput, TokenInvalid
from vastkeep.core.settings import Secret
from vastkeep.state.events import EventLog
from vastkeep.state.keys import Keys
from vastkeep.state.store import StateStore
from vastkeep.tokens.checks import CIVITAI, HUGGINGFACE, SERVICES, VASTAI, CheckSpec, check_specs
from vastkeep.tokens.manager import MAX_CHECK_THREADS, TokenManager

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 1.0


@pytest.fixture
def cloud(token_sim: SimCloud) -> SimCloud:
    return token_sim


@pytest.fixture
def keys() -> Keys:
    return Keys("vktok")


@pytest.fixture
def store(redis_client: Any, keys: Keys) -> StateStore:
    return State(redis_client, keys=keys).store


@pytest.fixture
def events(redis_client: Any, keys: Keys) -> EventLog:
    return EventLog(redis_client, keys)


def make_manager(cloud: SimCloud, store: StateStore, events: EventLog | None = None, *,
                 configured: dict[str, str | None] | None = None, clock: Any = None,
                 cache_ms: int = 300_000, timeout_s: float = TIMEOUT_S,
                 specs: dict[str, CheckSpec] | None = None) -> TokenManager:
    conf = {s: cloud.token(s) for s in SERVICES} if configured is None else configured
    kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
    return TokenManager(store=store, events=events, cache_ms=cache_ms, timeout_s=timeout_s,
                        configured={s: Secret(v) if v else None for s, v in conf.items()},
                        specs=specs or check_specs(*cloud.urls()), **kwargs)


def assert_no_secret(text: str, cloud: SimCloud, *extra: str) -> None:
    for secret in (*cloud.all_tokens(), *extra):
        assert secret not in text


# ── each state, each service ────────────────────────────────────────────────
def test_all_valid_with_guide_shapes_and_log_lines(cloud, store, events, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    results = make_manager(cloud, store, events).validate_all(use_cache=False)
    assert set(results) == set(SERVICES)
    for service in SERVICES:
        r = results[service]
        assert (r["valid"], r["status"], r["configured"], r["cached"]) == (True, "valid", True, False)
        assert r["testedAt"].endswith("Z") and r["testedAt"].startswith("20")
        assert f"✅ {service} token validated successfully" in caplog.messages
    assert results[HUGGINGFACE]["user"] == "vastkeep-sim"
    assert results[CIVITAI]["user"] == "vastkeep-sim"
    assert {e.fields["service"] for e in events.latest(10) if e.kind == "token-valid"} == set(SERVICES)
    assert cloud.count_requests() == {VASTAI: 1, HUGGINGFACE: 1, CIVITAI: 1}
    assert cloud.auth_methods() == {"bearer"}
    assert_no_secret(caplog.text + json.dumps(results), cloud)


@pytest.mark.parametrize("service", SERVICES)
def test_rejected_token_is_invalid_with_event_and_error_line(service, cloud, store, events, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    mgr = make_manager(cloud, store, events)
    cloud.rotate(service)  # the configured token is no longer accepted: a real 401
    results = mgr.validate_all(use_cache=False)
    r = results[service]
    assert (r["valid"], r["status"], r["error"], r["httpStatus"]) == (
        False, "invalid", "Token authentication failed (401)", 401)
    assert f"❌ {service} token validation FAILED: Token authentication failed (401)" in caplog.messages
    assert [rec.levelno for rec in caplog.records if "FAILED" in rec.getMessage()] == [logging.ERROR]
    for other in set(SERVICES) - {service}:
        assert results[other]["status"] == "valid"
    invalid = [e for e in events.latest(20) if e.kind == "token-invalid"]
    assert [(e.fields["service"], e.fields["error"]) for e in invalid] == [
        (service, "Token authentication failed (401)")]
    assert_no_secret(caplog.text + json.dumps(results) + json.dumps([e.to_dict() for e in events.latest(50)]),
                     cloud)


@pytest.mark.parametrize("service", SERVICES)
def test_403_is_invalid(service, cloud, store, events) -> None:
    cloud.fault(service, status=403, count=1)
    r = make_manager(cloud, store, events).validate_service(service, use_cache=False)
    assert (r["valid"], r["status"], r["error"]) == (False, "invalid", "Token authentication failed (403)")


@pytest.mark.parametrize("status", [429, 500, 502, 503])
@pytest.mark.parametrize("service", SERVICES)
def test_429_and_5xx_are_unknown_never_invalid(service, status, cloud, store, events, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    cloud.fault(service, status=status, count=1)
    results = make_manager(cloud, store, events).validate_all(use_cache=False)
    r = results[service]
    assert r["valid"] is None and r["status"] == "unknown" and r["httpStatus"] == status
    assert str(status) in r["error"]
    assert any(m.startswith(f"⚠️  {service} token could not be validated: ") for m in caplog.messages)
    assert not [e for e in events.latest(20) if e.kind == "token-invalid"]
    assert all(results[o]["status"] == "valid" for o in set(SERVICES) - {service})


@pytest.mark.parametrize("service", SERVICES)
def test_timeout_is_unknown(service, cloud, store) -> None:
    cloud.fault(service, delay_s=TIMEOUT_S * 4, count=1)
    r = make_manager(cloud, store).validate_service(service, use_cache=False)
    assert (r["valid"], r["status"]) == (None, "unknown")
    assert "timeout" in r["error"] or "timed out" in r["error"]


def test_connection_refused_is_unknown(cloud, store) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        specs = check_specs(dead + "/api/v0", dead, dead)
        results = make_manager(cloud, store, specs=specs).validate_all(use_cache=False)
    for r in results.values():
        assert (r["valid"], r["status"], r["error"]) == (None, "unknown", "connection error")


def test_vast_url_without_api_v0_says_what_is_wrong(cloud, store, caplog) -> None:
    """VAST_API_URL=http://host:port (no /api/v0): every call 404s; the result says why, not just 404."""
    caplog.set_level(logging.WARNING, logger="vastkeep.tokens")
    vast_url, hf_url, civitai_url = cloud.urls()
    assert vast_url.endswith("/api/v0")
    bare = vast_url.removesuffix("/api/v0")
    r = make_manager(cloud, store, specs=check_specs(bare, hf_url, civitai_url)).validate_service(
        VASTAI, use_cache=False)
    assert (r["valid"], r["status"], r["httpStatus"]) == (None, "unknown", 404)
    assert r["error"] == (f"unexpected HTTP 404: VAST_API_URL should end with /api/v0 (e.g. "
                          f"https://console.vast.ai/api/v0); it is {bare}, so every Vast.ai call answers 404")
    assert r["hint"].startswith("VAST_API_URL should end with /api/v0")
    assert f"⚠️  vastai token could not be validated: {r['error']}" in caplog.messages
    assert_no_secret(caplog.text + json.dumps(r), cloud)


def test_404_on_another_service_names_its_setting(cloud, store) -> None:
    vast_url, hf_url, civitai_url = cloud.urls()
    specs = check_specs(vast_url, hf_url, civitai_url + "/nope")
    r = make_manager(cloud, store, specs=specs).validate_service(CIVITAI, use_cache=False)
    assert r["status"] == "unknown" and r["httpStatus"] == 404
    assert r["error"].startswith(f"unexpected HTTP 404: check CIVITAI_API_URL: it is {civitai_url}/nope")


class _Garbage(http.server.BaseHTTPRequestHandler):
    """A 200 with an HTML login page: what a captive portal answers. Not a verdict on the token."""

    def do_GET(self) -> None:  # noqa: N802
        body = b"<html><body>please log in</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_malformed_200_body_is_unknown(cloud, store) -> None:
    # The simulator always answers real shapes; a captive portal needs its own tiny server.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        results = make_manager(cloud, store, specs=check_specs(base + "/api/v0", base, base)).validate_all(
            use_cache=False)
    finally:
        server.shutdown()
        server.server_close()
    for r in results.values():
        assert (r["valid"], r["status"]) == (None, "unknown")
        assert r["error"] == "malformed response body (HTTP 200)"


def test_unconfigured_service_is_reported_and_not_called(cloud, store, caplog) -> None:
    caplog.set_level(logging.INFO)
    results = make_manager(cloud, store, configured={VASTAI: cloud.token(VASTAI), HUGGINGFACE: None,
                                                   CIVITAI: None}).validate_all(use_cache=False)
    assert results[VASTAI]["status"] == "valid"
    for s in (HUGGINGFACE, CIVITAI):
        assert results[s] == {"valid": None, "status": "unconfigured", "configured": False,
                              "error": "not configured", "cached": False}
    assert cloud.count_requests() == {VASTAI: 1, HUGGINGFACE: 0, CIVITAI: 0}


# ── cache ───────────────────────────────────────────────────────────────────
def test_cache_is_shared_and_honoured_then_expires(cloud, store) -> None:
    clock = FakeClock(start=time.time())
    first = make_manager(cloud, store, clock=clock, cache_ms=60_000)
    second = make_manager(cloud, store, clock=clock, cache_ms=60_000)  # another worker, same Redis
    fresh = first.validate_all(use_cache=True)
    assert cloud.count_requests() == {VASTAI: 1, HUGGINGFACE: 1, CIVITAI: 1}
    clock.advance(59)
    cached = second.validate_all(use_cache=True)
    assert cloud.count_requests() == {VASTAI: 1, HUGGINGFACE: 1, CIVITAI: 1}  # no new call
    for s in SERVICES:
        assert cached[s]["cached"] is True and fresh[s]["cached"] is False
        assert cached[s]["testedAt"] == fresh[s]["testedAt"]
        assert "_fp" not in cached[s]
    clock.advance(2)  # past TOKEN_VALIDATION_CACHE_MS
    again = second.validate_all(use_cache=True)
    assert all(not again[s]["cached"] for s in SERVICES)
    assert cloud.count_requests() == {VASTAI: 2, HUGGINGFACE: 2, CIVITAI: 2}
    second.validate_all(use_cache=False)  # use_cache=False always calls
    assert cloud.count_requests() == {VASTAI: 3, HUGGINGFACE: 3, CIVITAI: 3}


def test_cache_expires_in_redis_too(cloud, store, redis_client, keys) -> None:
    make_manager(cloud, store, cache_ms=300).validate_all(use_cache=True)
    wait_for(lambda: not redis_client.exists(keys.token_result(VASTAI)), 5,  # polling the real TTL
             "the cached result expired in Redis", interval_s=0.05)
    make_manager(cloud, store, cache_ms=300).validate_all(use_cache=True)
    assert cloud.count_requests()[VASTAI] == 2


def test_unknown_is_cached_shorter_than_a_verdict(cloud, store) -> None:
    clock = FakeClock(start=time.time())
    mgr = make_manager(cloud, store, clock=clock, cache_ms=300_000)
    cloud.fault(CIVITAI, status=503, count=1)
    assert mgr.validate_service(CIVITAI)["status"] == "unknown"
    clock.advance(10)
    assert mgr.validate_service(CIVITAI)["cached"] is True
    clock.advance(25)  # past the 30 s unknown cache, far below the 300 s verdict cache
    r = mgr.validate_service(CIVITAI)
    assert (r["status"], r["cached"]) == ("valid", False)


def test_cache_of_another_token_is_not_reused(cloud, store) -> None:
    make_manager(cloud, store).validate_all(use_cache=True)
    other = make_manager(cloud, store,
                         configured={VASTAI: "some-other-key", HUGGINGFACE: None, CIVITAI: None})
    r = other.validate_service(VASTAI, use_cache=True)
    assert (r["status"], r["cached"]) == ("invalid", False)


# ── concurrency ─────────────────────────────────────────────────────────────
def test_slow_service_does_not_delay_the_others(cloud, store) -> None:
    cloud.fault(HUGGINGFACE, delay_s=TIMEOUT_S * 3, count=1)  # hangs far beyond its timeout
    t0 = time.monotonic()
    results = make_manager(cloud, store, timeout_s=TIMEOUT_S).validate_all(use_cache=False)
    elapsed = time.monotonic() - t0
    assert results[HUGGINGFACE]["status"] == "unknown"
    assert results[VASTAI]["status"] == results[CIVITAI]["status"] == "valid"
    assert elapsed < TIMEOUT_S + 1.0, elapsed  # its own timeout (+ grace), not the 3 s hang


def test_checks_run_concurrently(cloud, store) -> None:
    for s in SERVICES:
        cloud.fault(s, delay_s=0.5, count=1)
    t0 = time.monotonic()
    results = make_manager(cloud, store, timeout_s=3.0).validate_all(use_cache=False)
    elapsed = time.monotonic() - t0
    assert all(r["status"] == "valid" for r in results.values())
    assert elapsed < 1.2, elapsed  # the sum would be 1.5 s


def _our_threads() -> list[threading.Thread]:
    """Live threads of this process, minus the local HTTP stub's per-connection handlers."""
    return [t for t in threading.enumerate() if "process_request_thread" not in t.name]


def _token_check_threads() -> int:
    return sum(t.name.startswith("token-check") for t in threading.enumerate())


def test_repeated_validations_against_a_hung_provider_keep_threads_bounded(cloud, store) -> None:
    """20 validations while every provider hangs (30 s, no answer): each ends at its timeout, and
    the process does not gain a thread per check (it did: one daemon thread per check, per call)."""
    cloud.control.slow_api(30.0)  # every service, until the sim is reset
    mgr = make_manager(cloud, store, timeout_s=0.2)
    before = threading.active_count()
    peak = before
    for _ in range(20):
        t0 = time.monotonic()
        results = mgr.validate_all(use_cache=False)
        assert time.monotonic() - t0 < 0.2 + 0.5 + 0.3
        assert all(r["status"] == "unknown" for r in results.values()), results
        peak = max(peak, threading.active_count())
    assert peak - before <= MAX_CHECK_THREADS, f"{peak - before} new threads"
    assert _token_check_threads() <= MAX_CHECK_THREADS


def test_checks_whose_headers_drip_end_at_their_deadline(vast_stub: VastStub, store,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider that drips its *headers* never trips a per-read timeout; each check still ends at its
    own deadline (the socket is shut), so every check asked for runs and the threads stay bounded."""
    import vastkeep.tokens.manager as tokens_mod

    monkeypatch.setattr(tokens_mod, "DEADLINE_GRACE_S", 0.2)
    vast_stub.fail_next(1000, drip_head_s=0.05)
    mgr = TokenManager(store=store, cache_ms=300_000, timeout_s=0.2,
                       configured={s: Secret(STUB_API_KEY) for s in SERVICES},
                       specs=check_specs(vast_stub.url, vast_stub.url, vast_stub.url))
    before = len(_our_threads())
    peak = before
    errors: list[str] = []
    for _ in range(20):
        t0 = time.monotonic()
        results = mgr.validate_all(use_cache=False)
        assert time.monotonic() - t0 < 0.2 + 0.2 + 0.3
        assert all(r["status"] == "unknown" for r in results.values())
        errors += [str(r["error"]) for r in results.values()]
        peak = max(peak, len(_our_threads()))
    # the deadline ends them; on a loaded machine a 0.05 s drip gap may stretch past the 0.2 s read timeout
    # now and then (CI beside two soaks: 3 of 60), which ends that check sooner, never later
    assert all(e.startswith("timed out after") or e == "read timeout" for e in errors), set(errors)
    assert sum(e.startswith("timed out after") for e in errors) >= len(errors) // 2, set(errors)
    assert peak - before <= MAX_CHECK_THREADS, f"{peak - before} new threads"
    assert _token_check_threads() <= MAX_CHECK_THREADS
    assert len(vast_stub.calls()) == 20 * len(SERVICES)  # none was queued behind a stuck one
    with vast_stub.lock:
        vast_stub.faults.clear()
    assert mgr.validate_service(VASTAI, use_cache=False)["status"] == "valid"


# ── pre-flight ──────────────────────────────────────────────────────────────
def test_preflight_refuses_renting_while_vast_token_invalid(cloud, store, events) -> None:
    mgr = make_manager(cloud, store, events)
    assert mgr.ensure_vast_token_valid()["status"] == "valid"
    cloud.rotate(VASTAI)
    store.delete_token_result(VASTAI)
    with pytest.raises(TokenInvalid) as info:
        mgr.ensure_vast_token_valid()
    assert info.value.service == "vastai"
    assert cloud.token(VASTAI) not in repr(info.value.to_dict()) + str(info.value)


def test_preflight_allows_unknown_and_unconfigured(cloud, store) -> None:
    cloud.fault(VASTAI, status=503, count=1)
    assert make_manager(cloud, store).ensure_vast_token_valid()["status"] == "unknown"
    unconf = make_manager(cloud, store, configured={VASTAI: None, HUGGINGFACE: None, CIVITAI: None})
    assert unconf.ensure_vast_token_valid()["status"] == "unconfigured"


# ── runtime update ──────────────────────────────────────────────────────────
def test_update_validates_first_and_keeps_old_token_when_rejected(cloud, store, events, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    mgr = make_manager(cloud, store, events)
    old = mgr.effective_token(CIVITAI)
    outcome = mgr.update_token(CIVITAI, "wrong-token-abc123")
    assert not outcome.accepted and outcome.reason == "rejected"
    body = outcome.to_dict()
    assert body["success"] is False and body["error"] == "token rejected by civitai (401)"
    assert mgr.effective_token(CIVITAI) == old and store.get_runtime_secret(CIVITAI) is None
    assert_no_secret(caplog.text + json.dumps(body), cloud, "wrong-token-abc123")


def test_update_refused_while_provider_down_unless_forced(cloud, store, events) -> None:
    mgr = make_manager(cloud, store, events)
    new = cloud.rotate(HUGGINGFACE)
    cloud.fault(HUGGINGFACE, status=503, count=1)
    outcome = mgr.update_token(HUGGINGFACE, new)
    assert (outcome.accepted, outcome.reason) == (False, "unverified")
    assert store.get_runtime_secret(HUGGINGFACE) is None
    cloud.fault(HUGGINGFACE, status=503, count=1)
    forced = mgr.update_token(HUGGINGFACE, new, force=True)
    assert forced.accepted and forced.forced and forced.validation["status"] == "unknown"
    assert mgr.effective_token(HUGGINGFACE) == Secret(new)


def test_update_accepted_replaces_cache_and_emits_event(cloud, store, events, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    mgr = make_manager(cloud, store, events)
    new = cloud.rotate(CIVITAI)
    assert mgr.validate_service(CIVITAI)["status"] == "invalid"  # cached verdict on the old token
    outcome = mgr.update_token(CIVITAI, new)
    assert outcome.accepted and outcome.to_dict() == {
        "success": True, "service": CIVITAI, "validation": outcome.validation}
    assert mgr.effective_token(CIVITAI) == Secret(new)
    cached = mgr.validate_service(CIVITAI, use_cache=True)
    assert (cached["status"], cached["cached"]) == ("valid", True)
    updated = [e for e in events.latest(20) if e.kind == "token-updated"]
    assert updated and updated[-1].fields["service"] == CIVITAI
    assert_no_secret(caplog.text + json.dumps([e.to_dict() for e in events.latest(50)]), cloud, new)


@pytest.mark.parametrize(("service", "token", "field"), [
    ("nope", "abc", "service"), (None, "abc", "service"), (CIVITAI, "", "token"), (CIVITAI, "   ", "token"),
    (CIVITAI, "a\x00b", "token"), (CIVITAI, "x" * 4097, "token"), (CIVITAI, 12, "token"),
])
def test_update_rejects_bad_input_without_calling(service, token, field, cloud, store) -> None:
    with pytest.raises(InvalidInput) as info:
        make_manager(cloud, store).update_token(service, token)
    assert info.value.field == field
    assert sum(cloud.count_requests().values()) == 0


SECOND_WORKER = r"""
import json, os, sys
from vastkeep.state.keys import Keys
from vastkeep.state.connection import connect
from vastkeep.core.settings import Secret
from vastkeep.state.store import StateStore
from vastkeep.tokens.checks import check_specs
from vastkeep.tokens.manager import TokenManager
store = StateStore(connect(os.environ["T_REDIS"]), Keys("vktok"))
old = os.environ["T_OLD"]
mgr = TokenManager(store=store, cache_ms=300000, timeout_s=2.0,
                   configured={"vastai": None, "huggingface": None, "civitai": Secret(old)},
                   specs=check_specs(*json.loads(os.environ["T_URLS"])))
r = mgr.validate_service("civitai", use_cache=False)
print(json.dumps({"status": r["status"], "runtime": mgr.effective_token("civitai") != Secret(old)}))
"""


def _second_worker(cloud: SimCloud, redis_url: str, old: str) -> dict[str, Any]:
    env = {**os.environ, "T_REDIS": redis_url, "T_OLD": old, "T_URLS": json.dumps(cloud.urls()),
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", SECOND_WORKER], env=env, capture_output=True, text=True,
                          timeout=30, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for secret in (*cloud.all_tokens(), old):
        assert secret not in proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_runtime_update_is_seen_by_a_second_process(cloud, store, redis_server) -> None:
    old = cloud.token(CIVITAI)
    new = cloud.rotate(CIVITAI)  # provider rotated the key: the configured one is now rejected
    assert _second_worker(cloud, redis_server.url, old) == {"status": "invalid", "runtime": False}
    assert make_manager(cloud, store).update_token(CIVITAI, new).accepted
    assert _second_worker(cloud, redis_server.url, old) == {"status": "valid", "runtime": True}
