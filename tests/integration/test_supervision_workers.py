"""Layer 6 on real Celery worker processes: ``kill -9`` the worker whose pool child runs keepalive shard 0;
the supervision sweep (sent once a second, as beat would) restarts the shard on the other worker as soon as
its lease lapsed and its heartbeat went stale, without the crash back-off (its holder is gone; nothing crashed
where it ran: issue 20), a ``process-restarted`` event appears, and the admin API's ``watchdog/status`` shows
``restartCount`` 1 and no crash for ``keepalive-shard-0``.

Two prefork workers serve ``vastkeep.control`` and ``vastkeep.keepalive``; the simulator answers the poll
dispatcher's provider calls; the records live in a private redis-server.
"""

from __future__ import annotations

import time

import pytest
import requests

from tests.fixtures.chaos import report
from tests.fixtures.helpers import ServedApp, wait_for
from tests.fixtures.state import State
from vastkeep.admin import HEADER
from vastkeep.core.settings import load_settings
from vastkeep.keepalive import lease_name
from vastkeep.state import EventLog, Keys
from vastkeep.supervision import SupervisionBook
from vastkeep.supervision.decide import HOLDER_GONE
from worker.config import CONTROL_QUEUE, KEEPALIVE_QUEUE

pytestmark = pytest.mark.slow
KEY = "integration-admin-key-supervision"
SHARD = "keepalive-shard-0"


def owner_pid(r, shard: int) -> int | None:
    owner = r.hget(Keys().lease(lease_name(shard)), "owner")
    return int(str(owner).split(":")[-2]) if owner is not None else None  # "<label>:<host>:<pid>:<rand>"


def test_a_killed_shard_worker_is_restarted_on_the_other_worker_without_the_backoff(chaos, sim) -> None:
    server = chaos.redis()
    r = server.client()
    env = chaos.env(server.url, **sim.env(), COMFYUI_KEEPALIVE_INTERVAL_MS="4000",
                    COMFYUI_KEEPALIVE_TIMEOUT_MS="1000", COMFYUI_KEEPALIVE_SHARDS="1",
                    SUPERVISION_HEARTBEAT_STALE_MS="3000", SUPERVISION_START_TIMEOUT_MS="10000",
                    SUPERVISION_RESTART_JITTER_PCT="0", ADMIN_API_KEY=KEY)
    workers = [chaos.worker("worker", f"sup{i}", env, concurrency=3, queues=(CONTROL_QUEUE, KEEPALIVE_QUEUE))
               for i in range(2)]
    for w in workers:
        w.wait_ready()
    client = chaos.client(server.url, env)
    book = SupervisionBook(r, Keys())

    def sweep_and(check):
        def go():
            client.send_task("vastkeep.supervision.sweep")
            return check()
        return go

    wait_for(sweep_and(lambda: owner_pid(r, 0) is not None and book.all().get(SHARD) is not None
                       and book.all()[SHARD].status == "running"), 20, "shard 0 started and running",
             interval_s=1.0)
    victim_pid = owner_pid(r, 0)
    victim = next(w for w in workers if victim_pid in w.pool_children())
    survivor = next(w for w in workers if w is not victim)
    victim.kill_group()
    killed_at = time.monotonic()

    wait_for(sweep_and(lambda: book.all()[SHARD].restart_count >= 1), 25, "the sweep restarted shard 0",
             interval_s=1.0)
    restarted_after = time.monotonic() - killed_at
    wait_for(lambda: owner_pid(r, 0) in survivor.pool_children(), 10, "the survivor owns shard 0")
    taken_after = time.monotonic() - killed_at
    report("supervision: shard worker kill -9", restarted_after=restarted_after, taken_after=taken_after)
    # lease TTL 2 s, stale heartbeat 3 s (+ up to a 5 s beat period), a sweep a second: before the guide's
    # first crash step (10 s), which a holder gone no longer waits
    assert restarted_after < 10.0, restarted_after

    events = [e for e in EventLog(r, Keys()).read(count=1000) if e.kind == "process-restarted"]
    shard_events = [e.fields for e in events if e.fields["id"] == SHARD]
    assert shard_events == [{"id": SHARD, "name": "KeepaliveShard-0", "restartCount": 1,
                             "consecutiveCrashes": 0}]

    settings = load_settings(environ=env, env_file=False)
    with ServedApp(State(r).admin_app(settings)) as s:
        url = f"{s.url}/api/proxy/admin/watchdog/status"
        body = requests.get(url, headers={HEADER: KEY}, timeout=5).json()
    shard = body["daemons"][SHARD]
    assert shard["restartCount"] == 1 and shard["consecutiveCrashes"] == 0
    assert shard["lastCrashTime"] is None and shard["lastError"] == HOLDER_GONE
    assert "poll-dispatcher" in body["daemons"]
