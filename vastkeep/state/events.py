"""A durable event stream in Redis: what happened, in order, readable by any process.

The guide's Node.js code used in-process EventEmitters (``token-invalid``, ``connection-lost``...);
with many workers on many hosts those become entries of one Redis stream (XADD MAXLEN ~), which
the admin API, ``vastkeep status`` and alerting read. Secrets never enter it: ``Secret`` values and
fields with secret-looking names are masked before writing.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from vastkeep.core.clock import SYSTEM_CLOCK, Clock, iso
from vastkeep.core.settings import Secret, redact_url
from vastkeep.state.connection import RedisClient
from vastkeep.state.keys import EVENTS_MAXLEN, Keys

log = logging.getLogger("vastkeep.state")

#: Known kinds (others may be emitted; these are documented and stable).
EVENT_KINDS: dict[str, str] = {
    "token-valid": "a service's token passed validation (service)",
    "token-invalid": "a service's token failed validation (service, error, http_status)",
    "token-updated": "a token was replaced at runtime via update-token (service, status, forced)",
    "token-update-rejected": "update-token refused a new token; the old one is kept (service, reason, error)",
    "port-validated": "a ComfyUI port answered TCP + HTTP "
                      "(instance_id, port, candidate, connection_url, status)",
    "port-validation-failed": "no candidate port worked (instance_id, error, firewall, status)",
    "ping-failure": "one ComfyUI keepalive ping failed (instance_id, failures, error)",
    "connection-lost": "keepalive failures reached the limit (instance_id, failures, last_error)",
    "connection-restored": "keepalive succeeded again after a loss (instance_id)",
    "ssh-connected": "SSH log collection connected (instance_id)",
    "ssh-backoff": "SSH failed; retrying after a jittered delay (instance_id, failures, delay_s)",
    "ssh-host-key-changed": "ALERT: an instance presented a host key other than its pinned one; refused "
                            "(instance_id, route, fingerprint)",
    "ssh-fallback-started": "no SSH route worked for SSH_FALLBACK_AFTER_S: the provider's log API is read "
                            "(instance_id, down_s)",
    "ssh-fallback-ended": "SSH answers again after the provider log fallback (instance_id)",
    "ssh-provider-log-refused": "the provider's log result_url failed the SSRF guard; not fetched "
                                "(instance_id, reason)",
    "ssh-log-rotated": "a collected remote file shrank or was replaced: a new generation starts "
                       "(instance_id, file, generation, offset, reason)",
    "ssh-collector-stalled": "a collector's loop made no progress past its step's deadline: its lease is "
                             "released so supervision restarts it (instance_id, fence, stalled_s)",
    "ssh-provider-log-gap": "more lines than SSH_PROVIDER_LOG_TAIL came between two reads of the provider's "
                            "log API: lines between them are missing (instance_id, tail, stored)",
    "instance-status": "an instance changed status (instance_id, old, new, reason)",
    "instance-rented": "the warm pool rented (or adopted by label) an instance "
                       "(instance_id, label, slot, offer_id, dph, adopted)",
    "instance-destroyed": "the warm pool destroyed an instance (instance_id, label, reason, existed)",
    "instance-replaced": "a dead/stuck instance was destroyed so its slot is refilled "
                         "(instance_id, label, reason, leased, lease_owner)",
    "lease-broken": "a leased instance died; its holder may lease the replacement "
                    "(instance_id, client, reason)",
    "rent-unknown": "a rent's answer was lost; resolved by label before any retry (label, offer_id, reason)",
    "rent-resolved": "a rent with an unknown outcome was resolved by its label (label, outcome, instance_id)",
    "lease-acquired": "a lease was granted (name, fence)",
    "lease-lost": "a holder found its lease gone (name, fence)",
    "pool-lease-granted": "a client service leased a warm-pool instance "
                          "(instance_id, client, fence, leased_until)",
    "pool-lease-ended": "a client lease was released (instance_id, client, fence, reason)",
    "failover-started": "the instance behind a client lease is gone; its lease is moving "
                        "(instance_id, reason, detect_s)",
    "failover-done": "a failover ended: the lease and its endpoint are on a new instance, or none was "
                     "ready (instance_id, to_instance, reason, outcome, detect_s, switch_s, total_s, "
                     "resubmitted, lost)",
    "prompt-resubmitted": "a prompt in flight was sent again to the lease's new instance, its prompt_id kept "
                          "(instance_id, from_instance, prompt_id, since_failover_s)",
    "pool-resized": "an operator changed the warm pool's desired size (desired_size, previous)",
    "safe-mode": "safe mode switched on or off (on, reason, cause)",
    "process-restarted": "supervision restarted a daemon whose heartbeat went stale, on the guide's "
                         "10/20/40/60 s schedule (id, name, restartCount, consecutiveCrashes)",
    "process-failed": "supervision gave up on a daemon after SUPERVISION_MAX_RESTARTS "
                      "(id, name, restartCount)",
    "process-crash-loop": "ALERT: a daemon crashed SUPERVISION_CRASH_LOOP_CRASHES times within the window "
                          "(id, name, crashes, consecutiveCrashes, restartCount)",
    "process-reset": "an operator reset a failed daemon (POST .../watchdog/{name}/reset); the next sweep "
                     "starts it (id, name, previousStatus, restartCount)",
}

_KIND_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SECRET_NAMES = frozenset({"token", "api_key", "apikey", "secret", "password", "authorization",
                           "x-admin-key", "admin_key", "access_token", "auth"})
MASK = "***"
#: Each part of a stream id (``<ms>-<seq>``) is an unsigned 64-bit number; Redis refuses anything larger.
STREAM_ID_PART_MAX = 2**64 - 1
_STREAM_ID_RE = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")  # ASCII digits, whole string (fullmatch)
_LAST_STREAM_ID = f"{STREAM_ID_PART_MAX}-{STREAM_ID_PART_MAX}"


@dataclass(frozen=True)
class Event:
    """One stream entry: its id (``<ms>-<seq>``), kind, wall time and fields."""

    id: str
    kind: str
    ts: float
    fields: dict[str, object]

    def to_dict(self) -> dict[str, object]:
        """JSON form for the admin API."""
        return {"id": self.id, "kind": self.kind, "ts": self.ts, "time": iso(self.ts), "fields": self.fields}


def is_stream_id(value: str) -> bool:
    """True for an id Redis accepts as a stream position: ``<ms>-<seq>``, both parts within 64 bits."""
    match = _STREAM_ID_RE.fullmatch(value) if isinstance(value, str) else None
    return match is not None and all(int(part) <= STREAM_ID_PART_MAX for part in match.groups())


def _safe(value: object, key: str | None = None) -> object:
    """A JSON-safe copy with secrets masked; non-JSON objects become text."""
    if isinstance(value, Secret) or (key is not None and key.lower() in _SECRET_NAMES and value is not None):
        return MASK
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _safe(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_safe(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return str(value)


class EventLog:
    """Append to and read the event stream."""

    def __init__(self, redis_client: RedisClient, keys: Keys | None = None, clock: Clock = SYSTEM_CLOCK,
                 maxlen: int = EVENTS_MAXLEN) -> None:
        self.redis = redis_client
        self.keys = keys or Keys()
        self.clock = clock
        self.maxlen = maxlen

    def emit(self, kind: str, **fields: object) -> str:
        """Append one event and return its stream id. Secrets are masked, never written."""
        if not _KIND_RE.match(kind):
            raise ValueError(f"invalid event kind {kind[:64]!r}: use lower-case words joined by '-'")
        clean = {k: _safe(v, k) for k, v in fields.items()}
        for k, v in clean.items():
            if isinstance(v, str) and "://" in v:
                clean[k] = redact_url(v)
        if MASK in clean.values() and any(isinstance(v, Secret) for v in fields.values()):
            log.warning("event %s: a Secret was passed as a field and was masked", kind)
        entry = {"kind": kind, "ts": repr(self.clock.now()), "data": json.dumps(clean, separators=(",", ":"))}
        event_id = self.redis.xadd(self.keys.events(), entry, maxlen=self.maxlen, approximate=True)
        return event_id.decode() if isinstance(event_id, bytes) else event_id

    def read(self, after: str = "0-0", count: int = 100) -> list[Event]:
        """Up to ``count`` events strictly after stream id ``after``, oldest first.

        ``ValueError`` when ``after`` is not a stream id (:func:`is_stream_id`); after the largest id
        there is nothing (Redis would refuse the exclusive range, so it is not asked).
        """
        if not is_stream_id(after):
            raise ValueError(f"not a stream id (<ms>-<seq>, each part at most {STREAM_ID_PART_MAX}): "
                             f"{str(after)[:60]!r}")
        if after == _LAST_STREAM_ID:
            return []
        entries = self.redis.xrange(self.keys.events(), min=f"({after}", max="+", count=count)
        return [_event(eid, data) for eid, data in entries]

    def latest(self, count: int = 20) -> list[Event]:
        """The newest ``count`` events, oldest first."""
        entries = self.redis.xrevrange(self.keys.events(), max="+", min="-", count=count)
        return [_event(eid, data) for eid, data in reversed(entries)]

    def length(self) -> int:
        return int(self.redis.xlen(self.keys.events()))


def _event(event_id: str | bytes, data: Mapping[str | bytes, str | bytes]) -> Event:
    d = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
         for k, v in data.items()}
    try:
        fields = json.loads(d.get("data") or "{}")
    except ValueError:
        fields = {"raw": d.get("data")}
    if not isinstance(fields, dict):
        fields = {"value": fields}
    eid = event_id.decode() if isinstance(event_id, bytes) else event_id
    return Event(id=eid, kind=d.get("kind", "?"), ts=float(d.get("ts") or 0.0), fields=fields)


__all__ = ["EVENT_KINDS", "Event", "EventLog"]
