"""What a keepalive runner saw, written off the event loop in small batches, only while it holds its shard.

Changed keepalive states go to their documents (one write per batch), each signal becomes an event, and a
loss or a recovery is put on the instance record (fenced under the shard's grant). A Redis blip keeps the
batch in memory for the next flush; a lost grant drops it: the shard's new owner decides now.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from vastkeep.core.clock import Clock
from vastkeep.keepalive.decide import KeepaliveState, Signal
from vastkeep.keepalive.shard_lease import ShardLease
from vastkeep.state.flowmarks import KeepaliveDocs, RedisClient
from vastkeep.state.keys import KEEPALIVE_STATUS_TTL_MS, Keys
from vastkeep.state.protocols import EventSink, Store
from vastkeep.state.status import InstanceStatus
from vastkeep.state.store import COMFYUI_LOST_REASON, COMFYUI_LOST_STATUS, InstanceRecord

log = logging.getLogger("vastkeep.keepalive")


class ShardWrites:
    """The pending batch of one runner: which states changed (``dirty``) and the ``signals`` to emit."""

    def __init__(self, *, redis: RedisClient, keys: Keys, store: Store, events: EventSink, clock: Clock,
                 lease: ShardLease, states: dict[str, KeepaliveState],
                 on_lost: Callable[[str, dict[str, object]], None] | None) -> None:
        self.redis, self.keys, self.store, self.events, self.clock = redis, keys, store, events, clock
        self.lease, self.states, self.on_lost = lease, states, on_lost  # states: the runner's, by reference
        self.dirty: set[str] = set()
        self.signals: list[tuple[str, Signal]] = []

    def add(self, iid: str, signals: list[Signal]) -> None:
        """Note that ``iid``'s state changed and what it signalled."""
        self.dirty.add(iid)
        self.signals.extend((iid, sig) for sig in signals)

    async def loop(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.flush()

    async def flush(self) -> None:
        if not self.dirty and not self.signals:
            return
        states = {iid: self.states[iid] for iid in self.dirty if iid in self.states}
        signals, self.signals, self.dirty = self.signals, [], set()
        try:
            await asyncio.to_thread(self.write, states, signals)
        except Exception as exc:  # Redis blip: keep the figures in memory and retry at the next flush
            log.warning("keepalive shard %d: could not write state (%s); retrying", self.lease.shard,
                        type(exc).__name__)
            self.dirty |= set(states)
            self.signals = signals + self.signals

    def write(self, states: dict[str, KeepaliveState], signals: list[tuple[str, Signal]]) -> None:
        """Write only while this grant still holds the shard: a runner cut off from Redis past the lease TTL
        comes back with failures it saw in the dark, and the shard's new owner decides now. The renewal
        just before the writes checks owner and fence atomically and extends the TTL, so no other runner
        can be granted the shard before these writes land (short of a pause longer than the TTL between
        the two); the record marks are fenced writes themselves."""
        lease = self.lease
        if lease.current is not None and (lease.lost or not lease.hold()):
            if not lease.lost:
                log.warning("keepalive shard %d: lease lost; %d state writes and %d events dropped",
                            lease.shard, len(states), len(signals))
            lease.lost = True
            return
        KeepaliveDocs(self.redis, self.keys).write({iid: st.to_dict() for iid, st in states.items()},
                                                   KEEPALIVE_STATUS_TTL_MS)
        for iid, sig in signals:
            self.events.emit(sig.kind, instance_id=iid, **sig.fields)
            if sig.kind in ("connection-lost", "connection-restored"):
                self.mark_record(iid, sig)
            if sig.kind == "connection-lost" and self.on_lost is not None:
                self.on_lost(iid, dict(sig.fields))

    def mark_record(self, iid: str, sig: Signal) -> None:
        """Put the loss on the record: ``extra.keepalive_lost_since`` (and ``keepalive_last_loss_at``, kept
        after a recovery: the pool trims an instance that lost ComfyUI first), and a ready record turns
        ``unhealthy`` with :data:`COMFYUI_LOST_REASON`, so every view and count shows the loss at once. A
        restore clears the loss and turns such a record ``ready`` again; a status another layer set (the
        provider's word, Layer 5) is left alone."""
        now = self.clock.now()
        lost = sig.kind == "connection-lost"

        def change(rec: InstanceRecord) -> InstanceRecord:
            if lost and "keepalive_lost_since" not in rec.extra:
                rec.extra["keepalive_lost_since"] = now
                rec.extra["keepalive_last_loss_at"] = now
                rec.extra["keepalive_detected_by"] = sig.fields.get("detectedBy")
            elif not lost:
                rec.extra.pop("keepalive_lost_since", None)
                rec.extra.pop("keepalive_detected_by", None)
            if lost and rec.status == InstanceStatus.READY:
                rec.status, rec.status_reason = COMFYUI_LOST_STATUS, COMFYUI_LOST_REASON
            elif not lost and rec.status == COMFYUI_LOST_STATUS and rec.status_reason == COMFYUI_LOST_REASON:
                rec.status, rec.status_reason = InstanceStatus.READY, None
            return rec

        try:
            self.store.modify_instance(iid, change, lease=self.lease.current)
        except Exception as exc:  # gone meanwhile, or a Redis blip: the event is out, the next loss retries
            log.info("keepalive: could not mark instance %s (%s)", iid, type(exc).__name__)


__all__ = ["ShardWrites"]
