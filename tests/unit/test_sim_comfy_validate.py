"""The simulated ComfyUI's pure parts, table-driven: graph validation (ComfyUI's error types and
``node_errors``), execution order, cache keys and the PNG encoder. The web side is tested against a real
simulator process in ``tests/integration/test_sim_comfy_prompts.py``.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from vastkeep.sim.comfy import plan, png
from vastkeep.sim.comfy.execute import Dirs
from vastkeep.sim.comfy.validate import validate_prompt


def image(width=8, **extra):
    return {
        "class_type": "EmptyImage",
        "inputs": {"width": width, "height": 8, "batch_size": 1, "color": 0, **extra},
    }


def save(link=("1", 0), prefix="p"):
    inputs = {"filename_prefix": prefix}
    if link is not None:
        inputs["images"] = list(link)
    return {"class_type": "SaveImage", "inputs": inputs}


CASES = [
    # (name, graph, valid, error type, {node: [error types]}, outputs to run)
    ("good", {"1": image(), "2": save()}, True, None, {}, ["2"]),
    ("not an object", ["x"], False, "invalid_prompt", {}, []),
    ("unknown class", {"1": {"class_type": "Nope", "inputs": {}}}, False, "invalid_prompt", {}, []),
    ("no outputs", {"1": image()}, False, "prompt_no_outputs", {}, []),
    (
        "missing input",
        {"1": image(), "2": save(link=None)},
        False,
        "prompt_outputs_failed_validation",
        {"2": ["required_input_missing"]},
        [],
    ),
    (
        "dangling link",
        {"1": image(), "2": save(("7", 0))},
        False,
        "prompt_outputs_failed_validation",
        {"2": ["exception_during_validation"]},
        [],
    ),
    (
        "bad slot",
        {"1": image(), "2": save(("1", 5))},
        False,
        "prompt_outputs_failed_validation",
        {"2": ["exception_during_validation"]},
        [],
    ),
    (
        "three-item link",
        {
            "1": image(),
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0, 0], "filename_prefix": "p"}},
        },
        False,
        "prompt_outputs_failed_validation",
        {"2": ["bad_linked_input"]},
        [],
    ),
    (
        "bad upstream",
        {"1": image(width=0), "2": save()},
        False,
        "prompt_outputs_failed_validation",
        {"1": ["value_smaller_than_min"]},
        [],
    ),
    (
        "too big",
        {"1": image(width=20000), "2": save()},
        False,
        "prompt_outputs_failed_validation",
        {"1": ["value_bigger_than_max"]},
        [],
    ),
    (
        "one good output of two",
        {"1": image(), "2": save(), "3": save(link=None)},
        True,
        None,
        {"3": ["required_input_missing"]},
        ["2"],
    ),
    (
        "missing file",
        {"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}, "2": save()},
        False,
        "prompt_outputs_failed_validation",
        {"1": ["custom_validation_failed"]},
        [],
    ),
    (
        "present file",
        {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}}, "2": save()},
        True,
        None,
        {},
        ["2"],
    ),
]


@pytest.mark.parametrize("name,graph,valid,kind,node_errors,outputs", CASES, ids=[c[0] for c in CASES])
def test_validate_prompt(name, graph, valid, kind, node_errors, outputs):
    files = ["in.png"]
    ok, error, good, errors = validate_prompt(graph, files, lambda f: f in files)
    assert ok is valid
    assert (error or {}).get("type") == kind
    assert {nid: [e["type"] for e in entry["errors"]] for nid, entry in errors.items()} == node_errors
    assert good == outputs


def test_a_bad_upstream_node_names_the_outputs_that_depend_on_it():
    graph = {"1": image(width=0), "2": save(), "3": save()}
    ok, _, _, errors = validate_prompt(graph, [], lambda f: False)
    assert (
        not ok
        and errors["1"]["dependent_outputs"] == ["2", "3"]
        and errors["1"]["class_type"] == "EmptyImage"
    )


ORDERS = [
    ("chain", {"1": image(), "2": save()}, ["2"], set(), ["1", "2"]),
    ("cached upstream", {"1": image(), "2": save()}, ["2"], {"1"}, ["2"]),
    ("shared upstream", {"1": image(), "2": save(), "3": save()}, ["2", "3"], set(), ["1", "2", "3"]),
    (
        "fewest first",
        {
            "1": image(),
            "2": save(),
            "4": image(),
            "5": {"class_type": "ImageInvert", "inputs": {"image": ["4", 0]}},
            "3": save(("5", 0)),
        },
        ["3", "2"],
        set(),
        ["1", "2", "4", "5", "3"],
    ),
]


@pytest.mark.parametrize("name,graph,outputs,cached,want", ORDERS, ids=[o[0] for o in ORDERS])
def test_execution_order(name, graph, outputs, cached, want):
    assert plan.order(graph, outputs, cached) == want


def test_cache_keys_follow_the_inputs_upstream(tmp_path: Path):
    dirs = Dirs(tmp_path)
    a = {"1": image(), "2": save()}
    b = {"1": image(width=9), "2": save()}
    key = lambda g, n: plan.signature(g, n, dirs, {})  # noqa: E731
    assert key(a, "2") == key({"1": image(), "2": save()}, "2")
    assert key(a, "2") != key(b, "2")  # a changed upstream node changes the output's key
    assert key(a, "1") != key(b, "1")


@pytest.mark.parametrize("width,height", [(1, 1), (3, 2), (64, 32)])
def test_png_is_a_valid_png_of_that_size(width, height):
    for data in (png.encode_rgb(width, height, color=0x123456), png.gradient(width, height, 5)):
        assert png.size_of(data) == (width, height)
        body = data[8:]
        chunks = []
        while body:
            (n,) = struct.unpack(">I", body[:4])
            kind, payload, crc = body[4:8], body[8 : 8 + n], body[8 + n : 12 + n]
            assert struct.pack(">I", zlib.crc32(kind + payload)) == crc
            chunks.append((kind, payload))
            body = body[12 + n :]
        assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
        assert len(zlib.decompress(chunks[1][1])) == height * (1 + 3 * width)
    assert png.size_of(b"not a png at all, really") is None


def _inst(status="running", fault=None, ready=True, modes=("up",)):
    from vastkeep.sim.state import Endpoint, Instance

    names = ["8188/tcp", "18188/tcp", "direct"][: len(modes)]
    eps = {
        n: Endpoint(n, "127.9.0.1", 10000 + i, comfy_mode=m)
        for i, (n, m) in enumerate(zip(names, modes, strict=True))
    }
    eps["22/tcp"] = Endpoint("22/tcp", "127.9.0.1", 9999)
    return Instance(
        id=1,
        machine_id=1,
        ip="127.9.0.1",
        offer={},
        actual_status=status,
        fault=fault,
        comfy_ready=ready,
        endpoints=eps,
    )


PROCESS = [
    # (name, instance, alive, hung)
    ("running", _inst(), True, False),
    ("booting", _inst(ready=False), False, False),
    ("exited", _inst(status="exited", fault="exited"), False, False),
    ("stopped", _inst(status="exited", ready=False), False, False),
    ("oci error", _inst(status="created", fault="error"), False, False),
    ("offline host keeps running", _inst(status="offline", fault="offline"), True, False),
    ("crash on every path", _inst(modes=("crash", "crash")), False, False),
    ("crash on one path of two", _inst(modes=("crash", "up")), True, False),
    ("hang on every path", _inst(modes=("hang", "hang")), True, True),
    ("hang on one path of two", _inst(modes=("hang", "up")), True, False),
    ("slow", _inst(modes=("slow",)), True, False),
]


@pytest.mark.parametrize("name,inst,alive,hung", PROCESS, ids=[p[0] for p in PROCESS])
def test_when_the_comfyui_process_is_alive_or_hung(name, inst, alive, hung):
    from vastkeep.sim.comfy.host import process_alive, process_hung

    assert process_alive(inst) is alive
    assert process_hung(inst) is hung
