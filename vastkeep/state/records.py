"""The instance record: what vastkeep knows about one rented instance, and how a stored one is read.

Reading is tolerant (unknown keys ignored, missing ones defaulted, field names stored before the provider seam
renamed: :mod:`vastkeep.state.legacy`) but strict about kinds: a field holding the wrong kind of JSON fails
here, with the id and never the content, so a bad record fails at the read, not later in a status view.
:mod:`vastkeep.state.store` does the Redis side (compare-and-set writes, fences).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import InitVar, asdict, dataclass, field, fields
from typing import Final

from vastkeep.core.clock import iso
from vastkeep.core.errors import PermanentError
from vastkeep.state.legacy import upgrade_record_fields
from vastkeep.state.status import INSTANCE_STATUSES, InstanceStatus

#: A ready instance whose ComfyUI stopped answering (Layer 4 ``connection-lost``) is shown and counted as
#: ``unhealthy`` with this ``status_reason`` until a ping answers again (then ``ready`` once more): never as
#: ready, and never counted towards the pool's desired size (the pool rents its replacement at once).
COMFYUI_LOST_STATUS: Final = InstanceStatus.UNHEALTHY
COMFYUI_LOST_REASON = "keepalive: connection lost"

def comfyui_lost_since(record: object) -> float | None:
    """When Layer 4 found the record's ComfyUI unreachable (``extra.keepalive_lost_since``), or None."""
    extra = getattr(record, "extra", None)
    lost = extra.get("keepalive_lost_since") if isinstance(extra, Mapping) else None
    return float(lost) if isinstance(lost, int | float) and _is_kind(lost, "time") else None


def _decode(instance_id: str, raw: str) -> InstanceRecord:
    """Parse a stored record; ``PermanentError`` (naming the id, not the content) when it cannot be read."""
    try:
        return InstanceRecord.from_dict(json.loads(raw))
    except (ValueError, TypeError, AttributeError) as exc:
        reason = "not JSON" if isinstance(exc, json.JSONDecodeError) else str(exc)[:200]
        raise PermanentError(f"instance record {instance_id} in Redis cannot be read ({reason}); fix or "
                             "delete the key", instance_id=instance_id) from None


@dataclass
class InstanceRecord:
    """What vastkeep knows about one rented instance.

    ``fence_name`` / ``fence``: the lease name and fencing number of the last fenced write (None / 0
    when none was fenced); a later fenced write under the same name needs a fence at least this high.
    ``lease_owner`` / ``leased_until``: the warm pool's *client* lease, i.e. the name of the client
    service that leased the instance and until when. It is never a lease owner token from
    ``vastkeep.state.leases`` (those are capabilities and are never stored in a record).
    """

    instance_id: str
    status: InstanceStatus = InstanceStatus.STARTING
    provider_status: str | None = None
    public_ip: str | None = None
    ssh_proxy_host: str | None = None
    ssh_proxy_port: int | None = None
    ports: dict[str, int] = field(default_factory=dict)
    connection_url: str | None = None
    port_validation: dict[str, object] | None = None
    last_heartbeat: float | None = None
    leased_until: float | None = None
    lease_owner: str | None = None
    label: str | None = None
    gpu_name: str | None = None
    price_per_hour: float | None = None
    created_at: float | None = None
    updated_at: float | None = None
    error: str | None = None
    extra: dict[str, object] = field(default_factory=dict)
    status_reason: str | None = None
    provider_seen_at: float | None = None
    last_poll_at: float | None = None
    next_poll_at: float | None = None
    fence: int = 0
    fence_name: str | None = None
    #: when the record entered its current status (stamped by the store on every change; starting and
    #: loading count as one provisioning phase): "stuck provisioning" is measured from here, not created_at
    status_since: float | None = None
    #: the field's name before the provider seam, still accepted by the constructor (read as a property)
    vast_status: InitVar[str | None] = None

    def __post_init__(self, vast_status: str | None = None) -> None:
        if vast_status is not None and self.provider_status is None:
            self.provider_status = vast_status
        self.instance_id = str(self.instance_id)
        if self.status not in INSTANCE_STATUSES:
            raise ValueError(f"unknown instance status {self.status!r}; "
                             f"expected one of {', '.join(INSTANCE_STATUSES)}")
        self.status = InstanceStatus(self.status)  # a stored string becomes the member it names

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-safe fields (snake_case), as stored."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> InstanceRecord:
        """Tolerant read: unknown keys are ignored, missing (or null) ones take their defaults.

        Raises ``ValueError`` when a field holds a value of the wrong kind (a port that is not a
        number, a time that is text), so a bad record fails here, not later in a status view.
        """
        if not isinstance(data, dict):
            raise ValueError(f"an instance record is a JSON object, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, object] = {k: v for k, v in upgrade_record_fields(data).items() if k in known}
        for name, kind in _FIELD_KINDS.items():
            value = kwargs.get(name)
            if value is not None and not _is_kind(value, kind):
                raise ValueError(f"instance record field {name!r} holds {type(value).__name__}, not {kind}")
        ports = kwargs.get("ports") or {}
        assert isinstance(ports, dict)  # checked by kind above
        if not all(isinstance(v, int) and _is_kind(v, "int") for v in ports.values()):
            raise ValueError("instance record field 'ports' maps to something other than port numbers")
        kwargs["ports"] = {str(k): int(v) for k, v in ports.items()}
        extra = kwargs.get("extra") or {}
        assert isinstance(extra, dict)
        kwargs["extra"] = dict(extra)
        fence = kwargs.get("fence") or 0
        assert isinstance(fence, int)
        kwargs["fence"] = fence
        return cls(**kwargs)  # type: ignore[arg-type]  # each value's kind was checked against _FIELD_KINDS

    def to_status_dict(self) -> dict[str, object]:
        """The guide's warm-pool status fields (camelCase, ISO times), then the rest."""
        return {
            "contractId": self.instance_id, "status": self.status, "connectionUrl": self.connection_url,
            "lastHeartbeat": iso(self.last_heartbeat), "leasedUntil": iso(self.leased_until),
            "vastStatus": self.provider_status, "publicIp": self.public_ip, "sshHost": self.ssh_proxy_host,
            "sshPort": self.ssh_proxy_port, "ports": dict(self.ports), "portValidation": self.port_validation,
            "label": self.label, "gpuName": self.gpu_name, "dphTotal": self.price_per_hour,
            "createdAt": iso(self.created_at), "updatedAt": iso(self.updated_at), "error": self.error,
            "statusReason": self.status_reason, "providerSeenAt": iso(self.provider_seen_at),
            "lastPollAt": iso(self.last_poll_at), "nextPollAt": iso(self.next_poll_at),
            "fence": self.fence, "fenceName": self.fence_name, "statusSince": iso(self.status_since),
            "comfyuiLostSince": iso(comfyui_lost_since(self)),
        }


#: The JSON kind each typed field must hold when not null (checked by ``InstanceRecord.from_dict``).
_FIELD_KINDS: dict[str, str] = {
    "instance_id": "str|int", "status": "str", "provider_status": "str", "public_ip": "str",
    "ssh_proxy_host": "str", "ssh_proxy_port": "int", "ports": "dict", "connection_url": "str",
    "port_validation": "dict",
    "last_heartbeat": "time", "leased_until": "time", "lease_owner": "str", "label": "str", "gpu_name": "str",
    "price_per_hour": "number", "created_at": "time", "updated_at": "time", "error": "str", "extra": "dict",
    "fence": "int", "fence_name": "str", "status_reason": "str", "provider_seen_at": "time",
    "last_poll_at": "time", "next_poll_at": "time", "status_since": "time",
}
_MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z: the last instant ``iso()`` can show


def _is_kind(value: object, kind: str) -> bool:
    """Whether ``value`` is JSON of ``kind``: ``str|int``, ``str``, ``int``, ``dict``, ``number`` or
    ``time`` (a finite number of seconds that ``iso()`` can show); a bool is none of them."""
    if isinstance(value, bool):
        return False
    if kind == "str|int":
        return isinstance(value, str | int)
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int)
    if kind == "dict":
        return isinstance(value, dict)
    if not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return kind == "number" or 0 <= value <= _MAX_TIME




def _old_status(self: InstanceRecord) -> str | None:
    return self.provider_status


def _set_old_status(self: InstanceRecord, value: str | None) -> None:
    self.provider_status = value


# ``record.vast_status`` (read and write) as before the rename: old callers keep working
setattr(InstanceRecord, "vast_status", property(_old_status, _set_old_status))  # noqa: B010 - after @dataclass

#: every field name of a record
FIELD_NAMES = frozenset(f.name for f in fields(InstanceRecord))


__all__ = ["COMFYUI_LOST_REASON", "COMFYUI_LOST_STATUS", "FIELD_NAMES", "InstanceRecord",
           "comfyui_lost_since"]
