"""What the soak watches (I/O): the event stream, the simulator's request log and ledger, the warm-pool
status, and at the end the sources the must-never counts read (remote log files, task results, Flower, logs).

Sampled every :data:`SAMPLE_S` by the runner's loop; each source is read incrementally (the simulator's
request log is a bounded window of 2,000 entries, so it is drained often).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import requests

from vastkeep.core.clock import SYSTEM_CLOCK
from vastkeep.soak.counters import whole
from vastkeep.state import InstanceStatus

if TYPE_CHECKING:
    from vastkeep.sim.control import SimControl
    from vastkeep.state.leases import Lease
    from vastkeep.supervision.decide import DaemonRecord

SAMPLE_S = 2.0
HTTP_TIMEOUT_S = (2.0, 4.0)


class ObservedEvent(TypedDict):
    """One event of the stream as the judges read it."""

    id: str
    kind: str
    ts: float
    data: dict[str, object]


def _iso_s(value: object) -> float | None:
    from vastkeep.soak.counters import iso_s as parse  # noqa: PLC0415

    return parse(value)


def _state(view: Mapping[str, object]) -> str:
    if view.get("isLeased"):
        return "leased"
    return "ready-idle" if view.get("status") == InstanceStatus.READY else str(view.get("status"))


class Observer:
    """Incremental readers of every source the judges use."""

    def __init__(self, redis_url: str, admin_url: str, admin_key: str, control: SimControl) -> None:
        from vastkeep.state import EventLog, Keys, connect  # noqa: PLC0415

        self.redis = connect(redis_url, socket_timeout_s=5, socket_connect_timeout_s=3)
        # one PING, short deadlines, no retries: "is Redis back?" while a Redis fault holds
        self.probe = connect(redis_url, socket_timeout_s=1, socket_connect_timeout_s=1, retry_attempts=0)
        self.events_log = EventLog(self.redis, Keys(), SYSTEM_CLOCK)
        self.admin = admin_url.rstrip("/")
        self.headers = {"X-Admin-Key": admin_key}
        self.control = control
        self.http = requests.Session()
        self.events: list[ObservedEvent] = []
        self.requests: list[dict[str, object]] = []
        self.ledger: list[dict[str, object]] = []
        self.snapshots: list[tuple[float, list[Mapping[str, object]]]] = []
        self.errors: dict[str, int] = defaultdict(int)
        self._after = "0-0"
        self._req_seq = 0

    # ── sampling ────────────────────────────────────────────────────────────
    def sample(self) -> None:
        for name, step in (
            ("events", self._events),
            ("requests", self._requests),
            ("ledger", self._ledger),
            ("status", self._status),
        ):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - a source down for a moment (a fault) is retried next time
                self.errors[f"{name}: {type(exc).__name__}"] += 1

    def _events(self) -> None:
        while True:
            batch = self.events_log.read(self._after, count=500)
            for ev in batch:
                self.events.append({"id": ev.id, "kind": ev.kind, "ts": ev.ts, "data": ev.fields})
            if batch:
                self._after = batch[-1].id
            if len(batch) < 500:
                return

    def _requests(self) -> None:
        got = self.control.requests_seen(since=self._req_seq, service="vast")
        for r in got:
            self._req_seq = max(self._req_seq, whole(r.get("seq") or 0))
        self.requests.extend(got)

    def _ledger(self) -> None:
        self.ledger.extend(self.control.ledger(since=len(self.ledger)))

    def _status(self) -> None:
        data = self.pool_status()
        if data is not None:
            insts = data.get("instances") or []
            if not isinstance(insts, list):
                raise TypeError("warm-pool status: instances is not a list")
            self.snapshots.append((SYSTEM_CLOCK.now(), [i for i in insts if isinstance(i, Mapping)]))

    def pool_status(self) -> Mapping[str, object] | None:
        r = self.http.get(
            f"{self.admin}/api/proxy/admin/warm-pool/status", headers=self.headers, timeout=HTTP_TIMEOUT_S
        )
        if r.status_code != 200:
            return None
        data: object = r.json()
        if not isinstance(data, Mapping):
            raise TypeError("warm-pool status is not a JSON object")
        return data

    def api_answers(self) -> bool:
        """The admin API answers ``/health`` (any status: the process serves HTTP again)."""
        try:
            self.http.get(f"{self.admin}/health", timeout=(1.0, 3.0))
        except requests.RequestException:
            return False
        return True

    def ready_and_leased(self) -> tuple[list[str], list[str]]:
        """Instance ids the last status showed ready, and those of them leased."""
        if not self.snapshots:
            return [], []
        insts = self.snapshots[-1][1]
        ready = [i for i in insts if i.get("status") == InstanceStatus.READY]
        leased = [i for i in ready if i.get("isLeased")]
        return [str(i["contractId"]) for i in ready], [str(i["contractId"]) for i in leased]

    def free(self) -> list[str]:
        """Instance ids the last status showed ready for a new lease: ready, not leased, ComfyUI not lost, not
        in a check after a lease (where a failover can move a lease to)."""
        if not self.snapshots:
            return []
        return [str(i["contractId"]) for i in self.snapshots[-1][1]
                if i.get("status") == InstanceStatus.READY and not i.get("isLeased")
                and not i.get("comfyuiLostSince") and not i.get("afterLease")]

    def collecting(self) -> list[str]:
        """Instance ids whose SSH log collector beat within the last 10 s (a collector runs while an instance
        provisions and for its hold after; an SSH fault elsewhere has nobody to notice it)."""
        from vastkeep.state import Keys, read_heartbeats  # noqa: PLC0415

        try:
            beats = read_heartbeats(self.redis, Keys(), SYSTEM_CLOCK)
        except Exception:  # noqa: BLE001 - Redis busy for a moment: no target this time
            return []
        return sorted(
            n.split(":", 1)[1]
            for n, b in beats.items()
            if n.startswith("ssh-collector:") and float(b.get("age_s") or 0) < 10.0
        )

    def _shard_records(self) -> dict[str, DaemonRecord] | None:
        """Supervision's record of each keepalive shard; None when Redis did not answer."""
        from vastkeep.keepalive.runner import LEASE_PREFIX  # noqa: PLC0415
        from vastkeep.state import Keys  # noqa: PLC0415
        from vastkeep.supervision.book import SupervisionBook  # noqa: PLC0415

        try:
            book = SupervisionBook(self.redis, Keys()).all()
        except Exception:  # noqa: BLE001 - Redis busy for a moment: unknown
            return None
        return {n: rec for n, rec in book.items() if n.startswith(f"{LEASE_PREFIX}-")}

    def _shard_leases(self) -> dict[str, Lease | None] | None:
        """Each keepalive shard → its live lease (None: free); None when Redis did not answer."""
        from vastkeep.state import Keys  # noqa: PLC0415
        from vastkeep.state.leases import LeaseManager  # noqa: PLC0415

        names = self._shard_records()
        if names is None:
            return None
        try:
            leases = LeaseManager(self.redis, Keys(), SYSTEM_CLOCK)
            return {n: leases.current(n) for n in names}
        except Exception:  # noqa: BLE001 - Redis busy for a moment: unknown
            return None

    def keepalive_shards(self) -> dict[str, float | None] | None:
        """Each keepalive shard supervision knows → when its live lease was granted (None: nobody holds it);
        None when Redis did not answer (unknown, so not settled). A crash is seen through a held ``/ws`` only
        while its shard runs."""
        held = self._shard_leases()
        if held is None:
            return None
        return {n: (lease.acquired_at if lease is not None else None) for n, lease in held.items()}

    def last_handovers(self) -> dict[str, float | None] | None:
        """Each keepalive shard → when supervision last restarted it elsewhere because its holder was gone
        (``lastHandoverTime``; None: never); None when Redis did not answer."""
        records = self._shard_records()
        if records is None:
            return None
        return {n: rec.last_handover_time for n, rec in records.items()}

    def redis_answers(self) -> bool:
        """Redis answers ``PING`` now (after a Redis fault: it serves again)."""
        try:
            return bool(self.probe.ping())
        except Exception:  # noqa: BLE001 - down, frozen or loading its AOF: not back
            return False

    def shard_owners(self) -> dict[str, int | None] | None:
        """Each keepalive shard → the pid of the process holding its live lease (None: free); None when Redis
        did not answer. Only the pid is read from the owner token; the token itself is never kept."""
        held = self._shard_leases()
        if held is None:
            return None
        out: dict[str, int | None] = {}
        for name, lease in held.items():
            parts = lease.owner.split(":") if lease is not None else []
            out[name] = int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None
        return out

    # ── derived views ───────────────────────────────────────────────────────
    def breaks(self) -> dict[str, list[float]]:
        """Instance id → times vastkeep said its lease broke, moved it to another instance (a failover:
        from then on the lease's renew and release answer the new instance) or it was replaced/destroyed."""
        out: dict[str, list[float]] = defaultdict(list)
        for ev in self.events:
            moved = ev["kind"] == "failover-done" and ev["data"].get("to_instance") not in (None, "")
            if moved or ev["kind"] in ("lease-broken", "instance-replaced", "instance-destroyed"):
                out[str(ev["data"].get("instance_id"))].append(float(ev["ts"]))
        return out

    def moves(self) -> list[tuple[float, str, str]]:
        """``(time, from instance, to instance)`` of each failover: the lease holds the new one from then."""
        return [
            (float(ev["ts"]), str(ev["data"].get("instance_id")), str(ev["data"]["to_instance"]))
            for ev in self.events
            if ev["kind"] == "failover-done" and ev["data"].get("to_instance") not in (None, "")
        ]

    def released(self) -> dict[tuple[str, int], float]:
        """``(instance, fence)`` → when vastkeep ended that grant on a release (``pool-lease-ended``)."""
        out: dict[tuple[str, int], float] = {}
        for ev in self.events:
            data = ev["data"]
            if ev["kind"] == "pool-lease-ended" and data.get("reason") == "released":
                out.setdefault((str(data.get("instance_id")), whole(data.get("fence") or 0)), float(ev["ts"]))
        return out

    def comfy_lost(self) -> dict[str, list[tuple[float, float | None]]]:
        """Instance id → spans from ``connection-lost`` to the next ``connection-restored`` (None: lost)."""
        out: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
        for ev in self.events:
            iid = str(ev["data"].get("instance_id"))
            if ev["kind"] == "connection-lost" and not (out[iid] and out[iid][-1][1] is None):
                out[iid].append((float(ev["ts"]), None))
            elif ev["kind"] == "connection-restored" and out[iid] and out[iid][-1][1] is None:
                out[iid][-1] = (out[iid][-1][0], float(ev["ts"]))
        return out

    def grants_from_events(self) -> list[tuple[float, str, object]]:
        return [
            (float(e["ts"]), str(e["data"].get("instance_id")), e["data"].get("fence"))
            for e in self.events
            if e["kind"] == "pool-lease-granted"
        ]

    def polling_intervals(self) -> dict[str, list[float]]:
        """Seconds between successive ``lastPollAt`` values per instance, by the state it was in when it was
        polled (leased, ready-idle, warming: the snapshot taken at or just before the poll; leases churn
        faster than polls, so the state shown later says little); ``scheduled:<state>``:
        ``nextPollAt - lastPollAt``, the interval Layer 5 chose at that poll."""
        history: dict[str, list[tuple[float, str]]] = defaultdict(list)
        polls: dict[str, dict[float, float | None]] = defaultdict(dict)
        for t, insts in self.snapshots:
            for i in insts:
                iid = str(i.get("contractId"))
                history[iid].append((t, _state(i)))
                polled = _iso_s(i.get("lastPollAt"))
                if polled is not None and polled not in polls[iid]:
                    polls[iid][polled] = _iso_s(i.get("nextPollAt"))
        out: dict[str, list[float]] = defaultdict(list)
        for iid, seen in polls.items():
            times = sorted(seen)
            for n, polled in enumerate(times):
                before = [st for t, st in history[iid] if t <= polled + 0.5]
                if not before:
                    continue  # polled before the first snapshot: its state is unknown
                state = before[-1]
                due = seen[polled]
                if due is not None and due > polled:
                    out[f"scheduled:{state}"].append(due - polled)
                if n + 1 < len(times):
                    out[state].append(times[n + 1] - polled)
        return out

    # ── end-of-run sources ──────────────────────────────────────────────────
    def collected_log(self, iid: str) -> tuple[str, int]:
        """The provisioning log vastkeep collected for ``iid`` and the remote byte offset it reaches."""
        lines: list[str] = []
        after = 0
        for _ in range(50):
            r = self.http.get(
                f"{self.admin}/api/proxy/admin/instances/{iid}/logs",
                headers=self.headers,
                params={"after": after, "limit": 1000},
                timeout=HTTP_TIMEOUT_S,
            )
            if r.status_code != 200:
                break
            data: object = r.json()
            if not isinstance(data, Mapping):
                raise TypeError("instance logs: the answer is not a JSON object")
            got = data.get("lines") or []
            if not isinstance(got, list):
                raise TypeError("instance logs: lines is not a list")
            lines += [str(x.get("text", "")).rstrip("\n") for x in got if isinstance(x, Mapping)]
            if not got or data.get("next") == after:
                break
            after = whole(data["next"])
        return "\n".join(lines) + ("\n" if lines else ""), after

    def remote_log(self, iid: str) -> bytes | None:
        try:
            path = self.control._call("GET", f"/instances/{int(iid)}")["log_path"]
            if not isinstance(path, str):
                return None
            return Path(path).read_bytes()
        except Exception:  # noqa: BLE001 - destroyed since
            return None

    def task_results(self) -> str:
        texts = []
        for key in self.redis.scan_iter(match="celery-task-meta-*", count=500):
            val = self.redis.get(key)
            if val:
                texts.append(str(val))
        return "\n".join(texts)

    def flower_tasks(self, flower_url: str, user: str, password: str) -> str:
        try:
            r = self.http.get(f"{flower_url}/api/tasks", auth=(user, password), timeout=HTTP_TIMEOUT_S)
            return r.text if r.status_code == 200 else ""
        except requests.RequestException:
            return ""

    def events_text(self) -> str:
        return "\n".join(json.dumps(e, default=str) for e in self.events)

    def cloud_ids(self) -> list[str]:
        """Instances the cloud bills now, from its own ledger (every rent minus every destroy)."""
        self._ledger()
        alive: set[int] = set()
        for e in self.ledger:
            (alive.add if e["action"] == "rent" else alive.discard)(whole(e["instance_id"]))
        return [str(i) for i in sorted(alive)]

    def known_ids(self) -> list[str]:
        """Instance ids vastkeep has a record of, whatever their status (unknown billing's other side)."""
        from vastkeep.state import Keys, StateStore  # noqa: PLC0415

        store = StateStore(self.redis, Keys(), SYSTEM_CLOCK)
        return [str(r.instance_id) for r in store.list_instances()]


__all__ = ["SAMPLE_S", "ObservedEvent", "Observer"]
