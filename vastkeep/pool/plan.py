"""The warm pool's decisions, as pure functions: what to rent, what to destroy, what it costs (which offer:
:mod:`vastkeep.pool.offers`, re-exported here).

Everything here takes plain values and returns plain values (no Redis, no HTTP, no clock), so the whole
policy is table-tested (``tests/unit/test_pool_plan.py``) and the reconciler only carries a plan out.

Slots and labels: every instance the pool rents is labelled ``<prefix>:<pool>:<slot>``. A slot stays
taken by any record of the pool that is not yet destroyed (a failed one being destroyed included) and by
a rent in flight, so two live instances never share a label: a label lookup after a rent whose outcome is
unknown then finds at most that one rent (or duplicates of it, which are ours to destroy).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from vastkeep.core.settings import Settings
from vastkeep.pool.offers import OfferParams, offer_query, pick_offer, rank_offers
from vastkeep.state.status import (
    DEAD_STATUSES,
    LIVE_STATUSES,
    PROVISIONING_STATUSES,
    SICK_STATUSES,
    InstanceStatus,
)
from vastkeep.state.store import COMFYUI_LOST_REASON, comfyui_lost_since

S = InstanceStatus
#: A destroy that was started: tried again until it went through.
DESTROYING = S.DESTROYING
DESTROYED = S.DESTROYED
#: Destroy order among idle instances beyond the desired size: the least useful first.
_EXCESS_ORDER: dict[str, int] = {S.UNHEALTHY: 0, S.STARTING: 1, S.LOADING: 2, S.READY: 3}


class DestroyReason(StrEnum):
    """Why the pool destroys an instance (stable strings: events, logs and records carry them)."""

    FAILED = "failed"
    GONE = "gone"
    PROVISION_TIMEOUT = "provision-timeout"
    UNHEALTHY = "unhealthy"
    KEEPALIVE_LOST = COMFYUI_LOST_REASON
    #: A sick instance (ComfyUI lost) whose replacement is ready, or that leaves no room under the spend cap
    #: for its replacement: destroyed before its grace ends (never while leased: like ``excess``).
    LOST_REPLACED = "keepalive: connection lost, replaced"
    EXCESS = "excess"
    RETRY_DESTROY = "destroy-retry"
    #: a second instance under one label (a rent answered twice): the unrecorded one goes
    DUPLICATE = "duplicate"


REASON_FAILED = DestroyReason.FAILED
REASON_GONE = DestroyReason.GONE
REASON_PROVISION_TIMEOUT = DestroyReason.PROVISION_TIMEOUT
REASON_UNHEALTHY = DestroyReason.UNHEALTHY
REASON_KEEPALIVE_LOST = DestroyReason.KEEPALIVE_LOST
REASON_LOST_REPLACED = DestroyReason.LOST_REPLACED
REASON_EXCESS = DestroyReason.EXCESS
REASON_RETRY_DESTROY = DestroyReason.RETRY_DESTROY
REASON_DUPLICATE = DestroyReason.DUPLICATE
#: Reasons that mean the instance died, it was not unwanted (its destruction is an ``instance-replaced``).
REPLACE_REASONS = frozenset({REASON_FAILED, REASON_GONE, REASON_PROVISION_TIMEOUT, REASON_UNHEALTHY,
                             REASON_KEEPALIVE_LOST, REASON_LOST_REPLACED})


class RecordLike(Protocol):
    """What the plan reads from an instance record (``vastkeep.state.InstanceRecord`` fits)."""

    instance_id: str
    status: InstanceStatus
    label: str | None
    created_at: float | None
    updated_at: float | None
    leased_until: float | None
    price_per_hour: float | None
    error: str | None
    extra: dict[str, Any]  # JSON from the record, read by key
    status_since: float | None


class RentState(StrEnum):
    """Where a rent in flight is (stored with it in the pool's book)."""

    SENDING = "sending"  # recorded, its request being sent
    UNKNOWN = "unknown"  # sent, but its answer was lost: resolved by label


def _first(*values: float | None) -> float:
    return next(v for v in values if v is not None)


@dataclass(frozen=True)
class PendingRent:
    """A rent recorded before its request was sent; it holds its slot until resolved by label."""

    slot: int
    label: str
    started_at: float
    offer_id: int | None = None
    dph: float | None = None
    state: str = "sending"  # RentState: sending | unknown (the answer was lost)

    def to_dict(self) -> dict[str, object]:
        return {"slot": self.slot, "label": self.label, "started_at": self.started_at,
                "offer_id": self.offer_id, "dph": self.dph, "state": self.state}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PendingRent:  # JSON as stored, checked by the casts
        return cls(slot=int(data["slot"]), label=str(data["label"]), started_at=float(data["started_at"]),
                   offer_id=None if data.get("offer_id") is None else int(data["offer_id"]),
                   dph=None if data.get("dph") is None else float(data["dph"]),
                   state=str(data.get("state") or RentState.SENDING))


@dataclass(frozen=True)
class PlanParams:
    """The knobs of one plan (from ``Settings``: see :meth:`from_settings`)."""

    prefix: str = "vastkeep"
    pool: str = "default"
    provision_timeout_s: float = 900.0
    unhealthy_grace_s: float = 300.0
    #: the spend cap (``WARM_POOL_MAX_SPEND_DPH``) and the most one rent may cost (``WARM_POOL_MAX_DPH``):
    #: a sick instance's replacement is rented beside it only when both fit; None: no such check here
    max_spend_dph: float | None = None
    max_offer_dph: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> PlanParams:
        return cls(prefix=settings.warm_pool_label_prefix, pool=settings.warm_pool_name,
                   provision_timeout_s=settings.warm_pool_provision_timeout_s,
                   unhealthy_grace_s=settings.warm_pool_unhealthy_grace_s,
                   max_spend_dph=settings.warm_pool_max_spend_dph, max_offer_dph=settings.warm_pool_max_dph)


@dataclass(frozen=True)
class Plan:
    """What one reconcile round does: rent these slots, destroy these (id, reason), and why it waits."""

    rent: tuple[int, ...] = ()
    destroy: tuple[tuple[str, DestroyReason], ...] = ()
    wait_reasons: tuple[str, ...] = ()
    live: int = 0
    pending: int = 0
    desired: int = 0
    slots: Mapping[str, int] = field(default_factory=dict)  # instance id → slot, for events

    def to_dict(self) -> dict[str, object]:
        return {"rent": list(self.rent), "destroy": [list(d) for d in self.destroy],
                "wait": list(self.wait_reasons), "live": self.live, "pending": self.pending,
                "desired": self.desired}


# ── labels ───────────────────────────────────────────────────────────────────
def make_label(prefix: str, pool: str, slot: int) -> str:
    """``<prefix>:<pool>:<slot>``: how the pool (and polling, by prefix) recognises its instances."""
    if slot < 0:
        raise ValueError(f"slot must be >= 0, got {slot}")
    return f"{prefix}:{pool}:{slot}"


def slot_of(label: str | None, prefix: str, pool: str) -> int | None:
    """The slot of a label of *this* pool, or None (another pool's, unlabelled, or malformed)."""
    if not label:
        return None
    head = f"{prefix}:{pool}:"
    if not label.startswith(head):
        return None
    tail = label[len(head):]
    return int(tail) if tail.isascii() and tail.isdigit() and len(tail) <= 6 else None


def is_ours(label: str | None, prefix: str) -> bool:
    """Any pool's label under our prefix: the only instances vastkeep may destroy on its own."""
    return bool(label) and str(label).startswith(f"{prefix}:")


def is_leased(record: RecordLike, now: float) -> bool:
    return record.leased_until is not None and now < record.leased_until


# ── the plan ─────────────────────────────────────────────────────────────────
def _dead_reason(record: RecordLike, now: float, params: PlanParams) -> DestroyReason | None:
    """Why a record must go (and be replaced), or None while it still counts."""
    if record.status == DESTROYING:
        return REASON_RETRY_DESTROY
    if record.status in DEAD_STATUSES:
        return REASON_GONE if record.status == S.GONE else REASON_FAILED
    if record.status in PROVISIONING_STATUSES:
        # from when it last *entered* provisioning: an old instance bounced back to loading (ComfyUI
        # restarted, host rebooted) gets the whole timeout again; created_at only for records from before
        # the store stamped status_since
        started = _first(record.status_since, record.created_at, now)
        if now - started > params.provision_timeout_s:
            return REASON_PROVISION_TIMEOUT
    lost = comfyui_lost_since(record)  # Layer 4: ComfyUI unreachable since then (its grace counts from there)
    if lost is not None:
        return REASON_KEEPALIVE_LOST if now - lost > params.unhealthy_grace_s else None
    if record.status == S.UNHEALTHY:
        since = (record.extra or {}).get("unhealthy_since", record.updated_at)
        if isinstance(since, int | float) and now - since > params.unhealthy_grace_s:
            return REASON_UNHEALTHY
    return None


def is_sick(record: RecordLike) -> bool:
    """A ready (or unhealthy) instance whose ComfyUI Layer 4 finds lost: it no longer counts towards the
    desired size, but keeps its grace to recover."""
    return record.status in SICK_STATUSES and comfyui_lost_since(record) is not None


def was_lost(record: RecordLike) -> bool:
    """It lost ComfyUI once and recovered (``extra.keepalive_last_loss_at``): trimmed first when surplus."""
    return not is_sick(record) and isinstance((record.extra or {}).get("keepalive_last_loss_at"), int | float)


def plan_pool(records: Iterable[RecordLike], desired_size: int, safe_mode: bool,
              pending_rents: Iterable[PendingRent], now: float, params: PlanParams | None = None) -> Plan:
    """Rent N / destroy these / wait, from the records of this pool (others are ignored).

    - failed/gone, stuck provisioning past the timeout, unhealthy or ComfyUI lost past the grace →
      destroyed and replaced (even when leased: a dead instance serves nobody; the holder gets
      ``instance-replaced``);
    - sick (ComfyUI lost, :func:`is_sick`) → no longer counted, so its replacement is rented at once; it
      keeps its grace to recover, and is destroyed before that (idle only) once as many ready healthy
      instances as desired exist without it, or when the spend cap leaves no room for its replacement;
    - beyond the desired size → idle ones destroyed: first one that lost ComfyUI and recovered
      (:func:`was_lost`) — kept, but still counted as the excess, until the ready healthy ones cover the
      desired size — then unhealthy, starting, loading, ready; newest first. Never a leased one before its
      lease ends (counted in ``wait_reasons``). So a flapping ComfyUI costs one replacement, not one per loss;
    - below it → rent into the lowest free slot numbers, unless in safe mode. Safe mode still destroys dead
      and excess instances: it stops *spending*, and destroying only lowers the spend.
    Rents in flight count as live for renting but are never destroyed (they are not instances yet).
    """
    params = params or PlanParams()
    desired = max(0, int(desired_size))
    pending = list(pending_rents)
    taken: set[int] = {p.slot for p in pending}
    destroy: list[tuple[str, DestroyReason]] = []
    live: list[RecordLike] = []
    sick: list[RecordLike] = []
    billed: list[RecordLike] = []
    slots: dict[str, int] = {}
    wait: list[str] = []
    for record in records:
        slot = slot_of(record.label, params.prefix, params.pool)
        if slot is None or record.status == DESTROYED:
            continue
        slots[record.instance_id] = slot
        taken.add(slot)  # until destroyed: labels stay unique among existing instances
        reason = _dead_reason(record, now, params)
        if reason is not None:
            destroy.append((record.instance_id, reason))
            continue
        billed.append(record)
        if is_sick(record):
            sick.append(record)
        elif record.status in LIVE_STATUSES:
            live.append(record)
    healthy_ready = sum(1 for r in live if r.status == S.READY and not was_lost(r))
    idle_sick = sorted((r for r in sick if not is_leased(r, now)),
                       key=lambda r: (comfyui_lost_since(r) or 0.0, r.instance_id))
    if idle_sick and healthy_ready >= desired:  # replaced: surplus now
        destroy.extend((r.instance_id, REASON_LOST_REPLACED) for r in idle_sick)
        idle_sick = []
    excess = len(live) - desired
    if excess > 0:
        wait.extend(_trim(live, excess, healthy_ready, desired, now, destroy))
    missing = desired - len(live) - len(pending)
    rent: list[int] = []
    if missing > 0 and safe_mode:
        wait.append(f"safe mode: {missing} instance(s) not rented")
    elif missing > 0:
        if idle_sick:
            wait.extend(_room_for_replacements(billed, pending, idle_sick, missing, params, destroy))
        slot = 0
        while len(rent) < missing:
            if slot not in taken:
                rent.append(slot)
            slot += 1
    if sick and not safe_mode:
        kept = [r.instance_id for r in sick if (r.instance_id, REASON_LOST_REPLACED) not in destroy]
        if kept:
            wait.append(f"ComfyUI lost on {', '.join(kept)}: replaced, kept within its grace to recover")
    unknown = [p for p in pending if p.state != RentState.SENDING]
    if pending:
        wait.append(f"{len(pending)} rent(s) in flight" +
                    (f", {len(unknown)} with an unknown outcome awaiting their label" if unknown else ""))
    return Plan(rent=tuple(rent), destroy=tuple(destroy), wait_reasons=tuple(wait), live=len(live),
                pending=len(pending), desired=desired, slots=slots)


def _trim(live: list[RecordLike], excess: int, healthy_ready: int, desired: int, now: float,
          destroy: list[tuple[str, DestroyReason]]) -> list[str]:
    """Destroy ``excess`` idle instances (appended to ``destroy``); returns why some were kept."""
    wait: list[str] = []
    order = sorted(live, key=lambda r: (not was_lost(r), _EXCESS_ORDER.get(r.status, 0),
                                        -(r.created_at or 0.0), r.instance_id))
    kept_leased = 0
    for record in order:
        if excess <= 0:
            break
        leased = is_leased(record, now)
        if was_lost(record):  # the one to go: nothing healthier is trimmed in its place
            excess -= 1
            if leased:
                kept_leased += 1
            elif healthy_ready < desired:
                wait.append(f"instance {record.instance_id} (ComfyUI recovered) kept until its replacement "
                            "is ready")
            else:
                destroy.append((record.instance_id, REASON_EXCESS))
        elif not leased:
            destroy.append((record.instance_id, REASON_EXCESS))
            excess -= 1
    kept_leased += max(0, excess)
    if kept_leased:
        wait.append(f"{kept_leased} leased instance(s) beyond the desired size kept until their lease ends")
    return wait


def _room_for_replacements(billed: list[RecordLike], pending: list[PendingRent], idle_sick: list[RecordLike],
                           missing: int, params: PlanParams,
                           destroy: list[tuple[str, DestroyReason]]) -> list[str]:
    """Destroy idle sick instances (oldest loss first) while ``missing`` rents at the highest price allowed
    would pass the spend cap beside them: the cap is kept and the replacement still comes at once."""
    if params.max_spend_dph is None or params.max_offer_dph is None:
        return []
    spend = sum(r.price_per_hour or 0.0 for r in billed) + sum(p.dph or 0.0 for p in pending)
    need = missing * params.max_offer_dph
    freed: list[str] = []
    for record in idle_sick:
        if spend + need <= params.max_spend_dph + 1e-9:
            break
        destroy.append((record.instance_id, REASON_LOST_REPLACED))
        spend -= record.price_per_hour or 0.0
        freed.append(record.instance_id)
    if not freed:
        return []
    return [f"spend cap: {', '.join(freed)} (ComfyUI lost) destroyed before its grace to make room"]


# ── spending ─────────────────────────────────────────────────────────────────
def spend_rate(records: Iterable[RecordLike], pending: Sequence[PendingRent], prefix: str) -> float:
    """$/h of every instance of ours not yet destroyed (the dying still bill) plus rents in flight."""
    total = sum(r.price_per_hour or 0.0 for r in records
                if r.status != DESTROYED and is_ours(r.label, prefix))
    return round(total + sum(p.dph or 0.0 for p in pending), 6)


def spend_allows(current_dph: float, offer_dph: float, cap_dph: float) -> bool:
    """True when renting one more at ``offer_dph`` keeps the rate at or under the cap."""
    return current_dph + offer_dph <= cap_dph + 1e-9


__all__ = [
    "DEAD_STATUSES", "LIVE_STATUSES", "PROVISIONING_STATUSES", "REPLACE_REASONS", "SICK_STATUSES",
    "DestroyReason", "OfferParams", "PendingRent", "RentState",
    "Plan", "PlanParams", "is_leased", "is_ours", "is_sick", "make_label", "offer_query", "pick_offer",
    "plan_pool", "rank_offers", "slot_of", "spend_allows", "spend_rate", "was_lost",
]
