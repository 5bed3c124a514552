"""Chaos with real workers: a pool child killed mid-task, a warm shutdown holding a countdown task, and
(for contrast) a whole worker killed with SIGKILL while holding one.

Real parts only: a private redis-server per test (never the machine's 6379), ``celery worker``
subprocesses of the product's app (``-A worker``, or ``-A tests.fixtures.chaos_app`` = the same ``worker.app``
plus one test-only slow task), a Celery client built from the same ``celery_config``. Every wait is a
deadline-based poll; the only timed windows are the visibility timeout the last test is about.

What Celery 5.7 + kombu 5.7 on Redis actually do (each test pins one of these down):

* a pool child killed mid-task → the parent sees ``WorkerLostError``; with ``task_acks_late`` +
  ``task_reject_on_worker_lost`` it rejects with requeue, which puts the message back at the head of the
  queue at once; an idle worker blocked in BRPOP gets it immediately.
* warm shutdown (SIGTERM) → kombu's channel close restores every unacked message it holds, countdown/ETA
  messages included ("Restoring 1 unacknowledged message(s)"): the message is back in the queue list
  before the worker exits, not after ``visibility_timeout``; the next worker runs it at its ETA.
* SIGKILL of the whole worker → nothing restores: the message stays in the ``unacked`` hash until it
  is older than ``visibility_timeout`` *and* some worker sweeps it (at a worker's start-up, or on
  kombu's periodic sweep, every ``unacked_restore_interval × unacked_restore_throttle`` = 10 × 10 s by
  default).
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime

import pytest

from tests.fixtures.chaos import SLOW_TASK, marker_keys, pid_alive, report
from tests.fixtures.helpers import wait_for
from worker.config import CONTROL_QUEUE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

CHAOS_APP = "tests.fixtures.chaos_app"
PRODUCT_APP = "worker"
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"  # kombu's Redis ack-emulation keys (defaults)
# The smallest visibility timeout Settings accept needs every poll/keepalive interval and the SSH time
# limit below it (README: "Rules that involve several variables").
SMALL_VT_S = 2
SMALL_VT_ENV = {
    "CELERY_VISIBILITY_TIMEOUT_S": str(SMALL_VT_S),
    "WARM_POOL_POLL_ACTIVE_INTERVAL_MS": "1000", "WARM_POOL_POLL_IDLE_INTERVAL_MS": "1000",
    "WARM_POOL_POLL_INTERVAL_MS": "1000", "COMFYUI_KEEPALIVE_INTERVAL_MS": "1000",
    "COMFYUI_KEEPALIVE_TIMEOUT_MS": "500", "SSH_COLLECT_TIME_LIMIT_S": "1",
}


def runs(r, run_id: str) -> list[dict]:
    return [json.loads(x) for x in r.lrange(marker_keys(run_id)["runs"], 0, -1)]


def count(r, run_id: str, what: str) -> int:
    return int(r.get(marker_keys(run_id)[what]) or 0)


def blocked_in_brpop(r) -> int:
    """Broker clients blocked in BRPOP right now (flag ``b``): idle workers waiting for a message."""
    return sum(1 for c in r.client_list() if c.get("cmd") == "brpop" and "b" in c.get("flags", ""))


def test_pool_child_killed_mid_task_is_redelivered_and_completes_once_on_the_other_worker(chaos) -> None:
    t0 = time.monotonic()
    rs = chaos.redis()
    r = rs.client()
    env = chaos.env(rs.url)
    workers = [chaos.worker(CHAOS_APP, "kill-a", env), chaos.worker(CHAOS_APP, "kill-b", env)]
    for w in workers:
        w.wait_ready()
    client = chaos.client(rs.url, env)
    gate = chaos.dir / "gate-kill"
    res = client.send_task(SLOW_TASK, kwargs={"run_id": "kill", "gate_path": str(gate)})

    # STARTED (task_track_started) and the task's own marker: which worker, which pool process
    wait_for(lambda: res.state == "STARTED" and count(r, "kill", "started") == 1, 15, "task STARTED")
    first_run = runs(r, "kill")[0]
    first = next(w for w in workers if w.name == first_run["worker"])
    second = next(w for w in workers if w is not first)
    victim = first_run["pid"]
    assert victim in first.pool_children(), "the task must run in a prefork pool child of the first worker"
    assert first_run["redelivered"] is False
    # The busy worker (prefetch 1, one slot) is not consuming; the idle one is blocked in BRPOP, so the
    # requeued message can only go to it.
    wait_for(lambda: blocked_in_brpop(r) == 1, 10, "exactly one worker (the idle one) blocked in BRPOP")

    t_kill = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: count(r, "kill", "started") == 2, 15, "the task to start again after the kill")
    t_redelivered = time.monotonic() - t_kill
    second_run = runs(r, "kill")[1]
    assert second_run["worker"] == second.name, f"redelivered to {second_run['worker']}, not the other worker"
    assert second_run["redelivered"] is True
    assert count(r, "kill", "done") == 0, "the killed run must not have completed"

    gate.touch()
    result = res.get(timeout=15)
    t_done = time.monotonic() - t_kill
    assert result["worker"] == second.name and result["pid"] == second_run["pid"]
    assert res.state == "SUCCESS"
    # nothing left that could run it again: not queued, not parked unacked
    wait_for(lambda: r.llen(CONTROL_QUEUE) == 0 and r.hlen(UNACKED) == 0, 10, "queue and unacked empty")
    assert count(r, "kill", "done") == 1, "ran to completion exactly once after the kill"
    assert count(r, "kill", "started") == 2
    # the first worker lost its child, said so, replaced it and is still serving
    log = first.log()
    assert f"pid:{victim} exited with 'signal 9 (SIGKILL)'" in log and "WorkerLostError" in log
    first.assert_alive()
    assert not pid_alive(victim)
    wait_for(lambda: [p for p in first.pool_children() if p != victim], 10, "a replacement pool child")
    report("1 pool child SIGKILL mid-task", redelivered_after=t_redelivered, completed_after=t_done,
           first=first.name, second=second.name, total=time.monotonic() - t0)


def test_warm_shutdown_restores_a_held_countdown_task_which_runs_after_a_worker_restart(chaos) -> None:
    t0 = time.monotonic()
    rs = chaos.redis()
    r = rs.client()
    env = chaos.env(rs.url)  # the default visibility timeout (3600 s): no redelivery can come from it
    a = chaos.worker(PRODUCT_APP, "warm-a", env)
    a.wait_ready()
    client = chaos.client(rs.url, env)
    res = client.send_task("vastkeep.system.ping", countdown=8)

    # the worker fetched it at once and holds it unacked in memory until its ETA
    wait_for(lambda: r.hlen(UNACKED) == 1 and r.llen(CONTROL_QUEUE) == 0 and res.id in a.log(), 10,
             "the countdown task held (unacked) by worker A")
    held = json.loads(next(iter(r.hvals(UNACKED))))[0]
    eta = datetime.fromisoformat(held["headers"]["eta"])

    t_term = time.monotonic()
    rc = a.terminate()
    t_shutdown = time.monotonic() - t_term
    assert rc == 0, a.log()[-3000:]
    assert res.state == "PENDING", "the task must not have run on the worker that was shut down"
    # Celery 5.7 + kombu on Redis: warm shutdown puts the held message back in the queue immediately
    assert "Restoring 1 unacknowledged message(s)" in a.log()
    assert r.hlen(UNACKED) == 0 and r.llen(CONTROL_QUEUE) == 1
    restored = json.loads(r.lindex(CONTROL_QUEUE, 0))
    assert restored["headers"]["id"] == res.id and restored["headers"]["eta"] == held["headers"]["eta"]
    assert restored["headers"]["redelivered"] is True

    b = chaos.worker(PRODUCT_APP, "warm-b", env)
    b.wait_ready()
    assert res.get(timeout=20) == {"pong": True, "worker": b.name}
    assert res.date_done >= eta, "run at its ETA, not earlier"
    wait_for(lambda: r.llen(CONTROL_QUEUE) == 0 and r.hlen(UNACKED) == 0, 10, "queue and unacked empty")
    report("2 warm shutdown holding a countdown task", shutdown=t_shutdown,
           restored="at warm shutdown (kombu restore_unacked), not after visibility_timeout",
           ran_on=b.name, total=time.monotonic() - t0)


def test_sigkill_of_a_worker_holding_a_countdown_task_strands_it_until_visibility_timeout(chaos) -> None:
    """The contrast to warm shutdown (DESIGN: after kill -9, lost chains return only after the timeout)."""
    t0 = time.monotonic()
    rs = chaos.redis()
    r = rs.client()
    env = chaos.env(rs.url, **SMALL_VT_ENV)
    a = chaos.worker(CHAOS_APP, "k9-a", env)
    a.wait_ready()
    client = chaos.client(rs.url, env)
    gate = chaos.dir / "gate-k9"
    gate.touch()  # the task completes as soon as it runs
    res = client.send_task(SLOW_TASK, kwargs={"run_id": "k9", "gate_path": str(gate)}, countdown=1)
    wait_for(lambda: r.zcard(UNACKED_INDEX) == 1 and r.llen(CONTROL_QUEUE) == 0 and res.id in a.log(),
             10, "the countdown task held (unacked) by worker A")
    fetched_at = r.zrange(UNACKED_INDEX, 0, 0, withscores=True)[0][1]

    a.kill_group()  # parent and pool child: no warm shutdown, no reject, nothing restores
    a.proc.wait(10)
    assert r.hlen(UNACKED) == 1 and r.llen(CONTROL_QUEUE) == 0, "parked in unacked, not requeued"
    b = chaos.worker(CHAOS_APP, "k9-b", env)  # an idle worker, up before the timeout expires
    b.wait_ready()

    # observe until the visibility timeout (plus a margin) has passed: it must not run before it
    expires = fetched_at + SMALL_VT_S
    while time.time() < expires + 1.0:
        assert count(r, "k9", "started") == 0 or runs(r, "k9")[0]["at"] >= expires
        time.sleep(0.05)
    restored_by = f"{b.name} at start-up" if count(r, "k9", "started") else None
    if restored_by is None and (r.hlen(UNACKED) != 1 or r.llen(CONTROL_QUEUE) != 0):
        # B's start-up sweep ran late (a loaded machine: after its ready line and after the expiry) and
        # restored it just now: still after the timeout, which the asserts below check
        restored_by = f"{b.name} at start-up (late)"
    if restored_by is None:
        # a worker already running sweeps only every unacked_restore_interval × throttle (≈100 s): a
        # worker starting now runs kombu's start-up sweep, which restores the expired message
        c = chaos.worker(CHAOS_APP, "k9-c", env)
        c.wait_ready()
        restored_by = f"{c.name} at start-up"
    result = res.get(timeout=15)
    wait_for(lambda: r.llen(CONTROL_QUEUE) == 0 and r.hlen(UNACKED) == 0, 10, "queue and unacked empty")
    assert result["redelivered"] is True and result["at"] >= expires, "not before the visibility timeout"
    assert count(r, "k9", "started") == 1 and count(r, "k9", "done") == 1, "exactly once"
    report("2b SIGKILL of a worker holding a countdown task", visibility_timeout=float(SMALL_VT_S),
           ran_after_fetch=result["at"] - fetched_at, restored_by=restored_by, total=time.monotonic() - t0)
