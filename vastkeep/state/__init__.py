"""The only code that knows the Redis layout.

- ``keys``: every key, prefix and TTL (``Keys``).
- ``connection``: ``connect(url)`` with timeouts, health checks and jittered reconnects.
- ``leases``: fenced leases the redbeat way (Lua beside it).
- ``records``: ``InstanceRecord``, what vastkeep knows about one instance, and its tolerant read
  (``legacy``: field names stored before the provider seam).
- ``store``: instance records in Redis (fenced compare-and-set writes), pool settings, token results.
- ``events``: the durable event stream.
- ``heartbeats``: "this process / daemon is alive" with a TTL.
- ``ratelimit``: one shared pace per (endpoint, API key) for every worker on every host (Lua beside it).
- ``status``: the one status vocabulary (``InstanceStatus``) and the sets derived from it.
- ``protocols``: the narrow interfaces (``Store``, ``EventSink``, ...) the layer flows are typed against.
"""

from vastkeep.state.connection import RedisClient, as_text, connect
from vastkeep.state.events import EVENT_KINDS, Event, EventLog
from vastkeep.state.flowmarks import KeepaliveDocs, PollMarks, RecordCache
from vastkeep.state.heartbeats import Heartbeat, clear_heartbeat, read_heartbeats, write_heartbeat
from vastkeep.state.keys import Keys
from vastkeep.state.lease_keeper import LeaseKeeper, Progress
from vastkeep.state.leases import Lease, LeaseInfo, LeaseManager, new_owner, thread_owner
from vastkeep.state.protocols import (
    NULL_EVENTS,
    EventSink,
    EventStream,
    LeaseStore,
    NullEvents,
    Store,
    TokenResultStore,
)
from vastkeep.state.ratelimit import KeyPacer, SharedRateLimiter, key_fingerprint
from vastkeep.state.status import (
    DEAD_STATUSES,
    ENDING_STATUSES,
    INSTANCE_STATUSES,
    LIVE_STATUSES,
    PROVISIONING_STATUSES,
    SICK_STATUSES,
    InstanceStatus,
)
from vastkeep.state.store import (
    COMFYUI_LOST_REASON,
    COMFYUI_LOST_STATUS,
    InstanceRecord,
    PoolSettings,
    StateStore,
    comfyui_lost_since,
)

__all__ = [
    "KeepaliveDocs", "PollMarks", "RecordCache",
    "DEAD_STATUSES", "ENDING_STATUSES", "INSTANCE_STATUSES", "LIVE_STATUSES", "PROVISIONING_STATUSES",
    "SICK_STATUSES", "InstanceStatus", "NULL_EVENTS", "NullEvents", "EventStream", "Heartbeat", "LeaseInfo",
    "RedisClient",
    "COMFYUI_LOST_REASON", "COMFYUI_LOST_STATUS", "EVENT_KINDS", "Event", "EventLog", "EventSink",
    "InstanceRecord", "KeyPacer", "Keys", "Lease", "LeaseKeeper", "LeaseManager", "LeaseStore",
    "PoolSettings", "Progress", "SharedRateLimiter", "StateStore", "Store", "TokenResultStore", "as_text",
    "clear_heartbeat", "comfyui_lost_since", "connect", "key_fingerprint", "new_owner", "read_heartbeats",
    "thread_owner", "write_heartbeat",
]
