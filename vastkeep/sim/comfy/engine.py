"""One simulated ComfyUI process: its prompt queue, history, node cache, websocket clients and the worker
that runs prompts one at a time in queue order, shaped like ComfyUI's ``PromptQueue``, ``PromptExecutor`` and
``PromptServer.send_sync`` (same tuples, same messages, same order, same fields).

No web framework here: a websocket client is anything with ``push(kind, payload)`` (``"json"`` and a dict, or
``"bytes"`` and a binary frame). Faults reach a process from outside: :meth:`ComfyProcess.set_awake`
freezes the worker (a hung process), :meth:`ComfyProcess.kill` loses everything in memory (a crash).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from vastkeep.core.clock import Clock
from vastkeep.sim.comfy import plan, png
from vastkeep.sim.comfy.execute import Dirs, NodeFailure, run_node
from vastkeep.sim.comfy.validate import validate_prompt

log = logging.getLogger("vastkeep.sim")

MAXIMUM_HISTORY_SIZE = 10000
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
SLICE_S = 0.02  # work is done in slices this long, so a hang freezes a node within one slice


class Client(Protocol):
    def push(self, kind: str, payload: object) -> None: ...


class Queued(NamedTuple):
    """One queued prompt, as ``/queue`` lists it (``[number, prompt_id, prompt, extra_data, outputs]``)."""

    number: float
    prompt_id: str
    prompt: dict[str, Any]  # the prompt's raw JSON, checked by validate_prompt
    extra: dict[str, object]
    outputs: list[str]


#: A node's cached result: its output values and the ``ui`` part of its history entry.
CacheEntry = tuple[tuple[object, ...], dict[str, object] | None]
#: How a prompt ended: (status, outputs, meta, status messages) for its history entry.
Finished = tuple[str, dict[str, object], dict[str, object], list[list[object]]]


class Interrupted(Exception):
    """``POST /interrupt`` reached a node boundary or a sampler step."""


class ComfyProcess:
    """The in-memory state of one running ComfyUI; gone (and started afresh) when its process dies."""

    def __init__(
        self,
        instance_id: int,
        dirs: Dirs,
        clock: Clock,
        prompt_s: Callable[[], float],
        on_phase: Callable[..., None],
        on_queue: Callable[[int], None],
    ) -> None:
        self.instance_id = instance_id
        self.dirs = dirs
        self.clock = clock
        self.prompt_s = prompt_s
        self.on_phase = on_phase
        self.on_queue = on_queue
        self.rng = random.Random()
        self.number = 0
        self.queue: list[Queued] = []
        self.running: Queued | None = None
        self.history: dict[str, dict[str, object]] = {}
        self.cache: dict[str, CacheEntry] = {}
        self.sockets: dict[str, Client] = {}
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.interrupt_flag = False
        self.awake = asyncio.Event()
        self.awake.set()
        self._wake = asyncio.Event()
        # started by the first prompt (a websocket alone costs no task)
        self._worker: asyncio.Task[None] | None = None

    # ── websocket clients ───────────────────────────────────────────────────
    def attach(self, sid: str, client: Client) -> None:
        """A newer socket with the same clientId takes over (the older gets nothing more)."""
        self.sockets[sid] = client
        client.push("json", {"type": "status", "data": {"status": self.queue_info(), "sid": sid}})
        if self.client_id == sid and self.last_node_id is not None:  # a reconnect while its prompt runs
            client.push("json", {"type": "executing", "data": {"node": self.last_node_id}})

    def detach(self, sid: str, client: Client) -> None:
        if self.sockets.get(sid) is client:
            del self.sockets[sid]

    def send(self, event: str, data: object, sid: str | None) -> None:
        """``send_sync``: to one clientId, or to every socket when ``sid`` is None (``bytes``: binary)."""
        if sid is None:
            targets = list(self.sockets.values())
        else:
            targets = [self.sockets[sid]] if sid in self.sockets else []
        kind, payload = ("bytes", data) if event == "bytes" else ("json", {"type": event, "data": data})
        for c in targets:
            c.push(kind, payload)

    def _to_client(self, event: str, data: object) -> None:
        """What ComfyUI sends only when the prompt named a client (``executing``, ``executed``)."""
        if self.client_id is not None:
            self.send(event, data, self.client_id)

    def remaining(self) -> int:
        return len(self.queue) + (1 if self.running is not None else 0)

    def queue_info(self) -> dict[str, object]:
        return {"exec_info": {"queue_remaining": self.remaining()}}

    def queue_updated(self) -> None:
        self.on_queue(self.remaining())
        self.send("status", {"status": self.queue_info()}, None)

    # ── the HTTP side's operations ──────────────────────────────────────────
    def submit(self, body: dict[str, Any]) -> tuple[int, dict[str, object]]:
        """``POST /prompt``: (status, answer). ``number`` rises on every parsed body, rejected ones too."""
        if "number" in body:
            number: float = float(body["number"])
        else:
            number = self.number
            if body.get("front"):
                number = -number
            self.number += 1
        if "prompt" not in body:
            no_prompt = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return 400, {"error": no_prompt, "node_errors": {}}
        prompt = body["prompt"]
        prompt_id = str(body.get("prompt_id", uuid.uuid4()))
        files = self.dirs.input_files()
        ok, error, outputs, node_errors = validate_prompt(prompt, files, lambda f: f in files)
        if not ok:
            self.on_phase(prompt_id, "rejected", error=(error or {}).get("type"))
            return 400, {"error": error, "node_errors": node_errors}
        extra = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        for key in SENSITIVE_EXTRA_DATA_KEYS:
            extra.pop(key, None)
        self.queue.append(Queued(number, prompt_id, prompt, extra, outputs))
        self.queue.sort(key=lambda item: item[0])
        self.on_phase(prompt_id, "queued", number=number)
        self.queue_updated()
        self._wake.set()
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work_loop())
        return 200, {"prompt_id": prompt_id, "number": number, "node_errors": node_errors}

    def current_queue(self) -> dict[str, list[list[object]]]:
        return {
            "queue_running": [list(self.running)] if self.running else [],
            "queue_pending": [list(item) for item in self.queue],
        }

    def delete_pending(self, ids: list[object]) -> None:
        before = len(self.queue)
        self.queue = [item for item in self.queue if item[1] not in ids]
        if len(self.queue) != before:
            self.queue_updated()

    def clear_pending(self) -> None:
        self.queue = []
        self.queue_updated()

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop the running prompt at its next node boundary or sampler step (one named prompt, or any)."""
        if prompt_id and (self.running is None or self.running[1] != prompt_id):
            return
        self.interrupt_flag = True

    def get_history(
        self, prompt_id: str | None = None, max_items: int | None = None, offset: int = -1
    ) -> dict[str, object]:
        if prompt_id is not None:
            return (
                {prompt_id: json.loads(json.dumps(self.history[prompt_id]))}
                if prompt_id in self.history
                else {}
            )
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        out: dict[str, object] = {}
        for i, (k, v) in enumerate(self.history.items()):
            if i >= offset:
                out[k] = v
                if max_items is not None and len(out) >= max_items:
                    break
        return out

    # ── faults ──────────────────────────────────────────────────────────────
    def set_awake(self, awake: bool) -> None:
        if awake == self.awake.is_set():
            return
        if awake:
            self.awake.set()
        else:
            self.awake.clear()
        if self.running is not None:
            self.on_phase(self.running[1], "resumed" if awake else "hung", node=self.last_node_id)

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    def kill(self, reason: str) -> None:
        """The process died: the running prompt, the queue, the history and every socket are gone."""
        self.stop()
        lost = ([self.running] if self.running else []) + self.queue
        for item in lost:
            self.on_phase(
                item[1], "lost", reason=reason, node=self.last_node_id if item is self.running else None
            )
        self.queue, self.running, self.sockets = [], None, {}
        self.on_queue(0)

    # ── the worker ──────────────────────────────────────────────────────────
    async def _work_loop(self) -> None:
        while True:
            await self.awake.wait()
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            item = self.queue.pop(0)
            self.running = item
            self.queue_updated()
            started = asyncio.get_running_loop().time()
            status, outputs, meta, messages = await self._execute(item)
            self.running = None
            if len(self.history) > MAXIMUM_HISTORY_SIZE:
                self.history.pop(next(iter(self.history)))
            self.history[item[1]] = {
                "prompt": list(item),
                "outputs": outputs,
                "status": {"status_str": status, "completed": status == "success", "messages": messages},
                "meta": meta,
            }
            self.queue_updated()
            self._to_client("executing", {"node": None, "prompt_id": item[1]})
            self.on_phase(
                item[1],
                "done",
                status=status,
                elapsed_s=round(asyncio.get_running_loop().time() - started, 3),
            )

    def _timestamp(self) -> int:
        return int(self.clock.now() * 1000)

    async def _execute(self, item: Queued) -> Finished:
        """Run one prompt; returns (status_str, outputs, meta, status messages) for its history entry."""
        _, pid, prompt, extra, execute_outputs = item
        self.interrupt_flag = False
        client_id = extra.get("client_id")
        self.client_id = client_id if isinstance(client_id, str) else None
        messages: list[list[object]] = []

        def add(event: str, data: dict[str, object]) -> None:
            data = {**data, "timestamp": self._timestamp()}
            messages.append([event, data])
            if self.client_id is not None:
                self.send(event, data, self.client_id)

        add("execution_start", {"prompt_id": pid})
        self.on_phase(pid, "execution_start")
        memo: dict[str, str] = {}
        sigs = {nid: plan.signature(prompt, nid, self.dirs, memo) for nid in prompt}
        cached = [nid for nid in prompt if sigs[nid] in self.cache]
        add("execution_cached", {"nodes": cached, "prompt_id": pid})
        run_order = plan.order(prompt, execute_outputs, set(cached))
        weights = {nid: plan.steps(prompt[nid]) for nid in run_order}
        total_s, total_w = max(self.prompt_s(), 0.0), sum(weights.values()) or 1
        values: dict[str, tuple[object, ...]] = {nid: self.cache[sigs[nid]][0] for nid in cached}
        outputs: dict[str, object] = {}
        meta: dict[str, object] = {}
        executed: list[str] = []
        states: dict[str, dict[str, object]] = {}
        for nid in cached:  # a cached output node shows its old result again
            self._shown(pid, nid, self.cache[sigs[nid]][1], outputs, meta)
        new_cache = {sigs[nid]: self.cache[sigs[nid]] for nid in cached}
        for nid in run_order:
            class_type = prompt[nid]["class_type"]
            try:
                if self.interrupt_flag:
                    raise Interrupted()
                self.last_node_id = nid
                states[nid] = plan.state(pid, nid, 0, 1, "running")
                self.send("progress_state", {"prompt_id": pid, "nodes": dict(states)}, self.client_id)
                self._to_client("executing", {"node": nid, "display_node": nid, "prompt_id": pid})
                self.on_phase(pid, "executing", node=nid, class_type=class_type)
                args = plan.inputs(prompt[nid], values)
                await self._run_for(total_s * weights[nid] / total_w, pid, nid, prompt[nid], states)
                result, ui = run_node(class_type, args, self.dirs, self.rng)
            except Interrupted:
                add(
                    "execution_interrupted",
                    {"prompt_id": pid, "node_id": nid, "node_type": class_type, "executed": list(executed)},
                )
                self.on_phase(pid, "execution_interrupted", node=nid)
                return self._finish(new_cache, "error", outputs, meta, messages)
            except Exception as exc:  # a node raised: the prompt ends in execution_error
                kind = exc.exception_type if isinstance(exc, NodeFailure) else type(exc).__name__
                add("execution_error", _error_data(pid, nid, class_type, executed, exc, kind, values))
                self.on_phase(pid, "execution_error", node=nid, exception_type=kind)
                return self._finish(new_cache, "error", outputs, meta, messages)
            values[nid] = result
            new_cache[sigs[nid]] = (result, ui)
            executed.append(nid)
            states[nid] = plan.state(pid, nid, 1, 1, "finished")
            self._shown(pid, nid, ui, outputs, meta)
        self.last_node_id = None
        add("execution_success", {"prompt_id": pid})
        self.on_phase(pid, "execution_success")
        return self._finish(new_cache, "success", outputs, meta, messages)

    def _shown(self, pid: str, nid: str, ui: Any, outputs: dict[str, object],
               meta: dict[str, object]) -> None:
        """An output node's result: into the history entry, and ``executed`` to the client."""
        if not ui:
            return
        outputs[nid] = ui
        meta[nid] = plan.meta(nid)
        self._to_client("executed", {"node": nid, "display_node": nid, "output": ui, "prompt_id": pid})

    def _finish(self, cache: dict[str, CacheEntry], status: str, outputs: dict[str, object],
                meta: dict[str, object], messages: list[list[object]]) -> Finished:
        self.cache = cache
        self.last_node_id = None
        return status, outputs, meta, messages

    async def _run_for(self, seconds: float, pid: str, nid: str, node: dict[str, Any],
                       states: dict[str, dict[str, object]]) -> None:
        """Work ``seconds``; a sampler reports ``progress`` and a preview per step (interrupts land there)."""
        loop = asyncio.get_running_loop()
        count = plan.steps(node)
        for step in range(1, count + 1):
            left = seconds / count  # work left: time spent hung does not count
            while left > 0:
                await self.awake.wait()
                began = loop.time()
                await asyncio.sleep(min(SLICE_S, left))
                left -= loop.time() - began
            await self.awake.wait()
            if self.interrupt_flag:
                raise Interrupted()
            if node["class_type"] == "KSampler":
                states[nid] = plan.state(pid, nid, step, count, "running")
                self.send("progress_state", {"prompt_id": pid, "nodes": dict(states)}, self.client_id)
                self.send(
                    "progress", {"value": step, "max": count, "prompt_id": pid, "node": nid}, self.client_id
                )
                self.send(
                    "bytes",
                    plan.preview_frame(png.encode_rgb(64, 64, color=(step * 0x0F0F0F) & 0xFFFFFF)),
                    self.client_id,
                )


def _error_data(pid: str, nid: str, class_type: str, executed: list[str], exc: Exception, kind: str,
                values: dict[str, tuple[object, ...]]) -> dict[str, object]:
    """``execution_error``'s fields as ComfyUI's ``execution.py`` sends them."""
    return {
        "prompt_id": pid,
        "node_id": nid,
        "node_type": class_type,
        "executed": list(executed),
        "exception_message": str(exc),
        "exception_type": kind,
        "traceback": [f'  File "/opt/ComfyUI/execution.py", line 496, in execute\n    raise {kind}\n'],
        "current_inputs": {},
        "current_outputs": list(values),
    }
