"""Issue 7 (f): beat may run on every host (``vastkeep.target``) and still fire each entry once per interval.

Two real ``celery beat`` processes (the product's app and scheduler, one extra 1 s entry) against a private
redis-server, no worker: the messages beat sends stay in the queue and are counted by task name. Then the
sending beat is stopped and the standby must take over, still at one send per interval.
"""

from __future__ import annotations

import json
import sys
import time

import pytest
import redis

from tests.fixtures.chaos import Chaos, Proc
from tests.fixtures.helpers import wait_for
from worker.config import CONTROL_QUEUE

pytestmark = pytest.mark.slow

INTERVAL_S = 1.0
WINDOW_S = 8.0
PROBE_TASK = "vastkeep.system.ping"  # tests/fixtures/beat_app.py (not imported here: it would alter this app)


def _sent(r: redis.Redis) -> int:
    """Messages for the probe task waiting in the control queue (every priority list kombu uses)."""
    count = 0
    for key in r.scan_iter(match=f"{CONTROL_QUEUE}*", count=1000):
        if r.type(key) not in (b"list", "list"):
            continue
        for raw in r.lrange(key, 0, -1):
            if json.loads(raw).get("headers", {}).get("task") == PROBE_TASK:
                count += 1
    return count


def _beat(chaos: Chaos, env: dict[str, str], label: str) -> Proc:
    argv = [sys.executable, "-m", "celery", "-A", "tests.fixtures.beat_app", "beat", "-l", "INFO",
            "-s", str(chaos.dir / f"{label}-schedule")]
    proc = Proc(argv, env, chaos.dir, chaos.dir / f"{label}.log")
    chaos.procs.append(proc)
    return proc


def _holder(beats: list[Proc]) -> list[Proc]:
    return [b for b in beats if b.alive() and "Acquired lock" in b.log()]


def _rate(r: redis.Redis, seconds: float) -> int:
    before = _sent(r)
    time.sleep(seconds)
    return _sent(r) - before


def test_two_beats_fire_each_entry_once_per_interval_and_fail_over(chaos: Chaos) -> None:
    server = chaos.redis()
    r = server.client()
    env = chaos.env(server.url, VKTEST_BEAT_INTERVAL_S=str(INTERVAL_S))
    beats = [_beat(chaos, env, "beat-a"), _beat(chaos, env, "beat-b")]
    wait_for(lambda: _sent(r) >= 2, 30, "the first probe sends")
    for b in beats:
        b.assert_alive()

    sent = _rate(r, WINDOW_S)
    expected = WINDOW_S / INTERVAL_S
    print(f"[beat] two beats, {WINDOW_S:.0f} s at {INTERVAL_S:.0f} s interval: {sent} sends "
          f"(one beat would send ~{expected:.0f}, two independent beats ~{2 * expected:.0f})")
    assert expected - 2 <= sent <= expected + 2, f"{sent} sends in {WINDOW_S} s: an entry fired twice"
    holders = _holder(beats)
    assert len(holders) == 1, [b.log()[-2000:] for b in beats]

    # the sending beat stops (host down, restart): the standby takes the lock and sends at the same rate
    holders[0].terminate()
    standby = next(b for b in beats if b is not holders[0])
    wait_for(lambda: "Acquired lock" in standby.log(), 20, "failover to the standby")
    wait_for(lambda: _rate(r, INTERVAL_S * 2) >= 1, 15, "sends from the standby")
    sent = _rate(r, WINDOW_S / 2)
    assert expected / 2 - 2 <= sent <= expected / 2 + 2, sent
    standby.assert_alive()


def test_a_beat_started_while_redis_is_down_takes_its_lock_once_redis_is_back(chaos: Chaos) -> None:
    """A beat started while Redis restarts (30-minute soak, seed 280816024: beat restarted by its supervisor
    8 s before a Redis restart, then exit code 1) waits for Redis, takes its lock and sends, by itself."""
    from tests.fixtures.helpers import free_port

    port = free_port()
    env = chaos.env(f"redis://127.0.0.1:{port}/0", VKTEST_BEAT_INTERVAL_S=str(INTERVAL_S))
    beat = _beat(chaos, env, "beat-early")
    wait_for(lambda: "Redis unavailable" in beat.log() or not beat.alive(), 30, "the beat's start")
    time.sleep(3.0)  # a few more ticks without Redis
    beat.assert_alive()
    server = chaos.redis(port=port)
    r = server.client()
    wait_for(lambda: "Acquired lock" in beat.log(), 30, "the lock taken once Redis is back")
    wait_for(lambda: _sent(r) >= 2, 30, "probe sends from the beat")
    beat.assert_alive()
    assert "AttributeError" not in beat.log()
