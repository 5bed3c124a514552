"""A hung SSH collector is restarted by supervision, with nothing lost or stored twice.

A real collector runs in a real threads worker (``-P threads``, as production runs the ``vastkeep.ssh``
queue; Celery enforces no time limit there) against the simulated cloud's sshd and a real redis-server.
``tests/fixtures/hang_app.py`` blocks the collector in its fenced write (a call without a deadline), while a
writer
keeps appending to the remote log. The collector's lease keeper sees its loop stop beating, releases the
lease and emits ``ssh-collector-stalled``; the supervision sweep (sent every second, as beat would) finds
the heartbeat stale and the lease free and restarts the collector after the guide's 10 s. The successor
resumes at the stored offset; when the hung call finally returns, its fenced write is refused. The stored
stream equals the remote file byte for byte.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.fixtures.chaos import SSH_QUEUE, report
from tests.fixtures.helpers import wait_for
from tests.fixtures.ssh_rig import record_instance, start_log_writer
from tests.fixtures.state import State
from vastkeep.core.clock import SystemClock
from vastkeep.ssh import PROVISION_LOG, lease_name
from vastkeep.state.heartbeats import read_heartbeats
from vastkeep.supervision import SupervisionBook
from worker.config import CONTROL_QUEUE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

READY_TIMEOUT_S = 3.0  # the read step's own deadline
LEASE_TTL_S = 6.0  # 3 × SSH_KEEPALIVE_INTERVAL_MS: the stall grace
STALE_S = 3.0  # SUPERVISION_HEARTBEAT_STALE_MS
SWEEP_EVERY_S = 1.0
RESTART_DELAY_S = 10.0  # the guide's first restart delay (no jitter)
START_S = 5.0  # a sent start reaching a free thread, connecting, beating
#: hang → stall seen (step deadline + grace + one keeper check) → crash seen (a sweep) → restart delay →
#: the restart sweep → the successor beating
BOUND_S = READY_TIMEOUT_S + LEASE_TTL_S + 1.0 + SWEEP_EVERY_S + RESTART_DELAY_S + SWEEP_EVERY_S + START_S


def test_a_hung_collector_is_restarted_within_the_bound_and_nothing_is_lost(chaos, sim, tmp_path) -> None:
    rs = chaos.redis()
    state = State(rs.client())
    r, keys, store, logs, leases, events = state.redis, state.keys, state.store, state.logs, state.leases, \
        state.events
    book = SupervisionBook(r, keys)
    iid, path = record_instance(sim, store)
    gate = tmp_path / "hang-gate"
    env = chaos.env(rs.url, SSH_KEY_PATH=sim.info["ssh_private_key_path"], SSH_KEEPALIVE_INTERVAL_MS="2000",
                    SSH_READY_TIMEOUT_MS=str(int(READY_TIMEOUT_S * 1000)), SSH_COLLECT_HOLD_S="300",
                    SUPERVISION_HEARTBEAT_STALE_MS=str(int(STALE_S * 1000)),
                    SUPERVISION_RESTART_JITTER_PCT="0", SUPERVISION_START_TIMEOUT_MS="20000",
                    COMFYUI_KEEPALIVE_SHARDS="1",
                    VKTEST_HANG_GATE=str(gate))
    worker = chaos.worker("tests.fixtures.hang_app", "ssh-hang", env, pool="threads", concurrency=6,
                          queues=(SSH_QUEUE, CONTROL_QUEUE))
    worker.wait_ready()
    client = chaos.client(rs.url, env)
    daemon = f"ssh-collector:{iid}"

    def sweep_and(check):
        def go():
            client.send_task("vastkeep.supervision.sweep")
            return check()
        return go

    stop = threading.Event()
    writer = start_log_writer(path, stop)
    try:
        wait_for(sweep_and(lambda: logs.offset(iid, PROVISION_LOG) > 0 and book.all().get(daemon) is not None
                           and book.all()[daemon].status == "running"), 30,
                 "the collector started by the sweep", interval_s=SWEEP_EVERY_S)
        hung = leases.current(lease_name(iid))
        gate.write_text(str(hung.fence))
        hung_at = time.monotonic()
        time.sleep(1.0)  # a write already under way when the gate closed lands now
        offset_at_hang = logs.offset(iid, PROVISION_LOG)

        def restarted() -> bool:
            lease = leases.current(lease_name(iid))
            beat = read_heartbeats(r, keys, SystemClock(), [daemon]).get(daemon) or {}
            return lease is not None and lease.fence > hung.fence and beat.get("fence") == lease.fence \
                and logs.offset(iid, PROVISION_LOG) > offset_at_hang

        wait_for(sweep_and(restarted), BOUND_S + 30, "a successor collector streaming",
                 interval_s=SWEEP_EVERY_S)
        restarted_after = time.monotonic() - hung_at
        rec = book.all()[daemon]
        kinds = [(e.kind, e.fields) for e in events.read(count=1000)]
        stalled = [f for k, f in kinds if k == "ssh-collector-stalled"]
        report("ssh: hung collector", restarted_after=restarted_after, bound=BOUND_S,
               restart_count=rec.restart_count)
        assert stalled and stalled[0]["instance_id"] == iid and stalled[0]["fence"] == hung.fence, kinds
        assert any(k == "process-restarted" and f["id"] == daemon for k, f in kinds), kinds
        assert rec.restart_count >= 1
        assert restarted_after <= BOUND_S, (restarted_after, BOUND_S)
    finally:
        stop.set()
        writer.join(5)
    size = path.stat().st_size
    wait_for(lambda: logs.offset(iid, PROVISION_LOG) >= size, 30, "the successor catches up")
    gate.unlink()  # the hung call returns: its fenced write must be refused, and it must not continue itself
    wait_for(lambda: "'stopped': 'stalled'" in worker.log(), 10, "the hung run ends as stalled")
    time.sleep(2.0)
    assert logs.read_all_bytes(iid, PROVISION_LOG) == path.read_bytes()
    assert leases.current(lease_name(iid)).fence == leases.last_fence(lease_name(iid))  # no extra run
    worker.assert_alive()
