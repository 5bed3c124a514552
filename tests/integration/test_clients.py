"""tokens.preflight.vast_client: the effective Vast.ai key (runtime override, else configured), real Redis."""

from __future__ import annotations

import pytest
import redis

from tests.fixtures.state import State
from vastkeep.core.errors import TokenInvalid
from vastkeep.core.settings import Secret, load_settings
from vastkeep.sim.faults import fingerprint
from vastkeep.state.events import EventLog
from vastkeep.state.keys import Keys
from vastkeep.tokens.manager import TokenManager
from vastkeep.tokens.preflight import vast_client


def test_no_key_anywhere_means_no_client(store) -> None:
    settings = load_settings(environ={}, env_file=False)
    assert settings.vast_api_key is None
    assert vast_client(settings, store) is None


def test_runtime_override_wins_over_configured_key(store, sim) -> None:
    settings = load_settings(environ={"VAST_API_KEY": sim.api_key, "VAST_API_URL": sim.vast_api_url},
                             env_file=False)
    sim.control.clear_requests()
    with vast_client(settings, store) as client:
        client.list_instances()
    store.set_runtime_secret("vastai", "runtime-key-0123456789")
    sim.control.set_valid_tokens(vast=["runtime-key-0123456789"])
    with vast_client(settings, store) as client:
        assert "runtime-key" not in repr(client)
        client.list_instances()
    prints = [r["key_fingerprint"] for r in sim.control.requests_seen(service="vast")]
    assert prints == [fingerprint(sim.api_key), fingerprint("runtime-key-0123456789")]
    store.clear_runtime_secret("vastai")
    assert vast_client(settings, store) is not None  # back to the configured key


def test_runtime_override_without_configured_key(store) -> None:
    settings = load_settings(environ={}, env_file=False)
    store.set_runtime_secret("vastai", Secret("only-at-runtime-abcdef"))
    client = vast_client(settings, store)
    assert client is not None
    client.close()


def test_redis_error_is_not_swallowed() -> None:
    """An unreadable override must not silently fall back to a key an operator has since replaced."""
    from tests.fixtures.redis_server import start_redis_server

    own = start_redis_server()
    store = State.on(own.url, retry_attempts=0, socket_connect_timeout_s=0.5).store
    own.stop()
    settings = load_settings(environ={"VAST_API_KEY": "configured-key-abcdef"}, env_file=False)
    with pytest.raises(redis.ConnectionError):
        vast_client(settings, store)


# ── the Layer 2 pre-flight in front of every rental ─────────────────────────
def _asks(sim) -> list[dict]:
    return [r for r in sim.control.requests_seen(service="vast")
            if r["method"] == "PUT" and "/asks/" in r["path"]]


def _sim_settings(sim):
    return load_settings(environ={"VAST_API_KEY": sim.api_key, "VAST_API_URL": sim.vast_api_url},
                         env_file=False)


def test_rent_is_refused_before_any_request_while_the_vast_key_is_invalid(store, sim) -> None:
    settings = _sim_settings(sim)
    client = vast_client(settings, store)
    (offer,) = client.search_offers({"rentable": {"eq": True}}, limit=1)
    sim.control.invalidate_token("vast")
    verdict = TokenManager.from_settings(settings, store).validate_service("vastai", use_cache=False)
    assert verdict["status"] == "invalid"  # now cached in Redis for every worker
    sim.control.clear_requests()
    with pytest.raises(TokenInvalid) as refused:
        client.rent(offer.id, image="vastai/comfy:latest", label="vk-preflight")
    assert refused.value.service == "vastai"
    assert sim.api_key not in str(refused.value) and sim.api_key not in repr(refused.value.to_dict())
    assert _asks(sim) == []
    assert sim.control.requests_seen(service="vast") == []  # the cached verdict: no call at all
    client.close()

    sim.control.reset_tokens()  # the key works again and a fresh check says so
    assert TokenManager.from_settings(settings, store).validate_service(
        "vastai", use_cache=False)["status"] == "valid"
    with vast_client(settings, store) as client:
        iid = client.rent(offer.id, image="vastai/comfy:latest", label="vk-preflight")
    assert iid > 0 and len(_asks(sim)) == 1


def test_preflight_without_a_cached_result_checks_now_and_records_the_event(store, sim, redis_client) -> None:
    settings = _sim_settings(sim)
    events = EventLog(redis_client, Keys())
    sim.control.invalidate_token("vast")
    sim.control.clear_requests()
    with vast_client(settings, store, events=events) as client, pytest.raises(TokenInvalid):
        client.rent(1, image="vastai/comfy:latest")
    seen = sim.control.requests_seen(service="vast")
    assert [(r["method"], r["path"]) for r in seen] == [("GET", "/api/v0/instances")]  # the check only
    assert [e.fields["service"] for e in events.latest(10) if e.kind == "token-invalid"] == ["vastai"]
