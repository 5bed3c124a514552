"""The Redis-backed state classes satisfy the Protocols the layers are typed against (mypy proves the
signatures in ``vastkeep.state.protocols``; this proves every method name is there at run time)."""

import redis

from vastkeep.state import (
    EventLog,
    EventSink,
    EventStream,
    InstanceRecord,
    InstanceStatus,
    LeaseManager,
    LeaseStore,
    StateStore,
    Store,
    TokenResultStore,
)


def _client() -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=1, socket_timeout=0.1)  # never asked anything


def test_state_store_is_a_store_and_a_token_result_store() -> None:
    store = StateStore(_client())
    assert isinstance(store, Store) and isinstance(store, TokenResultStore)


def test_event_log_is_a_readable_event_sink() -> None:
    events = EventLog(_client())
    assert isinstance(events, EventSink) and isinstance(events, EventStream)


def test_lease_manager_is_a_lease_store() -> None:
    assert isinstance(LeaseManager(_client()), LeaseStore)


def test_a_stored_status_string_loads_as_its_member_and_dumps_as_the_same_string() -> None:
    rec = InstanceRecord.from_dict({"instance_id": 7, "status": "ready"})
    assert rec.status is InstanceStatus.READY and rec.to_dict()["status"] == "ready"
    assert type(InstanceRecord(instance_id="8", status="loading").status) is InstanceStatus  # type: ignore[arg-type]
