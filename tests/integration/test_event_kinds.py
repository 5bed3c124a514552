"""EVENT_KINDS documents what the code really emits: every kind the library writes is listed, with exactly the
fields it carries. The events come from the real flows (port_flow, TokenManager against the simulator) on a
real redis-server, so a renamed field in the code fails here instead of silently drifting from the docs.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.event_kinds import documented_fields
from tests.fixtures.state import State
from vastkeep.core.clock import FakeClock
from vastkeep.core.settings import Secret
from vastkeep.ports import flow as port_flow
from vastkeep.ports.validator import PortValidation
from vastkeep.state.events import EventLog
from vastkeep.state.keys import Keys
from vastkeep.state.store import InstanceRecord, StateStore
from vastkeep.tokens.checks import CIVITAI, HUGGINGFACE, VASTAI, check_specs
from vastkeep.tokens.manager import TokenManager


def assert_documented(events: EventLog) -> set[str]:
    seen = set()
    for ev in events.read(count=1000):
        assert set(ev.fields) == documented_fields(ev.kind), ev.kind
        seen.add(ev.kind)
    return seen


@pytest.fixture
def store(redis_client: Any, clock: FakeClock) -> StateStore:
    return State(redis_client, clock=clock).store


@pytest.fixture
def events(redis_client: Any, clock: FakeClock) -> EventLog:
    return EventLog(redis_client, Keys(), clock)


def test_port_flow_events_match_their_docs(store, events, clock) -> None:
    store.put_instance(InstanceRecord(instance_id="701", status="loading"))
    store.put_instance(InstanceRecord(instance_id="702", status="loading"))
    passed = PortValidation(True, port=8188, kind="direct", connection_url="http://203.0.113.7:8188")
    port_flow.record_validation(store, events, "701", passed, clock)
    port_flow.record_validation(store, events, "702", PortValidation(False, error="refused"), clock)
    assert assert_documented(events) == {"port-validated", "port-validation-failed"}
    assert "candidate" in documented_fields("port-validated") and "method" not in documented_fields(
        "port-validated")


def test_gone_at_provider_event_matches_its_docs(store, events) -> None:
    store.put_instance(InstanceRecord(instance_id="703", status="loading"))
    port_flow.mark_gone(store, events, "703")
    assert assert_documented(events) == {"instance-status"}


def test_token_events_match_their_docs(sim, store, events) -> None:
    info = sim.info
    manager = TokenManager(
        store=store, events=events, cache_ms=300_000, timeout_s=2.0,
        configured={VASTAI: Secret(info["api_key"]), HUGGINGFACE: Secret(info["hf_token"]),
                    CIVITAI: Secret(info["civitai_token"])},
        specs=check_specs(info["vast_api_url"], info["huggingface_api_url"], info["civitai_api_url"]))
    assert manager.update_token(VASTAI, "vk-not-a-key-the-provider-knows").accepted is False
    assert manager.update_token(VASTAI, info["api_key"]).accepted is True
    manager.validate_service(HUGGINGFACE, use_cache=False)
    sim.control.invalidate_token("civitai")
    manager.validate_service(CIVITAI, use_cache=False)
    assert assert_documented(events) == {"token-update-rejected", "token-updated", "token-valid",
                                         "token-invalid"}


def test_supervision_events_match_their_docs(redis_client, clock, events) -> None:
    """process-restarted / process-failed / process-crash-loop as the sweep emits them (guide's fields)."""
    from vastkeep.core.backoff import RestartPolicy
    from vastkeep.supervision import SupervisionPolicy, keepalive_shard, no_jitter, sweep

    policy = SupervisionPolicy(restart=RestartPolicy(max_restarts=1), stale_s=1, start_timeout_s=2,
                               crash_loop_crashes=2, crash_loop_window_s=600)
    for _ in range(40):  # never beats: start, time out (crash 1), restart after 10 s, time out (failed)
        sweep(redis=redis_client, keys=Keys("evtest"), specs=[keepalive_shard(0)], policy=policy,
              start=lambda s: None, events=events, clock=clock, jitter=no_jitter)
        clock.advance(1.0)
    assert assert_documented(events) == {"process-restarted", "process-failed", "process-crash-loop"}
