"""vastkeep.ports.* through the embedded real Celery worker, real Redis and real loopback sockets."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

import tasks.ports as port_tasks
from vastkeep.ports.validator import FIREWALL_ERROR
from vastkeep.state.store import InstanceRecord

GONE = "gone at provider: no_such_instance"  # a record/result once Vast.ai forgot the instance


@pytest.fixture
def short_timeouts(vk_celery_worker, vk_settings):
    """The worker process's settings with 0.3 s / 0.5 s probe deadlines, restored afterwards."""
    from worker import wiring

    wiring.configure(replace(vk_settings, port_tcp_timeout_ms=300, port_http_timeout_ms=500,
                             port_probe_concurrency=20))
    yield
    wiring.configure(vk_settings)


def put(store, iid, ip, ports, status="loading"):
    store.put_instance(InstanceRecord(instance_id=iid, status=status, vast_status="running",
                                      public_ip=ip, ports=ports))


def test_loading_to_ready_round_trip(short_timeouts, store, events, port_servers):
    direct = port_servers.open("refused", port=8188)
    mapped = port_servers.open("ok", ip=direct.ip)
    put(store, "101", direct.ip, {"8188/tcp": mapped.port})
    result = port_tasks.validate_instance.delay("101").get(timeout=15)
    json.dumps(result)  # plain JSON
    assert result["success"] is True and result["kind"] == "mapped" and result["port"] == mapped.port
    assert result["connection_url"] == f"http://{direct.ip}:{mapped.port}"
    assert [(c["kind"], c["outcome"]) for c in result["candidates"]] == [
        ("direct", "refused"), ("mapped", "ok")]
    rec = store.get_instance("101")
    assert rec.status == "ready" and rec.connection_url == result["connection_url"]
    assert rec.port_validation["success"] is True and rec.port_validation["kind"] == "mapped"
    assert [e.kind for e in events.latest(10)] == ["port-validated"]
    # idempotent: running again (a redelivery) writes the same verdict and emits no duplicate event
    again = port_tasks.validate_instance.delay("101").get(timeout=15)
    assert again["connection_url"] == result["connection_url"]
    assert store.get_instance("101").status == "ready"
    assert [e.kind for e in events.latest(10)] == ["port-validated"]


def test_failure_stays_loading_then_ready_when_port_opens(short_timeouts, store, events, port_servers):
    direct = port_servers.open("blackhole", port=8188)
    mapped = port_servers.open("blackhole", ip=direct.ip)
    put(store, "102", direct.ip, {"8188/tcp": mapped.port})
    result = port_tasks.validate_instance.delay("102").get(timeout=15)
    assert result["success"] is False and result["error"] == FIREWALL_ERROR
    rec = store.get_instance("102")
    assert rec.status == "loading" and rec.connection_url is None
    assert rec.port_validation["error"] == FIREWALL_ERROR and rec.port_validation["firewall"] is True
    assert events.latest(1)[0].kind == "port-validation-failed"
    # the firewall opens: the next poll's validation promotes it
    fallback = port_servers.open("ok", ip=direct.ip)
    store.update_instance("102", {"ports": {"8188/tcp": mapped.port, "18188/tcp": fallback.port}})
    result = port_tasks.validate_instance.delay("102").get(timeout=15)
    assert result["success"] is True and result["kind"] == "fallback"
    assert store.get_instance("102").status == "ready"
    assert [e.kind for e in events.latest(10)] == ["port-validation-failed", "port-validated"]


def test_unknown_instance_is_a_result_not_a_retry(short_timeouts, store):
    result = port_tasks.validate_instance.delay("nope").get(timeout=15)
    assert result["success"] is False and "nope" in result["error"]


def test_unsafe_address_recorded_without_simulation(vk_celery_worker, vk_settings, store, port_servers):
    from worker import wiring

    lst = port_servers.open("ok")
    put(store, "103", lst.ip, {"8188/tcp": lst.port})
    wiring.configure(replace(vk_settings, vastkeep_simulated=False, port_tcp_timeout_ms=300,
                             port_http_timeout_ms=500))
    try:
        result = port_tasks.validate_instance.delay("103").get(timeout=15)
    finally:
        wiring.configure(vk_settings)
    assert result["success"] is False and result["error"] == "Unsafe target refused: loopback address"
    assert lst.accepted == 0
    assert store.get_instance("103").status == "loading"


def test_validate_pool(short_timeouts, store, events, port_servers):
    modes = {"201": "ok", "202": "http500", "203": "blackhole", "204": "ok", "205": "hang"}
    for iid, mode in modes.items():
        lst = port_servers.open(mode)
        put(store, iid, lst.ip, {"8188/tcp": lst.port})
    gone = port_servers.open("ok")
    put(store, "299", gone.ip, {"8188/tcp": gone.port}, status="destroyed")
    result = port_tasks.validate_pool.delay().get(timeout=20)
    assert result["checked"] == 5 and result["passed"] == 2 and result["failed"] == 3
    assert result["failed_ids"] == ["202", "203", "205"]
    assert {r.instance_id: r.status for r in store.list_instances()} == {
        "201": "ready", "202": "loading", "203": "loading", "204": "ready", "205": "loading",
        "299": "destroyed"}
    assert gone.accepted == 0  # destroyed instances are not probed
    kinds = sorted(e.kind for e in events.latest(20))
    assert kinds == ["port-validated"] * 2 + ["port-validation-failed"] * 3


def test_two_pool_sweeps_at_once_only_one_runs(short_timeouts, store, events, port_servers):
    """Beat's sweep and an admin-queued one land together on the worker's threads: one runs, one skips."""
    listeners = []
    for i in range(3):
        lst = port_servers.open("delay", delay_s=0.4)  # each sweep lasts at least this long
        put(store, f"31{i}", lst.ip, {"8188/tcp": lst.port})
        listeners.append(lst)
    first, second = port_tasks.validate_pool.delay(), port_tasks.validate_pool.delay()
    results = [first.get(timeout=20), second.get(timeout=20)]
    assert sorted(results, key=len) == [
        {"skipped": "another sweep is running"},
        {"checked": 3, "passed": 3, "failed": 0, "failed_ids": [], "firewall": 0}]
    assert [lst.accepted for lst in listeners] == [1, 1, 1]
    assert sorted(e.kind for e in events.latest(10)) == ["port-validated"] * 3
    # released at the end: the next sweep runs
    assert port_tasks.validate_pool.delay().get(timeout=20)["checked"] == 3


def test_pool_sweep_lists_at_vast_and_follows_a_reassigned_address(vk_celery_worker, vk_settings, store,
                                                                  sim, port_servers):
    """Every record has an address, one of them stale: the task still lists once and probes the new one."""
    from worker import wiring

    inst = sim.control.create_instance(running=True, ssh=False, ssh_proxy=False)
    old = port_servers.open("ok")  # the stale address still answers: probing it would wrongly pass
    put(store, str(inst["id"]), old.ip, {"8188/tcp": old.port})
    sim.control.clear_requests()
    wiring.configure(sim_settings(vk_settings, sim))
    try:
        result = port_tasks.validate_pool.delay().get(timeout=20)
    finally:
        wiring.configure(vk_settings)
    assert result["checked"] == 1 and result["passed"] == 1
    assert [r["path"] for r in sim.control.requests_seen(service="vast")] == ["/api/v0/instances"]
    assert old.accepted == 0
    rec = store.get_instance(str(inst["id"]))
    assert rec.public_ip == inst["public_ipaddr"].strip() and rec.ports["8188/tcp"] != old.port
    assert rec.status == "ready" and rec.connection_url.startswith(f"http://{rec.public_ip}:")


def test_sim_instance_refreshed_from_vast_then_ready(vk_celery_worker, vk_settings, store, events, sim):
    """A record without address/ports (just rented): the task asks the (simulated) Vast API, then probes."""
    from vastkeep.core.settings import Secret
    from worker import wiring

    inst = sim.control.create_instance(running=True, direct_8188=False, port_18188=True)
    iid = str(inst["id"])
    store.put_instance(InstanceRecord(instance_id=iid, status="loading"))
    sim.control.crash_comfy(inst["id"], "8188/tcp")  # mapped down: the fallback must carry it
    wiring.configure(replace(vk_settings, vast_api_key=Secret(sim.api_key), vast_api_url=sim.vast_api_url,
                             port_tcp_timeout_ms=300, port_http_timeout_ms=500))
    try:
        result = port_tasks.validate_instance.delay(iid).get(timeout=15)
    finally:
        wiring.configure(vk_settings)
    assert result["success"] is True and result["kind"] == "fallback"
    assert [c["outcome"] for c in result["candidates"]] == ["refused", "refused", "ok"]
    rec = store.get_instance(iid)
    assert rec.public_ip == inst["public_ipaddr"].strip() and rec.ports["18188/tcp"] == result["port"]
    assert rec.status == "ready" and rec.connection_url == result["connection_url"]
    assert sim.api_key not in json.dumps(result)


def test_refresh_uses_key_from_update_token(vk_celery_worker, vk_settings, store, events, sim):
    """After update-token, the next VastClient a task builds authenticates with the new key."""
    import secrets

    from vastkeep.core.settings import Secret
    from vastkeep.sim.faults import fingerprint
    from vastkeep.tokens.manager import TokenManager
    from worker import wiring

    rotated = f"vk-rotated-{secrets.token_hex(8)}"
    inst = sim.control.create_instance(running=True)
    iid = str(inst["id"])
    store.put_instance(InstanceRecord(instance_id=iid, status="loading"))
    settings = replace(vk_settings, vast_api_key=Secret(sim.api_key), vast_api_url=sim.vast_api_url,
                       port_tcp_timeout_ms=300, port_http_timeout_ms=500)
    sim.control.set_valid_tokens(vast=[sim.api_key, rotated])
    update = TokenManager.from_settings(settings, store, events=events).update_token("vastai", rotated)
    assert update.accepted
    sim.control.set_valid_tokens(vast=[rotated])  # the configured key is revoked at the provider
    sim.control.clear_requests()
    wiring.configure(settings)
    try:
        result = port_tasks.validate_instance.delay(iid).get(timeout=15)
    finally:
        wiring.configure(vk_settings)
    seen = sim.control.requests_seen(service="vast")
    assert seen, "the task did not call the (simulated) Vast API"
    assert {(r["key_fingerprint"], r["key_valid"]) for r in seen} == {(fingerprint(rotated), True)}
    assert fingerprint(sim.api_key) not in {r["key_fingerprint"] for r in seen}
    assert store.get_instance(iid).public_ip == inst["public_ipaddr"].strip()
    assert result["success"] is True
    assert rotated not in json.dumps(result) and sim.api_key not in json.dumps(result)


def sim_settings(vk_settings, sim):
    from vastkeep.core.settings import Secret

    return replace(vk_settings, vast_api_key=Secret(sim.api_key), vast_api_url=sim.vast_api_url,
                   port_tcp_timeout_ms=300, port_http_timeout_ms=500)


def test_validate_pool_reports_rejected_key_and_validates_the_rest(vk_celery_worker, vk_settings, store, sim):
    """A rejected Vast key on the refresh: still a JSON summary; records with an address get validated."""
    from vastkeep.providers.vast import VastClient
    from worker import wiring

    a = sim.control.create_instance(running=True, ssh=False, ssh_proxy=False)["id"]
    b = sim.control.create_instance(running=True, ssh=False, ssh_proxy=False)["id"]
    settings = sim_settings(vk_settings, sim)
    with VastClient(settings.vast_api_key, sim.vast_api_url) as vast:
        vi = vast.show_instance(a)
    put(store, str(a), vi.public_ip, dict(vi.ports))
    store.put_instance(InstanceRecord(instance_id=str(b), status="loading"))
    sim.control.invalidate_token("vast")
    wiring.configure(settings)
    try:
        result = port_tasks.validate_pool.delay().get(timeout=20)
    finally:
        wiring.configure(vk_settings)
    assert result["checked"] == 1 and result["passed"] == 1 and result["skipped_ids"] == [str(b)]
    assert result["refresh_error"]["error"] == "AuthError" and result["refresh_error"]["transient"] is False
    assert store.get_instance(str(a)).status == "ready" and store.get_instance(str(b)).status == "loading"
    assert sim.api_key not in json.dumps(result)


def test_instance_gone_at_provider_is_marked_once(vk_celery_worker, vk_settings, store, events, sim):
    """Vast.ai no longer knows the instance: marked failed + one instance-status event, even on redelivery."""
    from vastkeep.providers.vast import VastClient
    from worker import wiring

    iid = sim.control.create_instance(running=True, ssh=False, ssh_proxy=False)["id"]
    store.put_instance(InstanceRecord(instance_id=str(iid), status="loading"))
    settings = sim_settings(vk_settings, sim)
    with VastClient(settings.vast_api_key, sim.vast_api_url) as vast:
        assert vast.destroy(iid) is True
    wiring.configure(settings)
    try:
        first = port_tasks.validate_instance.delay(iid).get(timeout=15)
        again = port_tasks.validate_instance.delay(iid).get(timeout=15)  # redelivery / the next poll
    finally:
        wiring.configure(vk_settings)
    assert first["success"] is False and first["gone_at_provider"] is True
    assert first["error"] == GONE and first["status"] == "gone"
    assert again == first
    rec = store.get_instance(str(iid))
    assert rec.status == "gone" and rec.error == GONE
    assert [(e.kind, e.fields["old"], e.fields["new"]) for e in events.latest(10)] == [
        ("instance-status", "loading", "gone")]
