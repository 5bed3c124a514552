"""The soak's report (pure): one JSON document, its verdict, and the printed table.

:func:`build_report` takes what the runner gathered and judged and decides the verdict: the run fails when
a planned fault family was injected 0 times or never observed, when any client-visible failure count or any
must-never count is above 0, or when a killed process was not restarted. docs/reliability.md explains
every figure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TypedDict

from vastkeep.soak.counters import (
    CLIENT_FAILURE_KINDS,
    MUST_NEVER_KINDS,
    ClientVerdict,
    FamilyRow,
    Record,
    Summary,
    num,
    summary,
)


class DaemonRow(TypedDict, total=False):
    """Per process kind: kills, restarts, success rate and downtime."""

    crashes: int
    restarted: int
    down_s: list[float]
    success_rate: float | None
    down_total_s: float
    down: Summary


class Report(TypedDict, total=False):
    """The soak's JSON document; the runner adds the keys after ``notes``."""

    ok: bool
    reasons: list[str]
    seed: int
    minutes: float
    startedAt: str
    machine: dict[str, object]
    plan: list[Record]
    faults: dict[str, FamilyRow]
    clientFailures: dict[str, int]
    clientExpected: dict[str, int]
    clientExamples: dict[str, list[dict[str, object]]]
    clientOps: dict[str, int]
    leaseGrants: int
    leaseGrantLatencyS: Summary | None
    mustNever: dict[str, int]
    mustNeverExamples: dict[str, list[object]]
    daemons: dict[str, DaemonRow]
    polling: dict[str, Summary]
    notes: list[str]
    warmupS: float
    injections: Sequence[Record]
    clientKills: list[dict[str, object]]
    eventCounts: dict[str, int]
    logicalDaemonRestarts: dict[str, int]
    betweenMachines: list[dict[str, object]]
    folder: str


def daemon_table(restarts: Sequence[Record]) -> dict[str, DaemonRow]:
    """Per process kind: kills, restarts that came back, success rate, downtime (kill → running again)."""
    out: dict[str, DaemonRow] = {}
    for r in restarts:
        row = out.setdefault(str(r["process"]), {"crashes": 0, "restarted": 0, "down_s": []})
        row["crashes"] += 1
        if r.get("down_s") is not None:
            row["restarted"] += 1
            row["down_s"].append(num(r["down_s"]))
    for row in out.values():
        downs = row.pop("down_s")
        row["success_rate"] = round(row["restarted"] / row["crashes"], 4) if row["crashes"] else None
        row["down_total_s"] = round(sum(downs), 3)
        row["down"] = summary(downs)
    return out


def build_report(
    *,
    seed: int,
    minutes: float,
    started_at: str,
    machine: Record,
    plan: Sequence[Record],
    families: Mapping[str, FamilyRow],
    clients: ClientVerdict,
    must_never: Mapping[str, Sequence[object]],
    restarts: Sequence[Record],
    polling: Mapping[str, Summary],
    notes: list[str] | None = None,
) -> Report:
    """The whole report with ``ok`` and the ``reasons`` it is not."""
    reasons = []
    for name, row in sorted(families.items()):
        if row.get("planned") and not row.get("injected"):
            reasons.append(f"fault family {name} was planned but injected 0 times")
        elif row.get("planned") and not row.get("observed"):
            reasons.append(f"fault family {name} was injected {row['injected']} times and never observed")
    failures = dict(clients.get("failures") or {})
    for failure in CLIENT_FAILURE_KINDS:
        if failures.get(failure):
            reasons.append(f"client-visible failure {failure}: {failures[failure]}")
    counts: dict[str, int] = {kind: len(must_never.get(kind) or []) for kind in MUST_NEVER_KINDS}
    for never, n in counts.items():
        if n:
            reasons.append(f"must-never {never}: {n}")
    daemons = daemon_table(restarts)
    for kind, daemon in sorted(daemons.items()):
        if daemon["restarted"] < daemon["crashes"]:
            down = daemon["crashes"] - daemon["restarted"]
            reasons.append(f"{kind}: {down} of {daemon['crashes']} kills not restarted")
    return {
        "ok": not reasons,
        "reasons": reasons,
        "seed": seed,
        "minutes": minutes,
        "startedAt": started_at,
        "machine": dict(machine),
        "plan": list(plan),
        "faults": {k: v.copy() for k, v in families.items()},
        "clientFailures": failures,
        "clientExpected": dict(clients.get("expected") or {}),
        "clientExamples": dict(clients.get("examples") or {}),
        "clientOps": dict(clients.get("ops") or {}),
        "leaseGrants": clients.get("grants", 0),
        "leaseGrantLatencyS": clients.get("grant_latency_s"),
        "mustNever": counts,
        "mustNeverExamples": {k: list(v)[:5] for k, v in must_never.items() if v},
        "daemons": daemons,
        "polling": dict(polling),
        "notes": list(notes or []),
    }


def _fmt(x: object) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.2f}"
    return str(x)


def format_table(report: Report) -> str:
    """The report as the text the command prints."""
    out = [
        f"vastkeep soak: seed {report['seed']}, {report['minutes']} min, started {report['startedAt']}",
        "",
        f"{'fault family':<20} {'planned':>7} {'injected':>8} {'observed':>8} {'det p50':>8} "
        f"{'det p99':>8} {'det max':>8}",
    ]
    for name, row in sorted(report["faults"].items()):
        d: Mapping[str, object] = row.get("detection") or {}
        mark = "" if row.get("ok", True) else "  <-- FAIL"
        out.append(
            f"{name:<20} {row['planned']:>7} {row['injected']:>8} {row['observed']:>8} "
            f"{_fmt(d.get('p50')):>8} {_fmt(d.get('p99')):>8} {_fmt(d.get('max')):>8}{mark}"
        )
    lat: Mapping[str, object] = report.get("leaseGrantLatencyS") or {}
    out += [
        "",
        f"lease grants {report['leaseGrants']}  latency p50 {_fmt(lat.get('p50'))} s  "
        f"p99 {_fmt(lat.get('p99'))} s",
        "",
        "client-visible failures (goal 0):",
    ]
    out += [f"  {k:<22} {v}" for k, v in report["clientFailures"].items()]
    if report.get("clientExpected"):
        out.append(
            "expected under injected faults (not failures): "
            + ", ".join(f"{k} {v}" for k, v in sorted(report["clientExpected"].items()))
        )
    examples = report.get("mustNeverExamples") or {}
    out += ["", "must never happen (goal 0):"] + [
        f"  {k:<22} {v}" + (f"   e.g. {_example(examples[k][0])}" if examples.get(k) else "")
        for k, v in report["mustNever"].items()
    ]
    out += [
        "",
        f"{'daemon':<18} {'kills':>5} {'restarted':>9} {'success':>8} {'down total':>10} {'down max':>9}",
    ]
    for kind, daemon in sorted(report["daemons"].items()):
        out.append(
            f"{kind:<18} {daemon['crashes']:>5} {daemon['restarted']:>9} {_fmt(daemon['success_rate']):>8} "
            f"{_fmt(daemon['down_total_s']):>10} {_fmt(daemon['down'].get('max')):>9}"
        )
    poll = report.get("polling") or {}
    if poll:
        out += ["", "polling intervals seen (s):"]
        for state, s in sorted(poll.items()):
            if isinstance(s, Mapping):
                out.append(
                    f"  {state:<22} n {s.get('n')}  p50 {_fmt(s.get('p50'))}  max {_fmt(s.get('max'))}"
                )
    if report.get("logicalDaemonRestarts"):
        out.append(
            "logical daemons (supervision events): "
            + ", ".join(f"{k} {v}" for k, v in sorted(report["logicalDaemonRestarts"].items()))
        )
    between = report.get("betweenMachines") or []
    if between:
        out += ["", "between machines (outage s; host B: shards it held, moved after s, renewals refused):"]
        out += [
            "  " + "  ".join(f"{k} {v}" for k, v in row.items() if k != "family") + f"  ({row['family']})"
            for row in between
        ]
    for note in report.get("notes") or []:
        out.append(f"note: {note}")
    out += ["", "RESULT: " + ("PASS" if report["ok"] else "FAIL")] + [f"  - {r}" for r in report["reasons"]]
    return "\n".join(out)


def _example(item: object) -> str:
    """One must-never case, short, so a failed run's printout says where to look."""
    return json.dumps(item, default=str)[:160]


__all__ = ["DaemonRow", "Report", "build_report", "daemon_table", "format_table"]
