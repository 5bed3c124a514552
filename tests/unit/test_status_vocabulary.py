"""The status enum serialises exactly as the strings it replaced, so stored records, events and API answers
read the same; the derived sets say what the layers decide on."""

import json

import pytest

from vastkeep.state import (
    DEAD_STATUSES,
    ENDING_STATUSES,
    INSTANCE_STATUSES,
    LIVE_STATUSES,
    PROVISIONING_STATUSES,
    SICK_STATUSES,
    InstanceRecord,
    InstanceStatus,
)

WIRE = ["starting", "loading", "ready", "unhealthy", "failed", "gone", "destroying", "destroyed"]


def test_the_values_are_the_strings_on_the_wire() -> None:
    assert [s.value for s in INSTANCE_STATUSES] == WIRE
    assert json.dumps({"status": InstanceStatus.READY}) == '{"status": "ready"}'
    assert f"{InstanceStatus.LOADING}" == "loading" and InstanceStatus("gone") is InstanceStatus.GONE
    assert {"ready": 1}[InstanceStatus.READY] == 1  # hashes like its string


@pytest.mark.parametrize(("members", "expected"), [
    (PROVISIONING_STATUSES, {"starting", "loading"}),
    (LIVE_STATUSES, {"starting", "loading", "ready", "unhealthy"}),
    (DEAD_STATUSES, {"failed", "gone"}),
    (ENDING_STATUSES, {"failed", "gone", "destroying", "destroyed"}),
    (SICK_STATUSES, {"ready", "unhealthy"}),
])
def test_derived_sets(members: frozenset[InstanceStatus], expected: set[str]) -> None:
    assert members == expected
    assert all(isinstance(m, InstanceStatus) for m in members)


def test_an_unknown_status_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="expected one of starting, loading, ready"):
        InstanceRecord(instance_id="1", status="warming")


def test_the_null_event_sink_is_an_event_sink_that_keeps_nothing() -> None:
    from vastkeep.state import NULL_EVENTS, EventSink

    assert isinstance(NULL_EVENTS, EventSink) and NULL_EVENTS.emit("pool-lease-granted", fence=1) == ""
