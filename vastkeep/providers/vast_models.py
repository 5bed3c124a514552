"""Tolerant parsing of Vast.ai instance and offer records.

The Vast.ai API changes field types between versions, pads ``public_ipaddr`` with whitespace,
leaves ``ports`` empty or missing while an instance loads, and sends ids as strings now and
then. A monitoring loop must never crash on any of that: missing fields become ``None``, wrong
types are coerced or dropped, and only a record without a usable id is refused
(``MalformedResponse``, a transient error: the next poll tries again).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from vastkeep.core.errors import MalformedResponse

FATAL_STATUSES: frozenset[str] = frozenset({"offline", "exited"})  # fatal while the instance is meant to run
LOADING_STATUSES: frozenset[str | None] = frozenset({None, "created", "loading"})


# ── coercion helpers: never raise, return None for anything unusable ────────
def as_int(value: object) -> int | None:
    """An int from an int, an integral float, or a string of digits; otherwise None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("+-").isdigit() and text.isascii():
            return int(text)
        number = as_float(text)
        return int(number) if number is not None and number.is_integer() else None
    return None


def as_float(value: object) -> float | None:
    """A finite float from a number or numeric string; otherwise None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def as_str(value: object) -> str | None:
    """A stripped string, or None when missing/empty; numbers are rendered, containers refused."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, int | float):
        text = str(value)
    else:
        return None
    return text or None


def as_port(value: object) -> int | None:
    """A TCP port number 1..65535, or None."""
    port = as_int(value)
    return port if port is not None and 0 < port < 65536 else None


def _host_port(binding: object) -> int | None:
    """First usable ``HostPort`` of one ``ports`` entry, whatever its shape."""
    if isinstance(binding, list | tuple):
        for item in binding:
            port = _host_port(item)
            if port is not None:
                return port
        return None
    if isinstance(binding, Mapping):
        return as_port(binding.get("HostPort", binding.get("host_port")))
    return as_port(binding)


def parse_ports(raw: object) -> dict[str, int]:
    """``{"8188/tcp": [{"HostIp": ..., "HostPort": "41234"}]}`` → ``{"8188/tcp": 41234}``; ``{}`` when odd."""
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, int] = {}
    for key, binding in raw.items():
        name = as_str(key)
        if name is None:
            continue
        if "/" not in name:
            name = f"{name}/tcp"
        port = _host_port(binding)
        if port is not None:
            out[name.lower()] = port
    return out


def _first(d: Mapping[str, object], *names: str) -> object:
    """The first of ``names`` present with a non-null value (newer field names first)."""
    for name in names:
        value = d.get(name)
        if value is not None:
            return value
    return None


def _record_id(d: Mapping[str, object], what: str) -> int:
    ident = as_int(d.get("id"))
    if ident is None or ident <= 0:
        raise MalformedResponse(f"{what} record has no usable id", field="id")
    return ident


@dataclass(frozen=True)
class VastInstance:
    """One rented instance, as much of it as the API told us. ``raw`` keeps the original record."""

    id: int
    label: str | None = None
    actual_status: str | None = None
    intended_status: str | None = None
    cur_state: str | None = None
    next_state: str | None = None
    status_msg: str | None = None
    public_ip: str | None = None
    ssh_host: str | None = None
    ssh_port: int | None = None
    ports: dict[str, int] = field(default_factory=dict, hash=False)
    direct_port_count: int | None = None
    gpu_name: str | None = None
    num_gpus: int | None = None
    dph_total: float | None = None
    reliability: float | None = None
    start_date: float | None = None
    uptime_mins: float | None = None
    machine_id: int | None = None
    raw: dict[str, object] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_api(cls, d: object) -> VastInstance:
        """Parse one instance record; raises ``MalformedResponse`` only when there is no usable id."""
        if not isinstance(d, Mapping):
            raise MalformedResponse(f"instance record is a {type(d).__name__}, not an object")
        reliability = _first(d, "reliability2", "reliability")
        return cls(
            id=_record_id(d, "instance"),
            label=as_str(d.get("label")),
            actual_status=_status(d.get("actual_status")),
            intended_status=_status(d.get("intended_status")),
            cur_state=_status(d.get("cur_state")),
            next_state=_status(d.get("next_state")),
            status_msg=as_str(d.get("status_msg")),
            public_ip=as_str(_first(d, "public_ipaddr", "public_ip")),
            ssh_host=as_str(d.get("ssh_host")),
            ssh_port=as_port(d.get("ssh_port")),
            ports=parse_ports(d.get("ports")),
            direct_port_count=as_int(d.get("direct_port_count")),
            gpu_name=as_str(d.get("gpu_name")),
            num_gpus=as_int(d.get("num_gpus")),
            dph_total=as_float(d.get("dph_total")),
            reliability=as_float(reliability),
            start_date=as_float(d.get("start_date")),
            uptime_mins=as_float(d.get("uptime_mins")),
            machine_id=as_int(d.get("machine_id")),
            raw=dict(d),
        )

    def host_port(self, internal: int | str) -> int | None:
        """The public port mapped to an internal one (``8188`` or ``"8188/tcp"``), or None."""
        key = str(internal).strip().lower()
        return self.ports.get(key if "/" in key else f"{key}/tcp")

    @property
    def is_ready(self) -> bool:
        """Running as intended (the official CLI's readiness rule)."""
        return self.intended_status == "running" and self.actual_status == "running"

    @property
    def is_stopped(self) -> bool:
        """Stopped on purpose (by its owner, or by the host after an outbid): the API says so in
        ``intended_status``; ``actual_status`` is then the container's own state, ``exited``. An older
        ``actual_status: "stopped"`` is read the same way."""
        return self.intended_status == "stopped" or self.actual_status == "stopped"

    @property
    def is_fatal(self) -> bool:
        """Will not come back by waiting: an error in ``status_msg``, the host offline, or the container
        exited while it was meant to run (an exited container of a stopped instance is just stopped)."""
        if "Error" in (self.status_msg or "") or self.actual_status == "offline":
            return True
        return self.actual_status in FATAL_STATUSES and not self.is_stopped

    @property
    def is_outbid(self) -> bool:
        """An interruptible instance that lost its bid: every state field says ``stopped``."""
        return self.cur_state == self.intended_status == self.next_state == "stopped"

    @property
    def is_loading(self) -> bool:
        """Still provisioning (pulling the image, starting the container) and not already doomed."""
        return (self.actual_status in LOADING_STATUSES and self.intended_status != "stopped"
                and not self.is_fatal)


def _status(value: object) -> str | None:
    text = as_str(value)
    return text.lower() if text is not None else None


@dataclass(frozen=True)
class VastOffer:
    """One rentable offer from ``POST /bundles/``."""

    id: int
    dph_total: float | None = None
    gpu_name: str | None = None
    num_gpus: int | None = None
    reliability: float | None = None
    direct_port_count: int | None = None
    machine_id: int | None = None
    raw: dict[str, object] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_api(cls, d: object) -> VastOffer:
        """Parse one offer record; raises ``MalformedResponse`` only when there is no usable id."""
        if not isinstance(d, Mapping):
            raise MalformedResponse(f"offer record is a {type(d).__name__}, not an object")
        return cls(
            id=_record_id(d, "offer"),
            dph_total=as_float(d.get("dph_total")),
            gpu_name=as_str(d.get("gpu_name")),
            num_gpus=as_int(d.get("num_gpus")),
            reliability=as_float(_first(d, "reliability2", "reliability")),
            direct_port_count=as_int(d.get("direct_port_count")),
            machine_id=as_int(d.get("machine_id")),
            raw=dict(d),
        )
