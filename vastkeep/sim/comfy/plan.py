"""The pure parts of running a graph: execution order, cache keys, a node's inputs, the progress and
``meta`` shapes, and the binary preview frame. No I/O, no event loop.
"""

from __future__ import annotations

import json
import struct
import uuid
from typing import Any

from vastkeep.sim.comfy.execute import Dirs, NodeFailure
from vastkeep.sim.comfy.nodes import NODES

PREVIEW_IMAGE = 1  # BinaryEventTypes.PREVIEW_IMAGE
PNG_FORMAT = 2  # the 4-byte image type after the event type: 1 JPEG, 2 PNG
LINK_TYPES_LITERAL_OK = ("INT", "FLOAT", "STRING")


def preview_frame(image: bytes) -> bytes:
    """ComfyUI's binary framing: 4-byte event type, 4-byte image type, then the image (big-endian)."""
    return struct.pack(">I", PREVIEW_IMAGE) + struct.pack(">I", PNG_FORMAT) + image


def signature(prompt: dict[str, Any], nid: str, dirs: Dirs, memo: dict[str, str]) -> str:
    """A node's cache key: its class, literal inputs, upstream signatures (and a loaded file's state)."""
    if nid not in memo:
        node = prompt[nid]
        parts: dict[str, object] = {"class_type": node["class_type"]}
        for k, v in sorted((node.get("inputs") or {}).items()):
            parts[k] = ["link", signature(prompt, v[0], dirs, memo), v[1]] if isinstance(v, list) else v
        if node["class_type"] == "LoadImage":  # IS_CHANGED: the file's hash in ComfyUI
            f = dirs.root / "input" / str(parts.get("image"))
            parts["is_changed"] = f.stat().st_mtime_ns if f.is_file() else None
        if NODES[node["class_type"]].output_node and node["class_type"] == "PreviewImage":
            parts["nonce"] = uuid.uuid4().hex  # previews are written anew every time
        memo[nid] = json.dumps(parts, sort_keys=True, default=str)
    return memo[nid]


def steps(node: dict[str, Any]) -> int:
    if node["class_type"] != "KSampler":
        return 1
    try:
        return max(1, int(node["inputs"]["steps"]))
    except (KeyError, TypeError, ValueError):
        return 1


def state(pid: str, nid: str, value: int, maximum: int, state: str) -> dict[str, object]:
    return {
        "value": value,
        "max": maximum,
        "state": state,
        "node_id": nid,
        "prompt_id": pid,
        "display_node_id": nid,
        "parent_node_id": None,
        "real_node_id": nid,
    }


def meta(nid: str) -> dict[str, object]:
    return {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}


def inputs(node: dict[str, Any], values: dict[str, tuple[object, ...]]) -> dict[str, Any]:
    spec = NODES[node["class_type"]].input_types([])
    kinds = {**spec.get("required", {}), **spec.get("optional", {})}
    args: dict[str, Any] = {}
    for name, val in (node.get("inputs") or {}).items():
        if name not in kinds:
            continue
        kind = kinds[name][0]
        if isinstance(val, list):
            args[name] = values[val[0]][val[1]]
        elif isinstance(kind, str) and kind not in LINK_TYPES_LITERAL_OK:
            raise NodeFailure("AttributeError", f"'{type(val).__name__}' object has no attribute 'shape'")
        elif kind == "INT":
            args[name] = int(val)
        elif kind == "FLOAT":
            args[name] = float(val)
        else:
            args[name] = val
    return args


def order(prompt: dict[str, Any], outputs: list[str], cached: set[str]) -> list[str]:
    """Execution order: the output with the fewest nodes left to run first, each after its inputs."""
    done: list[str] = []
    seen = set(cached)

    def will_run(nid: str, acc: list[str]) -> list[str]:
        if nid in seen or nid in acc:
            return acc
        for v in (prompt[nid].get("inputs") or {}).values():
            if isinstance(v, list):
                will_run(v[0], acc)
        acc.append(nid)
        return acc

    todo = list(outputs)
    while todo:
        todo.sort(key=lambda o: (len(will_run(o, [])), o))
        for nid in will_run(todo.pop(0), []):
            seen.add(nid)
            done.append(nid)
    return done
