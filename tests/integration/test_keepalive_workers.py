"""Layer 4 on real Celery workers: shards owned across worker processes, and taken over after ``kill -9``.

Two prefork workers serve ``vastkeep.keepalive`` (one pool slot per shard each) and ``vastkeep.control``;
``ensure_shards`` is sent once a second, as beat would. The simulator serves the ComfyUI instances; the
records live in a private redis-server.
"""

from __future__ import annotations

import time

import pytest

from tests.fixtures.comfy import base_url
from tests.fixtures.helpers import wait_for
from tests.fixtures.state import State
from vastkeep.keepalive import lease_name, read_states
from vastkeep.state.keys import Keys
from vastkeep.state.store import InstanceRecord
from worker.config import CONTROL_QUEUE, KEEPALIVE_QUEUE

pytestmark = pytest.mark.slow
INTERVAL_S = 4.0


def owner_pid(r, shard: int) -> int | None:
    owner = r.hget(Keys().lease(lease_name(shard)), "owner")
    if owner is None:
        return None
    # new_owner(label) = "<label>:<host>:<pid>:<random>"
    return int(str(owner).split(":")[-2])


def _ready_instances(chaos, sim, n: int):
    """A private redis-server with ``n`` ready simulated instances (SSH off), and the workers' environment."""
    server = chaos.redis()
    r = server.client()
    store = State(r).store
    ids = []
    for _ in range(n):
        inst = sim.control.create_instance(running=True, ssh=False, ssh_proxy=False)
        ids.append(str(inst["id"]))
        store.put_instance(InstanceRecord(instance_id=ids[-1], status="ready",
                                          connection_url=base_url(inst)))
    env = chaos.env(server.url, COMFYUI_KEEPALIVE_INTERVAL_MS=str(int(INTERVAL_S * 1000)),
                    COMFYUI_KEEPALIVE_TIMEOUT_MS="1000", COMFYUI_KEEPALIVE_SHARDS="2", VASTKEEP_SIMULATED="1")
    return server, r, ids, env


def test_shards_are_shared_and_survive_a_worker_kill(chaos, sim):
    server, r, ids, env = _ready_instances(chaos, sim, 8)
    workers = [chaos.worker("worker", f"ka{i}", env, concurrency=3, queues=(CONTROL_QUEUE, KEEPALIVE_QUEUE))
               for i in range(2)]
    for w in workers:
        w.wait_ready()
    client = chaos.client(server.url, env)

    def ensure() -> None:
        client.send_task("vastkeep.keepalive.ensure_shards")

    ensure()
    wait_for(lambda: all(owner_pid(r, n) for n in range(2)), 20, "both shards owned")
    wait_for(lambda: all(s.total_pings >= 1 for s in read_states(r, Keys(), ids).values()), 20, "first pings")
    before = read_states(r, Keys(), ids)
    window_s = 3 * INTERVAL_S
    time.sleep(window_s)
    after = read_states(r, Keys(), ids)
    for iid in ids:  # never two owners pinging one instance: at most one ping per interval (+1 at the edge)
        assert after[iid].total_pings - before[iid].total_pings <= window_s / INTERVAL_S + 1, iid
        assert after[iid].total_failures == 0

    victim_pid = owner_pid(r, 0)
    victim = next(w for w in workers if victim_pid in w.pool_children())
    victim.kill_group()
    killed_at = time.monotonic()
    seen = read_states(r, Keys(), ids)

    def all_pinged_again() -> bool:
        ensure()
        now = read_states(r, Keys(), ids)
        return all(now[i].total_pings > seen[i].total_pings for i in ids)

    wait_for(all_pinged_again, 30, "every instance pinged again after the kill", interval_s=1.0)
    took = time.monotonic() - killed_at
    survivor = next(w for w in workers if w is not victim)
    assert owner_pid(r, 0) in survivor.pool_children() or owner_pid(r, 0) is None
    assert took < INTERVAL_S + 6, took  # lease TTL (2 s at this interval) + ensure cadence + one ping


def test_a_warm_shutdown_hands_the_shards_over_within_one_refresh(chaos, sim):
    """SIGTERM (systemd stop, `vastkeep up` Ctrl-C): Celery's warm shutdown waits for running tasks, and a
    shard runner's run lasts KEEPALIVE_RUN_S (300 s), so the worker used to be killed at TimeoutStopSec. The
    main process now marks itself stopping in Redis; the runners in its prefork children hand over at their
    next refresh and the worker exits within seconds, its shards continued by the other worker. Fails
    without it."""
    server, r, ids, env = _ready_instances(chaos, sim, 4)
    first = chaos.worker("worker", "ka-stop-a", env, concurrency=3, queues=(CONTROL_QUEUE, KEEPALIVE_QUEUE))
    first.wait_ready()
    client = chaos.client(server.url, env)
    client.send_task("vastkeep.keepalive.ensure_shards")
    wait_for(lambda: all(owner_pid(r, n) in first.pool_children() for n in range(2)), 20, "both shards owned")
    second = chaos.worker("worker", "ka-stop-b", env, concurrency=3, queues=(CONTROL_QUEUE, KEEPALIVE_QUEUE))
    second.wait_ready()
    t0 = time.monotonic()
    first.proc.send_signal(15)
    first.proc.wait(20)  # raises TimeoutExpired while the runs hold the worker
    assert time.monotonic() - t0 < 20
    wait_for(lambda: all(owner_pid(r, n) in second.pool_children() for n in range(2)), 20,
             "both shards continued by the other worker (no ensure sent)")
    seen = read_states(r, Keys(), ids)
    wait_for(lambda: all(s.total_pings > seen[i].total_pings for i, s in read_states(r, Keys(), ids).items()),
             20, "every instance pinged by the new owner")
