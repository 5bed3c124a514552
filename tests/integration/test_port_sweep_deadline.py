"""Issue 7 (c): a pool sweep has its own probe deadline, writes each verdict as it arrives, and leaves what it
could not finish for the next sweep, oldest-checked first, under the sweep lease."""

from __future__ import annotations

import time

from vastkeep.core.clock import SystemClock
from vastkeep.ports import flow as port_flow
from vastkeep.ports.probe import ProbeConfig
from vastkeep.ports.validator import PortValidator
from vastkeep.state.keys import Keys
from vastkeep.state.leases import LeaseManager
from vastkeep.state.protocols import NULL_EVENTS
from vastkeep.state.store import InstanceRecord


def test_sweep_stops_at_its_probe_deadline_and_keeps_the_verdicts_it_had(store, port_servers) -> None:
    fast = [port_servers.open("ok") for _ in range(2)]
    hung = [port_servers.open("hang") for _ in range(2)]
    for i, lst in enumerate(fast + hung):
        store.put_instance(InstanceRecord(instance_id=str(800 + i), status="loading", public_ip=lst.ip,
                                          ports={"8188/tcp": lst.port}))
    validator = PortValidator(ProbeConfig(tcp_timeout_s=2.0, http_timeout_s=60.0, allow_loopback=True),
                              concurrency=20)
    leases = LeaseManager(store.redis, Keys(), SystemClock())
    progress = port_flow.SweepProgress()
    started = time.monotonic()
    result = port_flow.validate_pool(store, NULL_EVENTS, validator, leases=leases, probe_deadline_s=1.5,
                                     progress=progress)
    took = time.monotonic() - started
    assert took < 10, took  # the deadline, not the 60 s HTTP timeout
    assert result["interrupted"] is True and result["reason"] == "probe deadline", result
    assert result["checked"] == result["passed"] == 2 and result["unfinished"] == 2, result
    assert result["unfinished_ids"] == ["802", "803"]
    assert progress.checked == 2
    assert store.get_instance("800").status == "ready" and store.get_instance("802").port_validation is None
    assert store.redis.exists(Keys().lease("ports-sweep")) == 0

    # the next sweep starts with the instances never checked (oldest verdict first)
    order: list[str] = []
    real = validator.validate_many

    def spy(targets, known_good=None, **kw):
        order.extend(targets)
        return real({}, known_good, **kw)

    validator.validate_many = spy  # type: ignore[method-assign]
    port_flow.validate_pool(store, NULL_EVENTS, validator, leases=leases, probe_deadline_s=1.5)
    assert order[:2] == ["802", "803"], order
