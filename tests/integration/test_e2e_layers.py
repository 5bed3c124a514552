"""Fault scenarios across layers, with real parts only.

Every test crosses at least two layers that the per-module tests exercise alone: an instance is rented
through the real ``VastClient`` from the simulated cloud (its own process), mirrored into the real
``StateStore`` on a real redis-server, validated by the real Layer 3 flow (``vastkeep.ports.flow``) over
loopback sockets, judged by the real ``TokenManager`` against the simulator's token checks, or run
through the embedded real Celery worker. Faults come from the simulator's control API.

(a) rented → loading → ready with the mapped URL and the guide's ✅ line;
(b) every path firewalled → stays loading with the guide's firewall error and ⚠️ line; cleared → ready;
(c) ComfyUI crash on a ready instance → re-validation says refused; restored → ok;
(d) Vast.ai key invalidated → validate_all, durable ``token-invalid`` event, ❌ line, pre-flight refuses;
    update-token with a valid key → accepted, pre-flight passes, the client works with the effective key;
(e) a 429 burst then a 5xx burst → ``list_instances`` still succeeds within bounded, jittered retries;
(f) the Celery tasks on the same scenario: JSON results, no token anywhere in results or logs.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import pytest

from vastkeep.core.backoff import BackoffPolicy, backoff_ceiling
from vastkeep.core.clock import SYSTEM_CLOCK, FakeClock
from vastkeep.core.errors import AuthError, RateLimited, ServerError, TokenInvalid
from vastkeep.core.settings import Secret
from vastkeep.ports import flow as port_flow
from vastkeep.ports.probe import ProbeConfig
from vastkeep.ports.validator import FIREWALL_ERROR, NO_CANDIDATES_ERROR, PortValidator
from vastkeep.providers.http import RetryPolicy
from vastkeep.providers.vast import VastClient
from vastkeep.sim.faults import fingerprint
from vastkeep.state.events import EventLog
from vastkeep.state.store import InstanceRecord, StateStore
from vastkeep.tokens.checks import CIVITAI, HUGGINGFACE, SERVICES, VASTAI, check_specs
from vastkeep.tokens.manager import TokenManager

T = TypeVar("T")
DEADLINE_S = 15.0
TCP_TIMEOUT_S = 0.3
HTTP_TIMEOUT_S = 0.5
FIREWALL_LINE = f"⚠️  Port validation failed: {FIREWALL_ERROR}"


# ── fixtures ────────────────────────────────────────────────────────────────
@pytest.fixture
def cloud(sim: Any) -> Any:
    """The session simulator, reset, with a fast lifecycle and no SSH routes for rented instances."""
    sim.control.set_lifecycle(created_s=0.1, loading_s=0.6, boot_s=0.2, log_interval_s=0.2)
    sim.control.set_rent_defaults(ssh=False, ssh_proxy=False)
    return sim


@pytest.fixture
def vast(cloud: Any) -> Iterator[VastClient]:
    with VastClient(Secret(cloud.api_key), cloud.vast_api_url, timeout_s=(2.0, 5.0)) as client:
        yield client


@pytest.fixture
def validator() -> PortValidator:
    """Layer 3 with short deadlines, allowed to probe the simulator's 127.x.y.z addresses."""
    return PortValidator(ProbeConfig(tcp_timeout_s=TCP_TIMEOUT_S, http_timeout_s=HTTP_TIMEOUT_S,
                                     allow_loopback=True), concurrency=20)


# ── helpers ─────────────────────────────────────────────────────────────────
def wait_for(fn: Callable[[], T | None], what: str, timeout_s: float = DEADLINE_S,
             every_s: float = 0.05) -> T:
    """Poll ``fn`` until it returns something truthy (no fixed sleeps), or fail naming ``what``."""
    deadline = SYSTEM_CLOCK.monotonic() + timeout_s
    last: Any = None
    while SYSTEM_CLOCK.monotonic() < deadline:
        last = fn()
        if last:
            return last
        SYSTEM_CLOCK.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last={last!r}")


def rent(vast: VastClient, label: str) -> int:
    """Search offers and rent the cheapest rentable one, exactly as the warm pool would."""
    offers = vast.search_offers({"rentable": {"eq": True}, "order": [["dph_total", "asc"]]}, limit=3)
    assert offers, "the simulator offers nothing"
    return vast.rent(offers[0].id, image="vastai/comfy:latest", label=label)


def mirror_until_running(vast: VastClient, store: StateStore, iid: int) -> set[str | None]:
    """Poll the provider like the warm pool: record 'loading' while Vast says so; return statuses seen."""
    seen: set[str | None] = set()

    def step() -> bool:
        vi = vast.show_instance(iid)
        seen.add(vi.actual_status)
        if vi.is_loading:
            rec = store.get_instance(str(iid))
            if rec is not None and rec.status != "loading":
                store.update_instance(str(iid), {"status": "loading", "vast_status": vi.actual_status})
        return vi.is_ready and bool(vi.ports)

    wait_for(step, f"instance {iid} running")
    store.update_instance(str(iid), {"vast_status": "running"})
    return seen


def validate_until(store: StateStore, events: EventLog, validator: PortValidator, iid: int,
                   vast: VastClient | None, ok: Callable[[dict[str, Any]], bool],
                   what: str) -> dict[str, Any]:
    """Run the Layer 3 flow (as each poll would) until ``ok(result)``."""
    return wait_for(lambda: (r := port_flow.validate_instance(store, events, validator, str(iid), vast=vast))
                    and ok(r) and r, what)


def kinds(events: EventLog, iid: int) -> list[str]:
    return [e.kind for e in events.latest(100) if e.fields.get("instance_id") == str(iid)]


def rented_ready(cloud: Any, vast: VastClient, store: StateStore, events: EventLog, validator: PortValidator,
                 label: str) -> tuple[int, dict[str, Any]]:
    """Rent → mirror → validate until ready; returns (id, the passing result)."""
    iid = rent(vast, label)
    store.create_instance(InstanceRecord(instance_id=str(iid), status="starting", label=label))
    mirror_until_running(vast, store, iid)
    result = validate_until(store, events, validator, iid, vast, lambda r: r["success"], f"{iid} ready")
    return iid, result


def token_manager(cloud: Any, store: StateStore, events: EventLog | None, vast_key: str | None = None,
                  clock: Any = SYSTEM_CLOCK) -> TokenManager:
    info = cloud.info
    configured = {VASTAI: vast_key or info["api_key"], HUGGINGFACE: info["hf_token"],
                  CIVITAI: info["civitai_token"]}
    return TokenManager(store=store, events=events, clock=clock, cache_ms=300_000, timeout_s=2.0,
                        configured={s: Secret(v) for s, v in configured.items()},
                        specs=check_specs(info["vast_api_url"], info["huggingface_api_url"],
                                          info["civitai_api_url"]))


def sim_secrets(cloud: Any, *extra: str) -> list[str]:
    """Every key the simulator issued plus any the test minted (to prove none leaks)."""
    info = cloud.info
    return [info["api_key"], info["hf_token"], info["civitai_token"], info["control_token"], *extra]


def assert_no_secret(blob: str, keys: list[str]) -> None:
    for key in keys:
        assert key not in blob, "a token leaked"


# ── (a) loading → ready ─────────────────────────────────────────────────────
def test_rented_instance_goes_loading_then_ready_on_mapped_port(cloud, vast, store, events, validator,
                                                                caplog) -> None:
    caplog.set_level(logging.INFO)
    iid = rent(vast, "vk-e2e-a")
    assert store.create_instance(InstanceRecord(instance_id=str(iid), status="starting", label="vk-e2e-a"))
    wait_for(lambda: vast.show_instance(iid).is_loading, f"{iid} loading at the provider")
    store.update_instance(str(iid), {"status": "loading", "vast_status": "loading"})

    # While Vast.ai reports no ports, Layer 3 has nothing to probe: the record stays loading.
    early = port_flow.validate_instance(store, events, validator, str(iid), vast=vast)
    assert early["success"] is False and early["error"] == NO_CANDIDATES_ERROR and early["candidates"] == []
    rec = store.get_instance(str(iid))
    assert rec.status == "loading" and rec.connection_url is None and rec.ports == {}

    seen = mirror_until_running(vast, store, iid)
    assert "running" in seen
    result = validate_until(store, events, validator, iid, vast, lambda r: r["success"], f"{iid} ready")

    vi = vast.show_instance(iid)
    mapped = vi.ports["8188/tcp"]
    assert mapped != 8188
    assert result["kind"] == "mapped" and result["port"] == mapped
    assert result["connection_url"] == f"http://{vi.public_ip}:{mapped}"
    # direct ip:8188 is not exposed by this rental: probed (reported 8188/tcp) and refused, mapped wins
    assert [(c["kind"], c["outcome"]) for c in result["candidates"]] == [
        ("direct", "refused"), ("mapped", "ok")]
    rec = store.get_instance(str(iid))
    assert rec.status == "ready" and rec.connection_url == result["connection_url"]
    assert rec.public_ip == vi.public_ip and rec.ports["8188/tcp"] == mapped  # refreshed from the provider
    assert rec.port_validation["success"] is True and rec.port_validation["kind"] == "mapped"
    assert f"✅ Port {mapped} (mapped) validated and accessible" in caplog.messages
    validated = [e for e in events.latest(50) if e.kind == "port-validated"]
    assert [e.fields["connection_url"] for e in validated] == [result["connection_url"]]
    assert kinds(events, iid)[-1] == "port-validated"


# ── (b) firewall ────────────────────────────────────────────────────────────
def test_firewall_keeps_loading_then_clearing_it_makes_ready(cloud, vast, store, events, validator,
                                                             caplog) -> None:
    caplog.set_level(logging.INFO)
    cloud.control.set_rent_defaults(direct_8188=True, port_18188=True)
    iid = rent(vast, "vk-e2e-b")
    store.create_instance(InstanceRecord(instance_id=str(iid), status="loading", label="vk-e2e-b"))
    mirror_until_running(vast, store, iid)
    vi = vast.show_instance(iid)
    assert set(vi.ports) >= {"8188/tcp", "18188/tcp"}
    cloud.control.net(iid, "firewall")  # every path: direct :8188, 8188/tcp, 18188/tcp

    t0 = SYSTEM_CLOCK.monotonic()
    blocked = port_flow.validate_instance(store, events, validator, str(iid), vast=vast)
    elapsed = SYSTEM_CLOCK.monotonic() - t0
    assert blocked["success"] is False and blocked["firewall"] is True and blocked["error"] == FIREWALL_ERROR
    assert [(c["kind"], c["outcome"]) for c in blocked["candidates"]] == [
        ("direct", "timeout"), ("mapped", "timeout"), ("fallback", "timeout")]
    assert elapsed < 2 * TCP_TIMEOUT_S + 0.5, "candidates must time out in parallel"
    rec = store.get_instance(str(iid))
    assert rec.status == "loading" and rec.connection_url is None
    assert rec.port_validation["error"] == FIREWALL_ERROR and rec.port_validation["firewall"] is True
    assert FIREWALL_LINE in caplog.messages
    failed = [e for e in events.latest(50) if e.kind == "port-validation-failed"]
    assert failed[-1].fields["firewall"] is True and failed[-1].fields["status"] == "loading"

    cloud.control.open_path(iid)  # the firewall is lifted: the next poll's validation promotes it
    ready = validate_until(store, events, validator, iid, vast, lambda r: r["success"], f"{iid} ready")
    assert ready["kind"] == "direct" and ready["port"] == 8188  # priority, not speed
    rec = store.get_instance(str(iid))
    assert rec.status == "ready" and rec.connection_url == f"http://{vi.public_ip}:8188"
    assert "✅ Port 8188 (direct) validated and accessible" in caplog.messages
    assert kinds(events, iid)[-2:] == ["port-validation-failed", "port-validated"]


# ── (c) ComfyUI crash on a ready instance ───────────────────────────────────
def test_comfy_crash_on_ready_instance_then_restore(cloud, vast, store, events, validator, caplog) -> None:
    caplog.set_level(logging.INFO)
    iid, first = rented_ready(cloud, vast, store, events, validator, "vk-e2e-c")
    url = first["connection_url"]

    cloud.control.crash_comfy(iid)  # every ComfyUI path refuses; open connections are reset
    down = port_flow.validate_instance(store, events, validator, str(iid), vast=vast)
    assert down["success"] is False and down["firewall"] is False
    assert {c["outcome"] for c in down["candidates"]} == {"refused"}
    assert "refused" in down["error"].lower()
    rec = store.get_instance(str(iid))
    # Layer 3 records the failure; health is Layer 4's call, so a ready instance keeps its status and URL
    assert rec.status == "ready" and rec.connection_url == url
    assert rec.port_validation["success"] is False and rec.port_validation["error"] == down["error"]
    assert f"⚠️  Port validation failed: {down['error']}" in caplog.messages

    again = port_flow.validate_instance(store, events, validator, str(iid), vast=vast)
    assert again["error"] == down["error"]  # steady failure: no second event
    cloud.control.restore_comfy(iid)
    up = validate_until(store, events, validator, iid, vast, lambda r: r["success"], f"{iid} back")
    assert up["connection_url"] == url and up["kind"] == "mapped"
    assert store.get_instance(str(iid)).port_validation["success"] is True
    assert kinds(events, iid)[-3:] == ["port-validated", "port-validation-failed", "port-validated"]


# ── (d) Vast.ai key invalidated, then replaced at runtime ───────────────────
def test_invalid_vast_key_blocks_renting_until_a_valid_key_is_updated(cloud, store, events, caplog) -> None:
    caplog.set_level(logging.INFO)
    mgr = token_manager(cloud, store, events)
    assert mgr.ensure_vast_token_valid()["status"] == "valid"

    cloud.control.invalidate_token("vast")  # the provider now rejects every key
    results = mgr.validate_all(use_cache=False)
    assert results[VASTAI]["status"] == "invalid" and results[VASTAI]["valid"] is False
    assert results[VASTAI]["httpStatus"] == 401
    assert results[HUGGINGFACE]["status"] == "valid" and results[CIVITAI]["status"] == "valid"
    invalid = [e for e in events.latest(50) if e.kind == "token-invalid"]
    assert [(e.fields["service"], e.fields["http_status"]) for e in invalid] == [(VASTAI, 401)]
    lines = [m for m in caplog.messages if m.startswith("❌ vastai token validation FAILED: ")]
    assert lines == [f"❌ vastai token validation FAILED: {results[VASTAI]['error']}"]

    # Pre-flight before renting refuses, from the shared cache: no new request to the provider.
    before = len(cloud.control.requests_seen(service="vast"))
    with pytest.raises(TokenInvalid) as refused:
        token_manager(cloud, store, events).ensure_vast_token_valid()  # another worker, same Redis
    assert refused.value.service == VASTAI
    assert len(cloud.control.requests_seen(service="vast")) == before
    with pytest.raises(AuthError), VastClient(Secret(cloud.api_key), cloud.vast_api_url) as old_client:
        old_client.check_key()

    # update-token with a key the provider rejects is refused; the old one stays
    rejected_key = secrets.token_hex(16)
    refused_update = mgr.update_token(VASTAI, rejected_key)
    assert refused_update.accepted is False and refused_update.reason == "rejected"
    assert store.get_runtime_secret(VASTAI) is None

    new_key = secrets.token_hex(16)
    cloud.control.set_valid_tokens(vast=[new_key])  # the operator's newly issued key
    update = mgr.update_token(VASTAI, new_key)
    assert update.accepted is True and update.validation["status"] == "valid"
    body = json.dumps(update.to_dict())
    other = token_manager(cloud, store, events)  # a second worker sees the runtime key without restart
    assert other.effective_token(VASTAI) == Secret(new_key)
    assert other.ensure_vast_token_valid()["status"] == "valid"
    assert mgr.ensure_vast_token_valid()["cached"] is True
    with VastClient(other.effective_token(VASTAI), cloud.vast_api_url) as client:
        client.check_key()
        assert client.list_instances() == []
    token_events = [e.kind for e in events.latest(50) if e.kind.startswith("token-update")]
    assert token_events == ["token-update-rejected", "token-updated"]

    blob = body + caplog.text + json.dumps([e.to_dict() for e in events.latest(100)]) + json.dumps(results)
    assert_no_secret(blob, sim_secrets(cloud, new_key, rejected_key))
    # what the simulator saw: bearer auth only, never the key in a query string
    assert {r["auth"] for r in cloud.control.requests_seen(service="vast")} == {"bearer"}


# ── (e) 429 burst then 5xx burst ────────────────────────────────────────────
def test_rate_limit_then_server_error_bursts_are_ridden_out(cloud, caplog) -> None:
    caplog.set_level(logging.INFO)
    ids = {cloud.control.create_instance(running=True, ssh=False, ssh_proxy=False)["id"] for _ in range(3)}
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=4, backoff=BackoffPolicy(base_s=0.5, cap_s=10.0))
    with VastClient(Secret(cloud.api_key), cloud.vast_api_url, clock=clock, rng=random.Random(42),
                    retry=policy) as client:
        cloud.control.clear_requests()
        cloud.control.rate_limit_burst(2)  # "API requests too frequent", text/plain, no Retry-After
        cloud.control.server_error_burst(1, 503)
        assert {vi.id for vi in client.list_instances()} == ids
        seen = cloud.control.requests_seen(service="vast")
        assert len(seen) == 4  # 429, 429, 503, 200
        assert len(clock.sleeps) == 3
        for attempt, slept in enumerate(clock.sleeps):  # full jitter: uniform(0, ceiling)
            assert 0 <= slept <= backoff_ceiling(attempt, policy.backoff)
        assert clock.sleeps != [backoff_ceiling(a, policy.backoff) for a in range(3)]

        # Bounded: a burst longer than the policy surfaces as the right error after exactly 4 attempts...
        clock.sleeps.clear()
        cloud.control.rate_limit_burst(4)
        with pytest.raises(RateLimited) as limited:
            client.list_instances()
        assert limited.value.attempts == 4 and limited.value.status == 429 and len(clock.sleeps) == 3
        cloud.control.server_error_burst(5, 502)
        with pytest.raises(ServerError) as server:
            client.list_instances()
        assert server.value.attempts == 4 and server.value.status == 502
        # ... and the next call after the burst is served again (one fault request left, then OK)
        assert {vi.id for vi in client.list_instances()} == ids
    total_sleep = sum(clock.sleeps)
    assert total_sleep <= 3 * sum(backoff_ceiling(a, policy.backoff) for a in range(3))
    retry_lines = [m for m in caplog.messages if "retrying in" in m]
    assert retry_lines and all("HTTP 429" in m or "HTTP 50" in m for m in retry_lines)
    assert_no_secret(caplog.text, sim_secrets(cloud))


# ── (f) the same through the embedded Celery worker ─────────────────────────
@pytest.fixture
def worker_on_sim(cloud: Any, vk_celery_worker: Any, vk_settings: Any, redis_client: Any) -> Iterator[Any]:
    """The embedded worker's settings pointed at the simulator, with short probe deadlines."""
    from worker import wiring

    info = cloud.info
    wiring.configure(replace(
        vk_settings, vast_api_key=Secret(info["api_key"]), vast_api_url=info["vast_api_url"],
        huggingface_hub_token=Secret(info["hf_token"]), huggingface_api_url=info["huggingface_api_url"],
        civitai_token=Secret(info["civitai_token"]), civitai_api_url=info["civitai_api_url"],
        port_tcp_timeout_ms=int(TCP_TIMEOUT_S * 1000), port_http_timeout_ms=int(HTTP_TIMEOUT_S * 1000),
        port_probe_concurrency=20))
    yield cloud
    wiring.configure(vk_settings)


def run_task(name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    import tasks.ports
    import tasks.tokens

    task = {"vastkeep.ports.validate_instance": tasks.ports.validate_instance,
            "vastkeep.tokens.validate_all": tasks.tokens.validate_all}[name]
    result = task.apply_async(args=args, kwargs=kwargs).get(timeout=30)
    assert isinstance(result, dict)
    assert json.loads(json.dumps(result)) == result  # plain JSON round trip
    return result


def test_tasks_across_layers_through_the_worker_leak_no_token(worker_on_sim, store, events, caplog) -> None:
    import tasks.ports

    caplog.set_level(logging.INFO)
    cloud = worker_on_sim
    # The worker's configured Vast.ai key is rotated out at the provider (only the new key works now).
    new_key = secrets.token_hex(16)
    cloud.control.set_valid_tokens(vast=[new_key])
    with VastClient(Secret(new_key), cloud.vast_api_url) as client:
        iid = rent(client, "vk-e2e-f")
        wait_for(lambda: client.show_instance(iid).is_ready, f"{iid} running at the provider")
    # A record without an address: the port task must ask Vast.ai first, with the worker's key.
    store.create_instance(InstanceRecord(instance_id=str(iid), status="loading", label="vk-e2e-f"))

    def show_requests(since: int) -> list[dict[str, Any]]:
        return [r for r in cloud.control.requests_seen(since=since, service="vast")
                if r["path"].rstrip("/").endswith(f"/instances/{iid}")]

    mark = max((r["seq"] for r in cloud.control.requests_seen()), default=0)
    rejected = tasks.ports.validate_instance.apply_async(args=[str(iid)])
    try:
        outcome: Any = rejected.get(timeout=30)
    except AuthError as exc:  # a rejected key is permanent: the task fails at once, no retry storm
        outcome = exc
    assert isinstance(outcome, AuthError) or outcome["success"] is False
    assert len(show_requests(mark)) == 1 and show_requests(mark)[0]["key_valid"] is False
    assert store.get_instance(str(iid)).status == "loading"
    failure_text = str(outcome) + str(rejected.traceback or "")

    tokens_before = run_task("vastkeep.tokens.validate_all")
    assert tokens_before["ok"] is True and tokens_before["invalid"] == [VASTAI]
    assert tokens_before["statuses"] == {VASTAI: "invalid", HUGGINGFACE: "valid", CIVITAI: "valid"}
    assert any(m.startswith("❌ vastai token validation FAILED: ") for m in caplog.messages)

    # The operator updates the key at runtime through the library (what update-token calls).
    assert token_manager(cloud, store, events).update_token(VASTAI, new_key).accepted
    tokens = run_task("vastkeep.tokens.validate_all")
    assert tokens["invalid"] == [] and tokens["statuses"] == dict.fromkeys(SERVICES, "valid")

    mark = max(r["seq"] for r in cloud.control.requests_seen())
    result = wait_for(lambda: (r := run_task("vastkeep.ports.validate_instance", str(iid)))["success"] and r,
                      f"{iid} ready through the worker")
    refreshed = show_requests(mark)
    assert refreshed and {r["key_fingerprint"] for r in refreshed} == {fingerprint(new_key)}  # runtime key
    assert result["kind"] == "mapped" and result["instance_id"] == str(iid)
    rec = store.get_instance(str(iid))
    assert rec.status == "ready" and rec.connection_url == result["connection_url"]
    assert f"✅ Port {result['port']} (mapped) validated and accessible" in caplog.messages

    cloud.control.net(iid, "firewall")
    blocked = run_task("vastkeep.ports.validate_instance", str(iid))
    assert blocked["success"] is False and blocked["firewall"] is False
    # direct :8188 is not exposed by this rental (refused), so one blocked path is a timeout, not "firewall"
    assert {c["kind"]: c["outcome"] for c in blocked["candidates"]} == {
        "direct": "refused", "mapped": "timeout"}
    assert store.get_instance(str(iid)).status == "ready"

    durable = [e.to_dict() for e in events.latest(100)]
    assert any(e["kind"] == "token-invalid" and e["fields"]["service"] == VASTAI for e in durable)
    assert any(e["kind"] == "token-updated" for e in durable)
    assert [e["kind"] for e in durable if e["kind"].startswith("port-")][-2:] == [
        "port-validated", "port-validation-failed"]
    assert {r["auth"] for r in cloud.control.requests_seen(service="vast")} == {"bearer"}
    blob = json.dumps([tokens_before, tokens, result, blocked, durable]) + caplog.text + failure_text
    assert_no_secret(blob, sim_secrets(cloud, new_key))
