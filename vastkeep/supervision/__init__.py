"""Layer 6 — supervision of the logical daemons: every keepalive shard, the poll dispatcher and each
instance's SSH log collector is restarted on the guide's schedule when its heartbeat goes stale.

- ``decide``: pure; one daemon's verdict per sweep (start, wait, crashed → backoff 10/20/40/60 s with
  jitter across daemons, restart, failed, crash-loop alert; reset after a 60 s stable run; a start grace
  so a queued start or a normal handover is never a crash). Table-tested.
- ``catalogue``: which daemons are wanted now and their names (heartbeat, lease, guide-style display name).
- ``book``: the records in Redis (fenced writes), and ``vastkeep up``'s published process status.
- ``consumption``: pure; a worker that stopped consuming (messages wait, a slot is free, nothing received
  for ``WORKER_STALL_TIMEOUT_MS``) counts as stalled; the worker's watchdog (``worker.consumption``) exits.
- ``flow``: ``sweep`` (one supervisor at a time, under the ``supervisor`` lease; starts through an injected
  callable; the guide's log lines and the ``process-*`` events), ``watchdog_status`` (the admin view) and
  ``reset_daemon`` (an operator's reset of a ``failed`` daemon: ``process-reset``).

The ``vastkeep up`` local-process watchdog itself is :mod:`vastkeep.stack.supervisor`; both use the one
restart schedule, :func:`vastkeep.core.backoff.restart_delay`.

Logger: ``vastkeep.supervision``. Lines: ``[Watchdog] Registered process: <name>``,
``Restarted <id> (attempt N, M crashes)``, ``[Watchdog] Process <name> FAILED after N restarts``.
"""

from vastkeep.supervision.book import Redis, SupervisionBook, publish_processes, read_processes
from vastkeep.supervision.catalogue import (
    KEEPALIVE_SHARD,
    POLL_DISPATCHER,
    SSH_COLLECTOR,
    DaemonSpec,
    keepalive_shard,
    poll_dispatcher,
    ssh_collector,
    wanted_daemons,
)
from vastkeep.supervision.consumption import ConsumptionWatch, watch_consumption
from vastkeep.supervision.decide import (
    Action,
    Announcement,
    DaemonRecord,
    DaemonStatus,
    Decision,
    Observed,
    SupervisionPolicy,
    decide,
    hash_jitter,
    jittered_delay,
    no_jitter,
    reset_record,
)
from vastkeep.supervision.flow import (
    ALREADY_RESET,
    NOT_FAILED,
    RESET,
    SUPERVISOR_LEASE,
    SWEEP_BUSY,
    UNKNOWN,
    DaemonView,
    ResetOutcome,
    ResetView,
    daemon_status,
    find_daemon,
    mark_crashed,
    mark_handover,
    reset_daemon,
    sweep,
    watchdog_status,
)

__all__ = [
    "Action", "Announcement", "DaemonStatus", "DaemonView", "Redis", "ResetOutcome", "ResetView",
    "ConsumptionWatch", "watch_consumption",
    "ALREADY_RESET", "NOT_FAILED", "RESET", "UNKNOWN", "find_daemon", "reset_daemon", "reset_record",
    "KEEPALIVE_SHARD", "POLL_DISPATCHER", "SSH_COLLECTOR", "SUPERVISOR_LEASE", "SWEEP_BUSY", "DaemonRecord",
    "DaemonSpec", "Decision", "Observed", "SupervisionBook", "SupervisionPolicy", "daemon_status", "decide",
    "hash_jitter", "jittered_delay", "keepalive_shard", "mark_crashed", "mark_handover", "no_jitter",
    "poll_dispatcher",
    "publish_processes", "read_processes", "ssh_collector", "sweep", "wanted_daemons", "watchdog_status",
]
