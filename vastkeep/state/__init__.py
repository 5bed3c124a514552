"""The only code that knows the Redis layout.

- ``keys``: every key, prefix and TTL (``Keys``).
- ``connection``: ``connect(url)`` with timeouts, health checks and jittered reconnects.
- ``leases``: fenced leases the redbeat way (Lua beside it).
- ``store``: instance records, pool settings, token results; fenced compare-and-set writes.
- ``events``: the durable event stream.
- ``heartbeats``: "this process / daemon is alive" with a TTL.
- ``ratelimit``: one shared pace per (endpoint, API key) for every worker on every host (Lua beside it).
- ``protocols``: the narrow interfaces (``Store``, ``EventSink``, ...) the layer flows are typed against.
"""

from vastkeep.state.connection import as_text, connect
from vastkeep.state.events import EVENT_KINDS, Event, EventLog
from vastkeep.state.heartbeats import clear_heartbeat, read_heartbeats, write_heartbeat
from vastkeep.state.keys import Keys
from vastkeep.state.lease_keeper import LeaseKeeper, Progress
from vastkeep.state.leases import Lease, LeaseManager, new_owner
from vastkeep.state.protocols import EventSink, LeaseStore, Store, TokenResultStore
from vastkeep.state.ratelimit import KeyPacer, SharedRateLimiter, key_fingerprint
from vastkeep.state.store import InstanceRecord, PoolSettings, StateStore

__all__ = [
    "EVENT_KINDS", "Event", "EventLog", "EventSink", "InstanceRecord", "KeyPacer", "Keys", "Lease",
    "LeaseKeeper", "LeaseManager", "LeaseStore", "PoolSettings", "Progress", "SharedRateLimiter",
    "StateStore", "Store",
    "TokenResultStore", "as_text", "clear_heartbeat", "connect", "key_fingerprint", "new_owner",
    "read_heartbeats", "write_heartbeat",
]
