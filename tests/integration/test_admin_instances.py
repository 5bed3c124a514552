"""Layer 5 over the admin API (real uvicorn, real Redis, the simulated cloud's listing in the snapshot):
adopt / forget / poll with their 404 / 409 / 422 answers, and the status list with poll times."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.fixtures.admin_api import KEY
from tests.fixtures.helpers import ServedApp as Served
from tests.fixtures.state import State
from vastkeep.admin import HEADER
from vastkeep.core.settings import Secret, load_settings
from vastkeep.monitoring import instance_rows
from vastkeep.polling import PollSchedule, ProviderSnapshot
from vastkeep.providers.vast import VastClient
from vastkeep.state import InstanceRecord, StateStore

H = {HEADER: KEY}


@pytest.fixture
def api(redis_server, redis_client, sim) -> Iterator[tuple[Served, StateStore, Any]]:
    settings = load_settings(environ={"REDIS_URL": redis_server.url, "ADMIN_API_KEY": KEY,
                                      "VASTKEEP_SIMULATED": "1"}, env_file=False)
    state = State.on(redis_server.url)
    with Served(state.admin_app(settings)) as s:
        yield s, state.store, sim


def refresh(store: StateStore, sim: Any) -> None:
    with VastClient(Secret(sim.api_key), sim.vast_api_url, timeout_s=(2.0, 5.0)) as vast:
        ProviderSnapshot(store.redis, store.keys).refresh(vast, store, PollSchedule(store.redis, store.keys),
                                                         force=True)


def test_adopt_forget_poll(api) -> None:
    s, store, sim = api
    unlabelled = str(sim.control.create_instance(running=True, ssh=False, ssh_proxy=False)["id"])
    refresh(store, sim)
    assert store.get_instance(unlabelled) is None, "unlabelled: not discovered"
    base = f"{s.url}/api/proxy/admin/instances"
    assert requests.post(f"{base}/{unlabelled}/adopt", timeout=5).status_code == 401
    assert requests.post(f"{base}/abc/adopt", headers=H, timeout=5).status_code == 422
    missing = requests.post(f"{base}/999999999/adopt", headers=H, timeout=5)
    assert missing.status_code == 404 and "not in the provider listing" in missing.json()["reason"]
    ok = requests.post(f"{base}/{unlabelled}/adopt", headers=H, timeout=5)
    assert ok.status_code == 200 and ok.json()["adopted"] is True
    assert store.get_instance(unlabelled) is not None
    again = requests.post(f"{base}/{unlabelled}/adopt", headers=H, timeout=5)
    assert again.status_code == 409 and "already ours" in again.json()["reason"]

    sched = PollSchedule(store.redis, store.keys)
    sched.finish([(unlabelled, "x", time.time() + 500)])  # no claim: nothing happens
    store.redis.zadd(store.keys.poll_due(), {unlabelled: time.time() + 500})
    polled = requests.post(f"{base}/{unlabelled}/poll", headers=H, timeout=5)
    assert polled.status_code == 202 and sched.due_times([unlabelled])[unlabelled] <= time.time()
    assert requests.post(f"{base}/424242/poll", headers=H, timeout=5).status_code == 404

    store.update_instance(unlabelled, {"leased_until": time.time() + 60, "lease_owner": "client-a"})
    busy = requests.post(f"{base}/{unlabelled}/forget", headers=H, timeout=5)
    assert busy.status_code == 409 and "client-a" in busy.json()["reason"]
    store.update_instance(unlabelled, {"leased_until": None})
    gone = requests.post(f"{base}/{unlabelled}/forget", headers=H, timeout=5)
    assert gone.status_code == 200 and gone.json()["forgotten"] is True
    assert store.get_instance(unlabelled) is None and not sched.due_times([unlabelled])
    assert requests.post(f"{base}/{unlabelled}/forget", headers=H, timeout=5).status_code == 404
    assert sim.control.instance(int(unlabelled))["instance"]["actual_status"] == "running", "never touched"


def test_status_lists_every_instance_with_poll_times(api) -> None:
    s, store, _ = api
    now = time.time()
    store.put_instance(InstanceRecord("11", status="ready", vast_status="running",
                                      connection_url="http://203.0.113.7:8188", leased_until=now + 60))
    # its lease entry, as the grant writes it (the status reads who is leased there; the record mirrors it)
    store.redis.hset(store.keys.pool_leases("default"), "11", json.dumps(
        {"lease_id": "lse_statusTestLease012345678", "client": "svc", "until": now + 60, "granted_at": now,
         "fence": 1, "state": "active", "instance_id": "11"}))
    store.put_instance(InstanceRecord("12", status="failed", vast_status="offline",
                                      status_reason="host offline", error="host offline"))
    store.put_instance(InstanceRecord("13", status="gone",
                                      status_reason="gone at provider: no_such_instance"))
    sched = PollSchedule(store.redis, store.keys)
    sched.ensure(["11", "12", "13"], due=now + 30)
    store.redis.hset(store.keys.poll_last(), "11", repr(now - 1))
    body = requests.get(f"{s.url}/api/proxy/admin/warm-pool/status", headers=H, timeout=5).json()
    assert body["instance"]["contractId"] == "11", "a failed or gone instance never stands for the pool"
    rows = {i["contractId"]: i for i in body["instances"]}
    assert set(rows) == {"11", "12", "13"}
    assert rows["12"]["status"] == "failed" and rows["12"]["vastStatus"] == "offline"
    assert rows["12"]["statusReason"] == "host offline"
    assert rows["11"]["lastPollAt"] and rows["11"]["nextPollAt"] and rows["11"]["leasedUntil"]
    assert rows["11"]["connectionUrl"] == "http://203.0.113.7:8188"
    table = instance_rows(body)
    assert table[0].split()[:3] == ["id", "status", "provider"] and len(table) == 4
    assert "host offline" in table[2] and "gone" in table[3]
