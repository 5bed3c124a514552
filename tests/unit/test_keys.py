"""Keys: SCAN patterns come from keys.py and match exactly the keys they stand for."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest

from vastkeep.state.keys import Keys


@pytest.mark.parametrize("prefix", ["vastkeep", "tenant-a"])
def test_heartbeats_live_in_two_keys_under_the_prefix(prefix: str) -> None:
    keys = Keys(prefix)
    assert keys.heartbeats() == f"{prefix}:heartbeats"
    assert keys.heartbeat_expiry() == f"{prefix}:heartbeats:expiry"
    assert keys.instance_status_counts() == f"{prefix}:instances:by-status"
    owned = (keys.heartbeats(), keys.heartbeat_expiry(), keys.instance_status_counts(), keys.beat_prefix())
    for key in owned:
        assert fnmatchcase(key, keys.all_patterns()[0])
        assert not fnmatchcase(key, Keys("other").all_patterns()[0])
