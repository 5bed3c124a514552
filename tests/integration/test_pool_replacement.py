"""A ComfyUI crash replaced through the real chain on real worker processes, with no beat at all.

keepalive shard runner (fast path) → ``connection-lost`` → ``vastkeep.polling.poll_instance`` → the
dispatcher polls it and wakes ``vastkeep.pool.reconcile`` (``wake_at`` = the loss, then loss + grace) → the
first round rents a replacement, the second destroys the crashed one. Before the wake-up existed, nothing
but the beat ran a round, so without a beat the crashed instance was never replaced.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from celery import Celery

from tests.fixtures.chaos import Chaos, Worker
from tests.fixtures.helpers import wait_for
from tests.fixtures.pool_rig import destroy_all
from tests.fixtures.state import State
from vastkeep.state import EventLog, StateStore
from worker.config import CONTROL_QUEUE, KEEPALIVE_QUEUE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(autouse=True)
def _empty_cloud_after(sim) -> Any:
    yield
    destroy_all(sim)


def pool_of_one(chaos: Chaos, sim: Any, **env: str) -> tuple[Worker, Celery, State]:
    """A private Redis, a warm pool of one and one worker on the control and keepalive queues; polling, the
    keepalive shards and the first reconcile round (the first rent) are queued: no beat runs here."""
    server = chaos.redis()
    env = chaos.env(server.url, **sim.env(), WARM_POOL_MIN_RELIABILITY="0.9", WARM_POOL_DESIRED_SIZE="1",
                    COMFYUI_KEEPALIVE_SHARDS="1", VAST_API_MIN_GAP_MS="0", **env)
    worker = chaos.worker("worker", "pool", env, concurrency=5, queues=(CONTROL_QUEUE, KEEPALIVE_QUEUE))
    worker.wait_ready(120)
    client = chaos.client(server.url, env)
    for task in ("vastkeep.polling.ensure", "vastkeep.keepalive.ensure_shards", "vastkeep.pool.reconcile"):
        client.send_task(task)
    return worker, client, State.on(server.url)


def the_only_ready(store: StateStore) -> str | None:
    ready = [rec.instance_id for rec in store.list_instances() if rec.status == "ready"]
    return ready[0] if len(ready) == 1 else None


def test_a_crashed_instance_is_replaced_without_waiting_for_the_beat(chaos: Chaos, sim) -> None:
    worker, client, state = pool_of_one(chaos, sim, WARM_POOL_UNHEALTHY_GRACE_MS="1000",
                                        COMFYUI_KEEPALIVE_INTERVAL_MS="5000",
                                        COMFYUI_KEEPALIVE_TIMEOUT_MS="2000")
    r, keys, store = state.redis, state.keys, state.store
    victim = wait_for(lambda: the_only_ready(store), 90, "the first instance ready", interval_s=0.2)

    def watched() -> bool:
        raw = r.get(keys.keepalive(victim))
        return bool(raw) and int(json.loads(raw).get("total_successes") or 0) >= 1

    wait_for(watched, 30, "the keepalive pinging it", interval_s=0.2)
    time.sleep(1.0)  # the fast path's /ws opens beside the first ping
    sim.control.crash_comfy(int(victim))
    crashed_at = time.monotonic()

    def replacement() -> str | None:
        others = [rec.instance_id for rec in store.list_instances() if rec.instance_id != victim]
        return others[0] if others else None

    new = wait_for(replacement, 30, "a replacement rented (no beat: only the wake-up can do it)",
                   interval_s=0.1)
    took = time.monotonic() - crashed_at
    assert took < 15, took  # detection + 1 s grace + the queue hops, far from any beat interval
    wait_for(lambda: store.get_instance(victim) is None, 30, "the crashed instance destroyed", interval_s=0.2)
    wait_for(lambda: (rec := store.get_instance(new)) is not None and rec.status == "ready", 60,
             "the replacement ready", interval_s=0.2)
    replaced = [e.fields for e in EventLog(r, keys).read(count=1000) if e.kind == "instance-replaced"]
    assert [f["instance_id"] for f in replaced] == [victim]
    assert replaced[0]["reason"] == "keepalive: connection lost"
    worker.assert_alive()


def test_a_flapping_comfyui_costs_one_replacement(chaos: Chaos, sim) -> None:
    """Lost, back, lost, back, lost at the default grace (5 min), on a real worker: the instance shows
    ``unhealthy`` while lost and ``ready`` when back (the keepalive still watches it), one replacement is
    rented at the first loss and none after, and once the replacement is ready the flapping one is trimmed."""
    worker, client, state = pool_of_one(chaos, sim, COMFYUI_KEEPALIVE_INTERVAL_MS="1000",
                                        COMFYUI_KEEPALIVE_TIMEOUT_MS="800")
    r, keys, store = state.redis, state.keys, state.store
    victim = wait_for(lambda: the_only_ready(store), 90, "the first instance ready", interval_s=0.2)
    wait_for(lambda: int(json.loads(r.get(keys.keepalive(victim)) or "{}").get("total_successes") or 0) >= 1,
             30, "the keepalive pinging it", interval_s=0.2)
    sim.control.set_lifecycle(loading_s=30.0)  # the replacement provisions while the victim flaps

    def status_of(iid: str) -> str | None:
        rec = store.get_instance(iid)
        return None if rec is None else rec.status

    for _ in range(3):
        sim.control.crash_comfy(int(victim))
        wait_for(lambda: status_of(victim) == "unhealthy", 10, "the crash shown", interval_s=0.05)
        sim.control.restore_comfy(int(victim))
        wait_for(lambda: status_of(victim) == "ready", 10, "the recovery shown", interval_s=0.05)
    sim.control.crash_comfy(int(victim))
    wait_for(lambda: status_of(victim) == "unhealthy", 10, "the last crash shown", interval_s=0.05)
    time.sleep(3.0)  # every loss's wake-up has run its round

    others = [rec for rec in store.list_instances() if rec.instance_id != victim]
    assert len(others) == 1 and others[0].status in ("starting", "loading"), others  # one rent, not four
    rented = [e.fields for e in EventLog(r, keys).read(count=1000) if e.kind == "instance-rented"]
    assert len(rented) == 2, rented  # the first instance and one replacement
    assert status_of(victim) == "unhealthy"  # kept within its grace (5 min) while the replacement loads
    new = others[0].instance_id
    wait_for(lambda: status_of(new) == "ready", 90, "the replacement ready", interval_s=0.5)
    client.send_task("vastkeep.pool.reconcile")  # what the beat does every 15 s (no beat in this test)
    wait_for(lambda: status_of(victim) is None, 30, "the flapping one trimmed once replaced", interval_s=0.2)
    assert [rec.instance_id for rec in store.list_instances()] == [new]
    worker.assert_alive()
