"""The admin API over real HTTP: uvicorn on a free loopback port, a real redis-server, the real store.

Endpoints that queue tasks use the production dispatcher (``worker.api.dispatch``: ``send_task`` on the
real broker) and the session's embedded Celery worker runs what they queued; the tests read the task's
result and what it wrote to the store.
"""

from __future__ import annotations

import pytest
import requests

from tests.fixtures.admin_api import KEY, task_result
from tests.fixtures.helpers import ServedApp, free_port
from tests.fixtures.state import State
from vastkeep.admin import HEADER, create_app
from vastkeep.core.clock import SystemClock
from vastkeep.core.settings import load_settings
from vastkeep.state.connection import connect
from vastkeep.state.events import EventLog
from vastkeep.state.heartbeats import write_heartbeat
from vastkeep.state.keys import Keys
from vastkeep.state.store import InstanceRecord


def test_health_pings_real_redis(served) -> None:
    s, _ = served
    r = requests.get(f"{s.url}/health", timeout=5)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["redis"] == "ok" and body["simulated"] is True


def test_health_is_503_when_redis_is_down() -> None:
    dead = free_port()  # nothing listens here
    settings = load_settings(environ={"REDIS_URL": f"redis://127.0.0.1:{dead}/0"}, env_file=False)
    app = create_app(settings, redis=connect(f"redis://127.0.0.1:{dead}/0", retry_attempts=0,
                                             socket_connect_timeout_s=0.5))
    with ServedApp(app) as s:
        r = requests.get(f"{s.url}/health", timeout=10)
        assert r.status_code == 503
        assert r.json()["status"] == "degraded" and r.json()["redis"].startswith("down")
        m = requests.get(f"{s.url}/metrics", timeout=10)
        assert m.status_code == 200 and "vastkeep_redis_up 0" in m.text


def test_metrics_reflect_store_and_heartbeats(served, redis_client) -> None:
    s, store = served
    store.create_instance(InstanceRecord(instance_id="101", status="ready"))
    store.create_instance(InstanceRecord(instance_id="102", status="ready"))
    store.create_instance(InstanceRecord(instance_id="103", status="starting"))
    store.set_desired_size(2)
    write_heartbeat(store.redis, Keys(), SystemClock(), "control@test", kind="worker",
                    queues="vastkeep.control")
    write_heartbeat(store.redis, Keys(), SystemClock(), "beat", kind="beat")
    r = requests.get(f"{s.url}/metrics", timeout=5)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "vastkeep_redis_up 1" in text
    assert "vastkeep_workers_alive 1" in text
    assert 'vastkeep_instances{status="ready"} 2' in text
    assert 'vastkeep_instances{status="starting"} 1' in text
    assert "vastkeep_pool_desired_size 2" in text
    assert "vastkeep_safe_mode 0" in text
    assert 'vastkeep_heartbeat_age_seconds{process="beat"}' in text
    for line in text.splitlines():  # every sample line is "name{labels} number"
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_guarded_status_and_dispatch_over_http(served) -> None:
    s, store = served
    write_heartbeat(store.redis, Keys(), SystemClock(), "ssh@test", kind="worker", queues="vastkeep.ssh")
    assert requests.get(f"{s.url}/api/proxy/admin/system/status", timeout=5).status_code == 401
    r = requests.get(f"{s.url}/api/proxy/admin/system/status", headers={HEADER: KEY}, timeout=5)
    assert r.status_code == 200
    assert r.json()["processes"]["ssh@test"]["queues"] == "vastkeep.ssh"
    r = requests.post(f"{s.url}/api/proxy/admin/system/ping", headers={HEADER: KEY}, timeout=5)
    assert r.status_code == 202
    pong = task_result(s, r.json()["taskId"])
    assert pong["pong"] is True and pong["worker"]
    big = requests.post(f"{s.url}/api/proxy/admin/system/ping", headers={HEADER: KEY},
                        data=b"x" * (65 * 1024), timeout=5)
    assert big.status_code == 413
    assert requests.get(f"{s.url}/openapi.json", timeout=5).json()["info"]["title"] == "vastkeep admin API"
    assert KEY not in requests.get(f"{s.url}/openapi.json", timeout=5).text


def test_redis_outage_is_503_with_a_reason_never_500() -> None:
    """A dedicated redis-server, stopped under a running API: guarded routes answer 503 JSON, not 500."""
    from tests.fixtures.redis_server import start_redis_server

    own = start_redis_server()
    try:
        settings = load_settings(environ={"REDIS_URL": own.url, "ADMIN_API_KEY": KEY,
                                          "VASTKEEP_SIMULATED": "1"}, env_file=False)
        app = State.on(own.url, socket_connect_timeout_s=0.5).admin_app(settings)
        headers = {HEADER: KEY}
        with ServedApp(app) as s:
            admin = f"{s.url}/api/proxy/admin"
            assert requests.get(f"{admin}/tokens", headers=headers, timeout=10).status_code == 200
            assert requests.get(f"{admin}/system/status", headers=headers, timeout=10).status_code == 200
            own.stop()
            for method, path in (("GET", "/tokens"), ("POST", "/validate-tokens"), ("GET", "/system/status")):
                resp = requests.request(method, f"{admin}{path}", headers=headers, timeout=30)
                assert resp.status_code == 503, (path, resp.status_code, resp.text)
                body = resp.json()
                assert body["error"] == "unavailable" and "Redis" in body["reason"], body
                assert KEY not in resp.text
            status = requests.get(f"{admin}/system/status", headers=headers, timeout=30).json()
            assert status["redis"].startswith("down") and status["processes"] == {}
            assert requests.get(f"{s.url}/health", timeout=30).status_code == 503
    finally:
        own.stop()


def test_warm_pool_status_has_the_guide_shape(served) -> None:
    s, store = served
    store.put_instance(InstanceRecord(instance_id="7835610", status="ready",
                                      connection_url="http://203.0.113.7:41234"))
    store.set_desired_size(1)
    url = f"{s.url}/api/proxy/admin/warm-pool/status"
    assert requests.get(url, timeout=5).status_code == 401
    r = requests.get(url, headers={HEADER: KEY}, timeout=5)
    assert r.status_code == 200
    doc = r.json()
    assert doc["desiredSize"] == 1
    assert doc["safeMode"] is False
    assert doc["isPrewarming"] is False
    assert doc["instance"]["contractId"] == "7835610"
    assert doc["instance"]["connectionUrl"] == "http://203.0.113.7:41234"
    assert doc["instance"]["leasedUntil"] is None


def test_events_can_be_followed_by_id(served) -> None:
    s, store = served
    events = EventLog(store.redis, Keys(), SystemClock())
    first = events.emit("port-validated", instance_id="1", port=41234)
    events.emit("token-invalid", service="civitai", error="Token authentication failed (401)")
    url = f"{s.url}/api/proxy/admin/events"
    r = requests.get(url, headers={HEADER: KEY}, params={"after": first}, timeout=5)
    assert r.status_code == 200
    body = r.json()
    assert [e["kind"] for e in body["events"]] == ["token-invalid"]
    assert body["next"] == body["events"][-1]["id"]
    assert requests.get(url, headers={HEADER: KEY}, params={"after": "x; DROP"}, timeout=5).status_code == 400
    assert requests.get(url, headers={HEADER: KEY}, params={"count": 0}, timeout=5).status_code == 422


def test_events_after_an_id_beyond_64_bits_is_400_not_503(served) -> None:
    """The id passes a digits-only check but Redis refuses it: the caller's mistake, said as such."""
    s, store = served
    EventLog(store.redis, Keys(), SystemClock()).emit("port-validated", instance_id="1", port=41234)
    url = f"{s.url}/api/proxy/admin/events"
    top = 2**64 - 1
    for after in (f"{top + 1}-0", f"0-{top + 1}", "99999999999999999999-0"):
        r = requests.get(url, headers={HEADER: KEY}, params={"after": after}, timeout=5)
        assert r.status_code == 400, after
        assert r.json()["error"] == "bad_request" and "at most 18446744073709551615" in r.json()["reason"]
    for after in (f"{top}-{top}", f"{top}-0"):  # the largest ids are fine: nothing comes after them
        r = requests.get(url, headers={HEADER: KEY}, params={"after": after}, timeout=5)
        assert r.status_code == 200 and r.json() == {"events": [], "next": after}
    r = requests.get(url, headers={HEADER: KEY}, params={"after": f"0-{top}"}, timeout=5)
    assert r.status_code == 200 and [e["kind"] for e in r.json()["events"]] == ["port-validated"]


@pytest.mark.parametrize("stored", [
    '{"instance_id": "5", "status": "ready", "ports": {"8188/tcp": null}}',
    '{"instance_id": "5", "status": "ready", "created_at": "yesterday"}',
    "not json at all",
])
def test_one_unreadable_record_never_breaks_warm_pool_status(served, stored) -> None:
    s, store = served
    store.put_instance(InstanceRecord(instance_id="7835610", status="ready",
                                      connection_url="http://203.0.113.7:41234"))
    store.redis.set(store.keys.instance("5"), stored)
    store.redis.sadd(store.keys.instances(), "5")
    r = requests.get(f"{s.url}/api/proxy/admin/warm-pool/status", headers={HEADER: KEY}, timeout=5)
    assert r.status_code == 200
    doc = r.json()
    assert [i["contractId"] for i in doc["instances"]] == ["7835610"]
    assert doc["instance"]["contractId"] == "7835610" and doc["counts"]["total"] == 1


def test_port_validation_is_queued_by_name(served) -> None:
    """Both scopes reach the worker by task name and its verdicts land in the store the API reads."""
    s, store = served
    dead = free_port()  # nothing listens: the probe is refused at once
    store.put_instance(InstanceRecord(instance_id="7835610", status="loading", public_ip="127.77.0.1",
                                      ports={"8188/tcp": dead}))
    url = f"{s.url}/api/proxy/admin/ports/validate"
    r = requests.post(url, headers={HEADER: KEY}, json={"instanceId": "7835610"}, timeout=5)
    assert r.status_code == 202
    assert r.json()["scope"] == "instance"
    one = task_result(s, r.json()["taskId"])
    assert one["instance_id"] == "7835610" and one["success"] is False
    assert {c["outcome"] for c in one["candidates"]} == {"refused"}
    assert store.get_instance("7835610").port_validation["success"] is False  # written by the worker
    r = requests.post(url, headers={HEADER: KEY}, json={}, timeout=5)
    assert r.status_code == 202
    assert r.json()["scope"] == "pool"
    sweep = task_result(s, r.json()["taskId"])
    assert sweep["checked"] == 1 and sweep["failed_ids"] == ["7835610"]
    r = requests.post(url, headers={HEADER: KEY}, json={"instanceId": "../../etc"}, timeout=5)
    assert r.status_code == 400
    for typo in ({"instance_id": "7835610"}, {"foo": 1}):
        r = requests.post(url, headers={HEADER: KEY}, json=typo, timeout=5)
        assert r.status_code == 400, typo
        assert "instanceId" in r.text
