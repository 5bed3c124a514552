"""The guide's warm-pool status document, table-driven over instance states."""

from __future__ import annotations

import pytest

from vastkeep.monitoring.pool_status import is_leased, primary_instance, warm_pool_status
from vastkeep.state.store import InstanceRecord, PoolSettings

NOW = 1_767_225_600.0
POOL = PoolSettings(desired_size=2, safe_mode=False, safe_mode_reason=None)


def rec(iid: str, status: str, *, leased_until: float | None = None,
        url: str | None = None) -> InstanceRecord:
    return InstanceRecord(instance_id=iid, status=status, leased_until=leased_until, connection_url=url,
                          created_at=NOW - 100, updated_at=NOW - 10)


@pytest.mark.parametrize(("records", "primary"), [
    ([], None),
    ([rec("1", "destroyed")], None),
    ([rec("1", "loading"), rec("2", "ready")], "2"),
    ([rec("1", "starting"), rec("2", "loading")], "2"),
    ([rec("1", "failed"), rec("2", "unhealthy")], "2"),
    ([rec("1", "ready"), rec("2", "ready")], "1"),
])
def test_primary_instance_prefers_ready_then_furthest_along(records, primary) -> None:
    chosen = primary_instance(records)
    assert (chosen.instance_id if chosen else None) == primary


@pytest.mark.parametrize(("leased_until", "leased"), [(None, False), (NOW - 1, False), (NOW, False),
                                                      (NOW + 1, True)])
def test_leased_only_while_leased_until_is_in_the_future(leased_until, leased) -> None:
    assert is_leased(rec("1", "ready", leased_until=leased_until), NOW) is leased


def test_status_has_the_guide_fields_and_counts() -> None:
    records = [rec("7", "ready", url="http://203.0.113.7:41234", leased_until=NOW + 60),
               rec("8", "ready", url="http://203.0.113.8:41234"), rec("9", "loading"), rec("10", "destroyed")]
    doc = warm_pool_status(POOL, records, NOW)
    assert doc["desiredSize"] == 2
    assert doc["safeMode"] is False
    assert doc["isPrewarming"] is True
    inst = doc["instance"]
    assert inst["contractId"] == "7"
    assert inst["status"] == "ready"
    assert inst["connectionUrl"] == "http://203.0.113.7:41234"
    assert inst["leasedUntil"].endswith("Z")
    assert inst["isLeased"] is True
    assert "fence" not in inst
    assert doc["counts"] == {"total": 3, "leased": 1, "idle": 1, "byStatus": {"ready": 2, "loading": 1}}
    assert [i["contractId"] for i in doc["instances"]] == ["7", "8", "9"]


def test_empty_pool_in_safe_mode() -> None:
    doc = warm_pool_status(PoolSettings(1, True, "vastai token invalid"), [], NOW)
    assert doc["instance"] is None
    assert doc["isPrewarming"] is False
    assert doc["safeMode"] is True
    assert doc["safeModeReason"] == "vastai token invalid"
