"""Redis restarted under load (AOF ``everysec``, as production runs it): every worker reconnects by itself,
records, fences and the event stream survive, and both queues consume again within one backoff cycle.

Real parts: one AOF redis-server restarted on the same port and folder, ``celery -A worker worker`` per
queue as ``vastkeep up`` starts them (control: prefork; keepalive: prefork, a slot per shard plus one that
answers the ping), the
supervision sweep sent every second as beat would, keepalive shard 0 running over one instance record.
Figures printed: the outage, when each queue answered a ping again, when shard 0 was held again.
"""

from __future__ import annotations

import time

import pytest

from tests.fixtures.chaos import report
from tests.fixtures.helpers import wait_for
from tests.fixtures.judge import SHARD0, Sweeper, holder
from tests.fixtures.state import State
from vastkeep.state import EventLog, InstanceRecord, Keys
from worker.config import CONTROL_QUEUE, KEEPALIVE_QUEUE

pytestmark = pytest.mark.timeout(200)
IID = "5151"
# Celery's broker reconnect waits 2, 4, 6 ... s; kombu/redis-py's own retries are shorter
ONE_BACKOFF_CYCLE_S = 30.0


def pong(app, queue: str, timeout_s: float) -> bool:
    try:
        return bool(app.send_task("vastkeep.system.ping", queue=queue).get(timeout=timeout_s)["pong"])
    except Exception:
        return False


@pytest.mark.parametrize("outage_s", [3.0, pytest.param(60.0, marks=pytest.mark.slow)])
def test_redis_restarted_under_load_every_worker_reconnects_and_state_survives(chaos, outage_s,
                                                                               request) -> None:
    """3 s: a restart. 60 s: Redis away for a minute (slow; ``pytest -m slow``)."""
    if outage_s > 10:
        request.getfixturevalue("slow_selected")
    server = chaos.redis(aof=True)
    r = server.client()
    env = chaos.env(server.url, COMFYUI_KEEPALIVE_INTERVAL_MS="4000", COMFYUI_KEEPALIVE_TIMEOUT_MS="1000",
                    COMFYUI_KEEPALIVE_SHARDS="1", SUPERVISION_HEARTBEAT_STALE_MS="3000",
                    SUPERVISION_START_TIMEOUT_MS="10000", SUPERVISION_RESTART_JITTER_PCT="0",
                    VAST_API_KEY="judge-unreachable-key", VAST_API_URL="http://127.0.0.1:9/api/v0")
    store = State(r).store
    store.put_instance(InstanceRecord(instance_id=IID, status="ready", connection_url="http://127.0.0.1:9"))
    workers = [chaos.worker("worker", "control", env, concurrency=2, queues=(CONTROL_QUEUE,)),
               chaos.worker("worker", "keepalive", env, concurrency=2, queues=(KEEPALIVE_QUEUE,))]
    for w in workers:
        w.wait_ready()
    app = chaos.client(server.url, env)
    with Sweeper(app):
        wait_for(lambda: holder(r, SHARD0)[0] is not None, 40, "shard 0 running", interval_s=0.5)
        assert pong(app, CONTROL_QUEUE, 10) and pong(app, KEEPALIVE_QUEUE, 30)
        time.sleep(1.5)  # past one AOF fsync
        before = {"record": store.get_instance(IID).to_dict(), "fence": int(r.get(Keys().fence(SHARD0)) or 0),
                  "events": len(EventLog(r, Keys()).read(count=10_000))}
        stopped_at = time.monotonic()
        server.stop()
        time.sleep(outage_s)
        server = chaos.redis(aof=True, port=server.port, data_dir=server.dir)
        back_at = time.monotonic()
        r = server.client()
        app = chaos.client(server.url, env)  # a client's result listener gives up across a restart (its own)
        after_record = State(r).store.get_instance(IID)
        fence_after = int(r.get(Keys().fence(SHARD0)) or 0)
        events_after = len(EventLog(r, Keys()).read(count=10_000))
        control_s = wait_for(lambda: pong(app, CONTROL_QUEUE, 3) and time.monotonic() - back_at, 60,
                             "the control worker consumes again")
        keepalive_s = wait_for(lambda: pong(app, KEEPALIVE_QUEUE, 3) and time.monotonic() - back_at, 60,
                               "the keepalive worker consumes again")
        shard_s = wait_for(lambda: holder(r, SHARD0)[0] is not None and time.monotonic() - back_at, 60,
                           "shard 0 held again")
    report(f"judge: redis away {outage_s:.0f} s under load", outage=back_at - stopped_at,
           control_back_after=control_s, keepalive_back_after=keepalive_s, shard_held_after=shard_s)
    for w in workers:
        w.assert_alive()  # reconnected by itself: no process restarted it
        assert w.log().count(f"{w.name} ready.") == 1
    assert after_record is not None and after_record.to_dict() == before["record"]
    assert fence_after >= before["fence"] and events_after >= before["events"]
    assert max(control_s, keepalive_s) < ONE_BACKOFF_CYCLE_S
    assert holder(r, SHARD0)[1] >= before["fence"]  # a fence is never handed out twice
