"""A worker that is alive but stopped consuming (the symptom of celery#8030 / #8082 / #10205 after a broker
reconnect) is detected by its own watchdog and exits, so its supervisor starts a fresh one (``vastkeep up``'s
supervisor, compose's ``restart: unless-stopped`` and the systemd units restart a worker on any exit).

The stall is made on demand, on a real ``celery -A worker worker`` subprocess: remote control cancels its
consumer of ``vastkeep.control`` (the process lives on, heartbeats, answers broadcasts, takes nothing),
then a ping waits in the queue. ``WORKER_STALL_TIMEOUT_MS=3000`` here; 60 s in production.
"""

from __future__ import annotations

import time

import pytest

from tests.fixtures.chaos import report
from tests.fixtures.helpers import wait_for
from worker.config import CONTROL_QUEUE

pytestmark = pytest.mark.timeout(90)
STALL_MS = 3000


def test_a_worker_that_stopped_consuming_exits_so_it_is_restarted(chaos) -> None:
    server = chaos.redis()
    env = chaos.env(server.url, WORKER_STALL_TIMEOUT_MS=str(STALL_MS))
    worker = chaos.worker("worker", "stall", env, concurrency=2, queues=(CONTROL_QUEUE,))
    worker.wait_ready()
    app = chaos.client(server.url, env)
    # healthy: a message is taken at once, and a worker with an empty queue is idle, not stalled
    assert app.send_task("vastkeep.system.ping").get(timeout=20)["pong"]
    time.sleep(STALL_MS * 2 / 1000)
    worker.assert_alive()

    replies = app.control.cancel_consumer(CONTROL_QUEUE, destination=[worker.name], reply=True, timeout=5)
    assert replies, "the worker did not answer the cancel_consumer broadcast"
    stalled_at = time.monotonic()
    app.send_task("vastkeep.system.ping")
    wait_for(lambda: not worker.alive(), STALL_MS / 1000 * 3 + 15, "the stalled worker exit", interval_s=0.2)
    exited_after = time.monotonic() - stalled_at
    report("judge: worker stopped consuming", exited_after=exited_after, exit_code=worker.proc.returncode)
    assert "stopped consuming: 1 message(s) wait in vastkeep.control" in worker.log()
    assert exited_after >= STALL_MS / 1000
