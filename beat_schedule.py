"""The static Celery beat schedule: task name → interval (and, for some, send options). Nothing else here.

An interval is either a number of seconds or the name of a ``Settings`` field measured in seconds
(e.g. ``"token_periodic_check_s"`` for TOKEN_PERIODIC_CHECK_MS), resolved by :func:`build_schedule`
when ``worker.config`` builds the Celery configuration, so an operator's setting is honoured.
"""

from __future__ import annotations

from typing import Any

HEARTBEAT_INTERVAL_S = 30.0

#: The beat scheduler: celery-redbeat keeps this schedule in Redis and holds a lock there, so a beat
#: started on every host (``vastkeep.target``) sends each entry once: one beat sends, the others wait
#: for the lock and take over when its holder stops or dies (worker.config sets the lock's timing).
SCHEDULER = "worker.beat:BeatScheduler"  # celery-redbeat's, waiting out a lost Redis (worker/beat.py)

#: entry name → (task name, interval in seconds or the name of a Settings field in seconds)
ENTRIES: dict[str, tuple[str, float | str]] = {
    "vastkeep.system.heartbeat": ("vastkeep.system.heartbeat", HEARTBEAT_INTERVAL_S),
    "vastkeep.tokens.validate_all": ("vastkeep.tokens.validate_all", "token_periodic_check_s"),
    # Layer 6: one sweep starts and restarts (with the guide's backoff) every logical daemon: the keepalive
    # shards, the poll dispatcher, the SSH collectors. It replaced the ensure entries of Layers 1, 4 and 5
    # (vastkeep.keepalive.ensure_shards, vastkeep.ssh.ensure_collectors, vastkeep.polling.ensure), which
    # stay callable by name as operators' tools.
    "vastkeep.supervision.sweep": ("vastkeep.supervision.sweep", "supervision_sweep_interval_s"),
    # the warm pool: one reconcile round (rent / destroy / adopt) per interval, one worker at a time
    "vastkeep.pool.reconcile": ("vastkeep.pool.reconcile", "warm_pool_reconcile_interval_s"),
}

#: Entries whose message expires after one interval: one still queued when the next one is due is
#: dropped rather than run late, so a busy or restarting worker does not find a backlog of them.
EXPIRE_AFTER_INTERVAL = frozenset({"vastkeep.supervision.sweep", "vastkeep.pool.reconcile"})


def build_schedule(settings: Any) -> dict[str, dict[str, Any]]:
    """Celery's ``beat_schedule`` for ``settings`` (a ``vastkeep.core.settings.Settings``)."""
    schedule: dict[str, dict[str, Any]] = {}
    for name, (task, interval) in ENTRIES.items():
        seconds = float(getattr(settings, interval) if isinstance(interval, str) else interval)
        if seconds <= 0:
            raise ValueError(f"beat entry {name}: interval must be positive, got {seconds!r}")
        schedule[name] = {"task": task, "schedule": seconds}
        if name in EXPIRE_AFTER_INTERVAL:
            schedule[name]["options"] = {"expires": seconds}
    return schedule
