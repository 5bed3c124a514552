"""Layer 4: a keepalive worker frozen past its lease TTL (the soak's ``stop-keepalive``, SIGSTOP then SIGCONT)
still sees a ComfyUI crash in under 2 s once it runs again.

The shard runner lives in a process of its own (as in the Celery worker), so the freeze is a real SIGSTOP of
that process: its lease lapses in Redis while its held ``/ws`` stay open. Nobody else took the shard, so the
runner must hold it again rather than give up its sockets and leave the shard unwatched until supervision
restarts it (10 s and more later: the soak saw crash detection of 9-12 s).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.fixtures.helpers import wait_for
from tests.fixtures.keepalive_rig import kinds, ready_instance
from vastkeep.core.clock import SystemClock
from vastkeep.keepalive import CONNECTION_CLOSED, lease_name, read_states
from vastkeep.state.keys import Keys
from vastkeep.state.leases import LeaseManager

LEASE_TTL_MS = 1500

RUNNER = """
import asyncio, json, sys
import redis
from vastkeep.core.clock import SystemClock
from vastkeep.keepalive import KeepalivePolicy, RunnerConfig, ShardRunner
from vastkeep.state.events import EventLog
from vastkeep.state.keys import Keys
from vastkeep.state.store import StateStore

client = redis.Redis.from_url(sys.argv[1], decode_responses=True, socket_timeout=5)
runner = ShardRunner(redis=client, keys=Keys(), store=StateStore(client, Keys()),
                     events=EventLog(client, Keys()), shard=0,
                     policy=KeepalivePolicy(interval_s=30, timeout_s=1, max_failures=5),
                     clock=SystemClock(),
                     config=RunnerConfig(shards=1, run_s=float(sys.argv[2]), refresh_s=0.2, flush_s=0.05,
                                         lease_ttl_ms=int(sys.argv[3])))
print(json.dumps(asyncio.run(runner.run())), flush=True)
"""


def test_a_crash_right_after_the_worker_thawed_is_seen_in_under_two_seconds(sim, redis_server, redis_client,
                                                                              store, events):
    iid = ready_instance(sim, store)
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, redis_server.url, "20", str(LEASE_TTL_MS)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: read_states(redis_client, Keys(), [iid])[iid].total_successes >= 1, 10)
        time.sleep(0.5)  # the websocket is held
        leases = LeaseManager(redis_client, Keys(), SystemClock())
        fence = leases.last_fence(lease_name(0))
        os.kill(proc.pid, signal.SIGSTOP)
        # the grant lapses: nobody holds the shard
        wait_for(lambda: leases.current(lease_name(0)) is None, 10)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.5)  # running again: the soak strikes once the process is back
        sim.control.crash_comfy(int(iid))
        took = wait_for(lambda: "connection-lost" in kinds(events, iid), 6)
        assert took < 2.0, f"crash seen {took:.1f} s after it, runner: {proc.poll()=}"
        lost = [e for e in events.read(after="0-0") if e.kind == "connection-lost"]
        assert len(lost) == 1 and lost[0].fields["detectedBy"] == CONNECTION_CLOSED
        held = leases.current(lease_name(0))
        assert held is not None and held.fence == fence + 1  # held again under the next grant, nobody else's
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, -signal.SIGTERM), err[-2000:]


def test_a_shard_another_runner_took_meanwhile_is_not_taken_back(sim, redis_server, redis_client, store,
                                                                   events):
    """Past the freeze, a grant that went to another runner stays lost: this one ends ``lost``."""
    iid = ready_instance(sim, store)
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, redis_server.url, "20", str(LEASE_TTL_MS)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: read_states(redis_client, Keys(), [iid])[iid].total_successes >= 1, 10)
        leases = LeaseManager(redis_client, Keys(), SystemClock())
        os.kill(proc.pid, signal.SIGSTOP)
        wait_for(lambda: leases.current(lease_name(0)) is None, 10)
        other = leases.acquire(lease_name(0), "someone-else", 60_000)
        assert other is not None
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            proc.communicate(timeout=30)
    assert '"result": "lost"' in out, (out, err[-2000:])
    held = leases.current(lease_name(0))
    assert held is not None and held.owner == "someone-else" and held.fence == other.fence
