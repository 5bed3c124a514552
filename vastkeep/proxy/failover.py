"""Failover: the endpoint outlives its instance.

The proxy keeps, per endpoint (lease) in use, a :class:`LeaseState`: where it points, the websockets relayed
through it, the prompts sent through it (body, ``client_id``, consent) until ComfyUI's websocket or
``/history`` shows them ended, and the uploads made through it (their spooled bodies are kept for replay).

A failover starts when the instance is gone (:func:`failplan.verdict`): the keepalive declared it lost (the
watch loop reads the records of the instances behind leases in use, every ``watch_interval_s``; a request's
resolution reads it too), its record says it is dead, or the proxy's own calls were refused or reset
repeatedly (a websocket that drops, then a probe that is refused). One failover runs per lease at a time:

1. ``failover-started``; the lease moves (``vastkeep.pool.moving``: fenced, safe to run twice) to a ready
   instance, waiting (full jitter) up to ``move_wait_s`` for one; the token now names the new grant.
2. Every relayed websocket reconnects to the new instance with its own ``clientId`` and first sends the
   client a status frame (``vastkeep_failover``: from, to, why, prompts re-submitted and lost).
3. With consent (``Idempotency-Key`` on the prompt's POST, or the lease's ``resubmitPrompts``), the uploads
   made through the lease are replayed and each unfinished prompt is posted again with its own ``prompt_id``
   (``prompt-resubmitted``); ComfyUI takes a caller's ``prompt_id``, so ``/history``, ``/view``, the
   websocket messages, ``/interrupt`` and queue deletes all follow it. Without consent, each lost prompt
   gets one error: an ``execution_error`` on its client's websocket, or (no websocket) a 503 answering the
   lease's next HTTP request, once.
4. ``failover-done`` with ``detect_s`` (first sign of trouble → decision), ``switch_s`` (decision → the lease
   on the new instance and the websockets reconnected) and ``total_s``.

Prompts and uploads are remembered in this process only: a proxy restart forgets them (the lease still moves).
Events carry instance ids, reasons, prompt ids and timings: never a lease id or an endpoint token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from vastkeep.pool.moving import Moved, move_lease
from vastkeep.proxy import failplan
from vastkeep.proxy.failplan import FailoverPolicy, Strikes, Tracked, Why
from vastkeep.proxy.resolve import Resolver, Target, safe_base

if TYPE_CHECKING:
    from vastkeep.pool.leasing import PoolLeases
    from vastkeep.proxy.metrics import ProxyMetrics
    from vastkeep.state import EventSink

log = logging.getLogger("vastkeep.proxy")


@dataclass
class Upload:
    """An upload made through the lease: its spooled body, replayed to a new instance before re-submission."""

    path: Path
    tail: str
    content_type: str


@dataclass
class Notice:
    """What the last failover of a lease did (the status frame; the lost prompts' one error)."""

    old: str
    new: str
    why: str
    resubmitted: list[str]
    lost: list[str]
    delivered: set[str] = field(default_factory=set)


@dataclass
class LeaseState:
    """One endpoint in use through this proxy."""

    token: str
    target: Target
    prompts: OrderedDict[str, Tracked] = field(default_factory=OrderedDict)
    answers: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # Idempotency-Key → first answer
    uploads: list[Upload] = field(default_factory=list)
    strikes: Strikes = field(default_factory=Strikes)
    relays: dict[int, str | None] = field(default_factory=dict)  # relay id → its clientId
    reconnected: set[int] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    notice: Notice | None = None
    pending_error: dict[str, object] | None = None
    task: asyncio.Task[None] | None = None
    first_sign: float | None = None
    over: bool = False  # the lease ended while its instance was gone: forgotten, never failed over again

    def in_use(self) -> bool:
        return bool(self.relays) or any(not p.done for p in self.prompts.values())

    def track(self, p: Tracked, limit: int) -> None:
        self.prompts[p.prompt_id] = p
        while len(self.prompts) > limit:
            oldest = next((k for k, v in self.prompts.items() if v.done), next(iter(self.prompts)))
            self.prompts.pop(oldest)

    def observe(self, text: str) -> None:
        """A text frame from ComfyUI: a prompt that ended is not sent again."""
        try:
            msg = json.loads(text)
        except ValueError:
            return
        pid = failplan.ended_prompt(msg) if isinstance(msg, dict) else None
        if pid is not None and pid in self.prompts:
            self.prompts[pid].done = True


class Failover:
    """The failovers of one proxy process (see the module docstring)."""

    def __init__(self, resolver: Resolver, leases: PoolLeases, events: EventSink, metrics: ProxyMetrics,
                 session: Callable[[], aiohttp.ClientSession], policy: FailoverPolicy | None = None) -> None:
        self.resolver, self.leases, self.events, self.metrics = resolver, leases, events, metrics
        self.session, self.policy = session, policy or FailoverPolicy()
        self.states: dict[str, LeaseState] = {}
        self._background: set[asyncio.Task[object]] = set()

    # ── per-lease state ─────────────────────────────────────────────────────
    def state(self, token: str, target: Target) -> LeaseState:
        st = self.states.get(token)
        if st is None:
            st = self.states[token] = LeaseState(token, target)
        elif st.task is None and st.target.instance_id != target.instance_id:
            if st.in_use():  # moved by another process under open sockets / prompts: follow it the full way
                self.start(st, Why.INSTANCE_GONE)
            else:
                st.target = target
        elif st.task is None and not target.lost:
            st.target = target  # the same grant, read again (a renewal moved its end)
        return st

    def forget(self, token: str) -> None:
        """The lease ended: its remembered prompts and spooled uploads go."""
        st = self.states.pop(token, None)
        if st is not None:
            for up in st.uploads:
                up.path.unlink(missing_ok=True)

    def keep_upload(self, st: LeaseState, path: Path, tail: str, content_type: str) -> None:
        st.uploads.append(Upload(path, tail, content_type))
        while len(st.uploads) > self.policy.max_uploads:
            st.uploads.pop(0).path.unlink(missing_ok=True)

    # ── detection ───────────────────────────────────────────────────────────
    def strike(self, st: LeaseState, kind: str, now: float) -> bool:
        """One failed upstream call; True (and a failover started) when the instance counts as gone."""
        if kind in failplan.HARD_KINDS and st.first_sign is None:
            st.first_sign = now
        if failplan.strike(st.strikes, kind, now, self.policy):
            self.start(st, Why.UPSTREAM_REFUSED)
            return True
        return False

    async def probe(self, st: LeaseState) -> bool:
        """After a websocket dropped: is anybody there? Refused/reset → one more strike (True: gone)."""
        loop = asyncio.get_running_loop()
        url = st.target.url.rstrip("/") + "/system_stats"
        try:
            quick = aiohttp.ClientTimeout(total=1.0, sock_connect=0.5)
            async with self.session().get(url, timeout=quick) as r:
                await r.read()
                return False
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, ConnectionError):
            return self.strike(st, "probe-refused", loop.time())
        except (TimeoutError, aiohttp.ClientError):
            return False  # silence is the keepalive's to judge

    async def watch(self, stop: asyncio.Event) -> None:
        """Until ``stop``: check the record of every instance behind a lease in use."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.policy.watch_interval_s)
            try:
                await self._check_all()
            except Exception as exc:  # noqa: BLE001 - a Redis blip: the next round checks again
                log.warning("failover watch: %s", type(exc).__name__)

    async def _check_all(self) -> None:
        now = self.resolver.clock.now()
        for token, st in list(self.states.items()):  # leases over for a minute, nothing in use: forgotten
            if st.task is None and not st.in_use() and (st.target.until_s or now) < now - 60:
                self.forget(token)
        busy = [st for st in self.states.values() if st.task is None and st.in_use()]
        if not busy:
            return
        raws = await self.resolver.redis.mget([self.resolver.keys.instance(st.target.instance_id)
                                               for st in busy])
        for st, raw in zip(busy, raws, strict=True):
            why = failplan.verdict(_record(raw), False)
            if why is not None:
                self.start(st, why)

    # ── the failover ────────────────────────────────────────────────────────
    def start(self, st: LeaseState, why: Why) -> asyncio.Task[None]:
        """Start the lease's failover (one at a time: a second trigger joins the first)."""
        if st.task is None or st.task.done():
            st.task = asyncio.ensure_future(self._run(st, why))
        return st.task

    async def settled(self, st: LeaseState) -> Target:
        """Wait for a running failover (bounded); the lease's target after it."""
        if st.task is not None and not st.task.done():
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(st.task), self.policy.move_wait_s + 5)
        return st.target

    async def _run(self, st: LeaseState, why: Why) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        detect_s = t0 - st.first_sign if st.first_sign is not None else 0.0
        old = st.target
        try:
            moved = await self._move(st, old, why)
            if moved is None or not moved.replayed:  # a replayed move was announced by the one that made it
                await self._emit("failover-started", instance_id=old.instance_id, reason=str(why),
                                 detect_s=round(detect_s, 3))
            if moved is None:
                outcome = "lease-ended" if st.over else "failed"
                self.metrics.failovers[(str(why), outcome)] += 1
                await self._emit("failover-done", instance_id=old.instance_id, to_instance=None,
                                 reason=str(why), outcome=outcome,
                                 detect_s=round(detect_s, 3), switch_s=None,
                                 total_s=round(loop.time() - t0, 3), resubmitted=0, lost=0)
                if st.over:  # once: the watch would start it again every round while a prompt looked open
                    self.forget(st.token)
                return
            await self._switch(st, old, moved, why, t0, detect_s)
        finally:
            st.task = None
            st.first_sign = None
            st.strikes = Strikes()

    async def _move(self, st: LeaseState, old: Target, why: Why) -> Moved | None:
        """The lease's move, retried (full jitter) while no instance is ready, up to ``move_wait_s``; when
        another process moved it already (and its answer is no longer remembered), where it went."""
        loop = asyncio.get_running_loop()
        deadline, attempt = loop.time() + self.policy.move_wait_s, 0
        while True:
            try:
                got = await asyncio.to_thread(move_lease, self.leases, old.instance_id, old.fence or 0,
                                              str(why))
            except Exception as exc:  # noqa: BLE001 - Redis trouble: try again within the deadline
                got = f"error: {type(exc).__name__}"
            if isinstance(got, Moved):
                return got
            if got == "gone":
                self.resolver.forget(st.token)
                now = await self.resolver.token(st.token)
                if now is not None and now.instance_id != old.instance_id and now.url:
                    return Moved(now.instance_id, now.fence or 0, now.url, old.instance_id, True)
                st.over = now is None  # the lease itself ended (released, expired, broken): nothing to move
            if got == "gone" or loop.time() > deadline:
                log.warning("failover of a lease on instance %s: %s", old.instance_id, got)
                return None
            attempt += 1
            await asyncio.sleep(random.uniform(0, min(2.0, 0.1 * 2**attempt)))  # full jitter

    async def _switch(self, st: LeaseState, old: Target, moved: Moved, why: Why, t0: float,
                      detect_s: float) -> None:
        loop = asyncio.get_running_loop()
        base = safe_base(moved.connection_url, simulated=self.resolver.simulated) or ""
        new = Target(moved.instance_id, base, old.until_s, moved.fence, None, old.resubmit)
        self.resolver.forget(st.token)
        with contextlib.suppress(Exception):  # other proxies re-resolve the token at once
            await self.resolver.redis.publish(self.resolver.keys.endpoint_dropped(),
                                              _digest(st.token))
        resubmit, lost = failplan.split_in_flight(
            Tracked(p.prompt_id, p.body, p.consent or old.resubmit, p.done, p.client_id)
            for p in st.prompts.values())
        st.notice = Notice(old.instance_id, new.instance_id, str(why), [p.prompt_id for p in resubmit],
                           [p.prompt_id for p in lost])
        st.target, st.reconnected = new, set()
        changed, st.changed = st.changed, asyncio.Event()
        changed.set()
        wait_until = loop.time() + self.policy.reconnect_wait_s
        while st.relays and not set(st.relays) <= st.reconnected and loop.time() < wait_until:
            await asyncio.sleep(0.02)
        switch_s = loop.time() - t0
        for p in lost:
            st.prompts[p.prompt_id].done = True
        undelivered = [pid for pid in st.notice.lost if pid not in st.notice.delivered]
        if undelivered:
            st.pending_error = failplan.lost_error_body(undelivered, old.instance_id, new.instance_id,
                                                        str(why))
        if resubmit:
            await self._replay_uploads(st, new)
        sent = 0
        for p in resubmit:
            if await self._resubmit(new, p):
                sent += 1
                self.metrics.prompts_resubmitted += 1
                await self._emit("prompt-resubmitted", instance_id=new.instance_id,
                                 from_instance=old.instance_id, prompt_id=p.prompt_id,
                                 since_failover_s=round(loop.time() - t0, 3))
        total_s = loop.time() - t0
        self.metrics.failovers[(str(why), "moved")] += 1
        self.metrics.failover_seconds.append(detect_s + switch_s)
        log.info("failover: instance %s -> %s (%s) detect %.3fs switch %.3fs, %d prompt(s) re-submitted, "
                 "%d lost", old.instance_id, new.instance_id, why, detect_s, switch_s, sent, len(lost))
        await self._emit("failover-done", instance_id=old.instance_id, to_instance=new.instance_id,
                         reason=str(why), outcome="followed" if moved.replayed else "moved",
                         detect_s=round(detect_s, 3),
                         switch_s=round(switch_s, 3), total_s=round(total_s, 3), resubmitted=sent,
                         lost=len(lost))

    async def _replay_uploads(self, st: LeaseState, new: Target) -> None:
        for up in list(st.uploads):
            try:
                headers = {"Content-Type": up.content_type, "Content-Length": str(up.path.stat().st_size)}
                with up.path.open("rb") as fh:
                    async with self.session().post(new.url.rstrip("/") + "/" + up.tail.lstrip("/"), data=fh,
                                                   headers=headers, timeout=self._quiet_bound()) as r:
                        await r.read()
            except (OSError, aiohttp.ClientError, TimeoutError) as exc:
                log.warning("failover: an upload could not be replayed on instance %s: %s", new.instance_id,
                            type(exc).__name__)

    async def _resubmit(self, new: Target, p: Tracked) -> bool:
        url = new.url.rstrip("/") + "/prompt"
        for attempt in range(3):
            try:
                async with self.session().post(url, json=failplan.resubmission(p),
                                               timeout=self._quiet_bound()) as r:
                    await r.read()
                    if r.status == 200:
                        return True
                    log.warning("failover: prompt %s refused by instance %s (%d)", p.prompt_id,
                                new.instance_id, r.status)
                    return False
            except TimeoutError:  # silent: hung too, most likely; the lease's next failover takes the prompt
                log.warning("failover: prompt %s unanswered by instance %s for %.0f s; left for the next "
                            "failover", p.prompt_id, new.instance_id, self.policy.resubmit_timeout_s)
                return False
            except aiohttp.ClientError:
                await asyncio.sleep(random.uniform(0, 0.2 * 2**attempt))  # full jitter
        return False

    def _quiet_bound(self) -> aiohttp.ClientTimeout:
        """A call to the new instance during a failover: connect and each read bounded by the policy."""
        bound = self.policy.resubmit_timeout_s
        return aiohttp.ClientTimeout(total=None, sock_connect=bound, sock_read=bound)

    def frames_for(self, st: LeaseState, client_id: str | None) -> list[str]:
        """What a reconnected websocket sends its client first: the status frame, then the one error of each
        lost prompt of that client."""
        n = st.notice
        if n is None:
            return []
        out = [json.dumps(failplan.status_frame(n.old, n.new, n.why, n.resubmitted, n.lost))]
        for pid in n.lost:
            p = st.prompts.get(pid)
            if p is not None and client_id and p.client_id == client_id and pid not in n.delivered:
                n.delivered.add(pid)
                out.append(json.dumps(failplan.lost_error_frame(pid, n.old, n.new, n.why)))
        return out

    async def _emit(self, kind: str, **fields: object) -> None:
        try:
            await asyncio.to_thread(self.events.emit, kind, **fields)
        except Exception as exc:  # noqa: BLE001 - an event lost to a Redis blip never stops a failover
            log.warning("event %s not written: %s", kind, type(exc).__name__)


def _digest(token: str) -> str:
    from vastkeep.proxy.endpoints import digest  # noqa: PLC0415

    return digest(token)


def _record(raw: object) -> dict[str, object] | None:
    if not isinstance(raw, str | bytes):
        return None
    try:
        data: object = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


__all__ = ["Failover", "LeaseState", "Notice", "Upload"]
