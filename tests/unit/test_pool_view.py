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
    assert doc["counts"] == {"total": 3, "leased": 1, "idle": 1, "comfyuiLost": 0, "checking": 0,
                             "byStatus": {"ready": 2, "loading": 1}}
    assert [i["contractId"] for i in doc["instances"]] == ["7", "8", "9"]


def test_empty_pool_in_safe_mode() -> None:
    doc = warm_pool_status(PoolSettings(1, True, "vastai token invalid"), [], NOW)
    assert doc["instance"] is None
    assert doc["isPrewarming"] is False
    assert doc["safeMode"] is True
    assert doc["safeModeReason"] == "vastai token invalid"


# ── slots and the two CLI views (vastkeep status vs vastkeep pool status) ───
def slotted(iid: str, status: str, slot: int, **kw) -> InstanceRecord:
    return InstanceRecord(instance_id=iid, status=status, label=f"vk:p:{slot}", created_at=NOW - 100, **kw)


@pytest.mark.parametrize(("name", "records", "pending", "desired", "want"), [
    ("empty pool: every slot free up to the size", [], [], 2, [(0, None, "free"), (1, None, "free")]),
    ("held and renting", [slotted("7", "ready", 0)], [(1, "unknown")], 2,
     [(0, "7", "ready"), (1, None, "renting")]),
    ("a dead one keeps its slot while its replacement takes the next",
     [slotted("7", "failed", 0), slotted("8", "starting", 1)], [], 1,
     [(0, "7", "failed"), (1, "8", "starting")]),
    ("destroyed records free their slot; other pools are not slots",
     [slotted("7", "destroyed", 0), InstanceRecord("9", status="ready", label="vk:other:0")], [], 1,
     [(0, None, "free")]),
    ("scaled to zero: nothing", [], [], 0, []),
])
def test_slot_views(name, records, pending, desired, want) -> None:
    from vastkeep.pool import PendingRent  # noqa: PLC0415
    from vastkeep.pool.ops import slot_views  # noqa: PLC0415

    rents = [PendingRent(slot=s, label=f"vk:p:{s}", started_at=NOW, state=st) for s, st in pending]
    got = slot_views(records, rents, desired, "vk", "p")
    assert [(v["slot"], v["instanceId"], v["status"]) for v in got] == want
    assert all(v["label"] == f"vk:p:{v['slot']}" for v in got)


def test_system_overview_is_one_pool_line_and_the_pool_document_has_slots_and_leases() -> None:
    from vastkeep.monitoring import pool_document_lines, pool_summary_line, token_lines  # noqa: PLC0415

    records = [rec("1", "ready", leased_until=NOW + 60, url="http://h:1"), rec("2", "loading")]
    figures = {"poolName": "default", "pendingRents": 1, "liveInstances": 2, "spendDph": 0.9,
               "maxSpendDph": 10.0, "safeModeCause": None, "lastRound": {"wait": ["1 rent(s) in flight"]},
               "slots": [{"slot": 0, "label": "vastkeep:default:0", "instanceId": "1", "status": "ready",
                          "rent": None},
                         {"slot": 2, "label": "vastkeep:default:2", "instanceId": None, "status": "renting",
                          "rent": "sending"}],
               "leases": [{"instanceId": "1", "client": "svc", "leasedUntil": "2026-01-01T00:01:00Z",
                           "fence": 4}]}
    doc = warm_pool_status(POOL, records, NOW, figures=figures)
    line = pool_summary_line(doc)
    assert "desired 2" in line and "ready 1" in line and "warming 1" in line and "renting 1" in line
    assert "leased 1" in line and "safe mode off" in line and "vastkeep pool status" in line
    text = "\n".join(pool_document_lines(doc))
    for part in ("pool default: desired 2", "prewarming yes", "safe mode: off", "instance: 1 ready http://h:1",
                 "slots (2):", "vastkeep:default:2", "renting (rent sending)", "leases (1):", "client svc",
                 "fence 4", "waiting: 1 rent(s) in flight", "instances:"):
        assert part in text, part
    safe = warm_pool_status(PoolSettings(desired_size=2, safe_mode=True, safe_mode_reason="budget"), records,
                            NOW, figures={**figures, "safeModeCause": "spend"})
    assert "SAFE MODE (spend)" in pool_summary_line(safe)
    assert "SAFE MODE (spend): budget" in "\n".join(pool_document_lines(safe))
    tokens = token_lines({"vastai": {"result": {"status": "valid", "testedAt": "2026-01-01T00:00:00+00:00"},
                                     "runtimeOverride": False},
                          "civitai": {"result": {"status": "invalid", "error": "401"},
                                      "runtimeOverride": True},
                          "huggingface": {"result": None, "runtimeOverride": False}})
    assert tokens == ["  token vastai       valid, checked 2026-01-01 00:00:00",
                      "  token civitai      invalid (401), runtime token",
                      "  token huggingface  no recent check"]


@pytest.mark.parametrize(("extra", "reason", "shown"), [
    ({}, None, "-"),
    ({"keepalive_lost_since": NOW - 30}, None, "ComfyUI down since"),
    ({"keepalive_lost_since": NOW - 30}, "host offline", "host offline"),  # the provider's reason first
    ({"keepalive_lost_since": "garbage"}, None, "-"),  # another layer's bad value is not shown as a time
])
def test_a_ready_instance_whose_comfyui_is_lost_says_so_in_the_table(extra, reason, shown) -> None:
    from vastkeep.monitoring import instance_rows  # noqa: PLC0415

    record = InstanceRecord(instance_id="9", status="ready", extra=extra, status_reason=reason,
                            created_at=NOW - 100, updated_at=NOW - 10)
    [_, row] = instance_rows({"instances": [record.to_status_dict()]})
    assert row.split()[1] == "ready" and shown in row


def test_an_instance_whose_comfyui_is_lost_is_never_counted_ready_or_idle() -> None:
    """As Layer 4 writes it: ``unhealthy`` with its reason, in the document, the counts and both CLI views."""
    from vastkeep.monitoring import instance_rows, pool_summary_line  # noqa: PLC0415

    lost = InstanceRecord(instance_id="9", status="unhealthy", status_reason="keepalive: connection lost",
                          extra={"keepalive_lost_since": NOW - 3}, label="vastkeep:default:0",
                          connection_url="http://203.0.113.9:8188", created_at=NOW - 100, updated_at=NOW - 3)
    fine = InstanceRecord(instance_id="10", status="ready", label="vastkeep:default:1", created_at=NOW - 100,
                          updated_at=NOW - 10)
    doc = warm_pool_status(PoolSettings(desired_size=2, safe_mode=False, safe_mode_reason=None), [lost, fine],
                           NOW)
    assert doc["counts"] == {"total": 2, "leased": 0, "idle": 1, "comfyuiLost": 1, "checking": 0,
                             "byStatus": {"ready": 1, "unhealthy": 1}}
    assert doc["instance"]["contractId"] == "10"  # the guide's single instance is a usable one
    [view] = [i for i in doc["instances"] if i["contractId"] == "9"]
    assert view["status"] == "unhealthy" and view["statusReason"] == "keepalive: connection lost"
    assert view["comfyuiLostSince"] is not None
    line = pool_summary_line(doc)
    assert "ready 1," in line and "ComfyUI lost 1" in line
    [_, row, _] = instance_rows(doc)
    assert row.split()[1] == "unhealthy" and "ComfyUI down since" in row


def test_an_instance_in_its_check_after_a_lease_is_not_idle_and_says_so() -> None:
    """The grant refuses an instance whose health check after a lease has not passed; the views agree."""
    recs = [InstanceRecord(instance_id=i, status="ready") for i in ("1", "2", "3")]
    doc = warm_pool_status(POOL, recs, now=1000.0,
                           figures={"afterLease": {"1": "checking", "2": "check-failed"}})
    assert doc["counts"]["idle"] == 1 and doc["counts"]["checking"] == 2
    assert doc["counts"]["byStatus"] == {"ready": 3}  # the record's status is the provider's and Layer 3's
    shown = {v["contractId"]: v["afterLease"] for v in doc["instances"]}
    assert shown == {"1": "checking", "2": "check-failed", "3": None}


@pytest.mark.parametrize(("entry", "status", "pv", "shown"), [
    ({"state": "active", "until": 2000.0}, "ready", None, None),                     # leased
    ({"state": "ended", "until": 900.0, "ended_iso": "2026-01-01T00:00:00Z"}, "ready", None, "checking"),
    ({"state": "ended", "until": 900.0, "ended_iso": "2026-01-01T00:00:00Z"}, "ready",
     {"success": True, "checked_at": "2026-01-01T00:00:01Z"}, None),                # passed: leasable
    ({"state": "ended", "until": 900.0, "ended_iso": "2026-01-01T00:00:00Z"}, "ready",
     {"success": False, "checked_at": "2026-01-01T00:00:01Z"}, "check-failed"),
    ({"state": "ended", "until": 900.0, "ended_iso": "x", "cleared": True}, "ready", None, None),
    ({"state": "ended", "until": 900.0, "ended_iso": "2026-01-01T00:00:00Z"}, "loading", None, None),
])
def test_after_lease_views(entry, status, pv, shown) -> None:
    import json

    from vastkeep.pool.aftercare import after_lease_views

    rec = InstanceRecord(instance_id="7", status=status, port_validation=pv)
    got = after_lease_views({"7": json.dumps(entry)}, {"7": rec}, now=1000.0)
    assert got.get("7") == shown


def test_the_lease_entries_not_the_records_mirror_say_what_is_leased() -> None:
    """The grant decides on the pool's lease entries; the record's ``leased_until`` only mirrors them, best
    effort (a mirror write lost to a Redis blip). The soak saw "all 10 ready instance(s) are leased" while the
    status, reading the mirror, showed one of them idle: the status reads the entries when it has them."""
    mirror_lost = rec("7", "ready")                        # leased per its entry, the mirror never written
    stale_mirror = rec("8", "ready", leased_until=NOW + 60)  # released per its entry, the mirror not cleared
    figures = {"leases": [{"instanceId": "7", "client": "svc", "leasedUntil": "2026-01-01T00:01:00.000Z",
                           "fence": 3}]}
    doc = warm_pool_status(POOL, [mirror_lost, stale_mirror], NOW, figures=figures)
    assert doc["counts"]["leased"] == 1 and doc["counts"]["idle"] == 1
    shown = {v["contractId"]: (v["isLeased"], v["leasedUntil"]) for v in doc["instances"]}
    assert shown == {"7": (True, "2026-01-01T00:01:00.000Z"), "8": (False, None)}
    # without the entries (a caller that has none) the mirror is all there is
    assert warm_pool_status(POOL, [stale_mirror], NOW)["counts"]["leased"] == 1
