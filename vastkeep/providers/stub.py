"""An in-memory cloud for unit tests: the seam's ``StubBroker``.

:class:`StubProvider` answers every :class:`~vastkeep.providers.base.Provider` call from a dict, records
each call, and lets a test move an instance through its life (:meth:`StubProvider.boot`,
:meth:`StubProvider.fail`) or make the next call of a method raise (:meth:`StubProvider.fail_next`). It
speaks only the seam's words, which is what proves a second cloud needs nothing from the layers.
Integration tests use the simulated cloud instead, a real HTTP server the Vast.ai client talks to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from vastkeep.core.errors import NotFound, VastkeepError
from vastkeep.providers.base import (
    COMFYUI_PORT,
    SSH_PORT,
    Instance,
    Offer,
    OfferSpec,
    Phase,
    RentOrder,
)


def stub_signature(instance: Instance) -> str:
    """The stub's change fingerprint: phase, fatal reason, status word, address and label."""
    ports = ",".join(f"{k}={v}" for k, v in sorted(instance.ports.items()))
    return "|".join(str(x) for x in (instance.phase, instance.fatal_reason, instance.status_word,
                                     instance.public_ip, ports, instance.ssh_proxy_host,
                                     instance.ssh_proxy_port, instance.label))


class StubProvider:
    """A :class:`~vastkeep.providers.base.Provider` held in memory (not thread-safe; one test at a time)."""

    def __init__(self, offers: Iterable[Offer] = (), *, first_id: int = 1000) -> None:
        self.offers: list[Offer] = list(offers)
        self.machines: dict[int, Instance] = {}
        self.orders: dict[int, RentOrder] = {}
        self.logs: dict[int, str] = {}
        self.calls: list[tuple[str, object]] = []
        self._failures: dict[str, list[VastkeepError]] = {}
        self._next_id = first_id

    # ── test controls ────────────────────────────────────────────────────────
    def put(self, instance: Instance) -> Instance:
        """Store ``instance`` as the cloud's truth (its signature recomputed)."""
        stored = dataclasses.replace(instance, signature=stub_signature(instance))
        self.machines[stored.id] = stored
        return stored

    def change(self, instance_id: int, **changes: object) -> Instance:
        """Change fields of a stored instance (``phase=Phase.OTHER``, ``public_ip=...``)."""
        return self.put(dataclasses.replace(self.machines[instance_id], **changes))  # type: ignore[arg-type]

    def boot(self, instance_id: int, ip: str = "198.51.100.7", *, comfyui_port: int = 41234,
             ssh_port: int = 41231, proxy: tuple[str, int] | None = ("gw.stub.example", 2222)) -> Instance:
        """The instance runs: a public IP, ComfyUI's and sshd's mappings, and an SSH gateway."""
        host, port = proxy if proxy is not None else (None, None)
        return self.change(instance_id, phase=Phase.RUNNING, status_word="up", public_ip=ip,
                           ports={f"{COMFYUI_PORT}/tcp": comfyui_port, f"{SSH_PORT}/tcp": ssh_port},
                           ssh_proxy_host=host, ssh_proxy_port=port)

    def fail(self, instance_id: int, reason: str = "machine lost") -> Instance:
        """The cloud says the instance will not come back."""
        return self.change(instance_id, fatal_reason=reason, status_word="broken")

    def fail_next(self, method: str, error: VastkeepError) -> None:
        """The next call of ``method`` raises ``error``."""
        self._failures.setdefault(method, []).append(error)

    def _enter(self, method: str, arg: object = None) -> None:
        self.calls.append((method, arg))
        queued = self._failures.get(method)
        if queued:
            raise queued.pop(0)

    def _get(self, instance_id: int) -> Instance:
        found = self.machines.get(int(instance_id))
        if found is None:
            raise NotFound(f"stub: no instance {instance_id}", instance_id=instance_id)
        return found

    # ── the Provider interface ───────────────────────────────────────────────
    def instances(self) -> list[Instance]:
        self._enter("instances")
        return sorted(self.machines.values(), key=lambda i: i.id)

    def instance(self, instance_id: int) -> Instance:
        self._enter("instance", instance_id)
        return self._get(instance_id)

    def find_offers(self, spec: OfferSpec) -> list[Offer]:
        self._enter("find_offers", spec)
        return list(self.offers)[:spec.limit]

    def rent_offer(self, offer_id: int, order: RentOrder) -> int:
        self._enter("rent_offer", (offer_id, order))
        offer = next((o for o in self.offers if o.id == offer_id), None)
        if offer is None:
            raise NotFound(f"stub: no offer {offer_id}", offer_id=offer_id)
        self.offers.remove(offer)
        iid = self._next_id
        self._next_id += 1
        self.orders[iid] = order
        self.put(Instance(id=iid, phase=Phase.STARTING, label=order.label, gpu_name=offer.gpu_name,
                          price_per_hour=offer.price_per_hour, reliability=offer.reliability,
                          host_id=offer.host_id))
        return iid

    def destroy(self, instance_id: int) -> bool:
        self._enter("destroy", instance_id)
        return self.machines.pop(int(instance_id), None) is not None

    def start(self, instance_id: int) -> None:
        self._enter("start", instance_id)
        self.change(self._get(instance_id).id, phase=Phase.STARTING, status_word=None)

    def stop(self, instance_id: int) -> None:
        self._enter("stop", instance_id)
        self.change(self._get(instance_id).id, phase=Phase.OTHER, status_word="stopped")

    def set_label(self, instance_id: int, label: str) -> None:
        self._enter("set_label", (instance_id, label))
        self.change(self._get(instance_id).id, label=label)

    def container_logs(self, instance_id: int, tail: int = 1000, *, wait_s: float = 30.0,
                       url_guard: Callable[[str], str] | None = None) -> str:
        self._enter("container_logs", instance_id)
        self._get(instance_id)
        lines = self.logs.get(int(instance_id), "").splitlines(keepends=True)
        return "".join(lines[-max(1, tail):])


__all__ = ["StubProvider", "stub_signature"]
