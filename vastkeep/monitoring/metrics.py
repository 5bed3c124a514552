"""Prometheus figures for ``/metrics`` (text exposition format 0.0.4), read with a bounded number of calls.

``/metrics`` is unauthenticated and scraped every few seconds, so what it reads must not grow with the
data: PING, the live heartbeats (a sorted set by expiry + one HMGET), the status counts the store keeps
as it writes (one small hash + SCARD), the pool hash and XLEN. About ten Redis commands whether there are
ten instance records or a hundred thousand, and no SCAN of the keyspace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vastkeep.core.clock import Clock
from vastkeep.monitoring.health import Redis, check_redis
from vastkeep.state import Keys, read_heartbeats

if TYPE_CHECKING:
    from vastkeep.state import EventLog, StateStore


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def gauge(lines: list[str], name: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
    """Append one gauge (HELP, TYPE, samples) to ``lines``."""
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} gauge")
    for labels, value in samples:
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        lines.append(f"{name}{{{label_text}}} {value:g}" if label_text else f"{name} {value:g}")


def collect_metrics(redis: Redis, keys: Keys, clock: Clock, *, store: StateStore | None = None,
                    events: EventLog | None = None) -> str:
    """The whole exposition text; the store's figures and the stream length when they are given."""
    lines: list[str] = []
    ok = check_redis(redis).ok
    gauge(lines, "vastkeep_redis_up", "1 when Redis answers PING", [({}, 1.0 if ok else 0.0)])
    if not ok:
        return "\n".join(lines) + "\n"
    beats = read_heartbeats(redis, keys, clock)
    workers = [n for n, b in beats.items() if b.get("kind") == "worker"]
    gauge(lines, "vastkeep_workers_alive", "workers with a live heartbeat", [({}, float(len(workers)))])
    gauge(lines, "vastkeep_heartbeat_age_seconds", "age of each process heartbeat",
          [({"process": n}, float(b["age_s"])) for n, b in sorted(beats.items())])
    if store is not None:
        counts = store.instance_counts()
        gauge(lines, "vastkeep_instances", "instances known to the control plane, by status",
              [({"status": s}, float(c)) for s, c in sorted(counts.items())])
        pool = store.get_pool()
        gauge(lines, "vastkeep_pool_desired_size", "warm pool desired size", [({}, float(pool.desired_size))])
        gauge(lines, "vastkeep_safe_mode", "1 while spending is stopped",
              [({}, 1.0 if pool.safe_mode else 0.0)])
    if events is not None:
        gauge(lines, "vastkeep_events_stream_length", "entries in the event stream",
              [({}, float(events.length()))])
    return "\n".join(lines) + "\n"


__all__ = ["collect_metrics", "gauge"]
