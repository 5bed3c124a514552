"""The simulated ComfyUI runs prompts the way ComfyUI 0.3.64 does (shapes in the shared providers
reference, "ComfyUI's prompt API"): ``POST /prompt`` → the websocket messages in their order → ``/history`` →
the image from ``/view``; graphs refused with ``node_errors``; the queue, deleting, clearing and interrupting;
uploads that ``LoadImage`` then reads; ``/object_info``. Each test drives a real simulator process over real
sockets.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.fixtures.comfy import Client, base_url, empty_image_graph, png_size, txt2img_graph


@pytest.fixture
def inst(sim):
    inst = sim.control.create_instance(running=True)
    sim.control.set_prompt_s(inst["id"], 0.2)
    return inst


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_a_prompt_runs_from_post_to_its_image(sim, inst, prefix):
    async def go():
        async with Client(base_url(inst) + prefix) as c:
            status, answer = await c.post(
                "/prompt",
                {
                    "prompt": empty_image_graph(64, 32),
                    "client_id": "c1",
                    "extra_data": {"extra_pnginfo": {"k": "v"}},
                },
            )
            assert status == 200 and answer["number"] == 0 and answer["node_errors"] == {}
            pid = answer["prompt_id"]
            await c.finished(pid)
            history = await c.get(f"/history/{pid}")
            img = history[pid]["outputs"]["2"]["images"][0]
            view = await c.get_bytes("/view", **img)
            return c.frames, pid, history, await c.get("/history"), img, view

    frames, pid, history, everything, img, (status, ctype, body) = run(go())
    seen = [
        (f.type, f.data.get("node")) if f.type in ("executing", "executed") else f.type for f in frames[1:]
    ]
    assert seen == [
        "status",
        "status",
        "execution_start",
        "execution_cached",
        "progress_state",
        ("executing", "1"),
        "progress_state",
        ("executing", "2"),
        ("executed", "2"),
        "execution_success",
        "status",
        ("executing", None),
    ]
    remaining = [f.data["status"]["exec_info"]["queue_remaining"] for f in frames if f.type == "status"]
    assert remaining == [0, 1, 1, 0]
    by_type = {f.type: f.data for f in frames}
    assert set(by_type["execution_start"]) == {"prompt_id", "timestamp"}
    assert by_type["execution_cached"]["nodes"] == []
    assert by_type["executed"] == {
        "node": "2",
        "display_node": "2",
        "prompt_id": pid,
        "output": {"images": [{"filename": "sim_00001_.png", "subfolder": "", "type": "output"}]},
    }
    entry = history[pid]
    assert entry["prompt"][:2] == [0, pid] and entry["prompt"][2] == empty_image_graph(64, 32)
    assert entry["prompt"][3] == {"extra_pnginfo": {"k": "v"}, "client_id": "c1"} and entry["prompt"][4] == [
        "2"
    ]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]
    assert entry["meta"]["2"]["node_id"] == "2"
    assert pid in everything
    assert status == 200 and ctype == "image/png"
    assert png_size(body) == (64, 32)


def test_the_sampler_graph_reports_progress_and_sends_previews(sim, inst):
    async def go():
        async with Client(base_url(inst)) as c:
            pid = await c.queue(txt2img_graph(steps=4, size=64))
            await c.finished(pid)
            history = await c.get(f"/history/{pid}")
            image = history[pid]["outputs"]["9"]["images"][0]
            return c.frames, pid, await c.get_bytes("/view", **image)

    frames, pid, (status, _, body) = run(go())
    progress = [f.data for f in frames if f.type == "progress"]
    assert progress == [{"value": i, "max": 4, "prompt_id": pid, "node": "3"} for i in range(1, 5)]
    previews = [f.data for f in frames if f.type == "binary"]
    assert len(previews) == 4
    for frame in previews:
        assert frame[:4] == b"\x00\x00\x00\x01" and frame[4:8] == b"\x00\x00\x00\x02"  # PREVIEW_IMAGE, PNG
        assert png_size(frame[8:]) == (64, 64)
    executing = [f.data["node"] for f in frames if f.type == "executing"]
    assert sorted(executing[:-1]) == sorted(txt2img_graph()) and executing[-1] is None
    graph = txt2img_graph()
    for nid in executing[:-1]:  # every node runs after the nodes it links to
        for link in (v for v in graph[nid]["inputs"].values() if isinstance(v, list)):
            assert executing.index(link[0]) < executing.index(nid)
    assert status == 200 and png_size(body) == (64, 64)


def test_the_same_graph_again_is_cached(sim, inst):
    async def go():
        async with Client(base_url(inst)) as c:
            first = await c.queue(empty_image_graph())
            await c.finished(first)
            second = await c.queue(empty_image_graph())
            await c.finished(second)
            return c.of(second), second

    frames, pid = run(go())
    kinds = [f.type for f in frames]
    assert kinds == ["execution_start", "execution_cached", "executed", "execution_success", "executing"]
    assert sorted(frames[1].data["nodes"]) == ["1", "2"]
    assert frames[2].data["output"]["images"][0]["filename"] == "sim_00001_.png"  # the old file, shown again


BAD_GRAPHS = {
    "unknown class_type": (
        {"1": {"class_type": "NoSuchNode", "inputs": {}}},
        "invalid_prompt",
        "Cannot execute because node NoSuchNode does not exist.",
        {},
    ),
    "node without class_type": (
        {"1": {"inputs": {}}},
        "invalid_prompt",
        "Cannot execute because a node is missing the class_type property.",
        {},
    ),
    "no output node": ({"1": empty_image_graph()["1"]}, "prompt_no_outputs", "Prompt has no outputs", {}),
    "missing required input": (
        {**empty_image_graph(), "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}},
        "prompt_outputs_failed_validation",
        "Prompt outputs failed validation",
        {"2": ("required_input_missing", "filename_prefix")},
    ),
    "link to a node that is not there": (
        {
            **empty_image_graph(),
            "2": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "x"}},
        },
        "prompt_outputs_failed_validation",
        "Prompt outputs failed validation",
        {"2": ("exception_during_validation", "'9'")},
    ),
    "link to a slot the node does not have": (
        {
            **empty_image_graph(),
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 3], "filename_prefix": "x"}},
        },
        "prompt_outputs_failed_validation",
        "Prompt outputs failed validation",
        {"2": ("exception_during_validation", "tuple index out of range")},
    ),
    "link of the wrong type": (
        {
            **txt2img_graph(),
            "9": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "x"}},
        },
        "prompt_outputs_failed_validation",
        "Prompt outputs failed validation",
        {"9": ("return_type_mismatch", "images, received_type(LATENT) mismatch input_type(IMAGE)")},
    ),
    "value below min": (
        empty_image_graph(width=0),
        "prompt_outputs_failed_validation",
        "Prompt outputs failed validation",
        {"1": ("value_smaller_than_min", "width")},
    ),
    "value not a number": (
        {
            **empty_image_graph(),
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": "wide", "height": 8, "batch_size": 1, "color": 0},
            },
        },
        "prompt_outputs_failed_validation",
        "Prompt outputs failed validation",
        {"1": ("invalid_input_type", "width, wide, invalid literal for int() with base 10: 'wide'")},
    ),
    "value not in the list": (
        {**txt2img_graph(), "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "nope"}}},
        "prompt_outputs_failed_validation",
        "Prompt outputs failed validation",
        {"4": ("value_not_in_list", "ckpt_name: 'nope' not in ['v1-5-pruned-emaonly-fp16.safetensors']")},
    ),
}


@pytest.mark.parametrize("case", list(BAD_GRAPHS))
def test_a_bad_graph_is_refused_with_comfyuis_error_and_node_errors(sim, inst, case):
    graph, kind, message, errors = BAD_GRAPHS[case]

    async def go():
        async with Client(base_url(inst)) as c:
            status, answer = await c.post("/prompt", {"prompt": graph, "client_id": "c1"})
            await asyncio.sleep(0.3)  # a refused prompt sends nothing on the websocket
            return status, answer, c.frames

    status, answer, frames = run(go())
    assert status == 400
    assert set(answer) == {"error", "node_errors"}
    assert set(answer["error"]) == {"type", "message", "details", "extra_info"}
    assert (answer["error"]["type"], answer["error"]["message"]) == (kind, message)
    assert {
        nid: (e["errors"][0]["type"], e["errors"][0]["details"]) for nid, e in answer["node_errors"].items()
    } == errors
    for entry in answer["node_errors"].values():
        assert set(entry) == {"errors", "dependent_outputs", "class_type"}
    assert [f.type for f in frames] == ["status"]


def test_no_prompt_and_a_body_that_is_not_json(sim, inst):
    async def go():
        async with Client(base_url(inst)) as c:
            none = await c.post("/prompt", {"client_id": "c1"})
            not_json = await c.post("/prompt", data=b"{nope", headers={"Content-Type": "application/json"})
            ok = await c.post("/prompt", {"prompt": empty_image_graph()})
            return none, not_json, ok

    (s1, a1), (s2, a2), (s3, a3) = run(go())
    assert s1 == 400 and a1["error"]["type"] == "no_prompt" and a1["node_errors"] == {}
    assert s2 == 500 and isinstance(a2, str)
    assert s3 == 200 and a3["number"] == 1  # the refused body that parsed took number 0


def test_queue_delete_clear_and_interrupt(sim, inst):
    sim.control.set_prompt_s(inst["id"], 3.0)

    async def go():
        async with Client(base_url(inst)) as c:
            a, b, cc = [await c.queue(empty_image_graph(color=i)) for i in range(3)]
            await c.wait_for(lambda f: f.type == "executing" and f.data.get("prompt_id") == a)
            queue = await c.get("/queue")
            assert (await c.post("/queue", {"delete": [cc, a]}))[0] == 200  # a runs: it is not pending
            after_delete = await c.get("/queue")
            assert (await c.post("/queue", {"clear": True}))[0] == 200
            after_clear = await c.get("/queue")
            assert (await c.post("/interrupt", {}))[0] == 200
            await c.finished(a)
            history = await c.get("/history")
            return a, b, cc, queue, after_delete, after_clear, c.of(a), history, await c.get("/queue")

    a, b, cc, queue, after_delete, after_clear, frames, history, idle = run(go())
    assert [item[1] for item in queue["queue_running"]] == [a]
    assert [item[1] for item in queue["queue_pending"]] == [b, cc]
    running = queue["queue_running"][0]
    assert running[0] == 0 and running[3] == {"client_id": "c1"} and running[4] == ["2"]
    assert [item[1] for item in after_delete["queue_pending"]] == [b]
    assert after_delete["queue_running"][0][1] == a
    assert after_clear["queue_pending"] == []
    interrupted = [f.data for f in frames if f.type == "execution_interrupted"]
    assert len(interrupted) == 1
    assert set(interrupted[0]) == {"prompt_id", "node_id", "node_type", "executed", "timestamp"}
    assert not [f for f in frames if f.type == "execution_success"]
    assert list(history) == [a]
    assert history[a]["status"]["status_str"] == "error" and history[a]["status"]["completed"] is False
    assert idle == {"queue_running": [], "queue_pending": []}


def test_an_upload_is_what_load_image_reads(sim, inst):
    from tests.fixtures.comfy import png_size as check

    picture = _png(40, 30)

    async def go():
        async with Client(base_url(inst)) as c:
            form = aiohttp.FormData()
            form.add_field("image", picture, filename="in.png", content_type="image/png")
            first = await c.post("/upload/image", data=form)
            form = aiohttp.FormData()
            form.add_field("image", _png(2, 2), filename="in.png", content_type="image/png")
            form.add_field("subfolder", "")
            second = await c.post("/upload/image", data=form)  # same name, other bytes: renamed
            info = await c.get("/object_info/LoadImage")
            pid = await c.queue(
                {
                    "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
                    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "up"}},
                }
            )
            await c.finished(pid)
            img = (await c.get(f"/history/{pid}"))[pid]["outputs"]["2"]["images"][0]
            raw = await c.get_bytes("/view", filename="in.png", type="input")
            return first, second, info, await c.get_bytes("/view", **img), raw

    (s1, a1), (s2, a2), info, (vs, _, out), (rs, _, raw) = run(go())
    assert (s1, a1) == (200, {"name": "in.png", "subfolder": "", "type": "input"})
    assert (s2, a2) == (200, {"name": "in (1).png", "subfolder": "", "type": "input"})
    assert info["LoadImage"]["input"]["required"]["image"] == [
        ["in (1).png", "in.png"],
        {"image_upload": True},
    ]
    assert vs == 200 and check(out) == (40, 30)
    assert rs == 200 and raw == picture


def test_an_upload_that_is_not_an_image_fails_when_a_prompt_opens_it(sim, inst):
    async def go():
        async with Client(base_url(inst)) as c:
            form = aiohttp.FormData()
            form.add_field("image", b"not a picture", filename="junk.png", content_type="image/png")
            assert (await c.post("/upload/image", data=form))[0] == 200  # not checked on upload
            pid = await c.queue(
                {
                    "1": {"class_type": "LoadImage", "inputs": {"image": "junk.png"}},
                    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
                }
            )
            await c.finished(pid)
            missing = await c.post(
                "/prompt",
                {
                    "prompt": {
                        "1": {"class_type": "LoadImage", "inputs": {"image": "nothere.png"}},
                        "2": {
                            "class_type": "SaveImage",
                            "inputs": {"images": ["1", 0], "filename_prefix": "x"},
                        },
                    }
                },
            )
            return c.of(pid), (await c.get(f"/history/{pid}"))[pid], missing

    frames, entry, (status, answer) = run(go())
    error = next(f.data for f in frames if f.type == "execution_error")
    assert set(error) == {
        "prompt_id",
        "node_id",
        "node_type",
        "executed",
        "exception_message",
        "exception_type",
        "traceback",
        "current_inputs",
        "current_outputs",
        "timestamp",
    }
    assert (error["node_id"], error["node_type"], error["exception_type"]) == (
        "1",
        "LoadImage",
        "PIL.UnidentifiedImageError",
    )
    assert entry["status"]["status_str"] == "error" and entry["outputs"] == {}
    assert status == 400
    assert answer["node_errors"]["1"]["errors"][0]["type"] == "custom_validation_failed"


def test_view_refuses_what_comfyui_refuses(sim, inst):
    async def go():
        async with Client(base_url(inst)) as c:
            return [
                await c.get_bytes("/view", **q)
                for q in (
                    {"filename": "../x.png"},
                    {"filename": "nothere.png"},
                    {"filename": "a.png", "type": "nope"},
                    {"filename": "a.png", "subfolder": "../.."},
                )
            ]

    assert [(s, b) for s, _, b in run(go())] == [(400, b""), (404, b""), (400, b""), (403, b"")]


def test_object_info_has_comfyuis_input_specs(sim, inst):
    async def go():
        async with Client(base_url(inst)) as c:
            return (
                await c.get("/object_info"),
                await c.get("/api/object_info/EmptyImage"),
                await c.get("/object_info/NoSuchNode"),
            )

    everything, one, unknown = run(go())
    assert {"EmptyImage", "SaveImage", "LoadImage", "PreviewImage", "KSampler", "VAEDecode"} <= set(
        everything
    )
    empty = one["EmptyImage"]
    assert empty == everything["EmptyImage"]
    assert empty["input"]["required"]["width"] == ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}]
    assert empty["input_order"] == {"required": ["width", "height", "batch_size", "color"]}
    assert (empty["output"], empty["output_is_list"], empty["output_name"]) == (["IMAGE"], [False], ["IMAGE"])
    assert (empty["output_node"], empty["category"], empty["python_module"]) == (False, "image", "nodes")
    save = everything["SaveImage"]
    assert save["output_node"] is True and save["output"] == []
    assert save["input"]["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert unknown == {}


def _png(width: int, height: int) -> bytes:
    """A PNG made here, independently of the simulator's own encoder."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + b"\x10\x20\x30" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_the_newest_socket_of_a_client_id_gets_the_messages_and_a_reconnect_hears_the_running_node(sim, inst):
    sim.control.set_prompt_s(inst["id"], 1.0)

    async def go():
        async with Client(base_url(inst)) as old, Client(base_url(inst), client_id="c2") as other:
            pid = await old.queue(empty_image_graph())
            await old.wait_for(lambda f: f.type == "executing" and f.data.get("node") == "1")
            async with Client(base_url(inst)) as new:  # same clientId "c1": it takes over
                await new.finished(pid)
                return pid, old.frames, new.frames, other.frames

    pid, old, new, other = run(go())
    assert new[1].type == "executing" and new[1].data == {"node": "1"}  # where the prompt is, on reconnect
    assert [f.type for f in old].count("execution_success") == 0  # the older socket hears no more of it
    assert "execution_success" in [f.type for f in new]
    assert {f.type for f in other} == {"status"}  # another clientId sees only the broadcasts


def test_history_max_items_keeps_the_newest(sim, inst):
    async def go():
        async with Client(base_url(inst)) as c:
            pids = []
            for color in range(3):
                pids.append(await c.queue(empty_image_graph(color=color)))
                await c.finished(pids[-1])
            return pids, await c.get("/history", max_items=2), await c.get("/api/history", max_items=1)

    pids, two, one = run(go())
    assert list(two) == pids[1:] and list(one) == pids[2:]
