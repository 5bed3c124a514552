"""The warm pool's offer search, as pure functions: what to ask the provider for and which offer to rent.

The provider turns :meth:`OfferParams.spec` into its own query
(:meth:`vastkeep.providers.Provider.find_offers`) and may ignore a filter, so :func:`rank_offers` checks
every offer again before one is picked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vastkeep.core.settings import Settings
from vastkeep.providers import Offer, OfferSpec
from vastkeep.providers import vast_offer_query as _provider_query


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

    def spec(self) -> OfferSpec:
        """The search in the provider seam's terms."""
        return OfferSpec(gpu_name=self.gpu_name, num_gpus=self.num_gpus, min_gpu_ram_gb=self.min_gpu_ram_gb,
                         max_price_per_hour=self.max_dph, min_reliability=self.min_reliability,
                         disk_gb=self.disk_gb, limit=self.limit)


def offer_query(params: OfferParams) -> dict[str, object]:
    """The first provider's query body for ``params`` (kept for callers of this name; the pool itself asks
    through :meth:`vastkeep.providers.Provider.find_offers`)."""
    return _provider_query(params.spec())


def rank_offers(offers: Iterable[Offer], params: OfferParams,
                exclude_machines: Iterable[int] = ()) -> list[Offer]:
    """Offers that really match (the provider may ignore a filter), cheapest first, then most reliable.

    An offer without a price is never picked: the spend cap could not be checked.
    """
    skip = set(exclude_machines)
    good = [o for o in offers
            if o.price_per_hour is not None and o.price_per_hour <= params.max_dph
            and (o.reliability is None or o.reliability >= params.min_reliability)
            and o.direct_ports
            and (not params.gpu_name or o.gpu_name == params.gpu_name)
            and (o.host_id is None or o.host_id not in skip)]
    return sorted(good, key=lambda o: (o.price_per_hour or 0.0, -(o.reliability or 0.0), o.id))


def pick_offer(offers: Iterable[Offer], params: OfferParams,
               exclude_machines: Iterable[int] = ()) -> Offer | None:
    """The cheapest matching offer, or None."""
    ranked = rank_offers(offers, params, exclude_machines)
    return ranked[0] if ranked else None


__all__ = ["OfferParams", "offer_query", "pick_offer", "rank_offers"]
