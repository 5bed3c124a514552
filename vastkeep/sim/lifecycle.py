"""An instance's status lifecycle as the real API shows it: created → loading → running with ComfyUI ready,
a stop and a restart, an injected fault state (exited, offline, outbid, error), a destroy.

Each lifecycle runs as one asyncio task per instance, replaced when the instance is restarted and cancelled
when it is stopped or destroyed; the listeners follow the status through :meth:`Network.apply`.
"""

from __future__ import annotations

import asyncio
import logging

from vastkeep.core.clock import Clock
from vastkeep.sim.container_logs import ContainerLogs
from vastkeep.sim.faults import Ledger
from vastkeep.sim.net import Network
from vastkeep.sim.ssh import SshService
from vastkeep.sim.state import OCI_ERROR, Instance, IpAllocator

log = logging.getLogger("vastkeep.sim")


class InstanceLifecycle(ContainerLogs):
    """Status changes of instances, written to their container logs (mixed into
    :class:`~vastkeep.sim.core.Simulator`)."""

    clock: Clock
    instances: dict[int, Instance]
    ledger: Ledger
    net: Network
    ssh: SshService | None
    ips: IpAllocator
    _tasks: dict[int, asyncio.Task[None]]

    def begin(self, inst: Instance, from_loading: bool = False) -> None:
        """(Re)start the status lifecycle of an instance as a background task."""
        old = self._tasks.pop(inst.id, None)
        if old is not None:
            old.cancel()
        self._tasks[inst.id] = asyncio.create_task(self._lifecycle(inst, from_loading))

    async def _lifecycle(self, inst: Instance, from_loading: bool) -> None:
        lc = inst.lifecycle
        try:
            if not from_loading:
                inst.actual_status, inst.status_msg = None, "Provisioning"
                await asyncio.sleep(lc.created_s / 2)
                inst.actual_status = "created"
                await asyncio.sleep(lc.created_s / 2)
            inst.actual_status, inst.status_msg = "loading", f"Pulling image {inst.image}"
            await self._logging_phase(inst, lc.loading_s, "[image] pulling layer")
            inst.actual_status, inst.status_msg = "running", f"success, running {inst.image}"
            inst.running_since = self.clock.now()
            await self.net.apply(inst)
            self.append_log(inst, ["[onstart] container started; provisioning ComfyUI"])
            if inst.onstart:
                self.append_log(inst, [f"[onstart] running the onstart script ({len(inst.onstart)} bytes)"])
            await self._logging_phase(inst, lc.boot_s, "[provision] installing nodes and models")
            inst.comfy_ready = True
            self.append_log(inst, ["[onstart] Starting server", "To see the GUI go to: http://0.0.0.0:8188"])
            await self.net.apply(inst)
        except asyncio.CancelledError:
            raise
        except OSError as exc:
            log.warning("instance %s: could not open its listeners: %s", inst.id, exc)
        finally:
            if self._tasks.get(inst.id) is asyncio.current_task():
                self._tasks.pop(inst.id, None)

    async def _logging_phase(self, inst: Instance, duration_s: float, text: str) -> None:
        """Wait ``duration_s`` while the provisioning log grows, one line per ``log_interval_s``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + duration_s
        n = 0
        step = max(inst.lifecycle.log_interval_s, 0.01)
        while True:
            n += 1
            self.append_log(inst, [f"{text} ({n})"])
            left = end - loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(step, left))

    async def make_running(self, inst: Instance) -> None:
        """Skip the lifecycle: running and ComfyUI ready now (bulk creation, tests)."""
        inst.actual_status, inst.status_msg = "running", f"success, running {inst.image}"
        inst.running_since = self.clock.now()
        inst.comfy_ready = True
        await self.net.apply(inst, strict=True)

    async def destroy(self, inst: Instance, via: str = "api") -> None:
        if inst.id in self.instances:
            self.ledger.add("destroy", inst.id, self.clock.now(), label=inst.label, via=via)
        task = self._tasks.pop(inst.id, None)
        if task is not None:
            task.cancel()
        self.instances.pop(inst.id, None)
        await self.net.remove(inst)
        if self.ssh is not None:
            self.ssh.unlink_instance(inst.ip)
        self.ips.release(inst.ip)

    async def set_intended(self, inst: Instance, state: str) -> None:
        """``PUT /instances/{id}/ {"state": ...}``: stop or (re)start.

        A stop is what the real API shows: ``intended_status`` and ``next_state`` turn ``stopped`` at once,
        ``cur_state`` once the container is down, and ``actual_status`` is then ``exited`` (the container's
        own state; the CLI's ``--status`` filter knows running, loading, exited and created only).
        """
        if state == "stopped":
            old = self._tasks.pop(inst.id, None)
            if old is not None:
                old.cancel()
            inst.intended_status = inst.next_state = "stopped"
            await asyncio.sleep(inst.lifecycle.stop_s)
            inst.cur_state = "stopped"
            inst.actual_status, inst.status_msg = "exited", "Exited (0) stopped by user"
            inst.comfy_ready = False
            inst.running_since = None
            await self.net.apply(inst)
        elif state == "running" and (inst.actual_status != "running" or inst.intended_status != "running"):
            inst.intended_status = inst.cur_state = inst.next_state = "running"
            inst.fault = None
            self.begin(inst, from_loading=True)

    async def set_fault_state(self, inst: Instance, state: str) -> None:
        """Put an instance into exited / offline / outbid / error, or back to running (``running``)."""
        old = self._tasks.pop(inst.id, None)
        if old is not None:
            old.cancel()
        if state == "running":
            inst.fault = None
            inst.intended_status = inst.cur_state = inst.next_state = "running"
            await self.make_running(inst)
            return
        inst.fault, inst.comfy_ready = state, state == "offline" and inst.comfy_ready
        if state != "outbid":  # the other faults strike an instance that is meant to run
            inst.intended_status = inst.cur_state = inst.next_state = "running"
        if state == "exited":  # the container died while it was meant to run
            inst.actual_status, inst.status_msg = "exited", "Exited (137) container died"
        elif state == "offline":
            inst.actual_status, inst.status_msg = "offline", "host offline: no recent heartbeat"
        elif state == "outbid":  # the host stopped the container: every state field says stopped
            inst.actual_status, inst.status_msg = "exited", "stopped: outbid by a higher bid"
            inst.intended_status = inst.cur_state = inst.next_state = "stopped"
            inst.is_bid = True
        elif state == "error":
            inst.actual_status, inst.status_msg = "created", OCI_ERROR
        else:
            raise ValueError(f"unknown state {state!r}")
        await self.net.apply(inst)


__all__ = ["InstanceLifecycle"]
