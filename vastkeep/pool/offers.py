"""The warm pool's offer search, as pure functions: the ``POST /bundles/`` body and which offer to rent.

Vast.ai may ignore a filter, so :func:`rank_offers` checks every offer again before one is picked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vastkeep.core.settings import Settings
from vastkeep.providers.vast_models import VastOffer


@dataclass(frozen=True)
class OfferParams:
    """The offer search (from ``Settings``: see :meth:`from_settings`)."""

    gpu_name: str | None = None
    num_gpus: int = 1
    min_gpu_ram_gb: int = 16
    max_dph: float = 1.0
    min_reliability: float = 0.98
    disk_gb: int = 60
    limit: int = 64

    @classmethod
    def from_settings(cls, settings: Settings) -> OfferParams:
        name = settings.warm_pool_gpu_name
        return cls(gpu_name=None if not name or name.strip().lower() == "any" else name.strip(),
                   num_gpus=settings.warm_pool_num_gpus, min_gpu_ram_gb=settings.warm_pool_min_gpu_ram_gb,
                   max_dph=settings.warm_pool_max_dph, min_reliability=settings.warm_pool_min_reliability,
                   disk_gb=settings.warm_pool_disk_gb)


def offer_query(params: OfferParams) -> dict[str, object]:
    """The ``POST /bundles/`` body: rentable, verified, a direct port (Layer 3 needs one), cheapest first.

    ``gpu_ram`` is in MB as Vast.ai reports it (a "16 GB" card reports about 16,300).
    """
    query: dict[str, object] = {
        "rentable": {"eq": True},
        "verified": {"eq": True},
        "rented": {"eq": False},
        "direct_port_count": {"gte": 1},
        "num_gpus": {"eq": params.num_gpus},
        "dph_total": {"lte": params.max_dph},
        "reliability2": {"gte": params.min_reliability},
        "disk_space": {"gte": params.disk_gb},
        "order": [["dph_total", "asc"]],
        "type": "on-demand",
        "limit": params.limit,
    }
    if params.min_gpu_ram_gb > 0:
        query["gpu_ram"] = {"gte": params.min_gpu_ram_gb * 1000}
    if params.gpu_name:
        query["gpu_name"] = {"eq": params.gpu_name}
    return query


def rank_offers(offers: Iterable[VastOffer], params: OfferParams,
                exclude_machines: Iterable[int] = ()) -> list[VastOffer]:
    """Offers that really match (the provider may ignore a filter), cheapest first, then most reliable.

    An offer without a price is never picked: the spend cap could not be checked.
    """
    skip = set(exclude_machines)
    good = [o for o in offers
            if o.dph_total is not None and o.dph_total <= params.max_dph
            and (o.reliability is None or o.reliability >= params.min_reliability)
            and (o.direct_port_count or 0) >= 1
            and (not params.gpu_name or o.gpu_name == params.gpu_name)
            and (o.machine_id is None or o.machine_id not in skip)]
    return sorted(good, key=lambda o: (o.dph_total or 0.0, -(o.reliability or 0.0), o.id))


def pick_offer(offers: Iterable[VastOffer], params: OfferParams,
               exclude_machines: Iterable[int] = ()) -> VastOffer | None:
    """The cheapest matching offer, or None."""
    ranked = rank_offers(offers, params, exclude_machines)
    return ranked[0] if ranked else None


__all__ = ["OfferParams", "offer_query", "pick_offer", "rank_offers"]
