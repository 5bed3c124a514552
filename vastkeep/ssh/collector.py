"""The SSH log collector of one instance: stream remote log files into Redis, resume after anything.

One :class:`Collector` run holds the instance's fenced lease (kept alive by
:class:`~vastkeep.state.LeaseKeeper`) for at most ``hold_s`` seconds, then returns so its task can hand
over to a continuation. It loops: pick a route (:mod:`vastkeep.ssh.routes`), connect with every deadline
set (:mod:`vastkeep.ssh.connect`), and stream each file with ``tail`` on its own exec channel, started and
checked for truncation/rotation by :mod:`vastkeep.ssh.rotation`. Bytes are cut into lines that keep their
byte offset (:mod:`vastkeep.ssh.lines`) and stored with the new offset in one fenced Lua call
(:mod:`vastkeep.ssh.logstore`): after a dropped link, a worker death or a redelivery the next session reads
from exactly the end of the last stored complete line, no line lost, none duplicated. Reads wait in
``poll`` at most until the next keepalive decision (:mod:`vastkeep.ssh.liveness`). After a failure it waits
a full-jitter delay (:mod:`vastkeep.ssh.decide`) and logs the guide's ``[LogCollector] N consecutive
failures, backing off Xs before retry``; failures, the route that worked and the next attempt's time live
in the collector hash, so a continuation backs off where its predecessor stopped. While no route has
worked for ``fallback_after_s`` it also reads the provider's log API (:mod:`vastkeep.ssh.provider_log`).
Liveness is judged by progress: each step of the loop beats a :class:`~vastkeep.state.Progress` with that
step's own deadline (a connect: 4 × the handshake timeout; a health check: its probes; a read: the channel
timeout); the lease keeper stops renewing and releases the lease when a beat is overdue by one lease TTL,
so a loop stuck in a call without a deadline is restarted by supervision (``ssh-collector-stalled``).
Per-run state only (no module globals are written): one process runs many collectors as threads.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import paramiko
import redis

from vastkeep.core.clock import SYSTEM_CLOCK, Clock
from vastkeep.core.errors import SSHError, StaleFence, WriteConflict
from vastkeep.ssh import decide
from vastkeep.ssh.config import PROVIDER_STEP_S, CollectorConfig
from vastkeep.ssh.connect import HostKeyPins, open_client
from vastkeep.ssh.drops import Redis, record_drop
from vastkeep.ssh.logstore import LogStore
from vastkeep.ssh.provider_log import ProviderLog
from vastkeep.ssh.rotation import Followed, Tailer
from vastkeep.ssh.routes import Route, routes_for
from vastkeep.ssh.streaming import BATCH_BYTES, READ_CHUNK, Streaming
from vastkeep.state import NULL_EVENTS, EventSink, InstanceRecord, Keys, Lease, Progress, write_heartbeat

log = logging.getLogger("vastkeep.ssh")

HEARTBEAT_EVERY_S = 1.0


class StopReason(StrEnum):
    """Why a collector run ended (its result's ``stopped``)."""

    HOLD_EXPIRED = "hold-expired"  # the run's bounded hold is over: a continuation follows
    LEASE_LOST = "lease-lost"
    NO_RECORD = "no-record"
    STOP = "stop"  # the worker is shutting down
    STALLED = "stalled"  # the loop stopped beating; the lease keeper released the lease


class CollectorState(StrEnum):
    """What a collector is doing, in its heartbeat and its status hash (a run that ended: its reason)."""

    RUNNING = "running"
    CONNECTING = "connecting"
    STREAMING = "streaming"
    BACKOFF = "backoff"
    FALLBACK = "fallback"
    HANDOVER = "handover"


@dataclass
class RunResult:
    """What one run did (the task returns ``to_dict()``)."""

    instance_id: str
    stopped: StopReason = StopReason.HOLD_EXPIRED
    sessions: int = 0
    lines: int = 0
    bytes: int = 0
    failures: int = 0
    route: str | None = None
    offsets: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"instance_id": self.instance_id, "stopped": self.stopped, "sessions": self.sessions,
                "lines": self.lines, "bytes": self.bytes, "failures": self.failures, "route": self.route,
                "offsets": dict(self.offsets)}


class Collector(Streaming):
    """Streams one instance's log files into a :class:`LogStore` under a held lease (see the module doc)."""

    result: RunResult

    def __init__(self, instance_id: str, *, redis_client: Redis, keys: Keys, logstore: LogStore,
                 lease: Lease, pkey: paramiko.PKey, get_record: Callable[[], InstanceRecord | None],
                 config: CollectorConfig, events: EventSink = NULL_EVENTS, clock: Clock = SYSTEM_CLOCK,
                 rng: random.Random | None = None,
                 lost: threading.Event | None = None, provider_log: ProviderLog | None = None,
                 stop: threading.Event | None = None, progress: Progress | None = None) -> None:
        self.iid = str(instance_id)
        self.redis, self.keys, self.store = redis_client, keys, logstore
        self.lease, self.pkey, self.get_record, self.cfg = lease, pkey, get_record, config
        self.events, self.clock = events, clock
        self.rng = rng or random.SystemRandom()
        self.lost = lost or threading.Event()
        self.stop_event = stop or threading.Event()  # the worker's shutdown, shared by its collectors
        self.progress = progress  # the loop's own beat, watched by the lease keeper
        self.pins = HostKeyPins(redis_client, keys, events)
        self.tailer = Tailer(self.iid, logstore, lease.fence, events, config.health_timeout_s,
                             config.ready_timeout_s, clock.monotonic)
        self.provider_log = provider_log
        self._down_since: float | None = None
        self._provider_polled_at = 0.0
        self._fallback_on = False
        self._status_key = keys.collector(self.iid)
        self._last_beat = -1e18
        self.result = RunResult(self.iid)

    # ── status kept in the collector hash ───────────────────────────────────
    def _status(self) -> dict[str, str]:
        raw = self.redis.hgetall(self._status_key) or {}
        return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in raw.items()}

    def _save(self, **fields: object) -> None:
        mapping: dict[str | bytes, str] = {k: ("" if v is None else str(v)) for k, v in fields.items()}
        self.redis.hset(self._status_key, mapping=mapping)

    def _mark(self, within_s: float = 0.0) -> None:
        """The loop advanced; its next step may take ``within_s`` (that step's own deadline)."""
        if self.progress is not None:
            self.progress.beat(within_s)

    def _beat(self, state: CollectorState, force: bool = False) -> None:
        self._mark(HEARTBEAT_EVERY_S)
        now = self.clock.monotonic()
        if not force and now - self._last_beat < HEARTBEAT_EVERY_S:
            return
        self._last_beat = now
        write_heartbeat(self.redis, self.keys, self.clock, f"ssh-collector:{self.iid}", instance_id=self.iid,
                        state=state, fence=self.lease.fence, route=self.result.route)

    def _stopping(self) -> bool:
        return self.lost.is_set() or self.stop_event.is_set()

    def _streaming_beat(self) -> None:
        self._beat(CollectorState.STREAMING)

    def _sleep_until(self, until_mono: float, state: CollectorState) -> None:
        """Wait in short steps (heartbeat, lease) until ``until_mono``, the hold deadline or a stop."""
        while not self._stopping():
            left = until_mono - self.clock.monotonic()
            if left <= 0:
                return
            self._beat(state)
            self._fallback_tick()
            left = until_mono - self.clock.monotonic()
            if left > 0 and not self._stopping():
                self.clock.sleep(min(left, HEARTBEAT_EVERY_S))

    # ── the run ─────────────────────────────────────────────────────────────
    def run(self) -> RunResult:
        """Collect until the hold time is over, the lease is lost or :attr:`stop_event` is set."""
        start = self.clock.monotonic()
        deadline = start + self.cfg.hold_s
        status = self._status()
        failures = int(status.get("failures") or 0)
        last_good = status.get("route") or None
        next_at = float(status.get("next_attempt_at") or 0)
        self._down_since = float(status["down_since"]) if status.get("down_since") else None
        self._provider_polled_at = float(status.get("provider_polled_at") or 0)
        self._fallback_on = status.get("fallback") == "1"
        wait = next_at - self.clock.now()  # the predecessor's backoff goes on
        if wait > 0:
            self._sleep_until(min(deadline, start + wait), CollectorState.BACKOFF)
        self._save(state=CollectorState.RUNNING, fence=self.lease.fence)
        while not self._stopping() and self.clock.monotonic() < deadline:
            self._beat(CollectorState.CONNECTING, force=True)
            rec = self.get_record()
            if rec is None:
                self.result.stopped = StopReason.NO_RECORD
                break
            drops = 0  # session drops within the window, when this round ended one
            client, route = self._connect(routes_for(rec, last_good))
            if client is not None and route is not None:
                last_good = route.name
                self.result.route = route.name
                if self._fallback_on:
                    log.warning("SSH to instance %s answers again: back to streaming over SSH", self.iid)
                    self.events.emit("ssh-fallback-ended", instance_id=self.iid)
                self._down_since, self._fallback_on = None, False
                self._save(route=route.name, down_since="", fallback="", state=CollectorState.STREAMING)
                uptime = self._session(client, deadline)
                failures = decide.failures_after(failures, uptime, self.cfg.gate_s)
                if self._stopping() or self.clock.monotonic() >= deadline:
                    break
                drops = record_drop(self.redis, self.keys, self.iid, self.clock.now(),
                                    self.cfg.reconnect_window_s)
            else:
                failures += 1
                if self._down_since is None:
                    self._down_since = self.clock.now()
                    self._save(down_since=self._down_since)
            self.result.failures = failures
            delay = decide.reconnect_delay_s(failures, self.cfg.max_failures, self.rng, drops,
                                             self.cfg.reconnect_window_s, self.cfg.herd_drops)
            self._save(failures=failures, next_attempt_at=self.clock.now() + delay,
                       state=CollectorState.BACKOFF)
            if failures > 0:
                log.warning("%s (instance %s)", decide.backing_off_line(failures, delay), self.iid)
                self.events.emit("ssh-backoff", instance_id=self.iid, failures=failures,
                                 delay_s=round(delay, 3))
            self._sleep_until(self.clock.monotonic() + delay, CollectorState.BACKOFF)
        if self.lost.is_set():
            self.result.stopped = StopReason.LEASE_LOST
        elif self.stop_event.is_set():
            self.result.stopped = StopReason.STOP
        self.result.failures = failures
        with contextlib.suppress(redis.RedisError):
            self._save(failures=failures, state=CollectorState.HANDOVER
                       if self.result.stopped == StopReason.HOLD_EXPIRED else self.result.stopped)
        return self.result

    def _fallback_tick(self) -> None:
        """While no SSH route has worked for ``fallback_after_s``, read the provider's log API every
        ``provider_interval_s`` (:mod:`vastkeep.ssh.provider_log`); SSH retries go on meanwhile."""
        if self.provider_log is None or self._down_since is None:
            return
        now = self.clock.now()
        if not decide.use_fallback(self._down_since, now, self.cfg.fallback_after_s) or \
                now - self._provider_polled_at < self.cfg.provider_interval_s:
            return
        if not self._fallback_on:
            log.warning("no SSH route to instance %s for %.0fs: reading the provider's log API until SSH "
                        "answers", self.iid, now - self._down_since)
            self.events.emit("ssh-fallback-started", instance_id=self.iid,
                             down_s=round(now - self._down_since, 1))
        self._fallback_on, self._provider_polled_at = True, now
        self._save(fallback="1", provider_polled_at=now, state=CollectorState.FALLBACK)
        self._beat(CollectorState.FALLBACK, force=True)
        self._mark(PROVIDER_STEP_S)
        try:
            self.provider_log.poll(self.lease.fence)
        except StaleFence:
            self.lost.set()
        except (WriteConflict, redis.RedisError) as exc:
            log.warning("provider log of instance %s not stored: %s", self.iid, type(exc).__name__)

    def _connect(self, routes: list[Route]) -> tuple[paramiko.SSHClient | None, Route | None]:
        """The first route that connects (the last good one first), or (None, None)."""
        if not routes:
            log.warning("instance %s has no SSH route yet (no 22/tcp mapping, no SSH gateway)", self.iid)
        for route in routes:
            if self._stopping():
                break
            self._mark(self.cfg.connect_step_s)
            try:
                client = open_client(route, self.iid, self.pkey, self.pins, self.cfg.ready_timeout_s,
                                     self.cfg.username)
            except SSHError as exc:
                log.info("SSH to instance %s via %s (%s:%s) failed: %s", self.iid, route.name, route.host,
                         route.port, getattr(exc, "reason", "error"))
                continue
            log.info("SSH connected to instance %s via %s", self.iid, route.name)
            self.events.emit("ssh-connected", instance_id=self.iid)
            return client, route
        return None, None

    def _session(self, client: paramiko.SSHClient, deadline: float) -> float:
        """Stream until the link dies, the hold ends or the lease is lost; returns the session's uptime."""
        connected = self.clock.monotonic()
        self.result.sessions += 1
        files = [Followed(path, self.store.offset(self.iid, path)) for path in self.cfg.files]
        try:
            self._mark(self.cfg.open_step_s(len(files)))
            for f in files:
                self.tailer.open(client, f)
            self._stream(client, files, deadline)
        except SSHError as exc:
            log.info("SSH session of instance %s ended: %s", self.iid, exc.message)
        except (TimeoutError, paramiko.SSHException, EOFError, OSError) as exc:  # a read at its deadline
            log.info("SSH session of instance %s ended: %s", self.iid, type(exc).__name__)
        except (StaleFence, WriteConflict) as exc:
            log.warning("collector of instance %s stops writing: %s", self.iid, exc.message)
            if isinstance(exc, StaleFence):
                self.lost.set()
        finally:
            for f in files:
                self.result.offsets[f.path] = f.offset
                if f.channel is not None:
                    with contextlib.suppress(Exception):
                        f.channel.close()
            with contextlib.suppress(Exception):
                client.close()
        return self.clock.monotonic() - connected


__all__ = ["BATCH_BYTES", "HEARTBEAT_EVERY_S", "READ_CHUNK", "Collector", "CollectorState", "RunResult",
           "StopReason"]
