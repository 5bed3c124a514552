"""Heartbeats in Redis: how every long-running process and logical daemon says it is alive.

A heartbeat is one JSON value per name (``process``: ``control@host``, or a daemon such as a keepalive
shard) with a TTL, so a process that dies without cleaning up simply stops being reported after the
TTL. ``vastkeep check``, ``/health``, ``/metrics`` and the supervision layer read them; workers,
beat and the daemons write them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from vastkeep.core.clock import Clock
from vastkeep.state.keys import HEARTBEAT_TTL_MS


def write_heartbeat(redis: Any, keys: Any, clock: Clock, process: str, *, ttl_ms: int | None = None,
                    **info: str | int | float | bool | None) -> dict[str, Any]:
    """Record that ``process`` (e.g. ``control@host``) is alive now; the key expires after ``ttl_ms``."""
    record = {"process": process, "pid": os.getpid(), "at": clock.now(), **info}
    redis.set(keys.heartbeat(process), json.dumps(record), px=int(ttl_ms or HEARTBEAT_TTL_MS))
    return record


def clear_heartbeat(redis: Any, keys: Any, process: str) -> None:
    """Remove a heartbeat on clean shutdown, so a stopped worker is not reported alive for a TTL."""
    redis.delete(keys.heartbeat(process))


def read_heartbeats(redis: Any, keys: Any, clock: Clock, names: Sequence[str] | None = None,
                    *, max_age_s: float | None = None) -> dict[str, dict[str, Any]]:
    """Heartbeats by process name (all of them, or just ``names``), each with its ``age_s``."""
    if names is None:
        found = sorted(redis.scan_iter(match=keys.heartbeat_pattern(), count=200))
    else:
        found = [keys.heartbeat(n) for n in names]
    out: dict[str, dict[str, Any]] = {}
    values = redis.mget(found) if found else []
    now = clock.now()
    for raw in values:
        if raw is None:
            continue
        try:
            record = json.loads(raw)
            age = max(0.0, now - float(record["at"]))
        except (ValueError, KeyError, TypeError):
            continue
        if max_age_s is not None and age > max_age_s:
            continue
        record["age_s"] = round(age, 3)
        out[str(record.get("process"))] = record
    return out
