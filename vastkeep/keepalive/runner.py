"""Layer 4 I/O: one shard of the pool pinged by one long-lived asyncio loop under a fenced lease.

A Celery task per ping cannot hold a 30 s cadence for thousands of instances on one host (a task costs
about 1 ms of CPU, a bare asyncio ping about 0.02 ms), so a shard runner owns every ``ready`` instance
(and every one whose loss it marked) whose ``shard_of(id)`` is its shard and, for a bounded run, keeps
per instance:

- a *ping loop*: ``GET /system_stats`` over a keep-alive connection at the instance's own due time, with
  ``COMFYUI_KEEPALIVE_TIMEOUT_MS`` as the whole-call deadline; a slow or black-holed instance only ever
  delays its own loop;
- a *held connection* (the fast path): ComfyUI's ``/ws`` websocket. A crashed ComfyUI closes it at once
  (the host sends a FIN or RST); the close is confirmed with one immediate ping before anything is
  reported, so a network blip never fails an instance.

State (the guide's counters, ``next_ping_at``) lives in Redis, so the continuation that takes over after a
bounded run, or another worker that takes the shard after this one died, carries on without pinging an
instance twice in one interval. Writes and events are flushed in small batches off the event loop
(:mod:`.shard_writes`), under the shard's fenced lease (:mod:`.shard_lease`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ParamSpec

import aiohttp
from yarl import URL

from vastkeep.core.backoff import BackoffPolicy, backoff_delay
from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.keepalive.decide import (
    KeepalivePolicy,
    KeepaliveState,
    Signal,
    after_close,
    after_ping,
    first_ping_at,
    shard_of,
)
from vastkeep.keepalive.probe import MAX_BODY_BYTES, ping_stats
from vastkeep.keepalive.shard_lease import LEASE_PREFIX, ShardLease, daemon_name, lease_name
from vastkeep.keepalive.shard_writes import ShardWrites
from vastkeep.state.flowmarks import KeepaliveDocs, RecordCache, RedisClient
from vastkeep.state.heartbeats import write_heartbeat
from vastkeep.state.keys import Keys
from vastkeep.state.leases import LeaseManager
from vastkeep.state.protocols import NULL_EVENTS, EventSink, Store
from vastkeep.state.status import InstanceStatus
from vastkeep.state.store import COMFYUI_LOST_STATUS, InstanceRecord, comfyui_lost_since

log = logging.getLogger("vastkeep.keepalive")

WS_BACKOFF = BackoffPolicy(base_s=0.5, cap_s=30.0)
LATENESS_SAMPLES = 200_000


@dataclass
class RunnerConfig:
    """How long one runner holds its shard and how often it looks for new or departed instances."""

    shards: int = 2
    run_s: float = 60.0
    refresh_s: float = 5.0
    lease_ttl_ms: int = 15_000
    flush_s: float = 0.2
    fast_path: bool = True
    acquire_wait_s: float = 3.0
    max_connections: int = 0  # 0: no limit beyond one keep-alive connection per instance
    #: websocket handshakes in flight at once: a run's start (thousands of them) must not starve the pings
    #: nor time its own handshakes out under load and retry them
    ws_handshakes: int = 64


@dataclass
class _Watch:
    url: str
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stats_url: URL = field(init=False)  # parsed once: the steady path does not re-parse a URL per ping
    answered: asyncio.Event = field(default_factory=asyncio.Event)  # a ping succeeded since it was cleared

    def __post_init__(self) -> None:
        self.stats_url = URL(self.url.rstrip("/") + "/system_stats")


class ShardRunner:
    """Pings one shard of the ready instances for a bounded run; see the module docstring."""

    def __init__(self, *, redis: RedisClient, keys: Keys, store: Store, events: EventSink = NULL_EVENTS,
                 shard: int,
                 policy: KeepalivePolicy, config: RunnerConfig | None = None, clock: Clock = SYSTEM_CLOCK,
                 on_lost: Callable[[str, dict[str, object]], None] | None = None,
                 rng: random.Random | None = None, should_stop: Callable[[], bool] | None = None,
                 announced: set[str] | None = None) -> None:
        self.redis, self.keys, self.store, self.events = redis, keys, store, events
        #: the guide's start lines this process has logged (the worker owns it: once per process and shard)
        self.announced = announced if announced is not None else set()
        self.shard, self.policy, self.clock = int(shard), policy, clock
        self.config = config or RunnerConfig()
        if not 0 <= self.shard < self.config.shards:
            raise ValueError(f"shard {shard} outside 0..{self.config.shards - 1}")
        self.on_lost = on_lost
        self.rng = rng or random.Random()
        self.leases = LeaseManager(redis, keys, clock)
        self.lease = ShardLease(self.leases, self.shard, self.config.lease_ttl_ms, clock)
        self.owner = self.lease.owner
        self.states: dict[str, KeepaliveState] = {}
        self.watches: dict[str, _Watch] = {}
        self.writes = ShardWrites(redis=redis, keys=keys, store=store, events=events, clock=clock,
                                  lease=self.lease, states=self.states, on_lost=on_lost)
        self.pings = 0
        self.ws_attempts = 0  # websocket handshakes tried (a storm of them is CPU the pings do not get)
        self.ws_closes = 0  # established websockets that closed
        self._session: aiohttp.ClientSession | None = None
        self._handshakes: asyncio.Semaphore | None = None
        self._shard_cache: dict[str, int] = {}
        self._records = RecordCache(redis, keys)
        self._stop_requested = False
        self.should_stop = should_stop  # asked at each refresh: the worker began a warm shutdown
        self.lateness_s: list[float] = []  # how late each ping started against its due time

    # ── the run ─────────────────────────────────────────────────────────────
    async def run(self) -> dict[str, object]:
        """Hold the shard for ``run_s``; ``result``: done (hand over), busy (held elsewhere) or lost."""
        if await self.lease.acquire(self.config.acquire_wait_s) is None:
            return {"shard": self.shard, "result": "busy"}
        if daemon_name(self.shard) not in self.announced:  # the guide's line, once per shard and process
            self.announced.add(daemon_name(self.shard))
            log.info("[Keepalive] Starting ComfyUI connection monitoring (shard %d of %d)", self.shard,
                     self.config.shards)
        result = "done"
        # Idle keep-alive connections live one ping interval (+ slack): every instance reuses its own,
        # and the connection of an instance that left the shard is closed within that time.
        connector = aiohttp.TCPConnector(limit=self.config.max_connections, limit_per_host=0,
                                         force_close=False, enable_cleanup_closed=True,
                                         keepalive_timeout=self.policy.interval_s + self.policy.timeout_s + 2)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        self._handshakes = asyncio.Semaphore(max(1, self.config.ws_handshakes))
        started = self.clock.monotonic()
        flusher = asyncio.create_task(self.writes.loop(self.config.flush_s))
        # renew well inside the lease TTL; look for new or departed instances every refresh_s
        tick = min(self.config.refresh_s, self.config.lease_ttl_ms / 3000)
        refreshed = -float("inf")
        try:
            while self.clock.monotonic() - started < self.config.run_s and not self._stop_requested:
                if self.lease.lost or not await asyncio.to_thread(self.lease.hold):
                    log.warning("keepalive shard %d: lease lost; another runner owns the shard", self.shard)
                    result = "lost"
                    break
                if self.clock.monotonic() - refreshed >= self.config.refresh_s:
                    refreshed = self.clock.monotonic()
                    if self.should_stop is not None and await asyncio.to_thread(self.should_stop):
                        log.info("keepalive shard %d: the worker is stopping; handing over", self.shard)
                        break
                    await self._refresh()
                    await asyncio.to_thread(write_heartbeat, self.redis, self.keys, self.clock,
                                            daemon_name(self.shard), kind="keepalive-shard",
                                            watched=len(self.watches), ttl_ms=self.config.lease_ttl_ms * 4)
                left = self.config.run_s - (self.clock.monotonic() - started)
                await asyncio.sleep(min(tick, max(0.0, left)))
        finally:
            await self._stop_all()
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await self.writes.flush()
            await self._session.close()
            self._session = None
            if result != "lost":
                await asyncio.to_thread(self.lease.release)
        return {"shard": self.shard, "result": result, "pings": self.pings, "watched": len(self.states),
                "ws_attempts": self.ws_attempts, "ws_closes": self.ws_closes,
                "lateness_p50_s": _quantile(self.lateness_s, 0.5),
                "lateness_p99_s": _quantile(self.lateness_s, 0.99)}

    def request_stop(self) -> None:
        """End the run at the next tick (a warm shutdown; thread-safe enough: one flag, read by the loop)."""
        self._stop_requested = True

    # ── which instances ─────────────────────────────────────────────────────
    async def _refresh(self) -> None:
        want = await asyncio.to_thread(self._wanted)
        for iid in [i for i, w in self.watches.items() if want.get(i) != w.url]:
            await self._unwatch(iid)
        new = [iid for iid in want if iid not in self.watches]
        if not new:
            return
        stored = await asyncio.to_thread(read_states, self.redis, self.keys, new)
        for iid in new:
            self.states[iid] = stored.get(iid, KeepaliveState())
            watch = _Watch(url=str(want[iid]))
            watch.tasks.append(asyncio.create_task(self._ping_loop(iid, watch)))
            if self.config.fast_path:
                watch.tasks.append(asyncio.create_task(self._hold_loop(iid, watch)))
            self.watches[iid] = watch

    def _wanted(self) -> dict[str, str]:
        """This shard's ready instances and their URLs: one SMEMBERS, one MGET of this shard's records, and
        only records that changed since the last refresh are decoded (decoding the whole pool in every
        runner every few seconds grows with pool × runners and was a tenth of a runner's CPU)."""
        shards, shard_cache = self.config.shards, self._shard_cache
        mine: list[str] = []
        for iid in self.store.instance_ids():
            n = shard_cache.get(iid)
            if n is None:
                n = shard_cache[iid] = shard_of(iid, shards)
            if n == self.shard:
                mine.append(iid)
        return {iid: str(rec.connection_url) for iid, rec in self._records.read(mine).items()
                if is_watched(rec)}

    async def _unwatch(self, iid: str) -> None:
        watch = self.watches.pop(iid, None)
        if watch is None:
            return
        for task in watch.tasks:
            task.cancel()
        await asyncio.gather(*watch.tasks, return_exceptions=True)
        self.states.pop(iid, None)

    async def _stop_all(self) -> None:
        for iid in list(self.watches):
            await self._unwatch(iid)

    # ── per instance ────────────────────────────────────────────────────────
    async def _ping_loop(self, iid: str, watch: _Watch) -> None:
        assert self._session is not None
        due = first_ping_at(self.states[iid], self.clock.now(), self.policy)
        while True:
            wait = due - self.clock.now()
            if wait > 0:
                await asyncio.sleep(wait)
            if len(self.lateness_s) < LATENESS_SAMPLES:
                self.lateness_s.append(max(0.0, self.clock.now() - due))
            ok, error = await ping_stats(self._session, watch.stats_url, self.policy.timeout_s)
            self.pings += 1
            if ok:
                watch.answered.set()
            state, signals = after_ping(self.states[iid], ok, error, self.clock.now(), self.policy)
            self._apply(iid, state, signals)
            due = state.next_ping_at or (self.clock.now() + self.policy.interval_s)

    async def _hold_loop(self, iid: str, watch: _Watch) -> None:
        """Hold ``/ws``; a close of an established socket is confirmed by one immediate ping.

        A refused handshake (nothing listens: ComfyUI died, say between two runs of the shard, when no
        socket was held to close) is a crash when the confirming ping is refused too, so a crash during a
        hand-over is still seen at once; refused then silent is a flapping route, counted as one failed ping.
        A handshake that fails otherwise (ComfyUI hung or unreachable: its pings are failing too) is retried
        only once a ping has answered again — within one interval for a healthy instance — instead of every
        few seconds: a hung instance's retries would cost more CPU than all its pings and fill its accept
        queue."""
        assert self._session is not None and self._handshakes is not None
        ws_url = watch.url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        ws_url += f"/ws?clientId=vastkeep-{iid}"
        attempt = 0
        while True:
            established = refused = False
            self.ws_attempts += 1
            watch.answered.clear()
            try:
                async with self._handshakes, asyncio.timeout(self.policy.timeout_s):
                    ws = await self._session.ws_connect(ws_url, autoping=True, heartbeat=None,
                                                        max_msg_size=MAX_BODY_BYTES)
                established = True
                attempt = 0
                async with ws:
                    async for _msg in ws:  # status frames; we only care that the socket stays open
                        pass
            except aiohttp.ClientConnectorError as exc:  # before ClientOSError: it is one
                refused = isinstance(exc.os_error, ConnectionRefusedError)
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
            if established or (refused and not self.states[iid].lost):
                self.ws_closes += established
                ok, error = await ping_stats(self._session, watch.stats_url, self.policy.timeout_s)
                self.pings += 1
                if ok:
                    watch.answered.set()
                if established or ok or error == "connection refused":
                    state, signals = after_close(self.states[iid], ok, error or "connection closed",
                                                 self.clock.now(), self.policy)
                else:  # refused, then silence: a route flapping, not a dead process — an ordinary failure
                    state, signals = after_ping(self.states[iid], ok, error, self.clock.now(), self.policy)
                self._apply(iid, state, signals)
            attempt += 1
            await asyncio.sleep(backoff_delay(attempt, WS_BACKOFF, self.rng))
            if not established:
                await watch.answered.wait()

    def _apply(self, iid: str, state: KeepaliveState, signals: list[Signal]) -> None:
        if iid not in self.watches:
            return
        self.states[iid] = state
        self.writes.add(iid, signals)
        for sig in signals:
            f = sig.fields
            if sig.kind == "connection-lost":
                log.error("❌ ComfyUI connection LOST after %d failures: %s (instance %s, detectedBy %s)",
                          f["failures"], f["last_error"], iid, f["detectedBy"], extra={"instance_id": iid})
            elif sig.kind == "ping-failure":
                log.warning("⚠️  ComfyUI ping failed (%d consecutive): %s (instance %s)", f["failures"],
                            f["error"], iid, extra={"instance_id": iid})
            elif sig.kind == "connection-restored":
                log.info("✅ ComfyUI connection restored (instance %s)", iid, extra={"instance_id": iid})

def is_watched(rec: InstanceRecord) -> bool:
    """Ready instances with a URL, and those whose loss this layer marked (so their recovery is seen)."""
    if not rec.connection_url:
        return False
    lost = comfyui_lost_since(rec) is not None
    return rec.status == InstanceStatus.READY or (rec.status == COMFYUI_LOST_STATUS and lost)


def read_states(redis: RedisClient, keys: Keys, instance_ids: list[str]) -> dict[str, KeepaliveState]:
    """Stored keepalive state per instance (one MGET, whatever the pool size)."""
    docs = KeepaliveDocs(redis, keys).read(instance_ids)
    return {iid: KeepaliveState.from_dict(docs.get(iid)) for iid in instance_ids}


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)


P = ParamSpec("P")


def _in_own_loop(make: Callable[P, ShardRunner]) -> Callable[P, dict[str, object]]:
    def run(*args: P.args, **kwargs: P.kwargs) -> dict[str, object]:
        return asyncio.run(make(*args, **kwargs).run())
    run.__doc__ = """Run one :class:`ShardRunner` (same arguments) to its end in a fresh event loop (what the
    Celery task calls)."""
    return run


run_shard = _in_own_loop(ShardRunner)


__all__ = [
    "LATENESS_SAMPLES", "LEASE_PREFIX", "WS_BACKOFF", "RunnerConfig", "ShardRunner", "daemon_name",
    "is_watched", "lease_name", "read_states", "run_shard",
]
