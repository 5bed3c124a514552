"""A worker that stopped consuming: the pure verdict, table-driven."""

from __future__ import annotations

import pytest

from vastkeep.supervision import ConsumptionWatch, watch_consumption

T = 60.0


@pytest.mark.parametrize(("samples", "stalled_at"), [
    # (now_s, backlog, received, free_slots) per sample; the index of the first stalled verdict or None.
    # The first sample only sets the baseline (nothing is known about what came before it).
    ([(0, 3, 5, 1), (10, 3, 5, 1), (69, 3, 5, 1), (70, 3, 5, 1)], 3),  # waited in vain for the timeout
    ([(0, 3, 5, 1), (10, 3, 5, 1), (30, 3, 6, 1), (40, 3, 6, 1), (99, 3, 6, 1)], None),  # a receipt resets
    ([(0, 3, 5, 1), (10, 3, 5, 1), (30, 3, 6, 1), (40, 3, 6, 1), (99, 3, 6, 1), (100, 3, 6, 1)], 5),
    ([(0, 0, 5, 1), (100, 0, 5, 1), (200, 0, 5, 1)], None),  # nothing waits: idle, not stalled
    ([(0, 3, 5, 0), (100, 3, 5, 0), (200, 3, 5, 0)], None),  # every slot busy: it cannot take more
    ([(0, 3, 5, 1), (10, 3, 5, 1), (50, 0, 5, 1), (70, 3, 5, 1), (129, 3, 5, 1), (130, 3, 5, 1)], 5),  # empty
    ([(0, 3, 5, 1), (10, 3, 5, 1), (50, 3, 5, 0), (70, 3, 5, 1), (130, 3, 5, 1)], 4),  # a full pool resets
])
def test_a_worker_is_stalled_only_after_waiting_in_vain_for_the_whole_timeout(samples, stalled_at) -> None:
    watch, first = ConsumptionWatch(), None
    for i, (now, waiting, received, free) in enumerate(samples):
        watch, stalled = watch_consumption(watch, now_s=now, backlog=waiting, received=received,
                                           free_slots=free, timeout_s=T)
        if stalled and first is None:
            first = i
    assert first == stalled_at


def test_a_zero_timeout_turns_the_watch_off() -> None:
    watch = ConsumptionWatch()
    for now in (0, 100, 10_000):
        watch, stalled = watch_consumption(watch, now_s=now, backlog=9, received=0, free_slots=4, timeout_s=0)
        assert not stalled
