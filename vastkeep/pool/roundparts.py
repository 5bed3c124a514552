"""Small pieces of a reconcile round: what it reports (two rounds merged), the rent's container env, the first
record of an instance found by its label, the record as the plan sees it under a live client lease.

Kept apart from ``reconcile`` so that module stays about carrying the plan out.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from vastkeep.core.settings import Settings
from vastkeep.pool.aftercare import LeaseEntry
from vastkeep.providers import Instance, Phase, RentOrder, record_from_instance
from vastkeep.providers.base import COMFYUI_PORT
from vastkeep.providers.vast_map import rent_env as _provider_env
from vastkeep.state import InstanceRecord, InstanceStatus


def rent_order(settings: Settings, label: str) -> RentOrder:
    """What the pool rents: the image, its disk, ComfyUI's and sshd's ports published, its launch args."""
    return RentOrder(image=settings.warm_pool_image, label=label, disk_gb=settings.warm_pool_disk_gb,
                     env={"COMFYUI_ARGS": settings.warm_pool_comfyui_args},
                     onstart=settings.warm_pool_onstart)


def rent_env(settings: Settings) -> dict[str, str]:
    """The first provider's rent env for the pool's order (kept for callers of this name)."""
    return _provider_env(rent_order(settings, ""))


def record_from_provider(vi: Instance, slot: int, pool: str, now: float) -> InstanceRecord:
    """A first record for an instance found by its label (polling refines it from then on)."""
    port = vi.host_port(COMFYUI_PORT)
    status = InstanceStatus.LOADING if vi.phase is Phase.RUNNING else InstanceStatus.STARTING
    return record_from_instance(
        vi, status, created_at=vi.started_at if vi.started_at else now,
        extra={"pool": pool, "slot": slot, "adopted": True, **({"port_8188": port} if port else {})})


def with_lease(rec: InstanceRecord, entry: LeaseEntry | None) -> InstanceRecord:
    """The record as the plan must see it: a live client lease (the truth) over the record's mirror."""
    if entry is None:
        return rec
    until = max(float(entry.get("until") or 0), rec.leased_until or 0.0)
    return replace(rec, leased_until=until, lease_owner=entry.get("client") or rec.lease_owner)


@dataclass
class RoundReport:
    """What one round did (a task's small JSON result)."""

    rented: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    destroyed: list[list[str]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    wait: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    plan: dict[str, object] = field(default_factory=dict)
    safe_mode: bool = False
    fence: int = 0

    def to_dict(self) -> dict[str, object]:
        return {"rented": self.rented, "adopted": self.adopted, "destroyed": self.destroyed,
                "unknown": self.unknown, "wait": self.wait, "errors": self.errors, "plan": self.plan,
                "safeMode": self.safe_mode, "fence": self.fence}

    def then(self, again: RoundReport) -> RoundReport:
        """This round and the next under the same lease as one: what both did; the plan, waits and safe
        mode of the last."""
        return replace(again, rented=self.rented + again.rented, adopted=self.adopted + again.adopted,
                       destroyed=self.destroyed + again.destroyed, unknown=self.unknown + again.unknown,
                       errors=self.errors + again.errors)


__all__ = ["RoundReport", "record_from_provider", "rent_env", "rent_order", "with_lease"]
