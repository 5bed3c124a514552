"""Liveness by progress (DESIGN principle 12): a lease kept by a helper thread stops being renewed, and is
given back, once the loop it guards stops beating; a loop that beats keeps it. Real redis-server."""

from __future__ import annotations

import time

import pytest

from vastkeep.core.clock import FakeClock, SystemClock
from vastkeep.state import Keys, LeaseKeeper, LeaseManager, Progress, new_owner


@pytest.mark.parametrize(("grace_s", "within_s", "advance_s", "overdue"), [
    (5.0, 0.0, 4.9, False),   # inside the grace
    (5.0, 0.0, 5.1, True),    # past it
    (5.0, 30.0, 34.0, False),  # a long step announced its own deadline
    (5.0, 30.0, 35.5, True),
    (0.0, 1.0, 1.5, True),
])
def test_progress_is_overdue_only_past_the_steps_deadline_plus_the_grace(grace_s, within_s, advance_s,
                                                                        overdue) -> None:
    clock = FakeClock()
    p = Progress(clock, grace_s)
    p.beat(within_s)
    clock.sleep(advance_s)
    assert (p.overdue_s() > 0) is overdue


def test_a_stalled_loop_loses_its_lease_at_once_and_a_beating_one_keeps_it(redis_client) -> None:
    leases = LeaseManager(redis_client, Keys(), SystemClock())
    stalled: list[float] = []
    lease = leases.acquire("stall-demo", new_owner("t"), 1500)
    beating = leases.acquire("beat-demo", new_owner("t"), 1500)
    quiet, busy = Progress(SystemClock(), 1.0), Progress(SystemClock(), 1.0)
    with LeaseKeeper(leases, lease, SystemClock(), progress=quiet, on_stall=stalled.append) as k1, \
            LeaseKeeper(leases, beating, SystemClock(), progress=busy) as k2:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4.0:  # 2.7 TTLs: only renewals keep a lease this long
            busy.beat(0.2)
            time.sleep(0.1)
        assert k1.stalled.is_set() and k1.lost.is_set() and len(stalled) == 1
        assert leases.current("stall-demo") is None  # released, not left to expire
        assert not k2.stalled.is_set() and not k2.lost.is_set()
        assert leases.current("beat-demo") is not None
