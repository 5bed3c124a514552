"""Heartbeats in Redis: how every long-running process and logical daemon says it is alive.

A heartbeat is one JSON value per name (``process``: ``control@host``, or a daemon such as a keepalive
shard) in one hash, with its expiry time in a sorted set beside it, so a process that dies without
cleaning up simply stops being reported once it expires. Reading costs a fixed number of Redis calls
whatever the size of the keyspace (no SCAN): ``/health`` and ``/metrics`` are unauthenticated and polled,
so their cost must not grow with the data. ``vastkeep check``, ``/health``, ``/metrics`` and the supervision
layer read them; workers, beat and the daemons write them (a write also prunes expired names).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict, cast

from vastkeep.core.clock import Clock
from vastkeep.state.connection import RedisClient, as_text
from vastkeep.state.keys import HEARTBEAT_TTL_MS, Keys

_WRITE_LUA = (Path(__file__).with_name("heartbeats_write.lua")).read_text()


class Heartbeat(TypedDict, total=False):
    """One heartbeat as stored (``process``, ``pid``, ``at`` always; the rest as the writer gave them),
    with ``age_s`` added when read."""

    process: str
    pid: int
    at: float
    age_s: float
    kind: str
    queues: str
    worker: str
    handover: bool
    instance_id: str
    state: str
    fence: int
    route: str


def write_heartbeat(redis: RedisClient, keys: Keys, clock: Clock, process: str, *, ttl_ms: int | None = None,
                    **info: str | int | float | bool | None) -> Heartbeat:
    """Record that ``process`` (e.g. ``control@host``) is alive now; it counts as gone after ``ttl_ms``."""
    now = clock.now()
    record = cast(Heartbeat, {"process": process, "pid": os.getpid(), "at": now, **info})
    expires_at = now + int(ttl_ms or HEARTBEAT_TTL_MS) / 1000
    script = redis.register_script(_WRITE_LUA)  # EVALSHA; the script body is sent once per server
    script(keys=[keys.heartbeats(), keys.heartbeat_expiry()],
           args=[process, json.dumps(record), repr(expires_at), repr(now)])
    return record


def clear_heartbeat(redis: RedisClient, keys: Keys, process: str) -> None:
    """Remove a heartbeat on clean shutdown, so a stopped worker is not reported alive for a TTL."""
    with redis.pipeline(transaction=True) as pipe:
        pipe.hdel(keys.heartbeats(), process)
        pipe.zrem(keys.heartbeat_expiry(), process)
        pipe.execute()


def read_heartbeats(redis: RedisClient, keys: Keys, clock: Clock, names: Sequence[str] | None = None,
                    *, max_age_s: float | None = None) -> dict[str, Heartbeat]:
    """Live heartbeats by process name (all of them, or just ``names``), each with its ``age_s``.

    Two Redis calls at most (the live names by expiry, then one HMGET), whatever the keyspace holds.
    """
    now = clock.now()
    if names is None:
        found = [as_text(n) for n in redis.zrangebyscore(keys.heartbeat_expiry(), now, "+inf")]
        values = redis.hmget(keys.heartbeats(), found) if found else []
        expiries: list[float | None] = [float("inf")] * len(values)  # live by the query itself
    else:
        found = list(names)
        if not found:
            return {}
        with redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.heartbeats(), found)
            pipe.zmscore(keys.heartbeat_expiry(), found)  # type: ignore[no-untyped-call]  # unannotated in types-redis
            values, expiries = pipe.execute()
    out: dict[str, Heartbeat] = {}
    for raw, expires_at in zip(values, expiries, strict=True):
        if raw is None or expires_at is None or float(expires_at) < now:
            continue
        try:
            record: Heartbeat = json.loads(raw)
            age = max(0.0, now - float(record["at"]))
        except (ValueError, KeyError, TypeError):
            continue
        if max_age_s is not None and age > max_age_s:
            continue
        record["age_s"] = round(age, 3)
        out[str(record.get("process"))] = record
    return out
