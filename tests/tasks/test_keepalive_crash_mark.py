"""Issue 20: a shard run that ends in an error marks its heartbeat ``crashed``, so the sweep backs off (a
crash where it ran) instead of taking it for a holder gone elsewhere (restarted at once); a Redis blip does
not."""

from __future__ import annotations

import pytest
from celery.exceptions import Retry

from vastkeep.state import read_heartbeats


def test_a_run_that_raises_marks_its_heartbeat_crashed(vk_celery_app, monkeypatch) -> None:
    import tasks.keepalive as tk
    from worker import wiring

    def boom(**kwargs: object) -> dict[str, object]:
        raise RuntimeError("the runner broke")

    monkeypatch.setattr(tk, "run_shard_once", boom)
    with pytest.raises(RuntimeError):
        tk.run_shard.run(0)
    res = wiring.resources()
    beat = read_heartbeats(res.redis, res.keys, res.clock, ["keepalive-shard-0"])["keepalive-shard-0"]
    assert beat["crashed"] is True


def test_a_redis_retry_is_not_marked(vk_celery_app, monkeypatch) -> None:
    import tasks.keepalive as tk
    from worker import wiring

    def retry(task: object, fn: object, what: str) -> dict[str, object]:
        raise Retry("redis blip")

    monkeypatch.setattr(tk, "retry_on_redis", retry)
    with pytest.raises(Retry):
        tk.run_shard.run(1)
    res = wiring.resources()
    assert "keepalive-shard-1" not in read_heartbeats(res.redis, res.keys, res.clock, ["keepalive-shard-1"])
