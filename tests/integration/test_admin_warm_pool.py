"""Warm-pool sizing and safe mode over real HTTP (uvicorn), a real redis-server and the real store."""

from __future__ import annotations

import requests

from tests.fixtures.admin_api import KEY
from vastkeep.admin import HEADER
from vastkeep.pool import PendingRent, PoolBook
from vastkeep.state import InstanceRecord, Keys

H = {HEADER: KEY}


def test_size_is_set_and_a_round_is_queued(served) -> None:  # noqa: F811
    s, store = served
    r = requests.put(f"{s.url}/api/proxy/admin/warm-pool/size", json={"desiredSize": 5}, headers=H, timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["desiredSize"] == 5 and body["previous"] == 1 and body["maxSize"] == 50
    assert body["taskId"]  # the round was queued on the real broker and a real worker ran it
    assert isinstance(s.celery.AsyncResult(body["taskId"]).get(timeout=60), dict)
    assert store.get_pool().desired_size == 5
    status = requests.get(f"{s.url}/api/proxy/admin/warm-pool/status", headers=H, timeout=5).json()
    assert status["desiredSize"] == 5


def test_bad_sizes_are_422_with_a_reason(served) -> None:  # noqa: F811
    s, store = served
    for body in ({"desiredSize": -1}, {"desiredSize": 51}, {"desiredSize": "x"}, {"desiredSize": True},
                 {"desiredSize": 1.5}, {}, {"size": 2}, [3]):
        r = requests.put(f"{s.url}/api/proxy/admin/warm-pool/size", json=body, headers=H, timeout=5)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["reason"], body
    assert "0 to 50" in requests.put(f"{s.url}/api/proxy/admin/warm-pool/size", json={"desiredSize": 99},
                                     headers=H, timeout=5).json()["reason"]
    assert store.get_pool().desired_size == 1
    assert requests.put(f"{s.url}/api/proxy/admin/warm-pool/size", json={"desiredSize": 2},
                        timeout=5).status_code == 401


def test_safe_mode_on_and_off(served) -> None:  # noqa: F811
    s, store = served
    url = f"{s.url}/api/proxy/admin/safe-mode"
    assert requests.get(url, headers=H, timeout=5).json() == {"enabled": False, "reason": None, "cause": None,
                                                              "since": None}
    r = requests.post(url, json={"enabled": True, "reason": "maintenance window"}, headers=H, timeout=5)
    assert r.status_code == 200 and r.json()["enabled"] is True and r.json()["cause"] == "operator"
    assert store.get_pool().safe_mode and store.get_pool().safe_mode_reason == "maintenance window"
    status = requests.get(f"{s.url}/api/proxy/admin/warm-pool/status", headers=H, timeout=5).json()
    assert status["safeMode"] is True and status["safeModeReason"] == "maintenance window"
    assert status["pool"]["safeModeCause"] == "operator"
    for bad in ({"enabled": "no"}, {}, {"enabled": False, "reason": 3}, {"enabled": False, "x": 1}):
        assert requests.post(url, json=bad, headers=H, timeout=5).status_code == 422, bad
    r = requests.post(url, json={"enabled": False}, headers=H, timeout=5)
    assert r.json()["enabled"] is False and not store.get_pool().safe_mode
    assert isinstance(s.celery.AsyncResult(r.json()["taskId"]).get(timeout=60), dict)  # a round ran


def test_status_shows_prewarming_and_pool_figures(served, redis_client) -> None:  # noqa: F811
    s, store = served
    book = PoolBook(redis_client, Keys(), "default")
    status = requests.get(f"{s.url}/api/proxy/admin/warm-pool/status", headers=H, timeout=5).json()
    assert status["isPrewarming"] is False and status["pool"]["pendingRents"] == 0
    redis_client.hset(Keys().pool_pending("default"), "0",
                      '{"slot":0,"label":"vastkeep:default:0","started_at":1.0,"dph":0.3,"state":"unknown"}')
    assert [p.label for p in book.pending()] == ["vastkeep:default:0"]
    store.put_instance(InstanceRecord("77", status="ready", label="vastkeep:default:1", price_per_hour=0.5))
    status = requests.get(f"{s.url}/api/proxy/admin/warm-pool/status", headers=H, timeout=5).json()
    assert status["isPrewarming"] is True
    pool = status["pool"]
    assert pool["pendingRents"] == 1 and pool["unknownRents"] == 1 and pool["liveInstances"] == 1
    assert pool["spendDph"] == 0.8 and pool["maxSpendDph"] == 10.0 and pool["poolName"] == "default"
    assert isinstance(PendingRent.from_dict({"slot": 0, "label": "x", "started_at": 1}), PendingRent)
