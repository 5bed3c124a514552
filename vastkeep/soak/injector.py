"""The fault injector (I/O): turns a :class:`~vastkeep.soak.plan.FaultStep` into calls of the simulator's
control API or signals to the stack's processes, and undoes it after its hold.

Targets: instance faults strike one instance among those the warm-pool status shows ready (leased ones
preferred, so clients meet the fault), picked by the step's ``pick``; SSH faults strike an instance whose
log collector runs (collectors run while an instance provisions); process faults strike the stack child
the supervisor runs (``kill -9`` of its leader, which the watchdog must restart; ``SIGTERM``, for Redis: a
clean stop that the watchdog restarts on the same AOF; ``SIGSTOP`` of its whole process group, pool children
included, then ``SIGCONT``; for host B, its Redis link cut at the relay, then restored).
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import TYPE_CHECKING, TypedDict

from vastkeep.soak.counters import whole
from vastkeep.soak.plan import API, FAMILIES, INSTANCE, PROCESS, FaultStep, Signal, pick_target

if TYPE_CHECKING:
    from vastkeep.core.clock import Clock
    from vastkeep.sim.control import SimControl
    from vastkeep.soak.stackrun import SoakStack

_SSH_ENDPOINTS = ("22/tcp", "ssh_proxy")
NO_TARGET = "no instance to strike (none ready; for SSH faults, none with a running collector)"


class Injection(TypedDict, total=False):
    """One fault as applied (epoch seconds); the runner and the judges fill in what they learn after."""

    family: str
    planned_at_s: float
    hold_s: float
    injected: bool
    target: str | None
    at: float
    error: str
    pid: int
    restarts_before: object
    restored_at: float
    under_prompt: bool  # comfy-crash: a client's prompt was running on the target when it struck
    spares: int  # comfy-crash: instances free for a lease in the last status before it struck
    spare_ids: list[str]  # ... and which
    undo_error: str
    respawned_at: float
    back_at: float
    observed_s: float | None
    spawned_at: float  # a killed or stopped-and-restarted child's new process started (supervisor's time)
    gone_at: float | None  # redis-restart: when the stopped Redis first failed to answer (None: it never did)
    restarts_all: dict[str, int]  # Redis faults: every child's restart count when struck
    exited: list[str]  # Redis faults: children that exited (and were restarted) over it
    pids: dict[str, int]  # a fault on several children at once: each one's leader pid
    backs: dict[str, float]  # ... and when each one served again
    hostb_shards: list[str]  # host B faults: the keepalive shards host B held when struck
    moved_at: float  # ... when every one of them was held by a grant taken after the fault
    refused: int  # ... host B's renewals and fenced writes refused after it came back


class Injector:
    """Apply and undo faults; each injection is a dict the judges read (``family``, ``target``, ``at``)."""

    def __init__(self, control: SimControl, stack: SoakStack, clock: Clock) -> None:
        self.control = control
        self.stack = stack
        self.clock = clock

    def apply(
        self, step: FaultStep, ready: list[str], leased: list[str], collecting: list[str] | None = None
    ) -> Injection:
        fam = FAMILIES[step.family]
        inj: Injection = {
            "family": step.family,
            "planned_at_s": step.at_s,
            "hold_s": step.hold_s,
            "injected": False,
            "target": None,
            "at": self.clock.now(),
        }
        struck: float | None = None  # when the signal went, for a fault that measures after it
        try:
            if fam.target == INSTANCE:
                if step.family.startswith("ssh-"):  # only a running collector can notice an SSH fault
                    target = pick_target(list(collecting or []), step.pick)
                elif step.family == "comfy-crash":  # under a prompt: the short form's failover mid-prompt
                    target = prompting(self.control, self.clock, [*leased, *ready])  # ready: leased next
                    inj["under_prompt"] = target is not None
                    target = target or pick_target(leased, step.pick) or pick_target(ready, step.pick)
                else:
                    target = pick_target(leased, step.pick) or pick_target(ready, step.pick)
                if target is None:
                    inj["error"] = NO_TARGET
                    return inj
                inj["target"] = target
                self._instance(step, int(target))
            elif fam.target == API:
                self._api(step)
            elif fam.target == PROCESS and fam.together:
                pids: dict[str, int] = {}
                for cid, pid in self.stack.pids().items():
                    if cid in fam.stops and pid:
                        pids[cid] = pid
                if set(pids) != set(fam.stops):
                    inj["error"] = f"not running: {sorted(set(fam.stops) - set(pids))}"
                    return inj
                inj["target"], inj["pid"], inj["pids"] = "control-plane", pids[fam.process or ""], pids
                for pid in pids.values():
                    self._process(fam.signal, pid)
            elif fam.target == PROCESS:
                process = fam.process or ""
                pid = self.stack.pids().get(process)
                if not pid:
                    inj["error"] = f"{fam.process} not running"
                    return inj
                restarts_before = self.stack.status()[process]["restartCount"]
                inj["target"], inj["pid"], inj["restarts_before"] = fam.process, pid, restarts_before
                self._process(fam.signal, pid)
                if process == "redis" and fam.signal == Signal.TERM:
                    struck = self.clock.now()
                    inj["gone_at"] = stopped_answering(self.stack.endpoints.redis_url, self.clock)
        except Exception as exc:  # noqa: BLE001 - a failed injection is reported, never fatal to the soak
            inj["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            return inj
        inj["at"] = struck if struck is not None else self.clock.now()
        inj["injected"] = True
        return inj

    def _process(self, how: Signal | None, pid: int) -> None:
        if how == Signal.KILL:
            os.kill(pid, signal.SIGKILL)
        elif how == Signal.TERM:
            os.kill(pid, signal.SIGTERM)
        elif how == Signal.STOP:
            os.killpg(pid, signal.SIGSTOP)
        elif how == Signal.CUT and self.stack.relay is not None:
            self.stack.relay.cut()
        else:
            raise ValueError(f"no way to strike a process with {how}")

    def _instance(self, step: FaultStep, iid: int) -> None:
        c, name = self.control, step.family
        if name == "comfy-crash":
            c.crash_comfy(iid)
        elif name == "comfy-hang":
            c.hang_comfy(iid)
        elif name == "comfy-slow":
            c.slow_comfy(iid, float(step.params.get("delay_s", 10.0)))
        elif name == "host-offline":
            c.host_offline(iid)
        elif name == "host-exited":
            c.exit_instance(iid)
        elif name == "outbid":
            c.outbid(iid)
        elif name == "destroyed-outside":
            c.destroy_outside(iid)
        elif name == "ssh-drop":
            c.kill_ssh_sessions(iid)
        elif name == "ssh-blackhole":
            done = 0
            for ep in _SSH_ENDPOINTS:  # an instance may have no proxy route: at least one must take
                try:
                    c.blackhole(iid, ep)
                    done += 1
                except RuntimeError:
                    if ep == _SSH_ENDPOINTS[-1] and not done:
                        raise
        else:
            raise ValueError(name)

    def _api(self, step: FaultStep) -> None:
        c, name, p = self.control, step.family, step.params
        if name == "api-slow":
            c.slow_api(float(p.get("delay_s", 10.0)), service="vast", count=int(p.get("count", 2)))
        elif name == "api-429":
            c.rate_limit_burst(int(p.get("count", 3)))
        elif name == "api-5xx":
            c.server_error_burst(int(p.get("count", 3)), status=int(p.get("status", 503)))
        elif name == "api-empty":
            c.bad_body("empty", int(p.get("count", 1)))
        elif name == "api-malformed":
            c.bad_body("malformed", int(p.get("count", 1)))
        else:
            raise ValueError(name)

    def undo(self, inj: Injection) -> None:
        """Undo a restorable fault (ComfyUI back up, SSH path open, SIGCONT); records ``restored_at``."""
        fam = FAMILIES[inj["family"]]
        if not inj.get("injected") or not fam.restorable or fam.hold_s[1] <= 0:
            return
        try:
            if fam.target == INSTANCE:
                iid = whole(inj["target"])
                if fam.name == "ssh-blackhole":
                    for ep in _SSH_ENDPOINTS:
                        with contextlib.suppress(RuntimeError):
                            self.control.open_path(iid, ep)
                else:
                    self.control.restore_comfy(iid)
            elif fam.target == PROCESS and fam.signal == Signal.STOP:
                os.killpg(int(inj["pid"]), signal.SIGCONT)
            elif fam.target == PROCESS and fam.signal == Signal.CUT and self.stack.relay is not None:
                self.stack.relay.restore()
        except Exception as exc:  # noqa: BLE001 - the instance may be gone by now (replaced)
            inj["undo_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        inj["restored_at"] = self.clock.now()


def stopped_answering(url: str, clock: Clock, limit_s: float = 5.0, timeout_s: float = 1.0) -> float | None:
    """When a Redis sent ``SIGTERM`` first failed to answer a ``PING`` (the start of that ``PING``).

    Redis goes on serving until its next cron tick after the signal (0.01-0.09 s measured here, more under
    load), so a lease granted just after the signal was granted by a Redis still up: the judge's
    "away" starts here, not at the signal. Each ``PING`` on a new connection, with no retry."""
    from redis import Redis, RedisError  # noqa: PLC0415
    from redis.backoff import NoBackoff  # noqa: PLC0415
    from redis.retry import Retry  # noqa: PLC0415

    deadline = clock.now() + limit_s
    while clock.now() < deadline:
        start = clock.now()
        client = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                  retry=Retry(NoBackoff(), 0))
        try:
            client.ping()
        except (RedisError, OSError):
            return start
        finally:
            client.close()
        clock.sleep(0.01)
    return None


def prompting(control: SimControl, clock: Clock, candidates: list[str], wait_s: float = 8.0,
              prompt_s: float = 5.0) -> str | None:
    """An instance whose ComfyUI is running a client's prompt now (past ``execution_start``, not done), from
    the simulator's phase log (only a leased instance runs one). None running: the instances' prompts are
    made ``prompt_s`` long (a client sends one per lease, at once) and the log is polled for up to ``wait_s``
    (a longer wait would push the plan's later faults back)."""
    deadline = clock.monotonic() + wait_s
    slowed = False
    while True:
        for iid in candidates:
            if _running_prompt(control, iid):
                return iid
        if clock.monotonic() >= deadline:
            return None
        if not slowed:
            slowed = True
            for iid in candidates:
                with contextlib.suppress(Exception):  # gone meanwhile
                    control.set_prompt_s(int(iid), prompt_s)
        clock.sleep(0.2)


def _running_prompt(control: SimControl, iid: str) -> bool:
    try:
        phases = control.comfy_phases(int(iid))
    except Exception:  # noqa: BLE001 - gone meanwhile: not this one
        return False
    last: dict[str, str] = {}
    for p in phases:
        last[str(p.get("prompt_id"))] = str(p.get("phase"))
    return any(ph in ("execution_start", "executing") for ph in last.values())


__all__ = ["NO_TARGET", "Injection", "Injector", "prompting"]
