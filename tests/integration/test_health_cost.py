"""Issue 7 (d): ``/health`` and ``/metrics`` are unauthenticated and polled, so each request must cost a
bounded number of Redis commands whatever the number of instance records and keys.

Measured on a private redis-server with ``INFO commandstats`` deltas (every command the server ran for one
request), with 10 and then 10,000 instance records plus 10,000 unrelated keys: the count must not grow.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from tests.fixtures.redis_server import RedisServer, start_redis_server
from tests.fixtures.state import State
from vastkeep.core.settings import load_settings
from vastkeep.state.heartbeats import write_heartbeat
from vastkeep.state.keys import Keys
from vastkeep.state.store import InstanceRecord, StateStore

pytestmark = pytest.mark.slow
STATUSES = ("loading", "ready", "ready", "failed")  # 50 % ready
MAX_COMMANDS = 20


def _commands(r: redis.Redis) -> int:
    """Commands the server ran so far, not counting the INFO calls that read the figure."""
    stats = r.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")


def _cost(r: redis.Redis, client: TestClient, path: str) -> tuple[int, str]:
    client.get(path)  # warm: scripts loaded, connections open
    before = _commands(r)
    resp = client.get(path)
    assert resp.status_code == 200, resp.text
    return _commands(r) - before, resp.text


def _add(store: StateStore, r: redis.Redis, start: int, count: int) -> None:
    for i in range(start, start + count):
        store.create_instance(InstanceRecord(instance_id=str(i), status=STATUSES[i % len(STATUSES)]))


@pytest.fixture
def stack(tmp_path) -> Iterator[tuple[RedisServer, redis.Redis, StateStore, TestClient]]:
    server = start_redis_server(data_dir=str(tmp_path))
    settings = load_settings(environ={"REDIS_URL": server.url, "ADMIN_API_KEY": "k" * 32}, env_file=False)
    state = State.on(server.url)
    r, clock, store = state.redis, state.clock, state.store
    app = state.admin_app(settings)
    write_heartbeat(r, Keys(), clock, "control@h1", kind="worker", queues="vastkeep.control")
    write_heartbeat(r, Keys(), clock, "beat", kind="beat")
    try:
        with TestClient(app) as client:
            yield server, server.client(), store, client
    finally:
        r.close()
        server.stop()


def test_health_and_metrics_cost_the_same_with_10_and_10000_records(stack) -> None:
    _, r, store, client = stack
    _add(store, r, 0, 10)
    small = {p: _cost(r, client, p) for p in ("/health", "/metrics")}
    _add(store, r, 10, 9_990)
    with r.pipeline(transaction=False) as pipe:  # unrelated keys: a SCAN of the keyspace would see them
        for i in range(10_000):
            pipe.set(f"other-app:key:{i}", "x")
        pipe.execute()
    large = {p: _cost(r, client, p) for p in ("/health", "/metrics")}
    print(f"[health-cost] Redis commands per request, 10 → 10,000 records: "
          f"/health {small['/health'][0]} → {large['/health'][0]}, "
          f"/metrics {small['/metrics'][0]} → {large['/metrics'][0]}")
    for path in ("/health", "/metrics"):
        assert large[path][0] == small[path][0], path
        assert large[path][0] <= MAX_COMMANDS, path
    text = large["/metrics"][1]
    assert 'vastkeep_instances{status="ready"} 5000' in text
    assert 'vastkeep_instances{status="loading"} 2500' in text
    assert 'vastkeep_instances{status="failed"} 2500' in text
    assert "vastkeep_workers_alive 1" in text


def test_counts_follow_every_write_and_rebuild_once_when_missing(stack) -> None:
    _, r, store, client = stack
    _add(store, r, 0, 8)  # 2 loading, 4 ready, 2 failed
    store.update_instance("0", {"status": "ready"})
    store.delete_instance("1")
    store.modify_instance("2", lambda rec: rec)  # unchanged: no count moves
    assert store.instance_counts() == {"failed": 2, "loading": 1, "ready": 4}
    # records written before the counts existed (or a hand edit): rebuilt once, then cheap again
    r.delete(Keys().instance_status_counts())
    r.set(Keys().instance("99"), "not json")
    r.sadd(Keys().instances(), "99", "ghost")  # an id without a record is dropped from the set
    assert store.instance_counts() == {"?": 1, "failed": 2, "loading": 1, "ready": 4}
    before = _commands(r)
    assert store.instance_counts() == {"?": 1, "failed": 2, "loading": 1, "ready": 4}
    assert _commands(r) - before <= 4  # MULTI, HGETALL, SCARD, EXEC: no recount
    text = client.get("/metrics").text
    assert re.search(r'vastkeep_instances\{status="ready"\} 4\b', text)
