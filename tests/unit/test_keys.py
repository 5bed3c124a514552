"""Keys: SCAN patterns come from keys.py and match exactly the keys they stand for."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest

from vastkeep.state.keys import Keys


@pytest.mark.parametrize("prefix", ["vastkeep", "tenant-a"])
def test_heartbeat_pattern_matches_heartbeats_only(prefix: str) -> None:
    keys = Keys(prefix)
    pattern = keys.heartbeat_pattern()
    assert pattern == f"{prefix}:heartbeat:*"
    for name in ("beat", "control@host-1", "ssh@h.example"):
        assert fnmatchcase(keys.heartbeat(name), pattern)
    for other in (keys.lease("x"), keys.instance("1"), keys.events(), Keys("other").heartbeat("beat")):
        assert not fnmatchcase(other, pattern)
