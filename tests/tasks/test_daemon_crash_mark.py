"""Issue 20: a supervised daemon's run (a keepalive shard, an SSH collector, the poll dispatcher) that ends in
an error marks its heartbeat ``crashed``, so the sweep backs off (a crash where it ran) instead of taking it
for a holder gone elsewhere (restarted at once); a Redis blip does not."""

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

    monkeypatch.setattr("tasks.base.retry_on_redis", retry)
    with pytest.raises(Retry):
        tk.run_shard.run(1)
    res = wiring.resources()
    assert "keepalive-shard-1" not in read_heartbeats(res.redis, res.keys, res.clock, ["keepalive-shard-1"])


def _boom(*args: object, **kwargs: object) -> dict[str, object]:
    raise RuntimeError("the run broke")


def test_a_collector_or_the_dispatcher_that_raises_marks_its_heartbeat_crashed(vk_celery_app, monkeypatch,
                                                                                tmp_path) -> None:
    from dataclasses import replace

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    import tasks.polling as tp
    import tasks.ssh as ts
    from worker import wiring

    key = tmp_path / "id_ed25519"
    key.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    res = wiring.resources()

    class WithKey:  # the worker's resources, with an SSH key configured (a collector runs only then)
        settings = replace(res.settings, ssh_key_path=key)

        def __getattr__(self, name: str) -> object:
            return getattr(res, name)

    monkeypatch.setattr(ts.wiring, "resources", WithKey)
    monkeypatch.setattr(ts.ssh_flow, "collect_once", _boom)
    with pytest.raises(RuntimeError):
        ts.collect.run("77")
    monkeypatch.setattr(tp, "poller", _boom)
    with pytest.raises(RuntimeError):
        tp.dispatch.run()
    names = ["ssh-collector:77", "poll-dispatcher"]
    beats = read_heartbeats(res.redis, res.keys, res.clock, names)
    assert [beats[n]["crashed"] for n in names] == [True, True]
