"""Layer 4 — ComfyUI keepalive for a pool, with a fast crash path.

- ``decide``: pure; what a ping or a closed connection means (the guide's counters and alert rules,
  suspect mode, the handover rule, shard assignment, the guide's status shapes).
- ``probe``: the ping itself (``GET /system_stats`` within a deadline, failures named as the guide does).
- ``runner``: one shard of the ready instances pinged by one long-lived asyncio loop under a fenced
  lease, holding ComfyUI's ``/ws`` per instance so a crash is seen at once; ``shard_lease`` (its grant) and
  ``shard_writes`` (its batched writes) beside it.

Logger: ``vastkeep.keepalive``. The guide's line ``❌ ComfyUI connection LOST after N failures: ...``.
"""

from vastkeep.keepalive.decide import (
    CONNECTION_CLOSED,
    PING_FAILURES,
    KeepalivePolicy,
    KeepaliveState,
    after_close,
    after_ping,
    pool_view,
    shard_of,
    status_view,
)
from vastkeep.keepalive.probe import ping, ping_stats
from vastkeep.keepalive.runner import (
    RunnerConfig,
    ShardRunner,
    daemon_name,
    is_watched,
    lease_name,
    read_states,
    run_shard,
)

__all__ = [
    "CONNECTION_CLOSED", "PING_FAILURES", "KeepalivePolicy", "KeepaliveState", "RunnerConfig", "ShardRunner",
    "after_close", "after_ping", "daemon_name", "is_watched", "lease_name", "ping", "ping_stats", "pool_view",
    "read_states", "run_shard", "shard_of", "status_view",
]
