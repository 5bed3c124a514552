"""Faults that strike a simulated ComfyUI in the middle of a prompt, seen from its client and from the
simulator's log of prompt phases: a crash or a dead container loses the running prompt and the queue (the
websocket drops, history knows nothing); a hang freezes the prompt until it ends; a black hole or an offline
host holds the messages back while the prompt runs on; a slow path delivers them late. ``prompt_s`` sets how
long a prompt works, and prompts run one at a time in queue order.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.fixtures.comfy import Client, base_url, empty_image_graph


@pytest.fixture
def inst(sim):
    return sim.control.create_instance(running=True)


def run(coro):
    return asyncio.run(coro)


def executing(pid: str, node: str):
    return lambda f: f.type == "executing" and f.data.get("prompt_id") == pid and f.data["node"] == node


@pytest.mark.parametrize("fault", ["crash", "exited"])
def test_a_crash_mid_prompt_drops_the_websocket_and_loses_the_prompt_and_the_queue(sim, inst, fault):
    iid, c = inst["id"], sim.control
    c.set_prompt_s(iid, 3.0)
    strike = {"crash": lambda: c.crash_comfy(iid), "exited": lambda: c.exit_instance(iid)}[fault]
    heal = {"crash": lambda: c.restore_comfy(iid), "exited": lambda: c.restore_instance(iid)}[fault]

    async def go():
        async with Client(base_url(inst)) as cl:
            running = await cl.queue(empty_image_graph())
            pending = await cl.queue(empty_image_graph(color=1))
            await cl.wait_for(executing(running, "1"))  # after execution_start, before execution_success
            struck = time.monotonic()
            await asyncio.to_thread(strike)
            while cl.closed_at is None and time.monotonic() - struck < 5:
                await asyncio.sleep(0.01)
            return running, pending, struck, cl.closed_at, [f.type for f in cl.of(running)]

    running, pending, struck, closed_at, kinds = run(go())
    assert closed_at is not None and closed_at - struck < 1.0, "the websocket stayed open"
    assert "execution_success" not in kinds and "executed" not in kinds
    heal()

    async def after():
        async with Client(base_url(inst)) as cl:
            return (
                await cl.get(f"/history/{running}"),
                await cl.get("/history"),
                await cl.get("/queue"),
                await cl.get("/prompt"),
            )

    one, everything, queue, prompt = run(after())
    assert one == {} and everything == {}
    assert queue == {"queue_running": [], "queue_pending": []}
    assert prompt == {"exec_info": {"queue_remaining": 0}}
    phases = [(p["phase"], p.get("node"), p.get("reason")) for p in c.comfy_phases(iid, running)]
    assert phases == [
        ("queued", None, None),
        ("execution_start", None, None),
        ("executing", "1", None),
        ("lost", "1", fault),
    ]
    assert [p["phase"] for p in c.comfy_phases(iid, pending)] == ["queued", "lost"]


def test_a_hang_freezes_the_running_prompt_until_it_ends(sim, inst):
    iid, c = inst["id"], sim.control
    c.set_prompt_s(iid, 1.0)
    hang_s = 1.5

    async def go():
        async with Client(base_url(inst)) as cl:
            pid = await cl.queue(empty_image_graph())
            start = await cl.wait_for(executing(pid, "1"))
            await asyncio.to_thread(c.hang_comfy, iid)
            seen = len(cl.frames)
            await asyncio.sleep(hang_s)
            during = cl.frames[seen:]
            await asyncio.to_thread(c.restore_comfy, iid)
            end = await cl.finished(pid)
            return pid, start, end, during

    pid, start, end, during = run(go())
    assert during == [], "a hung ComfyUI sent something"
    assert end.at - start.at >= 1.0 + hang_s - 0.2  # the work stood still while it hung
    phases = [p["phase"] for p in c.comfy_phases(iid, pid)]
    assert phases[:3] == ["queued", "execution_start", "executing"]
    assert "hung" in phases and "resumed" in phases and phases[-2:] == ["execution_success", "done"]
    assert phases.index("hung") < phases.index("execution_success")


@pytest.mark.parametrize("fault", ["blackhole", "offline"])
def test_a_silent_network_holds_the_messages_while_the_prompt_runs_on(sim, inst, fault):
    iid, c = inst["id"], sim.control
    c.set_prompt_s(iid, 0.6)
    strike = {"blackhole": lambda: c.blackhole(iid), "offline": lambda: c.host_offline(iid)}[fault]
    heal = {"blackhole": lambda: c.open_path(iid), "offline": lambda: c.restore_instance(iid)}[fault]

    async def go():
        async with Client(base_url(inst)) as cl:
            pid = await cl.queue(empty_image_graph())
            await cl.wait_for(executing(pid, "1"))
            await asyncio.to_thread(strike)
            seen = len(cl.frames)
            deadline = time.monotonic() + 5
            while "done" not in [p["phase"] for p in c.comfy_phases(iid, pid)]:  # it finishes unseen
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            during = cl.frames[seen:]
            await asyncio.to_thread(heal)
            await cl.finished(pid)
            return pid, during, [f.type for f in cl.of(pid)], await cl.get(f"/history/{pid}")

    pid, during, kinds, history = run(go())
    assert during == []
    assert kinds[-3:] == ["executed", "execution_success", "executing"]  # delivered once the path opened
    assert history[pid]["status"]["status_str"] == "success"


def test_a_slow_path_delivers_the_prompts_messages_late(sim, inst):
    iid, c = inst["id"], sim.control
    c.set_prompt_s(iid, 0.4)
    delay_s = 1.0

    async def go():
        async with Client(base_url(inst)) as cl:
            pid = await cl.queue(empty_image_graph())
            await cl.wait_for(executing(pid, "1"))
            await asyncio.to_thread(c.slow_comfy, iid, delay_s)
            applied = time.monotonic()
            end = await cl.finished(pid)
            success = next(f for f in cl.frames if f.type == "execution_success")
            return applied, success, end

    applied, success, end = run(go())
    assert success.at - applied >= delay_s - 0.1
    assert end.at >= success.at


def test_prompt_s_sets_how_long_each_prompt_works_and_they_run_one_at_a_time(sim, inst):
    iid, c = inst["id"], sim.control
    c.set_prompt_s(iid, 1.5)  # not the default (1 s)

    async def go():
        async with Client(base_url(inst)) as cl:
            a = await cl.queue(empty_image_graph(color=1))
            b = await cl.queue(empty_image_graph(color=2))
            await cl.finished(b)
            times = {}
            for pid in (a, b):
                frames = cl.of(pid)
                times[pid] = (
                    next(f.at for f in frames if f.type == "execution_start"),
                    next(f.at for f in frames if f.type == "execution_success"),
                )
            return a, b, times

    a, b, times = run(go())
    for pid in (a, b):
        took = times[pid][1] - times[pid][0]
        assert 1.5 - 0.05 <= took < 3.5, f"a 1.5 s prompt took {took:.2f} s"
    assert times[b][0] >= times[a][1]  # b started once a was done: one at a time, in queue order
    c.set_prompt_s(iid, 0)

    async def quick():
        async with Client(base_url(inst)) as cl:
            started = time.monotonic()
            await cl.finished(await cl.queue(empty_image_graph(color=3)))
            return time.monotonic() - started

    assert run(quick()) < 0.9
    with pytest.raises(RuntimeError, match="400"):
        c.set_prompt_s(iid, -1)
    assert c.instance(iid)["sim"]["prompt_s"] == 0
