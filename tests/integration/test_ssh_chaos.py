"""Layer 1 with real Celery workers: ``vastkeep.ssh.collect`` hands over to its continuations under the
fenced lease, and after ``kill -9`` of the whole worker running a collector, another worker resumes it
(started by ``vastkeep.ssh.ensure_collectors`` once the lease expired): one collector at a time, and the
stored log equals the remote file byte for byte. With the threads pool the SSH worker runs in production (the
kill takes every collector of the process at once) and with prefork."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from tests.fixtures.helpers import wait_for
from tests.fixtures.ssh_rig import record_instance, start_log_writer
from tests.fixtures.state import State
from vastkeep.core.clock import SystemClock
from vastkeep.ssh import PROVISION_LOG, lease_name
from vastkeep.state.heartbeats import read_heartbeats

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_kill_9_of_the_worker_running_a_collector_another_resumes_nothing_lost(pool, chaos, sim) -> None:
    rs = chaos.redis()
    state = State(rs.client())
    r, keys, store, logs, leases = state.redis, state.keys, state.store, state.logs, state.leases
    iid, log_path = record_instance(sim, store)
    env = chaos.env(rs.url, SSH_KEY_PATH=sim.info["ssh_private_key_path"], SSH_KEEPALIVE_INTERVAL_MS="1000",
                    SSH_COLLECT_HOLD_S="4", SSH_BACKOFF_GATE_S="1", SSH_READY_TIMEOUT_MS="5000")
    a = chaos.worker("worker", "ssh-a", env, pool=pool, concurrency=4 if pool == "threads" else 1)
    b = chaos.worker("worker", "ssh-b", env, pool=pool, concurrency=4 if pool == "threads" else 1)
    for w in (a, b):
        w.wait_ready()
    client = chaos.client(rs.url, env)
    stop = threading.Event()
    writer = start_log_writer(log_path, stop)
    try:
        client.send_task("vastkeep.ssh.collect", args=[iid])
        wait_for(lambda: logs.offset(iid, PROVISION_LOG) > 0, 20, "first lines stored")
        first_fence = leases.current(lease_name(iid)).fence
        # continuations: the lease is handed over (a new fence) while lines keep coming
        wait_for(lambda: leases.last_fence(lease_name(iid)) >= first_fence + 2, 30, "two hand-overs")
        # kill -9 the whole worker that runs the collector now
        name = f"ssh-collector:{iid}"
        beat = wait_for(lambda: read_heartbeats(r, keys, SystemClock(), [name]).get(name), 10,
                        "collector heartbeat")
        pid = beat["pid"]
        victim = next(w for w in (a, b) if pid in (w.pid, *w.pool_children()))  # threads: the worker itself
        survivor = b if victim is a else a
        fence_before = leases.last_fence(lease_name(iid))
        os.killpg(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        offset_at_kill = logs.offset(iid, PROVISION_LOG)

        # beat's job, done by hand here: a collector for every loading instance without one
        def resumed() -> bool:
            client.send_task("vastkeep.ssh.ensure_collectors")
            return logs.offset(iid, PROVISION_LOG) > offset_at_kill + 1000 and \
                leases.last_fence(lease_name(iid)) > fence_before
        wait_for(resumed, 40, "another worker resumes the collector", interval_s=1.0)
        resumed_after = time.monotonic() - killed_at
        holder = read_heartbeats(r, keys, SystemClock(), [name])[name]["pid"]
        assert holder in (survivor.pid, *survivor.pool_children())
        survivor.assert_alive()
    finally:
        stop.set()
        writer.join(5)
    size = log_path.stat().st_size
    wait_for(lambda: logs.offset(iid, PROVISION_LOG) >= size, 30, "the collector catches up")
    assert logs.read_all_bytes(iid, PROVISION_LOG) == log_path.read_bytes()
    print(f"[chaos] ssh collector resumed {resumed_after:.1f}s after kill -9 of {victim.name}")
