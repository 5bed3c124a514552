"""Chaos on Redis: restarted under a running worker, absent when a worker starts, down and back under the
admin API.

Real parts only: a private redis-server per test (AOF ``everysec`` where state must survive a restart,
restarted on the same port and folder), ``celery -A worker worker`` subprocesses
(``-A tests.fixtures.chaos_app``
where a task must block), ``uvicorn --factory worker.api:create``, and the library's own clients. Every
wait is a deadline-based poll.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import requests

from tests.fixtures.chaos import SLOW_TASK, Chaos, marker_keys, report
from tests.fixtures.helpers import free_port, wait_for, wait_until
from tests.fixtures.state import State
from vastkeep.core.errors import StaleFence
from vastkeep.state.leases import new_owner
from vastkeep.state.store import InstanceRecord
from worker.config import CONTROL_QUEUE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

PRODUCT_APP = "worker"
CHAOS_APP = "tests.fixtures.chaos_app"
ADMIN_KEY = "chaos-admin-key-7f3a9c1e5b"
LOST = "Connection to broker lost"
PING = "/api/proxy/admin/system/ping"


def restart_redis(chaos: Chaos, server, worker=None) -> tuple:
    """SIGTERM redis-server, wait until ``worker`` (if any) noticed, start it again: same port, same dir."""
    t = time.monotonic()
    server.stop()
    assert server.proc.returncode is not None
    if worker is not None:
        wait_for(lambda: (worker.assert_alive(), LOST in worker.log())[1], 20,
                 "the worker to notice the broker is gone")
    down_s = time.monotonic() - t
    return chaos.redis(aof=True, port=server.port, data_dir=server.dir), down_s


def test_redis_restart_under_a_running_worker_reconnects_and_keeps_state(chaos) -> None:
    t0 = time.monotonic()
    rs = chaos.redis(aof=True)
    env = chaos.env(rs.url)
    worker = chaos.worker(PRODUCT_APP, "restart", env)
    worker.wait_ready()
    client = chaos.client(rs.url, env)
    assert client.send_task("vastkeep.system.ping").get(timeout=15)["worker"] == worker.name

    # library state written before the restart, through the library's own client
    lib = State.on(rs.url)
    store, leases = lib.store, lib.leases
    assert store.create_instance(InstanceRecord(instance_id="chaos-1", status="loading",
                                                public_ip="127.0.0.9", ports={"8188/tcp": 41234},
                                                label="before"))
    name = "instance:chaos-1"
    first = leases.acquire(name, new_owner("chaos-1st"), ttl_ms=60_000)
    assert first is not None and leases.release(first)
    holder = leases.acquire(name, new_owner("chaos-2nd"), ttl_ms=60_000)
    assert holder is not None and holder.fence == first.fence + 1
    store.update_instance("chaos-1", {"status": "ready", "label": "fenced"}, lease=holder)
    before = store.get_instance("chaos-1")
    assert before.fence == holder.fence

    rs, down_s = restart_redis(chaos, rs, worker)
    t_up = time.monotonic()

    # a new task sent after the restart completes on the same worker process (it never exited)
    client = chaos.client(rs.url, env)
    assert client.send_task("vastkeep.system.ping").get(timeout=30) == {"pong": True, "worker": worker.name}
    t_task = time.monotonic() - t_up
    worker.assert_alive()
    log = worker.log()
    assert log.count(f"{worker.name} ready.") == 1, "the worker must not have restarted"
    assert LOST in log and len(re.findall(r"Connected to redis://", log)) >= 2

    # the state survived: the record, the live grant, and the fence counter
    after = store.get_instance("chaos-1")
    assert after == before
    assert leases.last_fence(name) == holder.fence
    assert leases.is_held(holder), "the lease (hash + PX TTL) survived the restart"
    assert leases.acquire(name, new_owner("chaos-3rd"), ttl_ms=60_000) is None, "still busy"
    assert leases.release(holder)
    third = leases.acquire(name, new_owner("chaos-3rd"), ttl_ms=60_000)
    assert third is not None and third.fence == holder.fence + 1 > first.fence, "a fence is never reused"
    with pytest.raises(StaleFence):
        store.update_instance("chaos-1", {"label": "stale"}, lease=holder)
    assert store.update_instance("chaos-1", {"label": "after"}, lease=third).fence == third.fence
    lib.redis.close()
    report("3 redis restart under a running worker", redis_down=down_s, task_after_restart=t_task,
           fences=f"{first.fence},{holder.fence}->{third.fence}", total=time.monotonic() - t0)


def test_a_task_running_across_a_redis_restart_still_completes(chaos) -> None:
    outcome = _run_across_a_restart(chaos)
    assert outcome["done"] == 1, f"not completed 10 s after Redis came back: {outcome}"
    assert outcome["result_worker"] == outcome["worker"]


def _run_across_a_restart(chaos: Chaos) -> dict:
    """Plain values only: no AsyncResult may outlive this frame (a failing assertion's traceback would
    keep it, and its ``__del__`` would then retry the stopped Redis for 20 s at teardown)."""
    rs = chaos.redis(aof=True)
    env = chaos.env(rs.url)
    worker = chaos.worker(CHAOS_APP, "inflight", env)
    worker.wait_ready()
    gate = chaos.dir / "gate-inflight"
    keys = marker_keys("inflight")
    res = chaos.client(rs.url, env).send_task(SLOW_TASK, kwargs={"run_id": "inflight",
                                                                  "gate_path": str(gate)})
    wait_for(lambda: res.state == "STARTED", 15, "task STARTED")

    rs, _ = restart_redis(chaos, rs, worker)
    r = rs.client()
    wait_for(lambda: worker.log().count("Connected to redis://") >= 2, 20, "the worker to reconnect")
    gate.touch()
    wait_until(lambda: r.get(keys["done"]), 10, interval_s=0.05)  # what happened by then is the outcome
    outcome = {"worker": worker.name, "done": int(r.get(keys["done"]) or 0),
               "started": int(r.get(keys["started"]) or 0), "state": res.state,
               "unacked": r.hlen("unacked"), "queued": r.llen(CONTROL_QUEUE),
               "terminated_by_celery": "Terminating it instead" in worker.log(), "result_worker": None}
    if outcome["done"]:
        outcome["result_worker"] = res.get(timeout=10)["worker"]
    return outcome


def test_worker_started_while_redis_is_down_waits_then_serves(chaos) -> None:
    t0 = time.monotonic()
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    env = chaos.env(url)
    worker = chaos.worker(PRODUCT_APP, "early", env)
    # broker_connection_retry_on_startup: it says it cannot connect and keeps trying, it does not exit
    cannot = re.compile(rf"Cannot connect to redis://\S*127\.0\.0\.1:{port}/0")
    wait_for(lambda: (worker.assert_alive(), cannot.search(worker.log()))[1], 30,
             "the worker to report it cannot connect")
    assert "Trying again in" in worker.log()
    worker.assert_alive()
    t_waiting = time.monotonic() - t0

    t_up = time.monotonic()
    rs = chaos.redis(port=port)
    worker.wait_ready(30)
    t_ready = time.monotonic() - t_up
    assert chaos.client(rs.url, env).send_task("vastkeep.system.ping").get(timeout=15) == {
        "pong": True, "worker": worker.name}
    worker.assert_alive()
    report("4 redis down at worker start", retrying_seen_after=t_waiting, ready_after_redis_up=t_ready,
           task_after_redis_up=time.monotonic() - t_up, total=time.monotonic() - t0)


def test_admin_api_health_follows_redis_down_and_back_without_restart(chaos) -> None:
    t0 = time.monotonic()
    rs = chaos.redis(aof=True)
    env = chaos.env(rs.url, ADMIN_API_KEY=ADMIN_KEY)
    port = free_port()
    api = chaos.api(env, port)
    base = f"http://127.0.0.1:{port}"

    def health() -> tuple[int | None, dict]:
        api.assert_alive()
        try:
            resp = requests.get(f"{base}/health", timeout=10)
        except requests.ConnectionError:
            return None, {}
        return resp.status_code, resp.json()

    def redis_up_gauge() -> str:
        text = requests.get(f"{base}/metrics", timeout=10).text
        return re.search(r"^vastkeep_redis_up (\S+)$", text, re.M).group(1)

    wait_for(lambda: health()[0] == 200, 30, "/health 200")
    assert health()[1]["redis"] == "ok" and redis_up_gauge() == "1"

    t_down = time.monotonic()
    rs.stop()
    status, body = wait_for(lambda: (lambda h: h if h[0] == 503 else None)(health()), 15, "/health 503")
    t_503 = time.monotonic() - t_down
    assert body["status"] == "degraded" and body["redis"].startswith("down"), body
    assert redis_up_gauge() == "0"

    t_back = time.monotonic()
    rs = chaos.redis(aof=True, port=rs.port, data_dir=rs.dir)
    wait_for(lambda: health()[0] == 200, 15, "/health 200 again")
    t_200 = time.monotonic() - t_back
    assert redis_up_gauge() == "1"
    # the same process also queues tasks again (its broker connection recovered too)
    ping = requests.post(f"{base}{PING}", headers={"X-Admin-Key": ADMIN_KEY}, timeout=30)
    assert ping.status_code == 202, ping.text
    queued = [json.loads(m)["headers"]["id"] for m in rs.client().lrange(CONTROL_QUEUE, 0, -1)]
    assert ping.json()["taskId"] in queued
    api.assert_alive()
    assert api.log().count("Started server process") == 1, "the API process was never restarted"
    report("5 admin API with redis down and back", health_503_after=t_503, health_200_after=t_200,
           total=time.monotonic() - t0)


def test_admin_dispatch_during_a_redis_outage_is_refused_promptly(chaos) -> None:
    rs = chaos.redis()
    env = chaos.env(rs.url, ADMIN_API_KEY=ADMIN_KEY)
    port = free_port()
    api = chaos.api(env, port)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        api.assert_alive()
        try:
            return requests.get(f"{base}/health", timeout=10).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(up, 30, "/health 200")
    rs.stop()
    assert requests.get(f"{base}/health", timeout=10).status_code == 503  # /health itself is prompt
    t = time.monotonic()
    try:
        resp = requests.post(f"{base}{PING}", headers={"X-Admin-Key": ADMIN_KEY}, timeout=5)
    except requests.Timeout:
        resp = None
    took = time.monotonic() - t
    assert resp is not None, f"POST {PING} still unanswered after {took:.1f} s with Redis down"
    assert resp.status_code == 503 and resp.json()["error"] == "unavailable", resp.text
