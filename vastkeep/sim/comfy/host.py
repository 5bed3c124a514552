"""Every instance's ComfyUI process, kept in step with the simulator's faults, and the log of each prompt's
phases.

A ComfyUI is one process per instance, whichever path (``8188/tcp``, ``18188/tcp``, direct) a client comes in
by. It is **dead** while its container is not running (exited, stopped, outbid, OCI error, still booting) or
when every ComfyUI path is crashed — a crash loses the running prompt, the queue and the history, and the next
request meets a fresh process. It is **hung** while every ComfyUI path hangs: the running prompt freezes
mid-node. A black-holed or offline path, or a slow one, leaves the process running; only what reaches the
client is held back or late.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vastkeep.sim.comfy.engine import ComfyProcess
from vastkeep.sim.comfy.execute import Dirs
from vastkeep.sim.state import COMFY_ENDPOINTS, Endpoint, Instance

if TYPE_CHECKING:
    from vastkeep.sim.core import Simulator

log = logging.getLogger("vastkeep.sim")

#: The lines a real ComfyUI prints for a prompt's phases (what the container log and SSH ``tail`` show).
CONSOLE = {
    "queued": "got prompt",
    "execution_interrupted": "Processing interrupted",
}


def comfy_paths(inst: Instance) -> list[Endpoint]:
    return [ep for name, ep in inst.endpoints.items() if name in COMFY_ENDPOINTS]


def process_alive(inst: Instance) -> bool:
    """Is the ComfyUI process of this instance running (whether or not anyone can reach it)?"""
    up = inst.actual_status == "running" or inst.fault == "offline"
    eps = comfy_paths(inst)
    return up and inst.comfy_ready and not (eps and all(ep.comfy_mode == "crash" for ep in eps))


def process_hung(inst: Instance) -> bool:
    eps = comfy_paths(inst)
    return bool(eps) and all(ep.comfy_mode == "hang" for ep in eps)


class ComfyHost:
    """The live ComfyUI processes, by instance id; created on first use, dropped when their process dies."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.procs: dict[int, ComfyProcess] = {}

    def dirs(self, inst: Instance) -> Dirs:
        """The folders are made when something is written into them (10,000 held websockets make none)."""
        return Dirs(self.sim.config.state_dir / "instances" / str(inst.id) / "comfy")

    def process(self, inst: Instance) -> ComfyProcess:
        proc = self.procs.get(inst.id)
        if proc is None:
            proc = self.procs[inst.id] = ComfyProcess(
                inst.id,
                self.dirs(inst),
                self.sim.clock,
                lambda: inst.prompt_s,
                lambda pid, phase, **detail: self.phase(inst, pid, phase, **detail),
                lambda n: setattr(inst, "queue_remaining", n),
            )
            proc.set_awake(not process_hung(inst))
        return proc

    def observe(self, inst: Instance) -> None:
        """After every fault change of ``inst``: kill, freeze or wake its process."""
        proc = self.procs.get(inst.id)
        if proc is None:
            return
        if not process_alive(inst):
            reason = (
                "crash"
                if inst.actual_status == "running"
                else (inst.fault or inst.actual_status or "stopped")
            )
            self.procs.pop(inst.id).kill(str(reason))
            return
        proc.set_awake(not process_hung(inst))

    def forget(self, inst: Instance) -> None:
        proc = self.procs.pop(inst.id, None)
        if proc is not None:
            proc.kill("destroyed")

    def stop_all(self) -> None:
        """The simulator stops: every process's worker ends (no phases: nothing was lost to a fault)."""
        for proc in self.procs.values():
            proc.stop()
        self.procs.clear()

    def phase(self, inst: Instance, prompt_id: str, phase: str, **detail: object) -> None:
        """Record one phase of a prompt: the control API's list, the simulator's log, ComfyUI's console."""
        entry = {"ts": round(self.sim.clock.now(), 3), "prompt_id": prompt_id, "phase": phase, **detail}
        inst.comfy_phases.append(entry)
        log.info(
            "comfy instance=%s prompt=%s phase=%s %s",
            inst.id,
            prompt_id,
            phase,
            " ".join(f"{k}={v}" for k, v in detail.items()),
        )
        line = CONSOLE.get(phase)
        if phase == "done" and detail.get("status") == "success":
            line = f"Prompt executed in {detail.get('elapsed_s', 0):.2f} seconds"
        elif phase == "execution_error":
            line = f"!!! Exception during processing !!! {detail.get('exception_type')}"
        elif phase == "rejected":
            line = f"invalid prompt: {detail.get('error')}"
        if line:
            self.sim.append_log(inst, [line])
