"""What operators do to the warm pool (admin API and CLI share these): size it, switch safe mode, look at it.

Inputs are validated here, once, so ``PUT /warm-pool/size`` and ``vastkeep pool size`` refuse the same values
with the same words (``InvalidInput`` naming the field).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vastkeep.core.clock import iso
from vastkeep.core.errors import InvalidInput
from vastkeep.pool import safety
from vastkeep.pool.aftercare import after_lease_views
from vastkeep.pool.book import CAUSE_OPERATOR, PoolBook
from vastkeep.pool.plan import (
    DESTROYED,
    LIVE_STATUSES,
    PendingRent,
    is_sick,
    make_label,
    slot_of,
    spend_rate,
)
from vastkeep.state import EventSink, as_text

MAX_REASON_CHARS = 300


def parse_size(value: Any, max_size: int) -> int:
    """A desired size from user input: a whole number 0..``max_size`` (WARM_POOL_MAX_SIZE)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput(f"desiredSize must be a whole number from 0 to {max_size}", field="desiredSize")
    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or int(text) > max_size:
        raise InvalidInput(f"desiredSize must be a whole number from 0 to {max_size} (WARM_POOL_MAX_SIZE), "
                           f"got {text[:20]!r}", field="desiredSize")
    return int(text)


def set_size(store: Any, events: EventSink | None, value: Any, max_size: int) -> dict[str, int]:
    """Store the new desired size; the next reconcile round converges to it."""
    size = parse_size(value, max_size)
    previous = store.get_pool().desired_size
    store.set_desired_size(size)
    if events is not None and previous != size:
        events.emit("pool-resized", desired_size=size, previous=previous)
    return {"desiredSize": size, "previous": previous}


def safe_mode_view(store: Any, book: PoolBook) -> dict[str, Any]:
    """``{"enabled", "reason", "cause", "since"}`` (cause: operator|token|failures|spend, None when off;
    since: ISO 8601)."""
    pool = store.get_pool()
    cause = book.cause() if pool.safe_mode else None
    return {"enabled": pool.safe_mode, "reason": pool.safe_mode_reason,
            "cause": (cause or CAUSE_OPERATOR) if pool.safe_mode else None,
            "since": iso(book.since()) if pool.safe_mode else None}


def set_safe_mode(store: Any, book: PoolBook, events: EventSink | None, enabled: Any, reason: Any,
                  now: float) -> dict[str, Any]:
    """An operator switches safe mode; ``enabled`` must be a JSON boolean, ``reason`` short text or None."""
    if not isinstance(enabled, bool):
        raise InvalidInput("enabled must be true or false", field="enabled")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
        raise InvalidInput(f"reason must be text of at most {MAX_REASON_CHARS} characters", field="reason")
    if enabled:
        safety.enter(store, book, events, CAUSE_OPERATOR, reason or "switched on by an operator", now)
    else:
        safety.leave(store, book, events, reason or "switched off by an operator", now)
    return safe_mode_view(store, book)


def pool_figures(settings: Any, book: PoolBook, records: Sequence[Any], safe_mode: bool,
                 leases: Any = None, now: float | None = None, desired: int = 0) -> dict[str, Any]:
    """Pool-level status figures: rents in flight, spend rate and cap, the safe-mode cause, the slots."""
    pending = book.pending()
    prefix, name = settings.warm_pool_label_prefix, settings.warm_pool_name
    mine = [r for r in records if slot_of(r.label, prefix, name) is not None]
    return {
        "slots": slot_views(mine, pending, desired, prefix, name),
        "poolName": name,
        "pendingRents": len(pending),
        "unknownRents": sum(1 for p in pending if p.state != "sending"),
        "liveInstances": sum(1 for r in mine if r.status in LIVE_STATUSES and not is_sick(r)),
        "spendDph": spend_rate(mine, pending, prefix),
        "maxSpendDph": settings.warm_pool_max_spend_dph,
        "safeModeCause": (book.cause() or CAUSE_OPERATOR) if safe_mode else None,
        "lastRound": last_round_view(book.last_round()),
        "leases": _lease_views(leases, now),
        "afterLease": _after_lease(leases, mine, now),
    }


def last_round_view(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """The last reconcile round's summary as people read it: its time ``at`` in ISO 8601."""
    if summary is None:
        return None
    at = summary.get("at")
    return {**summary, "at": iso(float(at)) if isinstance(at, int | float) else at}


def slot_views(records: Sequence[Any], pending: Sequence[PendingRent], desired: int, prefix: str,
               name: str) -> list[dict[str, Any]]:
    """Slot by slot (0 up to the desired size or the highest one taken): the instance holding its label, a
    rent in flight for it, or free. A dead instance keeps its slot until destroyed, so its replacement is
    rented into another one: ``slots`` may run past the desired size while that happens."""
    holders: dict[int, list[Any]] = {}
    for rec in records:
        slot = slot_of(rec.label, prefix, name)
        if slot is not None and rec.status != DESTROYED:
            holders.setdefault(slot, []).append(rec)
    rents = {p.slot: p for p in pending}
    top = max([desired - 1, *holders, *rents], default=-1)
    out = []
    for slot in range(top + 1):
        held = sorted(holders.get(slot, []), key=lambda r: r.instance_id)
        rent = rents.get(slot)
        view: dict[str, Any] = {
            "slot": slot, "label": make_label(prefix, name, slot),
            "instanceId": held[0].instance_id if held else None,
            "status": held[0].status if held else ("renting" if rent else "free"),
            "rent": rent.state if rent else None,
        }
        if len(held) > 1:
            view["duplicates"] = [r.instance_id for r in held[1:]]
        out.append(view)
    return out


def _after_lease(leases: Any, records: Sequence[Any], now: float | None) -> dict[str, str]:
    """Instances whose lease ended and whose health check has not passed (``checking``/``check-failed``)."""
    if leases is None or now is None:
        return {}
    entries = {as_text(i): v for i, v in leases.redis.hgetall(leases.keys.pool_leases(leases.pool)).items()}
    return after_lease_views(entries, {r.instance_id: r for r in records}, now)


def _lease_views(leases: Any, now: float | None) -> list[dict[str, Any]]:
    """Every live client lease (never its lease id: that is the holder's capability)."""
    if leases is None or now is None:
        return []
    return [{"instanceId": iid, "client": e.get("client"), "leasedUntil": iso(float(e.get("until") or 0)),
             "fence": e.get("fence")} for iid, e in sorted(leases.active(now).items())]


__all__ = ["last_round_view", "parse_size", "pool_figures", "safe_mode_view", "set_safe_mode", "set_size",
           "slot_views"]
