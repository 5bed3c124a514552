"""Text views for the CLI: ``vastkeep status`` (the system) and ``vastkeep pool status`` (the warm pool).

Pure: each function takes the documents the admin API serves (the warm-pool status document, the token
status) and returns lines, so what the terminal shows and what the API answers cannot drift apart.

* ``vastkeep status`` — the system overview: processes, checks, :func:`token_lines`, one
  :func:`pool_summary_line`, then every instance with its status (:func:`instance_rows`).
* ``vastkeep pool status`` — the warm-pool document (:func:`pool_document_lines`): the guide's fields, slots,
  client leases (never their ids), safe mode, why the pool waits.
"""

from __future__ import annotations

from collections.abc import Mapping

from vastkeep.state.status import InstanceStatus
from vastkeep.state.store import COMFYUI_LOST_REASON

S = InstanceStatus
#: A document as the admin API serves it (decoded JSON).
Doc = Mapping[str, object]

INSTANCE_COLUMNS = (("id", "contractId", 10), ("status", "status", 10), ("provider", "vastStatus", 9),
                    ("reason", "statusReason", 30), ("url", "connectionUrl", 28),
                    ("last poll", "lastPollAt", 9), ("next poll", "nextPollAt", 9),
                    ("leased until", "leasedUntil", 20))
_CLOCK_COLUMNS = frozenset({"lastPollAt", "nextPollAt"})  # shown as HH:MM:SS (UTC)


def _doc(value: object) -> Doc:
    """``value`` when it is a JSON object, else an empty one (a missing or null field shows as ``-``)."""
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _num(value: object) -> float:
    """A JSON number (0 for anything else: an absent figure)."""
    return float(value) if isinstance(value, int | float) else 0.0


def _cell(value: object, width: int, key: str = "") -> str:
    text = "-" if value in (None, "") else str(value).replace("+00:00", "Z")
    if key in _CLOCK_COLUMNS and len(text) >= 19:
        text = text[11:19]
    return text if len(text) <= width else text[:width - 1] + "…"


def instance_rows(view: Doc) -> list[str]:
    """The instances of a warm-pool status document as fixed-width table lines (header first)."""
    lines = ["  " + " ".join(f"{title:<{w}}" for title, _, w in INSTANCE_COLUMNS)]
    for item in _list(view.get("instances")):
        inst = {**_doc(item), "statusReason": _reason(_doc(item))}
        lines.append("  " + " ".join(f"{_cell(inst.get(k), w, k):<{w}}" for _, k, w in INSTANCE_COLUMNS))
    return lines


def _reason(inst: Doc) -> object:
    """The record's status reason; for an instance whose ComfyUI stopped answering (Layer 4), since when."""
    lost = inst.get("comfyuiLostSince")
    reason = inst.get("statusReason")
    if not lost or (reason and reason != COMFYUI_LOST_REASON):
        return reason
    return f"ComfyUI down since {str(lost)[11:19]}"


def token_lines(tokens: Mapping[str, Doc]) -> list[str]:
    """One line per service: the last verdict the workers stored (``{"result", "runtimeOverride",
    "configured"}``); ``not configured`` when the stack has no token for it (``configured`` False)."""
    out = []
    for service, info in tokens.items():
        if info.get("configured") is False and not info.get("runtimeOverride"):
            out.append(f"  token {service:<12} not configured")
            continue
        result = _doc(info.get("result"))
        verdict = result.get("status") or ("configured, no recent check" if info.get("configured")
                                           else "no recent check")
        error = f" ({result['error']})" if result.get("error") else ""
        when = f", checked {str(result['testedAt'])[:19].replace('T', ' ')}" if result.get("testedAt") else ""
        runtime = ", runtime token" if info.get("runtimeOverride") else ""
        out.append(f"  token {service:<12} {verdict}{error}{when}{runtime}")
    return out


def pool_summary_line(doc: Doc) -> str:
    """The warm pool in one line (``vastkeep status``); the whole document is ``vastkeep pool status``."""
    counts = _doc(doc.get("counts"))
    by = _doc(counts.get("byStatus"))
    figures = _doc(doc.get("pool"))
    name = figures.get("poolName") or "default"
    warming = int(_num(by.get(S.STARTING)) + _num(by.get(S.LOADING)))
    cause = figures.get("safeModeCause") or "operator"
    safe = f"SAFE MODE ({cause})" if doc.get("safeMode") else "safe mode off"
    lost = f"ComfyUI lost {counts['comfyuiLost']}, " if counts.get("comfyuiLost") else ""
    lost += f"checked after a lease {counts['checking']}, " if counts.get("checking") else ""
    return (f"  warm pool {name}: desired {doc.get('desiredSize')}, ready {by.get(S.READY, 0)}, {lost}"
            f"warming {warming}, renting {figures.get('pendingRents', 0)}, leased {counts.get('leased', 0)}, "
            f"{safe}  (details: vastkeep pool status)")


def pool_document_lines(doc: Doc) -> list[str]:
    """The warm-pool status document as text: guide fields, slots, leases, safe mode, waits, instances."""
    figures = _doc(doc.get("pool"))
    lines = [f"pool {figures.get('poolName', 'default')}: desired {doc['desiredSize']}, "
             f"live {figures.get('liveInstances', 0)}, renting {figures.get('pendingRents', 0)}, "
             f"spend {_num(figures.get('spendDph')):.3f}/{figures.get('maxSpendDph')} $/h, "
             f"prewarming {'yes' if doc.get('isPrewarming') else 'no'}"]
    if doc.get("safeMode"):
        lines.append(f"  SAFE MODE ({figures.get('safeModeCause')}): {doc.get('safeModeReason')}")
    else:
        lines.append("  safe mode: off")
    inst = _doc(doc.get("instance"))
    if inst:
        lines.append(f"  instance: {inst['contractId']} {inst['status']} {inst.get('connectionUrl') or '-'}"
                     f"  last heartbeat {inst.get('lastHeartbeat') or '-'}"
                     f"  leased until {inst.get('leasedUntil') or '-'}")
    else:
        lines.append("  instance: none")
    slots = [_doc(slot) for slot in _list(figures.get("slots"))]
    lines.append(f"  slots ({len(slots)}):" if slots else "  slots: none")
    for slot in slots:
        rent = f" (rent {slot['rent']})" if slot.get("rent") else ""
        dup = (f" + duplicates {', '.join(str(d) for d in _list(slot['duplicates']))}"
               if slot.get("duplicates") else "")
        lines.append(f"    {slot['slot']:>3}  {slot['label']:<24} {slot.get('instanceId') or '-':>10}  "
                     f"{slot['status']}{rent}{dup}")
    leases = [_doc(lease) for lease in _list(figures.get("leases"))]
    lines.append(f"  leases ({len(leases)}):" if leases else "  leases: none")
    for lease in leases:
        lines.append(f"    {lease['instanceId']:>10}  client {lease.get('client')}  until "
                     f"{lease.get('leasedUntil')}  fence {lease.get('fence')}")
    for reason in _list(_doc(figures.get("lastRound")).get("wait")):
        lines.append(f"  waiting: {reason}")
    lines.append("  instances:")
    lines.extend(instance_rows(doc))
    return lines


__all__ = ["INSTANCE_COLUMNS", "instance_rows", "pool_document_lines", "pool_summary_line", "token_lines"]
