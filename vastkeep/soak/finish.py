"""The end of a soak (I/O around the pure judges): what each fault showed, the must-never counts, the
figures beside them (event counts, logical daemon restarts, notes on detection above the guide's bounds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from vastkeep.core.clock import Clock
from vastkeep.soak import counters as judge
from vastkeep.soak.injector import Injection
from vastkeep.soak.plan import API, FAMILIES, INSTANCE

if TYPE_CHECKING:
    from vastkeep.soak.observe import Observer
    from vastkeep.soak.stackrun import SoakStack

GUIDE_BOUNDS_S = {"comfy-crash": 2.0}  # the guide's figures; every other family: 150 s


def observe_faults(injections: Sequence[Injection], obs: Observer) -> None:
    """Fill ``observed_s`` of every injected fault (instance: first event; API: first clean answer; process
    and Redis: back and serving again)."""
    for record in injections:
        if not record.get("injected"):
            continue
        fam = FAMILIES[record["family"]]
        if fam.target == INSTANCE:
            record["observed_s"] = judge.observe_instance_fault(record, obs.events)
        elif fam.target == API:
            later = [r for r in obs.requests if judge.num(r.get("ts") or 0) >= record["at"] - 0.5]
            record["observed_s"] = judge.observe_api_fault(record, later)
        elif record.get("back_at"):
            record["observed_s"] = max(0.0, float(record["back_at"]) - float(record["at"]))


def event_counts(obs: Observer) -> tuple[dict[str, int], dict[str, int]]:
    """Events by kind, and supervision's ``process-restarted`` / ``process-failed`` by daemon name."""
    kinds: dict[str, int] = {}
    logical: dict[str, int] = {}
    for ev in obs.events:
        kinds[ev["kind"]] = kinds.get(ev["kind"], 0) + 1
        if ev["kind"] in ("process-restarted", "process-failed"):
            name = str(ev["data"].get("name") or ev["data"].get("id"))
            logical[f"{ev['kind']}:{name}"] = logical.get(f"{ev['kind']}:{name}", 0) + 1
    return kinds, logical


def detection_notes(families: dict[str, judge.FamilyRow]) -> list[str]:
    """A note for each instance family whose worst detection is above the guide's bound."""
    notes = []
    for name, row in sorted(families.items()):
        bound = GUIDE_BOUNDS_S.get(name, judge.DETECTION_BOUND_S)
        detection = row.get("detection")
        worst = detection["max"] if detection else None
        if FAMILIES[name].target == INSTANCE and worst is not None and worst > bound:
            notes.append(f"{name}: detection max {worst:.1f} s is above the guide's {bound:g} s")
    return notes


def must_never(
    obs: Observer, stack: SoakStack, clock: Clock, lines: list[dict[str, object]], holds: list[judge.Hold]
) -> dict[str, Sequence[object]]:
    """Each must-never count from its own source (docs/reliability.md, "must never")."""
    grants = [
        (judge.num(x["t"]), str(x["instance"]), x.get("fence")) for x in lines if x.get("op") == "grant"
    ]
    cloud: list[list[str]] = []
    known: list[list[str]] = []
    for i in range(2):  # two looks 5 s apart: a rent whose record is being written is not unknown
        cloud.append(obs.cloud_ids())
        known.append(obs.known_ids())
        if i == 0:
            clock.sleep(5.0)
    lost: list[dict[str, object]] = []
    dup: list[dict[str, object]] = []
    for iid in sorted(set(cloud[-1]) & set(known[-1])):
        remote = obs.remote_log(iid)
        if remote is None:
            continue
        collected, offset = obs.collected_log(iid)
        if offset <= 0:
            continue  # nothing collected yet: nothing is due
        diff = judge.log_diff(remote[:offset].decode("utf-8", "replace"), collected)
        if diff["lost"]:
            lost.append({"instance": iid, **diff})
        if diff["duplicated"]:
            dup.append({"instance": iid, **diff})
    texts = {
        f"logs/{p.name}": p.read_text(errors="replace")
        for p in sorted((stack.home / "logs").glob("*"))
        if p.is_file()
    }
    info = stack.endpoints
    texts.update(
        {
            "task-results": obs.task_results(),
            "events": obs.events_text(),
            "flower": obs.flower_tasks(info.flower_url, info.flower_user, info.flower_password),
        }
    )
    return {
        judge.MustNever.DOUBLE_RENTS: judge.double_rents(obs.ledger),
        judge.MustNever.DOUBLE_LEASES: judge.double_leases(holds),
        judge.MustNever.FENCE_REGRESSIONS: judge.fence_regressions(grants)
        + judge.fence_regressions(obs.grants_from_events()),
        judge.MustNever.LOG_LINES_LOST: lost,
        judge.MustNever.LOG_LINES_DUPLICATED: dup,
        judge.MustNever.UNKNOWN_BILLING: judge.unknown_billing(cloud, known),
        judge.MustNever.CANARY_LEAKS: judge.canary_hits(texts, stack.canaries),
    }


__all__ = ["GUIDE_BOUNDS_S", "detection_notes", "event_counts", "must_never", "observe_faults"]
