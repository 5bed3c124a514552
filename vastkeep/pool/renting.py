"""The life of a rent inside a reconcile round: searched, recorded as pending *before* it is sent, sent,
then resolved by its label (adopted, or expired after ``WARM_POOL_RENT_SETTLE_MS``).

:class:`Renting` is mixed into the round (``vastkeep.pool.reconcile``), which owns the listing, the plan and
the destroys; the pure pieces (what the pool rents, the first record of an instance found by its label) are
plain functions here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from enum import StrEnum
from typing import TYPE_CHECKING

from vastkeep.core.errors import (
    AuthError,
    InvalidRequest,
    LeaseLost,
    NotFound,
    RentOutcomeUnknown,
    VastkeepError,
)
from vastkeep.core.settings import Settings
from vastkeep.polling import PollSchedule
from vastkeep.pool import safety
from vastkeep.pool.book import CAUSE_SPEND, CAUSE_TOKEN
from vastkeep.pool.plan import (
    PendingRent,
    RecordLike,
    RentState,
    make_label,
    rank_offers,
    spend_allows,
    spend_rate,
)
from vastkeep.pool.report import RoundReport
from vastkeep.providers import Instance, Offer, Phase, Provider, RentOrder, record_from_instance
from vastkeep.providers import vast_rent_env as _provider_env
from vastkeep.providers.base import COMFYUI_PORT
from vastkeep.state import InstanceRecord, InstanceStatus, Lease, LeaseKeeper

if TYPE_CHECKING:
    from vastkeep.pool.reconcile import Reconciler

log = logging.getLogger("vastkeep.pool")

#: At most this many rents per round (the next round, one beat interval later, rents the rest).
MAX_RENTS_PER_ROUND = 25
#: Offers tried for one slot before the round gives up on it (offers vanish between search and rent).
OFFER_ATTEMPTS = 3


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


class RentOutcome(StrEnum):
    """How one rent attempt ended, for the slot's loop."""

    RENTED = "rented"
    NEXT = "next"  # the offer was gone: try another for this slot
    STOP = "stop"  # stop renting this round


class Renting:
    """The rent steps of a round (mixed into it: the round sets these attributes)."""

    rc: Reconciler
    lease: Lease
    keeper: LeaseKeeper
    now: float
    report: RoundReport
    vast: Provider
    used_machines: set[int]

    # ── 2. rents in flight ──────────────────────────────────────────────────
    def _resolve_pending(self, by_label: dict[str, list[Instance]]) -> set[str]:
        """Adopt or expire every pending rent; returns the labels still in flight."""
        rc = self.rc
        waiting: set[str] = set()
        for pend in rc.book.pending():
            found = by_label.get(pend.label) or []
            if found:
                keep = found[0]
                self._adopt(keep, pend.slot, pend)
                if pend.state != RentState.SENDING:
                    rc.events.emit("rent-resolved", label=pend.label, outcome="adopted",
                                   instance_id=str(keep.id))
                rc.book.drop_pending(pend)
                continue
            if self.now - pend.started_at > rc.settings.warm_pool_rent_settle_s:
                rc.book.drop_pending(pend)
                log.warning("rent of %s never showed up at Vast.ai within %.0f s: the slot is free again",
                            pend.label, rc.settings.warm_pool_rent_settle_s)
                if pend.state != RentState.SENDING:
                    rc.book.add_failure(f"rent:{pend.label}:{pend.started_at!r}", self.now)
                rc.events.emit("rent-resolved", label=pend.label, outcome="absent", instance_id=None)
                continue
            waiting.add(pend.label)
        return waiting

    def _adopt(self, vi: Instance, slot: int, pend: PendingRent | None) -> None:
        rc = self.rc
        rec = record_from_provider(vi, slot, rc.params.pool, self.now)
        if pend is not None:
            rec.extra["offer_id"] = pend.offer_id
            rec.price_per_hour = rec.price_per_hour if rec.price_per_hour is not None else pend.dph
        if rc.store.create_instance(rec):
            self._follow(rec.instance_id)
            self.report.adopted.append(rec.instance_id)
            log.info("adopted instance %s by its label %s", rec.instance_id, vi.label)
            rc.events.emit("instance-rented", instance_id=rec.instance_id, label=vi.label, slot=slot,
                           offer_id=pend.offer_id if pend else None, dph=rec.price_per_hour, adopted=True)

    # ── 5b. rent ────────────────────────────────────────────────────────────
    def _rent(self, slots: Sequence[int], records: Sequence[RecordLike]) -> None:
        rc, s = self.rc, self.rc.settings
        offers = rank_offers(self.vast.find_offers(rc.offers.spec()), rc.offers, self.used_machines)
        spend = spend_rate(records, rc.book.pending(), rc.params.prefix)
        for slot in list(slots)[:MAX_RENTS_PER_ROUND]:
            if rc.store.get_pool().safe_mode:
                return
            for _ in range(OFFER_ATTEMPTS):
                offer = next((o for o in offers if o.host_id not in self.used_machines), None)
                price = offer.price_per_hour if offer is not None else None
                if offer is None or price is None:  # rank_offers keeps only priced offers
                    self.report.wait.append("no offer matches the search (WARM_POOL_GPU_NAME, _MAX_DPH, "
                                            "_MIN_RELIABILITY, ...)")
                    return
                if offer.host_id is not None:
                    self.used_machines.add(offer.host_id)
                offers.remove(offer)
                if not spend_allows(spend, price, s.warm_pool_max_spend_dph):
                    safety.enter(rc.store, rc.book, rc.events, CAUSE_SPEND,
                                 f"spend cap: {spend:.3f} $/h + {price:.3f} $/h for the next "
                                 f"rent > "
                                 f"WARM_POOL_MAX_SPEND_DPH={s.warm_pool_max_spend_dph}", self.now)
                    return
                outcome = self._rent_one(slot, offer)
                if outcome is RentOutcome.RENTED:
                    spend += price
                    break
                if outcome is RentOutcome.STOP:
                    return
                # NEXT: the offer was gone; try the next one for this slot

    def _rent_one(self, slot: int, offer: Offer) -> RentOutcome:
        """Rent ``offer`` into ``slot``; see :class:`RentOutcome`."""
        rc, s = self.rc, self.rc.settings
        label = make_label(rc.params.prefix, rc.params.pool, slot)
        self._renew()
        pend = PendingRent(slot=slot, label=label, started_at=rc.clock.now(), offer_id=offer.id,
                           dph=offer.price_per_hour)
        added = rc.book.add_pending(pend, self.lease)
        if added == -1:
            raise LeaseLost(f"lease {self.lease.name!r} lost before renting", name=self.lease.name,
                            fence=self.lease.fence)
        if added == 0:
            return RentOutcome.STOP  # a rent for this slot is already in flight
        try:
            instance_id = self.vast.rent_offer(offer.id, rent_order(s, label))
        except AuthError as exc:  # TokenInvalid from the pre-flight, or a 401/403 on the rent itself
            rc.book.drop_pending(pend)
            safety.enter(rc.store, rc.book, rc.events, CAUSE_TOKEN,
                         f"the Vast.ai key is rejected ({exc.message[:120]})", self.now)
            return RentOutcome.STOP
        except RentOutcomeUnknown as exc:
            unknown = replace(pend, state=RentState.UNKNOWN)
            rc.book.replace_pending(pend, unknown)
            self.report.unknown.append(label)
            rc.events.emit("rent-unknown", label=label, offer_id=offer.id, reason=exc.data.get("reason"))
            return RentOutcome.STOP
        except (NotFound, InvalidRequest) as exc:
            rc.book.drop_pending(pend)
            log.info("offer %s could not be rented (%s); trying another", offer.id, exc.message[:120])
            self.report.errors.append(f"offer {offer.id}: {type(exc).__name__}")
            return RentOutcome.NEXT
        except VastkeepError as exc:  # transient: Vast.ai certainly did not act (429, connection refused)
            rc.book.drop_pending(pend)
            self.report.errors.append(f"rent {label}: {type(exc).__name__}")
            log.warning("rent of %s not sent (%s); the next round tries again", label, exc.message[:120])
            return RentOutcome.STOP
        rec = InstanceRecord(instance_id=str(instance_id), status=InstanceStatus.STARTING, label=label,
                             gpu_name=offer.gpu_name, price_per_hour=offer.price_per_hour,
                             created_at=rc.clock.now(),
                             extra={"pool": rc.params.pool, "slot": slot, "offer_id": offer.id,
                                    "machine_id": offer.host_id})
        rc.store.create_instance(rec)
        self._follow(rec.instance_id)
        rc.book.drop_pending(pend)
        self.report.rented.append(rec.instance_id)
        log.info("rented instance %s into %s (offer %s, %.3f $/h)", instance_id, label, offer.id,
                 offer.price_per_hour)
        rc.events.emit("instance-rented", instance_id=rec.instance_id, label=label, slot=slot,
                       offer_id=offer.id, dph=offer.price_per_hour, adopted=False)
        return RentOutcome.RENTED

    def _renew(self) -> None:
        self.keeper.check()

    def _follow(self, instance_id: str) -> None:
        """Layer 5 polls a new instance now (so it joins the active set and the snapshot's short refresh)
        instead of at its discovery by the next idle-age snapshot refresh, up to 30 s later."""
        PollSchedule(self.rc.book.redis, self.rc.book.keys, self.rc.clock).poll_now(instance_id)




__all__ = ["MAX_RENTS_PER_ROUND", "OFFER_ATTEMPTS", "RentOutcome", "Renting", "record_from_provider",
           "rent_env", "rent_order"]
