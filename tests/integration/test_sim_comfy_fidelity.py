"""The ComfyUI stand-in fails like a real ComfyUI where the keepalive layer depends on it.

Facts measured on ComfyUI 0.3.64 (CPU, aiohttp 3.14, loopback): a hung process answers nothing on held
connections (not even websocket pings), its kernel accepts 129 new connections and then drops SYNs; ``/ws``
and ``/api/ws`` send one status frame and reply to ``feature_flags``; ``/features`` exists; ``/system_stats``
lists exactly one device; unknown paths answer 404 with an empty body. One test per behaviour, each against a
real socket.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import aiohttp
import pytest
import requests

from tests.fixtures.sim_ssh import connect_only, endpoint

T = 5


@pytest.fixture
def inst(sim):
    return sim.control.create_instance(running=True)


def base(inst: dict) -> str:
    ip, port = endpoint(inst)
    return f"http://{ip}:{port}"


async def _pong_within(url: str, fault, clear, timeout_s: float = 0.5) -> tuple[bool, bool]:
    """Hold ``/ws``, apply ``fault``: is a ping answered during it, and again after ``clear``?"""
    async with aiohttp.ClientSession() as s, s.ws_connect(url + "/ws?clientId=t", autoping=False) as ws:
        first = await ws.receive(timeout=T)
        assert json.loads(first.data)["type"] == "status"

        async def pong() -> bool:
            await ws.ping(b"x")
            try:
                msg = await ws.receive(timeout=timeout_s)
            except TimeoutError:
                return False
            return msg.type == aiohttp.WSMsgType.PONG

        assert await pong()  # alive: pings answered
        await asyncio.to_thread(fault)
        during = await pong()
        await asyncio.to_thread(clear)
        after = await pong()
        return during, after


@pytest.mark.parametrize("fault", ["hang", "blackhole", "offline"])
def test_a_held_websocket_gets_no_pong_while_comfyui_is_silent(sim, inst, fault):
    iid = inst["id"]
    c = sim.control
    apply = {"hang": lambda: c.hang_comfy(iid), "blackhole": lambda: c.blackhole(iid),
             "offline": lambda: c.host_offline(iid)}[fault]
    clear = {"hang": lambda: c.restore_comfy(iid), "blackhole": lambda: c.open_path(iid),
             "offline": lambda: c.restore_instance(iid)}[fault]
    during, after = asyncio.run(_pong_within(base(inst), apply, clear))
    assert during is False
    assert after is True


def test_a_hang_fills_the_accept_queue_then_connects_time_out(sim, inst):
    ip, port = endpoint(inst)
    sim.control.hang_comfy(inst["id"])
    held = []
    try:
        for _ in range(129):  # the kernel accepts, ComfyUI never answers
            s = socket.create_connection((ip, port), timeout=T)
            s.sendall(b"GET /system_stats HTTP/1.1\r\nHost: x\r\n\r\n")
            held.append(s)
        deadline = time.monotonic() + T
        while connect_only((ip, port), 0.3) != "timeout":  # the 130th: the queue is full
            assert time.monotonic() < deadline, "connects never started timing out"
        held[0].settimeout(0.3)
        with pytest.raises(TimeoutError):
            held[0].recv(16)  # and nothing was answered
        sim.control.restore_comfy(inst["id"])
        held[-1].settimeout(T)
        assert held[-1].recv(16).startswith(b"HTTP/1.1 200")  # SIGCONT: the held requests are answered
        assert requests.get(base(inst) + "/system_stats", timeout=T).status_code == 200
    finally:
        for s in held:
            s.close()


def test_a_short_hang_still_accepts_connections(sim, inst):
    ip, port = endpoint(inst)
    sim.control.hang_comfy(inst["id"])
    assert connect_only((ip, port), 0.5) == "connected"


@pytest.mark.parametrize("route", ["/ws", "/api/ws"])
def test_websocket_routes_send_status_and_answer_feature_flags(sim, inst, route):
    async def go() -> tuple[dict, dict]:
        async with aiohttp.ClientSession() as s, s.ws_connect(base(inst) + route + "?clientId=abc") as ws:
            status = json.loads((await ws.receive(timeout=T)).data)
            await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
            flags = json.loads((await ws.receive(timeout=T)).data)
            with pytest.raises(TimeoutError):
                await ws.receive(timeout=0.3)  # nothing else unprompted
            return status, flags

    status, flags = asyncio.run(go())
    want = {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "abc"}}
    assert status == want
    assert flags["type"] == "feature_flags" and "max_upload_size" in flags["data"]


def test_features_system_stats_and_unknown_paths(sim):
    inst = sim.control.create_instance(running=True)
    for prefix in ("", "/api"):
        assert requests.get(base(inst) + prefix + "/features", timeout=T).json() == {
            "supports_preview_metadata": True, "max_upload_size": 104857600}
    stats = requests.get(base(inst) + "/system_stats", timeout=T).json()
    assert len(stats["devices"]) == 1 and stats["devices"][0]["index"] == 0
    assert {"comfyui_version", "required_frontend_version", "installed_templates_version",
            "required_templates_version"} <= set(stats["system"])
    missing = requests.get(base(inst) + "/no/such/path", timeout=T)
    assert missing.status_code == 404 and missing.content == b""


def test_a_crash_closes_held_websockets_at_once(sim, inst):
    async def go() -> float:
        async with aiohttp.ClientSession() as s, s.ws_connect(base(inst) + "/ws") as ws:
            await ws.receive(timeout=T)
            started = time.monotonic()
            await asyncio.to_thread(sim.control.crash_comfy, inst["id"])
            msg = await ws.receive(timeout=T)
            assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR)
            return time.monotonic() - started

    assert asyncio.run(go()) < 1.0
