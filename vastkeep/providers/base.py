"""The provider seam: what a GPU cloud must answer, and the one normalised instance every layer reads.

Modelled on dramatiq's ``Broker`` + ``StubBroker``: :class:`Provider` is the interface, Vast.ai
(:class:`vastkeep.providers.vast.VastClient`) is its first implementation, and
:class:`vastkeep.providers.stub.StubProvider` is an in-memory one for unit tests. A cloud's own vocabulary
(its status words, address fields, offer query and rent payload) stays inside its module: what leaves it is
an :class:`Instance` or an :class:`Offer`, built from neutral fields only, with the cloud's raw row kept in
``raw`` for diagnostics.

The layers never look at a status word to decide anything: :attr:`Instance.phase` (where the instance is in
its life) and :attr:`Instance.fatal_reason` (why waiting will not help, already mapped by the provider) are
the whole lifecycle. The row → record mapping (:func:`record_from_instance`) and the address
(:func:`address_of`) live here once, so polling, the pool and the port sweep agree on them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from vastkeep.state import InstanceRecord, InstanceStatus

#: the internal ports a rented container must publish: ComfyUI and sshd
COMFYUI_PORT = 8188
SSH_PORT = 22
DIRECT = "direct"
PROXY = "proxy"


class Phase(StrEnum):
    """Where an instance is in its life, as the provider reports it (fatal or not: see ``fatal_reason``)."""

    STARTING = "starting"  # accepted, nothing running yet
    LOADING = "loading"    # pulling the image, starting the container
    RUNNING = "running"    # the container runs
    OTHER = "other"        # stopped, frozen, rebooting, host unknown...: ``status_word`` says which


@dataclass(frozen=True)
class SshRoute:
    """One way to reach an instance's sshd: ``direct`` (public IP + the 22/tcp mapping) or ``proxy``
    (the provider's SSH gateway)."""

    name: str
    host: str
    port: int

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "host": self.host, "port": self.port}


def _port(value: object) -> int | None:
    if not isinstance(value, int | float | str) or isinstance(value, bool):
        return None
    try:
        port = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return port if 0 < port < 65536 else None


def ssh_routes(public_ip: str | None, ports: Mapping[str, object] | None, proxy_host: str | None,
               proxy_port: object, last_good: str | None = None) -> list[SshRoute]:
    """The usable routes: ``direct`` (public IP + the ``22/tcp`` mapping) then ``proxy``; the route named
    ``last_good`` moves to the front. A route with a missing host or port is left out."""
    routes: list[SshRoute] = []
    direct_port = _port(ports.get(f"{SSH_PORT}/tcp")) if isinstance(ports, Mapping) else None
    ip = (public_ip or "").strip()
    if ip and direct_port:
        routes.append(SshRoute(DIRECT, ip, direct_port))
    gateway_port = _port(proxy_port)
    host = (proxy_host or "").strip()
    if host and gateway_port:
        routes.append(SshRoute(PROXY, host, gateway_port))
    if last_good:
        routes.sort(key=lambda r: r.name != last_good)  # stable: the other keeps its place
    return routes


@dataclass(frozen=True)
class Instance:
    """One instance as every layer sees it, whatever cloud it runs on.

    ``ports`` maps an internal port (``"8188/tcp"``) to the public port on ``public_ip``;
    ``ssh_proxy_host``/``ssh_proxy_port`` are the provider's SSH gateway, if it has one.
    ``signature`` changes whenever something that matters changed (status or address): a poll is due then.
    """

    id: int
    phase: Phase = Phase.STARTING
    fatal_reason: str | None = None
    status_word: str | None = None
    label: str | None = None
    public_ip: str | None = None
    ports: dict[str, int] = field(default_factory=dict, hash=False)
    ssh_proxy_host: str | None = None
    ssh_proxy_port: int | None = None
    gpu_name: str | None = None
    price_per_hour: float | None = None
    reliability: float | None = None
    host_id: int | None = None
    started_at: float | None = None
    signature: str = ""
    raw: dict[str, object] = field(default_factory=dict, repr=False, compare=False, hash=False)

    def host_port(self, internal: int | str) -> int | None:
        """The public port mapped to an internal one (``8188`` or ``"8188/tcp"``), or None."""
        key = str(internal).strip().lower()
        return self.ports.get(key if "/" in key else f"{key}/tcp")

    @property
    def is_running(self) -> bool:
        """Running and not doomed: the state in which Layer 3 may prove its port."""
        return self.phase is Phase.RUNNING and self.fatal_reason is None

    def ssh_routes(self, last_good: str | None = None) -> list[SshRoute]:
        return ssh_routes(self.public_ip, self.ports, self.ssh_proxy_host, self.ssh_proxy_port, last_good)

    # ── the snapshot's stored form (neutral JSON; ``raw`` is not kept) ─────────
    def to_json(self) -> str:
        """Sorted, compact JSON of every field but ``raw`` (equal instances → equal text)."""
        data = {"id": self.id, "phase": str(self.phase), "fatal_reason": self.fatal_reason,
                "status_word": self.status_word, "label": self.label, "public_ip": self.public_ip,
                "ports": dict(sorted(self.ports.items())), "ssh_proxy_host": self.ssh_proxy_host,
                "ssh_proxy_port": self.ssh_proxy_port, "gpu_name": self.gpu_name,
                "price_per_hour": self.price_per_hour, "reliability": self.reliability,
                "host_id": self.host_id, "started_at": self.started_at, "signature": self.signature}
        return json.dumps({k: v for k, v in data.items() if v is not None}, sort_keys=True,
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Instance:
        """Read :meth:`to_json`'s form back; ``ValueError`` when it is not that form."""
        ident = data.get("id")
        phase = data.get("phase")
        if not isinstance(ident, int) or isinstance(ident, bool) or phase not in set(Phase):
            raise ValueError("not a normalised instance")
        ports = data.get("ports") or {}
        if not isinstance(ports, Mapping):
            raise ValueError("ports is not an object")

        def text(name: str) -> str | None:
            value = data.get(name)
            return value if isinstance(value, str) else None

        def number(name: str) -> float | None:
            value = data.get(name)
            return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

        def integer(name: str) -> int | None:
            value = data.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        return cls(id=ident, phase=Phase(str(phase)), fatal_reason=text("fatal_reason"),
                   status_word=text("status_word"), label=text("label"), public_ip=text("public_ip"),
                   ports={str(k): int(v) for k, v in ports.items() if _port(v) is not None},
                   ssh_proxy_host=text("ssh_proxy_host"), ssh_proxy_port=integer("ssh_proxy_port"),
                   gpu_name=text("gpu_name"), price_per_hour=number("price_per_hour"),
                   reliability=number("reliability"), host_id=integer("host_id"),
                   started_at=number("started_at"), signature=text("signature") or "", raw=dict(data))


@dataclass(frozen=True)
class Offer:
    """One rentable machine offer, normalised. ``direct_ports``: the host can publish ports on its IP."""

    id: int
    price_per_hour: float | None = None
    gpu_name: str | None = None
    num_gpus: int | None = None
    reliability: float | None = None
    direct_ports: bool = False
    host_id: int | None = None
    raw: dict[str, object] = field(default_factory=dict, repr=False, compare=False, hash=False)


@dataclass(frozen=True)
class OfferSpec:
    """What the warm pool wants to rent, in neutral terms (each provider turns it into its own query)."""

    gpu_name: str | None = None
    num_gpus: int = 1
    min_gpu_ram_gb: int = 16
    max_price_per_hour: float = 1.0
    min_reliability: float = 0.98
    disk_gb: int = 60
    limit: int = 64


@dataclass(frozen=True)
class RentOrder:
    """What to run on a rented machine: image, disk, label and the ports to publish (the provider maps
    ``publish`` to its own way of opening ports); ``env`` is the container's plain environment."""

    image: str
    label: str
    disk_gb: float = 80
    publish: tuple[int, ...] = (COMFYUI_PORT, SSH_PORT)
    env: Mapping[str, str] = field(default_factory=dict)
    onstart: str | None = None


@runtime_checkable
class Provider(Protocol):
    """What a GPU cloud must answer. Errors are from :mod:`vastkeep.core.errors`: ``NotFound`` only when
    the cloud says the instance does not exist, ``RentOutcomeUnknown`` when a rent may have happened."""

    def instances(self) -> list[Instance]:
        """Every instance of the account (an ambiguous answer raises, never means "none")."""
        ...

    def instance(self, instance_id: int) -> Instance:
        """One instance; ``NotFound`` when the cloud says it does not exist, ``RecordMissing`` when it
        answered without the record (consistent with absence, not proof of it)."""
        ...

    def find_offers(self, spec: OfferSpec) -> list[Offer]:
        """Offers that may match ``spec`` (the caller checks them again)."""
        ...

    def rent_offer(self, offer_id: int, order: RentOrder) -> int:
        """Rent an offer; returns the new instance id."""
        ...

    def destroy(self, instance_id: int) -> bool:
        """True when destroyed now, False when it was already gone."""
        ...

    def start(self, instance_id: int) -> None: ...
    def stop(self, instance_id: int) -> None: ...
    def set_label(self, instance_id: int, label: str) -> None: ...

    def container_logs(self, instance_id: int, tail: int = 1000, *, wait_s: float = 30.0,
                       url_guard: Callable[[str], str] | None = None) -> str:
        """The container's log without SSH (``url_guard`` checks any URL the cloud hands out)."""
        ...


def address_of(instance: Instance) -> dict[str, object]:
    """The record's address fields as the provider reports them now. A field it leaves empty is left out:
    a loading or stopped instance reports no ports, and that is no reason to forget the last known one."""
    fresh: dict[str, object] = {
        "public_ip": instance.public_ip, "ports": dict(instance.ports) if instance.ports else None,
        "ssh_proxy_host": instance.ssh_proxy_host, "ssh_proxy_port": instance.ssh_proxy_port}
    return {k: v for k, v in fresh.items() if v}


def record_from_instance(instance: Instance, status: InstanceStatus = InstanceStatus.STARTING, *,
                         created_at: float | None = None,
                         extra: Mapping[str, object] | None = None) -> InstanceRecord:
    """A new record for an instance found at the provider: its label, GPU, price and address."""
    return InstanceRecord(
        str(instance.id), status=status, provider_status=instance.status_word, public_ip=instance.public_ip,
        ssh_proxy_host=instance.ssh_proxy_host, ssh_proxy_port=instance.ssh_proxy_port,
        ports=dict(instance.ports), label=instance.label, gpu_name=instance.gpu_name,
        price_per_hour=instance.price_per_hour, created_at=created_at, extra=dict(extra or {}))


__all__ = ["COMFYUI_PORT", "DIRECT", "PROXY", "SSH_PORT", "Instance", "Offer", "OfferSpec", "Phase",
           "Provider", "RentOrder", "SshRoute", "address_of", "record_from_instance", "ssh_routes"]
