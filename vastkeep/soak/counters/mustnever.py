"""The must-never counts (pure), each from a source other than vastkeep's own records: the clients' holds,
the cloud's ledger, the remote log files, the texts searched for canaries. One exception, narrow: a hold
whose client asked to release it and never heard back ends where vastkeep's event says that grant was
released (the client had walked away from it; without the event the hold runs to its end)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from vastkeep.soak.counters.base import LEASE_CLOCK_SLACK_S, Hold, Record, iso_s, num, whole


def lease_holds(
    lines: Sequence[Record],
    breaks: Mapping[str, Sequence[float]] | None = None,
    moves: Sequence[tuple[float, str, str]] = (),
    released: Mapping[tuple[str, int], float] | None = None,
) -> list[Hold]:
    """Each grant as a hold ``{lease, instance, client, fence, start, end}``: it ends at its release (or a
    refused renewal), else at its ``leasedUntil`` (left to expire, or its client was killed), and at the
    latest when vastkeep broke it (``breaks``: instance id → times of lease-broken events).

    A release whose answer never came (a timeout, a 5xx) ended nothing the client knows of; when a later
    attempt is answered, the hold ended when the first attempt was sent (it may have landed then); when none
    is, it ended where vastkeep ended that grant on a release (``released``: ``(instance, fence)`` → time of
    its ``pool-lease-ended`` event, reason ``released``), if that came after the first attempt was sent (the
    API wrote the release and was killed before it answered: 30-minute soak seed 280816024). A failover
    (``moves``: ``(time, from instance, to instance)``) ends the hold on its old instance (a break there) and
    goes on as a hold of the new one: the lease holds that instance from then on."""
    holds: dict[str, Hold] = {}
    unanswered: dict[str, float] = {}  # lease -> when its first unanswered release was sent
    for line in lines:
        op, lease = line.get("op"), str(line.get("lease"))
        if op == "grant":
            holds[lease] = {
                "lease": line.get("lease"),
                "instance": str(line.get("instance")),
                "client": line.get("client"),
                "fence": line.get("fence"),
                "start": num(line.get("t") or 0),
                "end": iso_s(line.get("leased_until")) or num(line.get("t") or 0),
            }
        elif op in ("renew", "release") and lease in holds:
            h, status = holds[lease], line.get("status")
            sent = num(line.get("t0") or line.get("t") or h["end"])
            if op == "renew" and status == 200:
                h["end"] = iso_s(line.get("leased_until")) or h["end"]
            elif op == "release" and (status is None or whole(status) >= 500):
                unanswered.setdefault(lease, sent)
            elif status is not None:  # released, or refused: the hold ended at the latest here
                h["end"] = min(h["end"], unanswered.get(lease, sent))
    for lease, sent in unanswered.items():
        h = holds[lease]
        ended = (released or {}).get((str(h["instance"]), whole(h["fence"] or 0)))
        if ended is not None and sent - LEASE_CLOCK_SLACK_S <= ended < h["end"]:
            h["end"] = ended
    out = list(holds.values())
    moved: set[tuple[object, str]] = set()  # (lease, instance): the proxy and the pool both report a move
    for t, old, new in sorted(moves):
        for h in list(out):
            if h["instance"] == old and h["start"] <= t < h["end"] and (h["lease"], new) not in moved:
                moved.add((h["lease"], new))
                out.append({**h, "instance": new, "start": t})
    for h in out:
        for tb in sorted((breaks or {}).get(h["instance"], ())):
            if h["start"] <= tb < h["end"]:
                h["end"] = tb
                break
    return sorted(out, key=lambda h: h["start"])


def double_leases(holds: Sequence[Hold], slack_s: float = 0.5) -> list[dict[str, object]]:
    """Pairs of holds of one instance by two leases that overlap by more than ``slack_s``."""
    by_inst: dict[str, list[Hold]] = defaultdict(list)
    for h in holds:
        by_inst[str(h["instance"])].append(h)
    found: list[dict[str, object]] = []
    for inst, hs in by_inst.items():
        hs = sorted(hs, key=lambda h: h["start"])
        for i, a in enumerate(hs):
            for b in hs[i + 1 :]:
                if b["start"] >= a["end"] - slack_s or b["lease"] == a["lease"]:
                    continue  # apart, or one lease (its hold moved away and back): not two holders
                found.append(
                    {
                        "instance": inst,
                        "first": a["client"],
                        "second": b["client"],
                        "overlap_s": round(min(a["end"], b["end"]) - b["start"], 3),
                    }
                )
    return found


def fence_regressions(grants: Sequence[tuple[float, str, object]]) -> list[dict[str, object]]:
    """``(time, instance, fence)`` grants, from any source: per instance, a fence not above the one before."""
    last: dict[str, int] = {}
    found: list[dict[str, object]] = []
    for t, inst, fence in sorted(grants, key=lambda g: g[0]):
        if fence is None:
            continue
        f = whole(fence)
        if inst in last and f <= last[inst]:
            found.append({"instance": inst, "fence": f, "previous": last[inst], "t": t})
        last[inst] = max(f, last.get(inst, f))
    return found


def double_rents(ledger: Sequence[Record]) -> list[dict[str, object]]:
    """Rents of a label while an instance with that label was still alive (from the cloud's own ledger)."""
    alive: dict[object, set[int]] = defaultdict(set)
    found: list[dict[str, object]] = []
    for e in sorted(ledger, key=lambda e: num(e.get("seq", 0))):
        label, iid = e.get("label"), whole(e["instance_id"])
        if e.get("action") == "rent":
            if label and alive[label]:
                found.append({"label": label, "instance_id": iid, "alive": sorted(alive[label])})
            if label:
                alive[label].add(iid)
        elif e.get("action") == "destroy" and label:
            alive[label].discard(iid)
    return found


def unknown_billing(
    cloud_ids: Iterable[Iterable[object]], known_ids: Iterable[Iterable[object]]
) -> list[str]:
    """Instances the cloud bills in every snapshot that vastkeep's records know in none of them."""
    clouds = [set(map(str, s)) for s in cloud_ids]
    knowns = set().union(*[set(map(str, s)) for s in known_ids]) if known_ids else set()
    steady = set.intersection(*clouds) if clouds else set()
    return sorted(steady - knowns)


def log_diff(remote: str, collected: str) -> dict[str, int]:
    """Lines lost and duplicated: the collected text against the span of the remote file it covers (the
    runner passes the remote bytes up to the collector's offset: a collector that lags has lost nothing).
    A line is lost when collected fewer times than it occurs there, duplicated when collected more often."""
    want: dict[str, int] = defaultdict(int)
    got: dict[str, int] = defaultdict(int)
    for line in remote.splitlines():
        want[line] += 1
    for line in collected.splitlines():
        got[line] += 1
    lost = sum(max(0, n - got[k]) for k, n in want.items())
    dup = sum(max(0, n - want[k]) for k, n in got.items())
    return {"lost": lost, "duplicated": dup, "due": sum(want.values())}


def canary_hits(texts: Mapping[str, str], canaries: Mapping[str, str]) -> list[dict[str, str]]:
    """Every (source, canary name) where a planted secret's value appears; the values never in the answer."""
    return [
        {"source": src, "canary": name}
        for src, text in texts.items()
        for name, value in canaries.items()
        if value and value in text
    ]
