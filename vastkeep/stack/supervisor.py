"""Layer 6: the process watchdog behind ``vastkeep up``.

Every long-running piece of the local stack (redis, the simulator, the workers, beat, the admin API,
Flower) is a child process. A child that dies is restarted on the guide's schedule (10 s, 20 s,
40 s, then 60 s at most), and a child that stayed up past the gate time (60 s) has its crash
counter reset, the autossh GATETIME rule, so a flapping child backs off while a child that crashes
once a day restarts fast. The schedule is a pure function (:func:`restart_delay`); the loop uses an
injected :class:`~vastkeep.core.clock.Clock`, so tests run the whole schedule with tiny delays.

Children run in their own session (process group): a Ctrl-C in the terminal reaches the supervisor
only, which then stops every child in order: SIGTERM to the child itself (a Celery worker then runs its
warm shutdown and ends its own pool processes; a SIGTERM to the whole group would kill them under it, which
the worker logs as ``WorkerLostError``), a grace period, then SIGKILL to the whole group, so a worker's
pool processes never outlive ``vastkeep up``.

The log lines keep the guide's wording so existing log alerts keep working:
``[Watchdog] Registered process: <name>``, ``Restarted <id> (attempt N, M crashes)`` and
``[Watchdog] Process <name> FAILED after N restarts``.

With a ``publish`` callable the watchdog hands its :meth:`Supervisor.status` to it on every change and at
least every ``publish_interval_s`` (``vastkeep up`` publishes it to Redis, where the admin API's
``GET /api/proxy/admin/watchdog/status`` reads it); a failing publish never disturbs the watchdog.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from vastkeep.core.backoff import RestartPolicy, failures_after_session, restart_delay
from vastkeep.core.clock import SYSTEM_CLOCK, Clock, iso

log = logging.getLogger("vastkeep.stack")


@dataclass
class ChildSpec:
    """How to start one child. ``env`` carries configuration and secrets (never argv)."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    log_path: str | None = None  # None = inherit the supervisor's stdout/stderr
    stop_last: bool = False  # infrastructure (redis, simulator): stopped after everything else


@dataclass
class _Child:
    id: str
    spec: ChildSpec
    proc: subprocess.Popen | None = None
    status: str = "registered"  # running | backoff | failed | stopped
    restart_count: int = 0
    consecutive_crashes: int = 0
    started_mono: float | None = None
    last_start_time: float | None = None
    last_crash_time: float | None = None
    last_error: str | None = None
    next_start_mono: float | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)


class Supervisor:
    """Start, watch, restart and stop a set of child processes."""

    def __init__(
        self,
        *,
        policy: RestartPolicy | None = None,
        clock: Clock = SYSTEM_CLOCK,
        poll_interval_s: float = 0.5,
        stop_timeout_s: float = 15.0,
        on_change: Callable[[Supervisor], None] | None = None,
        publish: Callable[[dict[str, dict[str, Any]]], None] | None = None,
        publish_interval_s: float = 5.0,
    ) -> None:
        self.policy = policy or RestartPolicy()
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self.stop_timeout_s = stop_timeout_s
        self.on_change = on_change
        self.publish = publish
        self.publish_interval_s = publish_interval_s
        self._published_mono: float | None = None
        self._children: dict[str, _Child] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._stopped = False

    # ── registration and start ──────────────────────────────────────────────
    def register(self, child_id: str, spec: ChildSpec, *, start: bool = True) -> None:
        """Add a child under watch (and start it)."""
        with self._lock:
            if child_id in self._children:
                raise ValueError(f"child {child_id!r} is already registered")
            child = _Child(id=child_id, spec=spec)
            self._children[child_id] = child
            log.info("[Watchdog] Registered process: %s", spec.name)
            if start:
                self._start(child)

    def unregister(self, child_id: str) -> None:
        """Stop watching a child that never came up (its process group killed, its log closed)."""
        with self._lock:
            child = self._children.pop(child_id, None)
        if child is None:
            return
        if child.proc is not None:
            _signal_group(child.proc, signal.SIGKILL)
            try:
                child.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.error("[Watchdog] %s (pid %s) survived SIGKILL", child.spec.name, child.proc.pid)
        if child.log_file is not None:
            child.log_file.close()
        self._changed()

    def _start(self, child: _Child) -> None:
        spec = child.spec
        if child.log_file is None and spec.log_path:
            child.log_file = open(spec.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        out = child.log_file if child.log_file is not None else None
        try:
            child.proc = subprocess.Popen(
                list(spec.argv),
                env=dict(spec.env) if spec.env is not None else None,
                cwd=spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                start_new_session=True,
            )
        except OSError as exc:
            child.proc = None
            child.last_error = f"spawn failed: {exc.strerror or type(exc).__name__}"
            self._crashed(child)
            return
        child.status = "running"
        child.started_mono = self.clock.monotonic()
        child.last_start_time = self.clock.now()
        child.next_start_mono = None
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change(self)
            except Exception:  # a status file write must never take the watchdog down
                log.exception("supervisor on_change hook failed")
        self.publish_now()

    def publish_now(self) -> bool:
        """Hand :meth:`status` to ``publish`` (if any); False when there is none or it failed."""
        if self.publish is None:
            return False
        self._published_mono = self.clock.monotonic()
        try:
            self.publish(self.status())
        except Exception as exc:  # noqa: BLE001 - Redis may be one of the children, restarting
            log.debug("watchdog status publish failed: %s", type(exc).__name__)
            return False
        return True

    def _maybe_publish(self) -> None:
        last = self._published_mono
        if self.publish is not None and (last is None
                                         or self.clock.monotonic() - last >= self.publish_interval_s):
            self.publish_now()

    # ── watching ────────────────────────────────────────────────────────────
    def _crashed(self, child: _Child) -> None:
        now_mono = self.clock.monotonic()
        # A spawn that failed never came up: no uptime (the last run's start time is not this attempt's).
        came_up = child.proc is not None and child.started_mono is not None
        uptime = now_mono - child.started_mono if came_up else None
        # The gate rule resets the count after a run that stayed up; the crash ending that run is then
        # the first of a new series (so it still waits base_s), hence "or 1".
        child.consecutive_crashes = failures_after_session(
            child.consecutive_crashes, uptime, self.policy.stable_after_s) or 1
        child.last_crash_time = self.clock.now()
        if self.policy.max_restarts >= 0 and child.restart_count >= self.policy.max_restarts:
            child.status = "failed"
            log.error("[Watchdog] Process %s FAILED after %d restarts", child.spec.name, child.restart_count)
            self._changed()
            return
        delay = restart_delay(child.consecutive_crashes, self.policy)
        child.status = "backoff"
        child.next_start_mono = now_mono + delay
        log.warning("[Watchdog] Process %s exited (%s); restarting in %.1fs",
                    child.spec.name, child.last_error, delay)
        self._changed()

    def poll_once(self) -> None:
        """Notice dead children and restart those whose delay is over."""
        with self._lock:
            if self._stopping.is_set():
                return
            for child in self._children.values():
                if child.status == "running" and child.proc is not None:
                    rc = child.proc.poll()
                    if rc is not None:
                        child.last_error = f"exit code {rc}"
                        _signal_group(child.proc, signal.SIGKILL)  # orphans of the dead leader (pool workers)
                        self._crashed(child)
                if child.status == "backoff" and child.next_start_mono is not None \
                        and self.clock.monotonic() >= child.next_start_mono:
                    child.restart_count += 1
                    self._start(child)
                    if child.status == "running":
                        log.warning("Restarted %s (attempt %d, %d crashes)",
                                    child.id, child.restart_count, child.consecutive_crashes)

    def run(self, stop_event: threading.Event) -> None:
        """Watch until ``stop_event`` is set (the signal handler sets it), then stop every child."""
        try:
            while not stop_event.is_set():
                self.poll_once()
                self._maybe_publish()
                stop_event.wait(self.poll_interval_s)
        finally:
            self.stop_all()

    # ── stopping ────────────────────────────────────────────────────────────
    def stop_all(self) -> None:
        """SIGTERM every child itself, wait up to ``stop_timeout_s``, then SIGKILL its whole group."""
        with self._lock:
            if self._stopped:
                return  # idempotent: never signal pids that may have been reused since
            self._stopping.set()
            self._stopped = True
            children = list(self._children.values())
            first = [c for c in reversed(children) if not c.spec.stop_last]
            last = [c for c in reversed(children) if c.spec.stop_last]
            for group in (first, last):
                self._stop_group(group)
            for child in children:
                child.status = "stopped"
                if child.log_file is not None:
                    child.log_file.close()
                    child.log_file = None
        self._changed()

    def _stop_group(self, group: list[_Child]) -> None:
        live = [c for c in group if c.proc is not None]
        for child in live:
            _signal_leader(child.proc, signal.SIGTERM)
        deadline = self.clock.monotonic() + self.stop_timeout_s
        for child in live:
            remaining = max(0.0, deadline - self.clock.monotonic())
            try:
                child.proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                log.warning("[Watchdog] %s did not stop within %.0fs: SIGKILL", child.spec.name,
                            self.stop_timeout_s)
            # the leader may be gone while its pool children linger: always sweep the group
            _signal_group(child.proc, signal.SIGKILL)
            try:
                child.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.error("[Watchdog] %s (pid %s) survived SIGKILL", child.spec.name, child.proc.pid)

    # ── status ──────────────────────────────────────────────────────────────
    def pids(self) -> dict[str, int | None]:
        """Child id → current pid (None while not running)."""
        with self._lock:
            return {cid: (c.proc.pid if c.proc is not None and c.status == "running" else None)
                    for cid, c in self._children.items()}

    def status(self) -> dict[str, dict[str, Any]]:
        """The guide's ``processWatchdog.getStatus()`` shape."""
        with self._lock:
            return {
                cid: {
                    "name": c.spec.name,
                    "pid": c.proc.pid if c.proc is not None and c.status == "running" else None,
                    "status": c.status,
                    "restartCount": c.restart_count,
                    "consecutiveCrashes": c.consecutive_crashes,
                    "lastStartTime": iso(c.last_start_time),
                    "lastCrashTime": iso(c.last_crash_time),
                    "lastError": c.last_error,
                }
                for cid, c in self._children.items()
            }


def _signal_leader(proc: subprocess.Popen, sig: int) -> None:
    """Signal the child process itself (not its pool processes); ignore one that is already gone."""
    try:
        if proc.poll() is None:
            proc.send_signal(sig)
    except ProcessLookupError:
        pass


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the child's whole process group (it leads its own session); ignore what is already gone."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            if proc.poll() is None:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass
