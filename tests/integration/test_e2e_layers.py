"""Fault scenarios across layers, driven through the entry points production uses.

Nothing here orchestrates the layers from the test side. The test plays the parts that are not vastkeep's:
the cloud (the simulator, its own process, with faults from its control API) and the operator (HTTP calls
to the admin API), who also rents an instance of their own outside the warm pool (through the product's
pre-flighted ``vastkeep.tokens.vast_client``, then a ``loading`` record, as ``instances/{id}/adopt`` leaves
one). Everything else is the product's own code on its production path: the port sweep queued the way
production queues it, by the operator through the admin API (``POST /ports/validate`` sends
``vastkeep.ports.validate_pool`` by name; beat does not run it: polling queues ``validate_instance`` per
instance, and a lease's end queues its own check, see test_stack_lease_cycles.py), beat's
``vastkeep.tokens.validate_all`` sent by name, both to the session's real Celery worker on the real broker,
the admin API built by ``worker.api.create`` (the ``uvicorn --factory`` target) with its real dispatcher,
and the settings that configure both. The assertions read what production leaves behind: task results, store
records, the durable event stream, the guide's log lines.

(a) rented → loading → ready with the mapped URL and the guide's ✅ line, by the port sweep;
(b) every path firewalled → stays loading with the guide's firewall error and ⚠️ line; cleared → ready;
(c) ComfyUI crash on a ready instance → the sweep says refused; restored → ok;
(d) Vast.ai key invalidated → validate_all, durable ``token-invalid`` event, ❌ line, the pre-flight refuses
    to rent; update-token through the admin API with a valid key → accepted, every worker uses it;
(e) a 429 burst then a 5xx burst → ``list_instances`` still succeeds within bounded, jittered retries;
(f) a rotated key on a port validation queued through the admin API: no token anywhere in results or logs.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import requests

from tests.fixtures.helpers import ServedApp, wait_for
from vastkeep.core.backoff import BackoffPolicy, backoff_ceiling
from vastkeep.core.clock import SYSTEM_CLOCK, FakeClock
from vastkeep.core.errors import AuthError, RateLimited, ServerError, TokenInvalid
from vastkeep.core.settings import Secret, Settings, load_settings
from vastkeep.ports.validator import FIREWALL_ERROR, NO_CANDIDATES_ERROR
from vastkeep.providers.http import RetryPolicy
from vastkeep.providers.vast import VastClient
from vastkeep.sim.faults import fingerprint
from vastkeep.state.events import EventLog
from vastkeep.state.store import InstanceRecord, StateStore
from vastkeep.tokens import vast_client
from vastkeep.tokens.checks import CIVITAI, HUGGINGFACE, SERVICES, VASTAI

T = TypeVar("T")
DEADLINE_S = 15.0
TCP_TIMEOUT_MS = 300
HTTP_TIMEOUT_MS = 500
ADMIN_KEY = "e2e-admin-key-0123456789"
FIREWALL_LINE = f"⚠️  Port validation failed: {FIREWALL_ERROR}"


# ── fixtures ────────────────────────────────────────────────────────────────
@pytest.fixture
def cloud(sim: Any) -> Any:
    """The session simulator, reset, with a fast lifecycle and no SSH routes for rented instances."""
    sim.control.set_lifecycle(created_s=0.1, loading_s=0.6, boot_s=0.2, log_interval_s=0.2)
    sim.control.set_rent_defaults(ssh=False, ssh_proxy=False)
    return sim


@pytest.fixture
def production(cloud: Any, vk_celery_worker: Any, vk_settings: Any, redis_server: Any,
               redis_client: Any) -> Iterator[Settings]:
    """The settings a deployment on this cloud would have, loaded the production way and given to the
    session's worker (and to the admin API built below). Only the probe deadlines are shorter."""
    from worker import wiring

    info = cloud.info
    settings = load_settings(environ={
        "REDIS_URL": redis_server.url, "VASTKEEP_SIMULATED": "1", "ADMIN_API_KEY": ADMIN_KEY,
        "VAST_API_KEY": info["api_key"], "VAST_API_URL": info["vast_api_url"],
        "HUGGINGFACE_HUB_TOKEN": info["hf_token"], "HUGGINGFACE_API_URL": info["huggingface_api_url"],
        "CIVITAI_TOKEN": info["civitai_token"], "CIVITAI_API_URL": info["civitai_api_url"],
        "PORT_TCP_TIMEOUT_MS": str(TCP_TIMEOUT_MS), "PORT_HTTP_TIMEOUT_MS": str(HTTP_TIMEOUT_MS),
        "PORT_PROBE_CONCURRENCY": "20", "LOG_LEVEL": "WARNING"}, env_file=False)
    wiring.configure(settings)
    try:
        yield settings
    finally:
        wiring.configure(vk_settings)


@pytest.fixture
def admin(production: Settings) -> Iterator[ServedApp]:
    """The admin API exactly as ``uvicorn --factory worker.api:create`` builds it, on a loopback port."""
    from worker.api import create

    with ServedApp(create()) as served:
        yield served


# ── the product's entry points ──────────────────────────────────────────────
def beat(name: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """Send task ``name`` as beat does (by name, routed by the app) and return the worker's result."""
    from worker.app import app

    result = app.send_task(name).get(timeout=timeout_s)
    assert isinstance(result, dict)
    assert json.loads(json.dumps(result)) == result  # plain JSON round trip
    return result


def sweep(admin: ServedApp) -> dict[str, Any]:
    """One port sweep, queued by the operator through the admin API (``POST /ports/validate`` with no
    instance: ``vastkeep.ports.validate_pool`` by name on the real worker); it must not be skipped."""
    result = queued_result(admin, call_admin(admin, "POST", "/ports/validate", json={}))
    assert isinstance(result, dict), result
    assert json.loads(json.dumps(result)) == result  # plain JSON round trip
    assert "skipped" not in result or "refresh_error" in result, result
    return result


def call_admin(admin: ServedApp, method: str, path: str, **kw: Any) -> requests.Response:
    return requests.request(method, f"{admin.url}/api/proxy/admin{path}", headers={"X-Admin-Key": ADMIN_KEY},
                            timeout=30, **kw)


def queued_result(admin: ServedApp, response: requests.Response) -> Any:
    """The worker's result of the task an admin endpoint queued (an exception instance if it failed)."""
    from worker.app import app

    assert response.status_code == 202, response.text
    res = app.AsyncResult(response.json()["taskId"])
    try:
        return res.get(timeout=30)
    except Exception as exc:  # noqa: BLE001 - the caller asserts on the failure
        return exc


def verdict(store: StateStore, iid: int) -> dict[str, Any]:
    """The port verdict the product stored for ``iid``."""
    rec = store.get_instance(str(iid))
    assert rec is not None and rec.port_validation, f"no verdict stored for {iid}"
    return rec.port_validation


def sweep_until(admin: ServedApp, store: StateStore, iid: int, ok: Callable[[dict[str, Any]], bool],
                what: str) -> dict[str, Any]:
    """Sweep (as the operator would, again) until the stored verdict satisfies ``ok``."""
    def step() -> dict[str, Any] | None:
        sweep(admin)
        pv = verdict(store, iid)
        return pv if ok(pv) else None

    return wait_for(step, DEADLINE_S, what, interval_s=0.05)


def rent(settings: Settings, store: StateStore, label: str) -> int:
    """The operator's own instance (outside the warm pool): the cheapest rentable offer, rented through the
    product's pre-flighted client, then a ``loading`` record (Layer 3 promotes it)."""
    with vast_client(settings, store) as vast:
        offers = vast.search_offers({"rentable": {"eq": True}, "order": [["dph_total", "asc"]]}, limit=3)
        assert offers, "the simulator offers nothing"
        iid = vast.rent(offers[0].id, image="vastai/comfy:latest", label=label)
    assert store.create_instance(InstanceRecord(instance_id=str(iid), status="loading", label=label))
    return iid


def at_provider(cloud: Any, iid: int) -> Any:
    """How the cloud reports ``iid`` now (the test watching the cloud, not a product step)."""
    with VastClient(Secret(cloud.api_key), cloud.vast_api_url) as client:
        return client.show_instance(iid)


def running(cloud: Any, iid: int) -> Any:
    return wait_for(lambda: (vi := at_provider(cloud, iid)).is_ready and vi.ports and vi, DEADLINE_S,
                    f"{iid} running at the provider", interval_s=0.05)


def kinds(events: EventLog, iid: int) -> list[str]:
    return [e.kind for e in events.latest(100) if e.fields.get("instance_id") == str(iid)]


def sim_secrets(cloud: Any, *extra: str) -> list[str]:
    """Every key the simulator issued plus any the test minted (to prove none leaks)."""
    info = cloud.info
    return [info["api_key"], info["hf_token"], info["civitai_token"], info["control_token"], *extra]


def assert_no_secret(blob: str, keys: list[str]) -> None:
    for key in keys:
        assert key not in blob, "a token leaked"


# ── (a) loading → ready ─────────────────────────────────────────────────────
def test_rented_instance_goes_loading_then_ready_on_mapped_port(production, admin, cloud, store, events,
                                                                caplog) -> None:
    caplog.set_level(logging.INFO)
    iid = rent(production, store, "vk-e2e-a")
    wait_for(lambda: at_provider(cloud, iid).is_loading, DEADLINE_S, f"{iid} loading at the provider",
             interval_s=0.05)

    # While Vast.ai reports no ports, Layer 3 has nothing to probe: the record stays loading.
    early = sweep(admin)
    assert early["checked"] == 1 and early["passed"] == 0
    pv = verdict(store, iid)
    assert pv["success"] is False and pv["error"] == NO_CANDIDATES_ERROR and pv["candidates"] == []
    rec = store.get_instance(str(iid))
    assert rec.status == "loading" and rec.connection_url is None and rec.ports == {}

    result = sweep_until(admin, store, iid, lambda pv: pv["success"], f"{iid} ready")
    vi = at_provider(cloud, iid)
    mapped = vi.ports["8188/tcp"]
    assert mapped != 8188
    assert result["kind"] == "mapped" and result["port"] == mapped
    assert result["connection_url"] == f"http://{vi.public_ip}:{mapped}"
    # direct ip:8188 is not exposed by this rental: probed (reported 8188/tcp) and refused, mapped wins
    assert [(c["kind"], c["outcome"]) for c in result["candidates"]] == [
        ("direct", "refused"), ("mapped", "ok")]
    rec = store.get_instance(str(iid))
    assert rec.status == "ready" and rec.connection_url == result["connection_url"]
    assert rec.public_ip == vi.public_ip and rec.ports["8188/tcp"] == mapped  # refreshed by the sweep
    assert f"✅ Port {mapped} (mapped) validated and accessible" in caplog.messages
    validated = [e for e in events.latest(50) if e.kind == "port-validated"]
    assert [e.fields["connection_url"] for e in validated] == [result["connection_url"]]
    assert kinds(events, iid)[-1] == "port-validated"


# ── (b) firewall ────────────────────────────────────────────────────────────
def test_firewall_keeps_loading_then_clearing_it_makes_ready(production, admin, cloud, store, events,
                                                             caplog) -> None:
    caplog.set_level(logging.INFO)
    cloud.control.set_rent_defaults(direct_8188=True, port_18188=True)
    iid = rent(production, store, "vk-e2e-b")
    vi = running(cloud, iid)
    assert set(vi.ports) >= {"8188/tcp", "18188/tcp"}
    cloud.control.net(iid, "firewall")  # every path: direct :8188, 8188/tcp, 18188/tcp

    t0 = SYSTEM_CLOCK.monotonic()
    swept = sweep(admin)
    elapsed = SYSTEM_CLOCK.monotonic() - t0
    assert swept["checked"] == 1 and swept["firewall"] == 1 and swept["failed_ids"] == [str(iid)]
    blocked = verdict(store, iid)
    assert blocked["success"] is False and blocked["firewall"] is True and blocked["error"] == FIREWALL_ERROR
    assert [(c["kind"], c["outcome"]) for c in blocked["candidates"]] == [
        ("direct", "timeout"), ("mapped", "timeout"), ("fallback", "timeout")]
    # candidates time out in parallel: one TCP deadline, not three (plus the listing and the task round trip)
    assert elapsed < 2 * TCP_TIMEOUT_MS / 1000 + 1.0
    rec = store.get_instance(str(iid))
    assert rec.status == "loading" and rec.connection_url is None
    assert FIREWALL_LINE in caplog.messages
    failed = [e for e in events.latest(50) if e.kind == "port-validation-failed"]
    assert failed[-1].fields["firewall"] is True and failed[-1].fields["status"] == "loading"

    cloud.control.open_path(iid)  # the firewall is lifted: the next sweep promotes it
    ready = sweep_until(admin, store, iid, lambda pv: pv["success"], f"{iid} ready")
    assert ready["kind"] == "direct" and ready["port"] == 8188  # priority, not speed
    rec = store.get_instance(str(iid))
    assert rec.status == "ready" and rec.connection_url == f"http://{vi.public_ip}:8188"
    assert "✅ Port 8188 (direct) validated and accessible" in caplog.messages
    assert kinds(events, iid)[-2:] == ["port-validation-failed", "port-validated"]


# ── (c) ComfyUI crash on a ready instance ───────────────────────────────────
def test_comfy_crash_on_ready_instance_then_restore(production, admin, cloud, store, events, caplog) -> None:
    caplog.set_level(logging.INFO)
    iid = rent(production, store, "vk-e2e-c")
    url = sweep_until(admin, store, iid, lambda pv: pv["success"], f"{iid} ready")["connection_url"]

    cloud.control.crash_comfy(iid)  # every ComfyUI path refuses; open connections are reset
    assert sweep(admin)["failed_ids"] == [str(iid)]
    down = verdict(store, iid)
    assert down["success"] is False and down["firewall"] is False
    assert {c["outcome"] for c in down["candidates"]} == {"refused"}
    assert "refused" in down["error"].lower()
    rec = store.get_instance(str(iid))
    # Layer 3 records the failure; health is Layer 4's call, so a ready instance keeps its status and URL
    assert rec.status == "ready" and rec.connection_url == url
    assert f"⚠️  Port validation failed: {down['error']}" in caplog.messages

    sweep(admin)
    assert verdict(store, iid)["error"] == down["error"]  # steady failure: no second event
    cloud.control.restore_comfy(iid)
    up = sweep_until(admin, store, iid, lambda pv: pv["success"], f"{iid} back")
    assert up["connection_url"] == url and up["kind"] == "mapped"
    assert kinds(events, iid)[-3:] == ["port-validated", "port-validation-failed", "port-validated"]


# ── (d) Vast.ai key invalidated, then replaced at runtime ───────────────────
def test_invalid_vast_key_blocks_renting_until_a_valid_key_is_updated(production, admin, cloud, store, events,
                                                                      caplog) -> None:
    caplog.set_level(logging.INFO)
    first = call_admin(admin, "POST", "/validate-tokens")
    assert first.status_code == 200 and first.json()["validation"][VASTAI]["status"] == "valid"

    cloud.control.invalidate_token("vast")  # the provider now rejects every key
    results = beat("vastkeep.tokens.validate_all")
    assert results["invalid"] == [VASTAI]
    assert results["statuses"] == {VASTAI: "invalid", HUGGINGFACE: "valid", CIVITAI: "valid"}
    invalid = [e for e in events.latest(50) if e.kind == "token-invalid"]
    assert [(e.fields["service"], e.fields["http_status"]) for e in invalid] == [(VASTAI, 401)]
    lines = [m for m in caplog.messages if m.startswith("❌ vastai token validation FAILED: ")]
    assert lines == ["❌ vastai token validation FAILED: Token authentication failed (401)"]

    # The pool's rent pre-flight refuses, from the shared cache: no new request to the provider.
    before = len(cloud.control.requests_seen(service="vast"))
    with pytest.raises(TokenInvalid) as refused, vast_client(production, store) as client:
        client.rent(1, image="vastai/comfy:latest", label="vk-e2e-d")
    assert refused.value.service == VASTAI
    assert len(cloud.control.requests_seen(service="vast")) == before

    # update-token with a key the provider rejects is refused; the old one stays
    rejected_key = secrets.token_hex(16)
    r = call_admin(admin, "POST", "/update-token", json={"service": VASTAI, "token": rejected_key})
    assert r.status_code == 422 and r.json()["success"] is False
    assert store.get_runtime_secret(VASTAI) is None

    new_key = secrets.token_hex(16)
    cloud.control.set_valid_tokens(vast=[new_key])  # the operator's newly issued key
    update = call_admin(admin, "POST", "/update-token", json={"service": VASTAI, "token": new_key})
    assert update.status_code == 200 and update.json()["validation"]["status"] == "valid"
    # every worker takes it at once, without a restart: the beat task and the pool's client
    after = beat("vastkeep.tokens.validate_all")
    assert after["invalid"] == [] and after["statuses"] == dict.fromkeys(SERVICES, "valid")
    mark = max(r["seq"] for r in cloud.control.requests_seen())
    with vast_client(production, store) as client:
        assert client.list_instances() == []
    seen = cloud.control.requests_seen(since=mark, service="vast")
    assert seen and {s["key_fingerprint"] for s in seen} == {fingerprint(new_key)}
    token_events = [e.kind for e in events.latest(50) if e.kind.startswith("token-update")]
    assert token_events == ["token-update-rejected", "token-updated"]

    blob = (first.text + r.text + update.text + caplog.text + json.dumps([results, after])
            + json.dumps([e.to_dict() for e in events.latest(100)]))
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


# ── (f) a rotated key on a validation queued through the admin API ──────────
def test_rotated_key_on_queued_validation_leaks_no_token(production, admin, cloud, store, events,
                                                         caplog) -> None:
    caplog.set_level(logging.INFO)
    iid = rent(production, store, "vk-e2e-f")
    running(cloud, iid)
    # The worker's configured Vast.ai key is rotated out at the provider (only the new key works now).
    new_key = secrets.token_hex(16)
    cloud.control.set_valid_tokens(vast=[new_key])

    def show_requests(since: int) -> list[dict[str, Any]]:
        return [r for r in cloud.control.requests_seen(since=since, service="vast")
                if r["path"].rstrip("/").endswith(f"/instances/{iid}")]

    # The record has no address yet, so the task asks Vast.ai first, with the worker's (now rejected) key.
    mark = max((r["seq"] for r in cloud.control.requests_seen()), default=0)
    queued = call_admin(admin, "POST", "/ports/validate", json={"instanceId": str(iid)})
    outcome = queued_result(admin, queued)
    # a rejected key is permanent: the task fails at once (or reports a failure), no retry storm
    assert isinstance(outcome, AuthError) or outcome["success"] is False
    assert len(show_requests(mark)) == 1 and show_requests(mark)[0]["key_valid"] is False
    assert store.get_instance(str(iid)).status == "loading"

    tokens_before = beat("vastkeep.tokens.validate_all")
    assert tokens_before["ok"] is True and tokens_before["invalid"] == [VASTAI]
    assert any(m.startswith("❌ vastai token validation FAILED: ") for m in caplog.messages)

    # The operator updates the key at runtime through the admin API.
    update = call_admin(admin, "POST", "/update-token", json={"service": VASTAI, "token": new_key})
    assert update.status_code == 200, update.text
    tokens = beat("vastkeep.tokens.validate_all")
    assert tokens["invalid"] == [] and tokens["statuses"] == dict.fromkeys(SERVICES, "valid")

    mark = max(r["seq"] for r in cloud.control.requests_seen())

    def validated() -> dict[str, Any] | None:
        r = queued_result(admin, call_admin(admin, "POST", "/ports/validate", json={"instanceId": str(iid)}))
        return r if isinstance(r, dict) and r["success"] else None

    result = wait_for(validated, DEADLINE_S, f"{iid} ready through the admin API and the worker",
                      interval_s=0.05)
    refreshed = show_requests(mark)
    assert refreshed and {r["key_fingerprint"] for r in refreshed} == {fingerprint(new_key)}  # runtime key
    assert result["kind"] == "mapped" and result["instance_id"] == str(iid)
    rec = store.get_instance(str(iid))
    assert rec.status == "ready" and rec.connection_url == result["connection_url"]
    assert f"✅ Port {result['port']} (mapped) validated and accessible" in caplog.messages

    cloud.control.net(iid, "firewall")
    blocked = queued_result(admin, call_admin(admin, "POST", "/ports/validate",
                                              json={"instanceId": str(iid)}))
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
    blob = (json.dumps([tokens_before, tokens, result, blocked, durable]) + caplog.text + update.text
            + str(outcome))
    assert_no_secret(blob, sim_secrets(cloud, new_key))
