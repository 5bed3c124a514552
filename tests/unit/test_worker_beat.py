"""``worker.beat.BeatScheduler``: a Redis error in a tick is a short wait, not beat's exit; a lock that lapsed
meanwhile is held again before beat sends anything (redbeat's own tick is replaced by a stub here; the real
Redis restart is in the soak's ``redis-restart`` and ``tests/integration/test_beat_single.py``)."""

from __future__ import annotations

import pytest
from redbeat.schedulers import RedBeatScheduler
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockNotOwnedError

from worker.beat import REDIS_RETRY_S, BeatScheduler


class _Lock:
    def __init__(self) -> None:
        self.acquired = 0

    def acquire(self) -> bool:
        self.acquired += 1
        return True


@pytest.mark.parametrize(("raised", "wait", "reacquired"), [
    (None, 5.0, 0),
    (RedisConnectionError("Connection closed by server."), REDIS_RETRY_S, 0),
    (LockNotOwnedError("Cannot extend a lock that's no longer owned"), 0.0, 1),
])
def test_a_tick_waits_out_redis_and_holds_a_lapsed_lock_again(monkeypatch, raised, wait, reacquired):
    def tick(self, *args, **kwargs):
        if raised is not None:
            raise raised
        return 5.0

    monkeypatch.setattr(RedBeatScheduler, "tick", tick)
    scheduler = BeatScheduler.__new__(BeatScheduler)
    scheduler.lock, scheduler.lock_key = _Lock(), "vastkeep:redbeat::lock"
    got = scheduler.tick()
    assert (REDIS_RETRY_S / 2 <= got <= REDIS_RETRY_S) if wait == REDIS_RETRY_S else got == wait
    assert scheduler.lock.acquired == reacquired


@pytest.mark.parametrize(("fails", "wait", "locked"), [(False, 0.0, True), (True, REDIS_RETRY_S, False)])
def test_a_tick_with_no_lock_takes_it_first(monkeypatch, fails, wait, locked):
    """``beat_init`` could not take the lock (Redis away at that moment): the tick takes it, and sends nothing
    before (redbeat's own tick, which would call ``None.extend``, is never reached)."""
    import worker.beat as beat

    def take(sender):
        if fails:
            raise RedisConnectionError("Connection closed by server.")
        sender.scheduler.lock = _Lock()

    monkeypatch.setattr(beat, "acquire_distributed_beat_lock", take)
    monkeypatch.setattr(RedBeatScheduler, "tick", lambda self, *a, **k: pytest.fail("ticked with no lock"))
    scheduler = BeatScheduler.__new__(BeatScheduler)
    scheduler.lock, scheduler.lock_key = None, "vastkeep:redbeat::lock"
    got = scheduler.tick()
    assert (REDIS_RETRY_S / 2 <= got <= REDIS_RETRY_S) if fails else got == wait
    assert (scheduler.lock is not None) is locked
