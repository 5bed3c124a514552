"""What the system observed of each fault (pure): the first event or clean answer after it, per family."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from vastkeep.soak.counters.base import DETECTION_BOUND_S, RECOVERY_GRACE_S, FamilyRow, Record, num, summary
from vastkeep.soak.plan import FAMILIES


def observe_instance_fault(inj: Record, events: Sequence[Record]) -> float | None:
    """Seconds from the injection to the first event on its instance of a kind that family counts, within
    the fault's window (an undone fault: until its undo plus :data:`RECOVERY_GRACE_S`; a lasting one: the
    guide's :data:`DETECTION_BOUND_S`); a later event is not credited to this fault."""
    fam = FAMILIES[str(inj["family"])]
    at, target = num(inj["at"]), str(inj.get("target"))
    if fam.restorable and fam.hold_s[1] > 0:
        until = num(inj.get("restored_at") or at + fam.hold_s[1]) + RECOVERY_GRACE_S
    else:
        until = at + DETECTION_BOUND_S
    for ev in events:
        ts = num(ev["ts"])
        data = ev.get("data") or {}
        if (
            ev.get("kind") in fam.observed_by
            and isinstance(data, Mapping)
            and str(data.get("instance_id")) == target
            and at - 0.5 <= ts <= until
        ):
            return max(0.0, ts - at)
    return None


def observe_api_fault(inj: Record, requests: Sequence[Record]) -> float | None:
    """Seconds from the injection to vastkeep's first clean answer after it was served the fault (it retried
    and recovered); None when the fault was never served, or no request came after it."""
    at = num(inj["at"])
    served = [r for r in requests if r.get("fault") and num(r.get("ts") or 0) >= at - 0.5]
    if not served:
        return None
    first = min(num(r["ts"]) for r in served)
    for r in sorted(requests, key=lambda r: num(r.get("ts") or 0)):
        ts = num(r.get("ts") or 0)
        status = r.get("status")
        if ts > first and not r.get("fault") and isinstance(status, int) and status < 400:
            return max(0.0, ts - at)
    return None


def family_table(injections: Sequence[Record], planned: Iterable[str]) -> dict[str, FamilyRow]:
    """Per family: planned, injected, observed and the detection times (``observed_s`` of each injection);
    for ``comfy-crash`` also how many struck under a client's prompt (``under_prompt``)."""
    out: dict[str, FamilyRow] = {}
    for name in planned:
        out.setdefault(name, {"planned": 0, "injected": 0, "observed": 0, "detection_s": []})
        out[name]["planned"] += 1
    for inj in injections:
        row = out.setdefault(
            str(inj["family"]), {"planned": 0, "injected": 0, "observed": 0, "detection_s": []}
        )
        if inj.get("injected"):
            row["injected"] += 1
            if inj.get("under_prompt"):
                row["under_prompt"] = row.get("under_prompt", 0) + 1
            if inj.get("observed_s") is not None:
                row["observed"] += 1
                row["detection_s"].append(num(inj["observed_s"]))
    for name, row in out.items():
        if name == "comfy-crash":
            row.setdefault("under_prompt", 0)
        row["detection"] = summary(row.pop("detection_s"))
        row["ok"] = row["planned"] == 0 or (row["injected"] > 0 and row["observed"] > 0)
    return out
