"""ports.flow.record_validation against a real redis-server: the verdict is decided inside the CAS."""

from __future__ import annotations

import pytest

from tests.fixtures.state import State
from vastkeep.ports.flow import record_validation
from vastkeep.ports.validator import PortValidation
from vastkeep.state.events import EventLog
from vastkeep.state.keys import Keys
from vastkeep.state.leases import LeaseManager
from vastkeep.state.store import InstanceRecord, StateStore

PASSED = PortValidation(True, port=8188, kind="direct", connection_url="http://203.0.113.7:8188")


@pytest.fixture
def store(redis_client, clock) -> StateStore:
    return State(redis_client, clock=clock).store


@pytest.fixture
def events(redis_client, clock) -> EventLog:
    return EventLog(redis_client, Keys(), clock)


def interleave(store: StateStore, redis_server, write) -> list[int]:
    """Run ``write(other_store)`` once, from another client, after ``store`` read and before its CAS."""
    other = State.on(redis_server.url).store
    real_cas = store._cas
    calls: list[int] = []

    def cas(*args, **kwargs):
        if not calls:
            write(other)
        calls.append(1)
        return real_cas(*args, **kwargs)

    store._cas = cas
    return calls


def test_destroying_between_read_and_write_is_not_promoted(store, events, clock, redis_server):
    store.put_instance(InstanceRecord(instance_id="501", status="loading", public_ip="203.0.113.7",
                                      ports={"8188/tcp": 8188}))
    destroyer: list[InstanceRecord] = []
    calls = interleave(store, redis_server,
                       lambda o: destroyer.append(o.update_instance("501", {"status": "destroying"})))
    rec = record_validation(store, events, "501", PASSED, clock)
    assert len(calls) == 1  # the first CAS lost to the destroyer; the re-read decided not to write at all
    assert rec.status == "destroying"
    stored = store.get_instance("501")
    assert stored.status == "destroying"
    assert stored.connection_url is None and stored.port_validation is None
    assert stored == destroyer[0]  # nothing written on top of the destroyer's write
    assert events.latest(10) == []


def test_vanished_between_read_and_write_is_not_resurrected(store, events, clock, redis_server):
    store.put_instance(InstanceRecord(instance_id="502", status="loading"))
    interleave(store, redis_server, lambda o: o.delete_instance("502"))
    assert record_validation(store, events, "502", PASSED, clock) is None
    assert store.get_instance("502") is None and store.list_instances() == []
    assert events.latest(10) == []


def test_loading_is_promoted_and_redelivery_writes_the_same(store, events, clock):
    store.put_instance(InstanceRecord(instance_id="503", status="loading"))
    rec = record_validation(store, events, "503", PASSED, clock)
    assert rec.status == "ready" and rec.connection_url == PASSED.connection_url
    assert rec.port_validation["success"] is True
    again = record_validation(store, events, "503", PASSED, clock)
    assert again.status == "ready"
    assert [e.kind for e in events.latest(10)] == ["port-validated"]  # no duplicate event


def test_failure_keeps_ready_instance_ready(store, events, clock):
    """A failed re-check records why, but does not demote (that is keepalive's call)."""
    store.put_instance(InstanceRecord(instance_id="504", status="ready", connection_url="http://x:1"))
    failed = PortValidation(False, error="Port validation failed: all candidates refused")
    rec = record_validation(store, events, "504", failed, clock)
    assert rec.status == "ready" and rec.port_validation["success"] is False
    assert [e.kind for e in events.latest(10)] == ["port-validation-failed"]


def test_modify_instance_unchanged_writes_nothing_but_leased_write_is_fenced(store, clock, redis_client):
    store.put_instance(InstanceRecord(instance_id="505", status="destroying"))
    raw = redis_client.get("vastkeep:instance:505")
    clock.advance(10)
    assert store.modify_instance("505", lambda r: r).status == "destroying"
    assert redis_client.get("vastkeep:instance:505") == raw  # no write, not even updated_at
    lease = LeaseManager(redis_client, Keys(), clock).acquire("instance:505", "owner-a", ttl_ms=30_000)
    store.modify_instance("505", lambda r: r, lease=lease)
    assert store.get_instance("505").fence == lease.fence  # with a lease the fenced write still happens
