"""Shared state in Redis: instance records, pool settings, token results and runtime token overrides.

Every worker on every host sees the same state. Writes to an instance record are compare-and-set
in Lua (``store_cas.lua``): the writer's view must still be current, and a write made under a
lease is refused with ``StaleFence`` unless that exact grant still holds the lease and, when the
record was last fenced by the *same* lease name, its fence is at least the one stored. Each lease
name has its own counter, so fences of different names are never compared. A worker that paused
past its lease therefore cannot overwrite what its successor wrote (Kleppmann's fencing token).

A record Redis holds but this code cannot read (hand-edited, or written by an incompatible version)
is skipped with a log line by :meth:`StateStore.list_instances` and refused with a clear
``PermanentError`` by the single-record calls, so one bad record never breaks a status view.

Runtime token overrides live in Redis (that is how ``update-token`` reaches every worker without a
restart): protect Redis like the ``.env`` file itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.errors import NotFound, PermanentError, StaleFence, WriteConflict
from vastkeep.core.settings import Secret
from vastkeep.state.connection import RedisClient, as_text
from vastkeep.state.keys import Keys
from vastkeep.state.leases import Lease
from vastkeep.state.legacy import upgrade_record_fields
from vastkeep.state.records import (
    COMFYUI_LOST_REASON,
    COMFYUI_LOST_STATUS,
    FIELD_NAMES,
    InstanceRecord,
    _decode,
    comfyui_lost_since,
)
from vastkeep.state.status import INSTANCE_STATUSES, PROVISIONING_STATUSES, InstanceStatus

log = logging.getLogger("vastkeep.state")

CAS_ATTEMPTS = 50
_UNCHANGED = object()  # what a builder returns to write nothing
_CAS_LUA = (Path(__file__).parent / "store_cas.lua").read_text(encoding="utf-8")
_RECOUNT_LUA = (Path(__file__).parent / "store_recount.lua").read_text(encoding="utf-8")
#: the label an unreadable record is counted under in :meth:`StateStore.instance_counts`
UNREADABLE_STATUS = "?"



def _status_since(old: InstanceRecord | None, new: InstanceRecord, now: float) -> float | None:
    """When ``new`` entered its status: now on a status change or a new record, else as stored before
    (a writer that set ``status_since`` itself is believed; a record stored without one keeps None)."""
    if old is None:
        return new.status_since or now
    if new.status_since != old.status_since:
        return new.status_since
    return now if _phase(new.status) != _phase(old.status) else old.status_since


def _phase(status: InstanceStatus) -> str:
    """starting → loading is one provisioning phase (image pull, then ComfyUI start): one clock for both."""
    return "provisioning" if status in PROVISIONING_STATUSES else status


def _dumps(data: object, what: str) -> str:
    """JSON text, refusing anything that is not plain JSON (a ``Secret`` above all)."""
    try:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        kind = "a Secret" if "Secret" in str(exc) else "a value that is not plain JSON"
        raise ValueError(f"{what} contains {kind}; store plain JSON only (never secrets)") from None


@dataclass(frozen=True)
class PoolSettings:
    """The pool's shared knobs: how many instances to keep, and whether spending is stopped."""

    desired_size: int
    safe_mode: bool
    safe_mode_reason: str | None


_FIELD_NAMES = FIELD_NAMES


class StateStore:
    """Reads and writes the shared state; the only module that knows its Redis layout."""

    def __init__(self, redis_client: RedisClient, keys: Keys | None = None, clock: Clock = SYSTEM_CLOCK,
                 *, default_desired_size: int = 1) -> None:
        self.redis = redis_client
        self.keys = keys or Keys()
        self.clock = clock
        self.default_desired_size = default_desired_size
        self._cas = redis_client.register_script(_CAS_LUA)
        self._recount = redis_client.register_script(_RECOUNT_LUA)

    # ── instances ───────────────────────────────────────────────────────────
    def get_instance(self, instance_id: str | int) -> InstanceRecord | None:
        """The record, or None when there is none; ``PermanentError`` when the stored one is unreadable."""
        raw = self.redis.get(self.keys.instance(instance_id))
        return _decode(str(instance_id), as_text(raw)) if raw is not None else None

    def list_instances(self) -> list[InstanceRecord]:
        """Every readable record, oldest first.

        Ids whose record vanished are skipped; so is a record that cannot be read (logged with its id),
        so one bad record never hides the others.
        """
        ids = sorted(as_text(i) for i in self.redis.smembers(self.keys.instances()))
        if not ids:
            return []
        raws = self.redis.mget([self.keys.instance(i) for i in ids])
        records = []
        for iid, raw in zip(ids, raws, strict=True):
            if raw is None:
                continue
            try:
                records.append(_decode(iid, as_text(raw)))
            except PermanentError as exc:
                log.warning("⚠️  Skipping instance record %s: %s", iid, exc.message,
                            extra={"instance_id": iid})
        return sorted(records, key=lambda r: (r.created_at or 0.0, r.instance_id))

    def instance_counts(self) -> dict[str, int]:
        """Records by status (an unreadable one under ``"?"``), in one round trip of two commands.

        The compare-and-set script keeps the counts as it writes; when their sum disagrees with the number
        of ids (records from before the counts existed, a hand edit), they are rebuilt once, atomically.
        """
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.instance_status_counts())
            pipe.scard(self.keys.instances())
            raw, total = pipe.execute()
        counts = {as_text(k): int(v) for k, v in raw.items()}
        if sum(counts.values()) != int(total):
            flat = self._recount(keys=[self.keys.instances(), self.keys.instance_status_counts()],
                                 args=[self.keys.instance_key_prefix()])
            counts = {as_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        return {k: v for k, v in sorted(counts.items()) if v > 0}

    def get_instances(self, instance_ids: list[str]) -> dict[str, InstanceRecord]:
        """Many records in one round trip (id → record); missing and unreadable ones are left out (logged)."""
        ids = [str(i) for i in instance_ids]
        if not ids:
            return {}
        out: dict[str, InstanceRecord] = {}
        for iid, raw in zip(ids, self.redis.mget([self.keys.instance(i) for i in ids]), strict=True):
            if raw is None:
                continue
            try:
                out[iid] = _decode(iid, as_text(raw))
            except PermanentError as exc:
                log.warning("⚠️  Skipping instance record %s: %s", iid, exc.message,
                            extra={"instance_id": iid})
        return out

    def instance_ids(self) -> set[str]:
        """The ids that have a record (one SMEMBERS; cheaper than reading the records)."""
        return {as_text(i) for i in self.redis.smembers(self.keys.instances())}

    def put_instance(self, rec: InstanceRecord, *, lease: Lease | None = None) -> InstanceRecord:
        """Store ``rec`` whole (create or overwrite); stamps ``updated_at`` (and ``created_at`` if unset)."""
        def build(old: InstanceRecord | None) -> InstanceRecord:
            created = rec.created_at or (old.created_at if old else None) or self.clock.now()
            return replace(rec, created_at=created)
        result = self._write(rec.instance_id, build, lease=lease, must_exist=False)
        assert result is not None
        return result

    def create_instance(self, rec: InstanceRecord) -> bool:
        """Store ``rec`` only if no record exists for its id (idempotent creation); False if one did."""
        now = self.clock.now()
        new = replace(rec, created_at=rec.created_at or now, updated_at=now,
                      status_since=rec.status_since or now)
        status = self._cas(keys=[self.keys.instance(rec.instance_id), self.keys.instances(),
                                 self.keys.instance_status_counts()],
                           args=["", _dumps(new.to_dict(), "instance record"), new.instance_id])
        return bool(as_text(status[0]) == "OK")

    def update_instance(self, instance_id: str | int, changes: Mapping[str, object], *,
                        lease: Lease | None = None) -> InstanceRecord:
        """Apply ``changes`` (field → value) atomically; fenced by ``lease`` when given.

        Raises ``NotFound`` when there is no record, ``StaleFence`` when the lease no longer backs
        the write, ``WriteConflict`` after too many lost races, ``ValueError`` for unknown fields.
        """
        changes = upgrade_record_fields(changes)
        unknown = set(changes) - (_FIELD_NAMES - {"instance_id", "fence", "fence_name", "created_at"})
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)} on an instance record")

        def build(old: InstanceRecord | None) -> InstanceRecord:
            if old is None:
                raise NotFound(f"no record for instance {instance_id}", instance_id=str(instance_id))
            return replace(old, **changes)  # type: ignore[arg-type]  # names checked above, kinds on build
        result = self._write(instance_id, build, lease=lease, must_exist=True)
        assert result is not None
        return result

    def modify_instance(self, instance_id: str | int, fn: Callable[[InstanceRecord], InstanceRecord], *,
                        lease: Lease | None = None) -> InstanceRecord:
        """Read-modify-write with ``fn(old) -> new`` under compare-and-set (``fn`` may run more than once).

        For changes that depend on the current value (counters, merging ``extra``, "only if still
        loading"); ``fn`` gets a private copy it may change in place. When it returns the record
        unchanged and no ``lease`` is given, nothing is written and the record as read is returned
        (a decision not to write needs no CAS; with a lease the fenced write still proves ownership).
        Same errors as :meth:`update_instance`.
        """
        def build(old: InstanceRecord | None) -> InstanceRecord | object:
            if old is None:
                raise NotFound(f"no record for instance {instance_id}", instance_id=str(instance_id))
            new = fn(InstanceRecord.from_dict(old.to_dict()))  # deep copy: nested dicts too
            return _UNCHANGED if lease is None and new == old else new
        result = self._write(instance_id, build, lease=lease, must_exist=True)
        assert result is not None
        return result

    def delete_instance(self, instance_id: str | int, *, lease: Lease | None = None) -> bool:
        """Remove the record and its id; False when there was none. Fenced by ``lease`` when given.

        Works on a record that cannot be read, too (deleting it is one way to fix it).
        """
        try:
            self._write(instance_id, None, lease=lease, must_exist=True)
        except NotFound:
            return False
        return True

    def _write(self, instance_id: str | int, build: Callable[[InstanceRecord | None], object] | None,
               *, lease: Lease | None, must_exist: bool) -> InstanceRecord | None:
        """Read, build the new record, compare-and-set in Lua; re-read on a lost race.

        ``build`` returns the record to store, None to delete, or ``_UNCHANGED`` to write nothing;
        ``build=None`` deletes without reading the old record (so an unreadable one can be deleted).
        """
        iid = str(instance_id)
        keys = [self.keys.instance(iid), self.keys.instances(), self.keys.instance_status_counts()]
        fence_args: list[str | int] = []
        if lease is not None:
            keys.append(self.keys.lease(lease.name))
            fence_args = [lease.owner, lease.fence, lease.name]
        for _ in range(CAS_ATTEMPTS):
            raw: str | None = as_text(self.redis.get(keys[0]))
            if raw is None and must_exist:
                raise NotFound(f"no record for instance {iid}", instance_id=iid)
            old = _decode(iid, raw) if raw is not None and build is not None else None
            new = build(old) if build is not None else None
            if new is _UNCHANGED:
                return old
            new_raw = ""
            if new is not None:
                assert isinstance(new, InstanceRecord)
                if new.instance_id != iid:
                    raise ValueError("instance_id cannot change")
                fence: int
                fence_name: str | None
                if lease is not None:
                    fence, fence_name = lease.fence, lease.name
                else:  # an unfenced write keeps the last fenced writer's mark
                    fence, fence_name = (old.fence, old.fence_name) if old else (new.fence, new.fence_name)
                now = self.clock.now()
                new = replace(new, fence=fence, fence_name=fence_name, updated_at=now,
                              status_since=_status_since(old, new, now))
                new_raw = _dumps(new.to_dict(), "instance record")
            reply = self._cas(keys=keys, args=[raw or "", new_raw, iid, *fence_args])
            status = as_text(reply[0])
            if status == "OK":
                return new
            if status in ("LOST", "STALE"):
                assert lease is not None
                why = ("the lease lapsed or passed to another owner" if status == "LOST"
                       else f"the record was written under fence {as_text(reply[1])} of the same lease")
                raise StaleFence(f"write to instance {iid} under lease {lease.name!r} fence {lease.fence} "
                                 f"refused: {why}", instance_id=iid, name=lease.name, fence=lease.fence)
        raise WriteConflict(f"instance {iid} kept changing under concurrent writers", instance_id=iid)

    # ── pool settings ───────────────────────────────────────────────────────
    def get_pool(self) -> PoolSettings:
        data = {as_text(k): as_text(v) for k, v in self.redis.hgetall(self.keys.pool()).items()}
        size = data.get("desired_size")
        return PoolSettings(
            desired_size=int(size) if size not in (None, "") else self.default_desired_size,
            safe_mode=data.get("safe_mode") == "1",
            safe_mode_reason=data.get("safe_mode_reason") or None,
        )

    def set_desired_size(self, size: int) -> PoolSettings:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"desired size must be a whole number >= 0, got {size!r}")
        self.redis.hset(self.keys.pool(), "desired_size", size)
        return self.get_pool()

    def set_safe_mode(self, on: bool, reason: str | None = None) -> PoolSettings:
        """Stop (or resume) spending. The reason is shown in status; keep secrets out of it."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.pool(), "safe_mode", "1" if on else "0")
            if on and reason:
                pipe.hset(self.keys.pool(), "safe_mode_reason", reason)
            else:
                pipe.hdel(self.keys.pool(), "safe_mode_reason")
            pipe.execute()
        return self.get_pool()

    # ── token validation results (cached, with TTL) ─────────────────────────
    def put_token_result(self, service: str, result: Mapping[str, object], ttl_ms: int) -> None:
        """Cache one service's validation result for ``ttl_ms`` (TOKEN_VALIDATION_CACHE_MS)."""
        if ttl_ms <= 0:
            raise ValueError("ttl_ms must be positive")
        self.redis.set(self.keys.token_result(service), _dumps(result, "token result"), px=ttl_ms)

    def get_token_result(self, service: str) -> dict[str, object] | None:
        """The cached result, or None when none is cached (or the cached one is not a JSON object)."""
        raw = self.redis.get(self.keys.token_result(service))
        if raw is None:
            return None
        try:
            data = json.loads(as_text(raw))
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def delete_token_result(self, service: str) -> bool:
        """Forget a cached result (after update-token, so the next check is real)."""
        return bool(self.redis.delete(self.keys.token_result(service)))

    # ── runtime token overrides (update-token) ──────────────────────────────
    def set_runtime_secret(self, service: str, value: Secret | str) -> None:
        """Store a token every worker will use instead of its start-up one (lives in Redis: protect it)."""
        text: object = value.reveal() if isinstance(value, Secret) else value
        if not isinstance(text, str) or not text:
            raise ValueError("a runtime secret must be a non-empty string")
        self.redis.set(self.keys.runtime_secret(service), text)

    def get_runtime_secret(self, service: str) -> Secret | None:
        raw = as_text(self.redis.get(self.keys.runtime_secret(service)))
        return Secret(raw) if raw else None

    def clear_runtime_secret(self, service: str) -> bool:
        """Go back to the start-up token for ``service``."""
        return bool(self.redis.delete(self.keys.runtime_secret(service)))


__all__ = ["COMFYUI_LOST_REASON", "COMFYUI_LOST_STATUS", "INSTANCE_STATUSES", "InstanceRecord",
           "PoolSettings", "StateStore", "comfyui_lost_since"]
