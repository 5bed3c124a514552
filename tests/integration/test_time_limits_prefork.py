"""Issue 7 (c) on a prefork worker, where Celery enforces time limits (the embedded test worker does not).

A pool sweep over instances that answer at once and instances that hang (accept, never answer) reaches the
soft limit while the hung probes are still open: the task must return a partial result, keep the verdicts it
already had (written as they arrived), release the sweep lease, leave the worker alive and not be
redelivered. ``validate_instance`` on a hung instance returns ``interrupted`` instead of failing.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.fixtures.chaos import Chaos
from tests.fixtures.helpers import wait_for
from tests.fixtures.state import State
from vastkeep.state.keys import Keys
from vastkeep.state.store import InstanceRecord

pytestmark = pytest.mark.slow
SOFT_S = 4.0


def test_soft_limit_returns_partial_sweep_and_keeps_verdicts(chaos: Chaos, port_servers) -> None:
    server = chaos.redis()
    store = State.on(server.url).store
    fast = [port_servers.open("ok") for _ in range(3)]
    hung = [port_servers.open("hang") for _ in range(2)]
    for i, lst in enumerate(fast + hung):
        store.put_instance(InstanceRecord(instance_id=str(700 + i), status="loading", public_ip=lst.ip,
                                          ports={"8188/tcp": lst.port}))
    env = chaos.env(server.url, VASTKEEP_SIMULATED="1", PORT_HTTP_TIMEOUT_MS="60000",
                    VKTEST_SOFT_LIMIT_S=str(SOFT_S))
    worker = chaos.worker("tests.fixtures.limits_app", "limits", env, pool="prefork", concurrency=1)
    worker.wait_ready(60)
    client = chaos.client(server.url, env)

    started = time.monotonic()
    result = client.send_task("vastkeep.ports.validate_pool").get(timeout=60)
    took = time.monotonic() - started
    print(f"[limits] sweep stopped at the soft limit after {took:.1f}s: {result}")
    assert result["interrupted"] is True and "soft time limit" in result["reason"], result
    assert result["checked"] == result["passed"] == len(fast), result
    assert took < SOFT_S + 10  # returned at the soft limit, not killed at the hard one
    for i in range(len(fast)):  # written as they arrived, so kept although the sweep never finished
        rec = store.get_instance(str(700 + i))
        assert rec.status == "ready" and rec.port_validation["success"] is True
    for i in range(len(fast), len(fast) + len(hung)):
        rec = store.get_instance(str(700 + i))
        assert rec.status == "loading" and rec.port_validation is None
    assert store.redis.exists(Keys().lease("ports-sweep")) == 0  # the lease was released

    one = client.send_task("vastkeep.ports.validate_instance", args=["703"]).get(timeout=60)
    assert one["interrupted"] is True and one["ok"] is False, one

    time.sleep(2)  # nothing comes back: each message was acknowledged once (no redelivery loop)
    worker.assert_alive()
    received = re.findall(r"Task vastkeep\.ports\.validate_pool\[[^\]]+\] received", worker.log())
    assert len(received) == 1, worker.log()[-3000:]
    assert server.client().hlen("unacked") == 0
    wait_for(lambda: worker.alive(), 1, "worker alive")
