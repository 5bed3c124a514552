"""One collector run under its fenced lease, and which instances need a collector.

At most one collector per instance runs at any moment across every worker: a run first takes the lease
``ssh-collector:<id>`` (a held lease means another run is alive: this one returns ``skipped``), keeps it
alive from a thread while it streams, and releases it when it hands over. Its writes carry the lease's
fence, so even a run that paused past its TTL cannot write once a successor holds the lease. The task
layer sends the continuation; the beat task asks :func:`instances_needing_collectors` for instances that
want one and have none, which is also how a collector lost with a ``kill -9``'d worker comes back.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable

import paramiko

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.ssh.collector import Collector, StopReason
from vastkeep.ssh.config import CollectorConfig
from vastkeep.ssh.drops import Redis
from vastkeep.ssh.logstore import LogStore, lease_name
from vastkeep.ssh.provider_log import DEFAULT_TAIL, Fetch, ProviderLog
from vastkeep.state import (
    NULL_EVENTS,
    PROVISIONING_STATUSES,
    EventSink,
    InstanceRecord,
    InstanceStatus,
    Keys,
    LeaseKeeper,
    LeaseManager,
    Progress,
    Store,
    clear_heartbeat,
    new_owner,
)

log = logging.getLogger("vastkeep.ssh")

#: Provisioning instances always want a collector (ready ones only with ``SSH_COLLECT_WHILE_READY``).
COLLECT_STATUSES = PROVISIONING_STATUSES
QUEUED_MARKER_TTL_MS = 120_000


def wants_collector(status: str | None, while_ready: bool = False) -> bool:
    """Provisioning instances always; ready ones only with ``SSH_COLLECT_WHILE_READY``."""
    return status in COLLECT_STATUSES or (while_ready and status == InstanceStatus.READY)


def heartbeat_name(instance_id: str | int) -> str:
    """The heartbeat a collector beats (``vastkeep.state.heartbeats``): supervision finds stale ones."""
    return f"ssh-collector:{instance_id}"


def collect_once(instance_id: str | int, *, redis_client: Redis, keys: Keys, store: Store, logstore: LogStore,
                 config: CollectorConfig, pkey: paramiko.PKey, events: EventSink = NULL_EVENTS,
                 clock: Clock = SYSTEM_CLOCK, rng: random.Random | None = None,
                 while_ready: bool = False, provider_fetch: Fetch | None = None,
                 allow_loopback: bool = False, provider_tail: int = DEFAULT_TAIL,
                 stop: threading.Event | None = None) -> dict[str, object]:
    """Run one bounded collection of ``instance_id``; ``continue`` in the result says whether a
    continuation should follow (the instance still wants a collector). ``stop`` (the worker shutting down)
    ends the run early, like the end of the hold: the continuation goes to whichever worker is left.
    ``provider_fetch`` (the provider's log API, :mod:`vastkeep.ssh.provider_log`) is read while SSH stays
    down; ``allow_loopback`` admits a loopback ``result_url`` (the simulated cloud only)."""
    iid = str(instance_id)
    rec = store.get_instance(iid)
    if rec is None or not wants_collector(rec.status, while_ready):
        redis_client.delete(keys.collector_queued(iid))
        return {"instance_id": iid, "skipped": "instance does not want a collector",
                "status": rec.status if rec is not None else None, "continue": False}
    leases = LeaseManager(redis_client, keys, clock)
    lease = leases.acquire(lease_name(iid), new_owner("ssh"), config.lease_ttl_ms)
    if lease is None:
        return {"instance_id": iid, "skipped": "another collector holds the lease", "continue": False}
    redis_client.delete(keys.collector_queued(iid))
    provider_log = None if provider_fetch is None else ProviderLog(
        iid, logstore, provider_fetch, allow_loopback=allow_loopback, tail=provider_tail, events=events)
    progress = Progress(clock, config.stall_grace_s)
    try:
        with LeaseKeeper(leases, lease, clock, what="collector", progress=progress,
                         on_stall=_stall_reporter(iid, lease.fence, config, events)) as keeper:
            collector = Collector(iid, redis_client=redis_client, keys=keys, logstore=logstore, lease=lease,
                                  pkey=pkey, get_record=lambda: store.get_instance(iid), config=config,
                                  events=events, clock=clock, rng=rng, lost=keeper.lost,
                                  provider_log=provider_log, stop=stop, progress=progress)
            result = collector.run().to_dict()
            if keeper.stalled.is_set():
                result["stopped"] = StopReason.STALLED
    finally:
        leases.release(lease)
    rec = store.get_instance(iid)
    wanted = rec is not None and wants_collector(rec.status, while_ready)
    more = result["stopped"] in (StopReason.HOLD_EXPIRED, StopReason.STOP) and wanted
    # after a lost lease or a stall a successor may beat that name now: leave its heartbeat alone
    if not more and result["stopped"] not in (StopReason.LEASE_LOST, StopReason.STALLED):
        clear_heartbeat(redis_client, keys, heartbeat_name(iid))
    result |= {"fence": lease.fence, "continue": more}
    return result


def _stall_reporter(iid: str, fence: int, config: CollectorConfig,
                    events: EventSink) -> Callable[[float], None]:
    """What the lease keeper calls when the collector's loop stopped beating (the lease is released)."""

    def report(overdue_s: float) -> None:
        stalled_s = round(config.stall_grace_s + overdue_s, 1)
        log.error("collector of instance %s stalled: no progress for %.1fs; lease released for a restart",
                  iid, stalled_s)
        events.emit("ssh-collector-stalled", instance_id=iid, fence=fence, stalled_s=stalled_s)

    return report


def instances_needing_collectors(records: Iterable[InstanceRecord], leases: LeaseManager, redis_client: Redis,
                                 keys: Keys, while_ready: bool = False) -> list[str]:
    """Ids that want a collector, have none running (lease free) and none queued; marks them queued."""
    out: list[str] = []
    for rec in records:
        if not wants_collector(rec.status, while_ready):
            continue
        if leases.current(lease_name(rec.instance_id)) is not None:
            continue
        marker = keys.collector_queued(rec.instance_id)
        if not redis_client.set(marker, "1", nx=True, px=QUEUED_MARKER_TTL_MS):
            continue
        out.append(str(rec.instance_id))
    return out
