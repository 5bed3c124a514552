"""Layer 6 storage: the supervision book (one record per logical daemon) and the published process status.

The book is one Redis hash, daemon id → JSON :class:`~vastkeep.supervision.decide.DaemonRecord`, so the
admin API reads every daemon with one HGETALL. Only the sweeper that holds the ``supervisor`` lease writes
it, and each write is fenced (a Lua compare on the lease's owner and fence, ``book_write.lua``), so a
sweeper that paused past its lease can never overwrite a newer one's records.

``vastkeep up`` runs its local processes under its own watchdog (:mod:`vastkeep.stack.supervisor`), in a
process the admin API cannot ask; it publishes that watchdog's ``getStatus()`` here every few seconds
(:func:`publish_processes`) with a TTL, so a stopped stack's status disappears instead of lying.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Union

import redis as redis_py

from vastkeep.core.clock import Clock
from vastkeep.state import Keys, Lease, as_text
from vastkeep.state.keys import WATCHDOG_PROCESSES_TTL_MS
from vastkeep.supervision.decide import DaemonRecord

#: A client made with or without ``decode_responses``: the book reads both.
Redis = Union["redis_py.Redis[str]", "redis_py.Redis[bytes]"]

_WRITE_LUA = Path(__file__).with_name("book_write.lua").read_text(encoding="utf-8")
_REPLACE_LUA = Path(__file__).with_name("book_replace.lua").read_text(encoding="utf-8")


class SupervisionBook:
    """Read and (fenced) write the daemons' supervision records."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._write = redis.register_script(_WRITE_LUA)
        self._replace = redis.register_script(_REPLACE_LUA)

    def all(self) -> dict[str, DaemonRecord]:
        """Every record in the book (a corrupt one is skipped: the next sweep writes it afresh)."""
        out: dict[str, DaemonRecord] = {}
        for raw_id, raw in (self.redis.hgetall(self.keys.supervision_book()) or {}).items():
            try:
                rec = DaemonRecord.from_json(json.loads(as_text(raw)))
            except (ValueError, KeyError, TypeError):
                continue
            out[as_text(raw_id)] = rec
        return out

    def write(self, lease: Lease, put: Iterable[DaemonRecord], drop: Iterable[str] = ()) -> bool:
        """Put and drop records in one step while ``lease`` holds; False (nothing written) otherwise."""
        puts = list(put)
        args: list[str | int] = [lease.owner, lease.fence, len(puts)]
        for rec in puts:
            args += [rec.id, json.dumps(rec.to_json(), separators=(",", ":"))]
        args += list(drop)
        done = self._write(keys=[self.keys.supervision_book(), self.keys.lease(lease.name)], args=args)
        return int(done) >= 0

    def get(self, daemon_id: str) -> tuple[DaemonRecord | None, str | None]:
        """One record and its stored JSON text (for :meth:`replace`); (None, None) when absent or corrupt."""
        raw = self.redis.hget(self.keys.supervision_book(), daemon_id)
        if raw is None:
            return None, None
        try:
            return DaemonRecord.from_json(json.loads(as_text(raw))), as_text(raw)
        except (ValueError, KeyError, TypeError):
            return None, None

    def replace(self, old_text: str, new: DaemonRecord) -> bool:
        """Write ``new`` only while the stored record is still ``old_text`` (an operator's write)."""
        done = self._replace(keys=[self.keys.supervision_book()],
                             args=[new.id, old_text, json.dumps(new.to_json(), separators=(",", ":"))])
        return int(done) == 1

    def reset(self, daemon_id: str) -> bool:
        """Forget one daemon's record (an operator's reset of a ``failed`` one: the next sweep starts it)."""
        return bool(self.redis.hdel(self.keys.supervision_book(), daemon_id))


def publish_processes(redis: Redis, keys: Keys, clock: Clock, status: Mapping[str, object], *,
                      ttl_ms: int = WATCHDOG_PROCESSES_TTL_MS) -> None:
    """Publish a local watchdog's ``status()`` (the guide's getStatus shape) for other processes to read."""
    body = {"at": clock.now(), "processes": dict(status)}
    redis.set(keys.watchdog_processes(), json.dumps(body, separators=(",", ":")), px=int(ttl_ms))


def read_processes(redis: Redis, keys: Keys) -> dict[str, object]:
    """The published process status ({} when no ``vastkeep up`` watchdog published one recently)."""
    raw = redis.get(keys.watchdog_processes())
    if raw is None:
        return {}
    try:
        data = json.loads(as_text(raw))
        processes = data.get("processes") or {}
        return {str(k): v for k, v in processes.items()}
    except (ValueError, TypeError, AttributeError):
        return {}


__all__ = ["Redis", "SupervisionBook", "publish_processes", "read_processes"]
