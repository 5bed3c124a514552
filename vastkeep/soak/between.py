"""Between machines in the soak (issue 20): what the Redis faults and the host B faults showed.

- Redis restarted or away (``redis-restart``, ``redis-away``): nothing is granted while it is away, from two
  sources other than vastkeep's records: the clients' grants (requested after the fault, answered before
  Redis was back) and the cloud's ledger (rents performed while it was away, past
  :data:`IN_FLIGHT_S` for a request already on its way). Both feed the must-never count
  ``granted-while-redis-away``.
- Host B cut off (``host-cut``) or its keepalive worker paused past its lease TTL (``pause-holder``): which
  keepalive shards host B held when struck (:func:`hostb_shards`), when each was held by a grant taken after
  the fault (``moved_at``: observed), and, once host B is back, how many of its renewals the fences refused
  (``refused``: its keepalive worker's ``lease lost`` lines after the fault ended). A fault on host B strikes
  only while host B holds a shard (:func:`hostb_shards`); otherwise there is nothing to move or refuse.

The pure parts take plain data; :func:`count_refusals` reads one log file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from vastkeep.soak import counters as judge
from vastkeep.soak.injector import Injection
from vastkeep.soak.plan import FAMILIES

REDIS_FAMILIES = ("redis-restart", "redis-away")
HOSTB_FAMILIES = ("host-cut", "pause-holder")
IN_FLIGHT_S = 5.0  # a rent or grant requested before Redis went away may be answered this much later
REFUSED_MARK = "lease lost"  # the keepalive runner's line for a renewal or fenced write refused


def redis_away_windows(injections: Iterable[Injection]) -> list[tuple[float, float]]:
    """``(away, could answer again)`` of each Redis fault that came back (epoch seconds).

    Away: a stopped Redis from when it first failed to answer (``gone_at``; it serves on for a moment after
    ``SIGTERM``), else from the signal. Back: a restarted Redis from its new process's start (the supervisor's
    time), a frozen one from its ``SIGCONT``; not from when the soak noticed (``back_at``), a sample later."""
    out = []
    for i in injections:
        if not i.get("injected") or i["family"] not in REDIS_FAMILIES or not i.get("back_at"):
            continue
        end = i.get("spawned_at") or i.get("restored_at") or i["back_at"]
        out.append((float(i.get("gone_at") or i["at"]), min(float(end), float(i["back_at"]))))
    return out


def exited_children(before: Mapping[str, int], now: Mapping[str, Mapping[str, object]],
                    own_faults: Iterable[str]) -> list[str]:
    """Children (not Redis) whose restart count rose since a Redis fault struck, other than those a fault of
    their own struck meanwhile: they exited instead of reconnecting by themselves."""
    skip = {"redis", *own_faults}
    return sorted(cid for cid, st in now.items() if cid not in skip
                  and judge.whole(st.get("restartCount") or 0) > before.get(cid, 0))


def granted_while_away(
    windows: Sequence[tuple[float, float]], lines: Sequence[judge.Record], ledger: Sequence[judge.Record]
) -> list[dict[str, object]]:
    """Client grants requested and answered inside a window, and ledger rents performed inside one."""
    found: list[dict[str, object]] = []
    for line in lines:
        if line.get("op") != "grant":
            continue
        t0, t = judge.num(line.get("t0") or line.get("t") or 0), judge.num(line.get("t") or 0)
        for a, b in windows:
            if a <= t0 and t <= b:
                found.append({"source": "client", "instance": line.get("instance"), "t": t,
                              "asked_after_away_s": round(t0 - a, 3),
                              "answered_before_back_s": round(b - t, 3)})
    for e in ledger:
        ts = judge.num(e.get("ts") or 0)
        for a, b in windows:
            if e.get("action") == "rent" and a + IN_FLIGHT_S <= ts <= b:
                found.append({"source": "ledger", "instance": e.get("instance_id"), "t": ts,
                              "after_away_s": round(ts - a, 3)})
    return found


def stolen(inj: Injection, owners: Mapping[str, int | None] | None, hostb_pids: set[int]) -> bool:
    """True when every shard host B held at the fault is now held by a process of another host."""
    held = inj.get("hostb_shards") or []
    return bool(held) and owners is not None and all(
        owners.get(n) is not None and owners.get(n) not in hostb_pids for n in held)


def pids_of_group(leader: int | None) -> set[int]:
    """The processes of ``leader``'s process group (a worker and its pool), from /proc."""
    if not leader:
        return set()
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == leader:
                    out.add(int(entry.name))
            except OSError:
                continue
    return out


def hostb_shards(owners: Mapping[str, int | None] | None, hostb_pids: set[int]) -> list[str]:
    """The keepalive shards whose live lease a process of host B holds."""
    return sorted(name for name, pid in (owners or {}).items() if pid is not None and pid in hostb_pids)


def moved(inj: Injection, shards: Mapping[str, float | None] | None) -> bool:
    """True when every shard host B held at the fault is held by a grant taken after it."""
    held = inj.get("hostb_shards") or []
    if not held or not shards:
        return False
    return all((shards.get(n) or 0.0) > float(inj["at"]) for n in held)


def count_refusals(log: Path, since: float, until: float | None = None) -> int:
    """Lines of host B's keepalive log, from ``since`` to ``until``, where a renewal or a fenced write was
    refused."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return 0
    n = 0
    for line in text.splitlines():
        if REFUSED_MARK in line and log_mark_after_line(line, since) \
                and (until is None or not log_mark_after_line(line, until)):
            n += 1
    return n


def log_mark_after_line(line: str, since: float) -> bool:
    """True when a Celery log line is stamped at or after ``since`` (epoch seconds)."""
    from datetime import datetime  # noqa: PLC0415

    try:
        return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp() >= since - 1.0
    except ValueError:
        return False


def summary_rows(injections: Sequence[Injection]) -> list[dict[str, object]]:
    """One row per Redis / host B fault for the report: outage, shards moved and when, refusals."""
    rows: list[dict[str, object]] = []
    for inj in injections:
        fam = FAMILIES[inj["family"]]
        if not inj.get("injected") or inj["family"] not in (*REDIS_FAMILIES, *HOSTB_FAMILIES):
            continue
        at = float(inj["at"])
        back = inj.get("back_at") or inj.get("restored_at")
        outage = round(float(back) - at, 1) if back else None
        row: dict[str, object] = {"family": fam.name, "outage_s": outage}
        if fam.name in REDIS_FAMILIES:
            row["exited"] = ",".join(inj.get("exited") or []) or "none"
        if fam.name in HOSTB_FAMILIES:
            row["shards"] = len(inj.get("hostb_shards") or [])
            moved_at = inj.get("moved_at")
            row["moved_after_s"] = round(float(moved_at) - at, 1) if moved_at else None
            row["refused"] = inj.get("refused", 0)
        rows.append(row)
    return rows


__all__ = [
    "HOSTB_FAMILIES",
    "REDIS_FAMILIES",
    "count_refusals",
    "exited_children",
    "granted_while_away",
    "hostb_shards",
    "moved",
    "pids_of_group",
    "redis_away_windows",
    "stolen",
    "summary_rows",
]
