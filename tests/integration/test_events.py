"""The event stream against a real redis-server: round trip, paging, trimming, secrets masked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vastkeep.core.errors import TokenInvalid
from vastkeep.core.settings import Secret
from vastkeep.state.connection import connect
from vastkeep.state.events import EVENT_KINDS, Event, EventLog, is_stream_id
from vastkeep.state.keys import Keys


@pytest.fixture
def events(redis_client, clock) -> EventLog:
    return EventLog(redis_client, Keys(), clock)


def test_round_trip_keeps_kind_time_and_typed_fields(events, clock, redis_server):
    eid = events.emit("port-validated", instance_id="12345", port=8188, method="direct",
                      connection_url="http://1.2.3.4:8188", firewall=False, ms=12.5, extra=None)
    reader = EventLog(connect(redis_server.url))  # another process's view
    [ev] = reader.read()
    assert ev == Event(id=eid, kind="port-validated", ts=clock.now(), fields={
        "instance_id": "12345", "port": 8188, "method": "direct", "connection_url": "http://1.2.3.4:8188",
        "firewall": False, "ms": 12.5, "extra": None})
    assert ev.to_dict()["time"] == "2026-01-01T00:00:00.000Z"
    json.dumps(ev.to_dict())


def test_read_pages_after_an_id_and_latest_is_chronological(events, clock):
    ids = []
    for i in range(7):
        clock.advance(1)
        ids.append(events.emit("instance-status", instance_id=str(i), old="loading", new="ready"))
    first = events.read(count=3)
    assert [e.id for e in first] == ids[:3]
    rest = events.read(after=first[-1].id, count=100)
    assert [e.id for e in rest] == ids[3:]
    assert events.read(after=ids[-1]) == []
    assert [e.fields["instance_id"] for e in events.latest(2)] == ["5", "6"]
    assert events.length() == 7


def test_stream_is_trimmed_near_maxlen(redis_client, clock):
    small = EventLog(redis_client, Keys(), clock, maxlen=10)
    for i in range(500):
        small.emit("ping-failure", instance_id="1", failures=i)
    assert 10 <= small.length() < 500  # MAXLEN ~ trims whole nodes, so "about" 10
    assert small.latest(1)[0].fields["failures"] == 499


def test_secrets_and_secret_named_fields_are_masked(events, redis_client):
    events.emit("token-updated", service="civitai", token=Secret("NEW_TOKEN_HERE"),
                nested={"api_key": "raw-key-123", "ok": 1}, password="hunter2", values=[Secret("in-a-list")],
                url="redis://:redis-pass@127.0.0.1:6379/0", err=TokenInvalid("bad token", service="civitai"),
                path=Path("/tmp/x"))
    raw = json.dumps(redis_client.xrange("vastkeep:events"))
    for leaked in ("NEW_TOKEN_HERE", "raw-key-123", "hunter2", "in-a-list", "redis-pass"):
        assert leaked not in raw
    [ev] = events.read()
    assert ev.fields["token"] == "***" and ev.fields["nested"] == {"api_key": "***", "ok": 1}
    assert ev.fields["values"] == ["***"] and ev.fields["url"] == "redis://:***@127.0.0.1:6379/0"
    assert ev.fields["err"] == "TokenInvalid: bad token" and ev.fields["path"] == "/tmp/x"


@pytest.mark.parametrize("kind", ["", "Token-Invalid", "has space", "x" * 80])
def test_malformed_kinds_are_refused(events, kind):
    with pytest.raises(ValueError):
        events.emit(kind)


def test_documented_kinds_are_well_formed(events):
    for kind in EVENT_KINDS:
        events.emit(kind)
    assert [e.kind for e in events.read(count=1000)] == list(EVENT_KINDS)


def test_read_refuses_ids_redis_would_refuse_and_handles_the_largest(events):
    events.emit("port-validated", instance_id="1")
    top = 2**64 - 1
    assert is_stream_id("0-0") and is_stream_id(f"{top}-{top}")
    for bad in (f"{top + 1}-0", f"0-{top + 1}", "1", "1-", "-1", "1-2-3", "$", "x; DROP", ""):
        assert not is_stream_id(bad)
        with pytest.raises(ValueError, match="not a stream id"):
            events.read(after=bad)
    assert events.read(after=f"{top}-{top}") == [] and events.read(after=f"{top}-0") == []
    assert len(events.read(after=f"0-{top}")) == 1
