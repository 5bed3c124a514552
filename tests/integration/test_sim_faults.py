"""Each injected fault does what it says, seen from a real client socket (and cleared, it goes away)."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest
import requests

from tests.fixtures.sim_ssh import connect_only, endpoint

T = 5


def connect_outcome(addr: tuple[str, int], timeout_s: float = 0.5) -> tuple[str, float]:
    """What a TCP client sees: open | refused | timeout | reset (and how long it took)."""
    started = time.monotonic()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(addr)
        sock.sendall(b"GET /system_stats HTTP/1.1\r\nHost: x\r\n\r\n")
        data = sock.recv(16)
        return ("open" if data else "closed"), time.monotonic() - started
    except ConnectionRefusedError:
        return "refused", time.monotonic() - started
    except ConnectionResetError:
        return "reset", time.monotonic() - started
    except TimeoutError:
        return "timeout", time.monotonic() - started
    finally:
        sock.close()


@pytest.fixture
def inst(sim):
    return sim.control.create_instance(running=True, direct_8188=True, port_18188=True)


def test_healthy_instance_answers_on_every_comfy_path(inst):
    for name in ("direct", "8188/tcp", "18188/tcp"):
        assert connect_outcome(endpoint(inst, name))[0] == "open"


def test_crash_refuses_at_once_and_resets_open_connections(sim, inst):
    addr = endpoint(inst)
    with requests.Session() as keepalive:
        assert keepalive.get(f"http://{addr[0]}:{addr[1]}/system_stats", timeout=T).ok
        sim.control.crash_comfy(inst["id"])
        outcome, took = connect_outcome(addr)
        assert outcome == "refused" and took < 0.2
        with pytest.raises(requests.ConnectionError):
            keepalive.get(f"http://{addr[0]}:{addr[1]}/system_stats", timeout=T)
    sim.control.restore_comfy(inst["id"])
    assert connect_outcome(addr)[0] == "open"


def test_hang_accepts_and_never_answers(sim, inst):
    sim.control.hang_comfy(inst["id"], endpoint="8188/tcp")
    ip, port = endpoint(inst)
    assert connect_only((ip, port)) == "connected"
    with pytest.raises(requests.ReadTimeout):
        requests.get(f"http://{ip}:{port}/system_stats", timeout=(1, 0.4))
    assert connect_outcome(endpoint(inst, "direct"))[0] == "open"  # other paths unaffected
    sim.control.restore_comfy(inst["id"])
    assert requests.get(f"http://{ip}:{port}/system_stats", timeout=T).ok


def test_blackhole_makes_connect_time_out(sim, inst):
    addr = endpoint(inst)
    sim.control.blackhole(inst["id"], "8188/tcp")
    outcome, took = connect_outcome(addr, timeout_s=0.6)
    assert outcome == "timeout" and took >= 0.55
    with pytest.raises(requests.ConnectTimeout):
        requests.get(f"http://{addr[0]}:{addr[1]}/system_stats", timeout=(0.4, 1))
    sim.control.open_path(inst["id"], "8188/tcp")
    assert connect_outcome(addr)[0] == "open"


def test_reset_fails_at_once(sim, inst):
    addr = endpoint(inst)
    sim.control.reset_path(inst["id"], "8188/tcp")
    outcome, took = connect_outcome(addr, timeout_s=2)
    assert outcome in ("reset", "closed") and took < 0.5
    with pytest.raises(requests.ConnectionError) as err:
        requests.get(f"http://{addr[0]}:{addr[1]}/system_stats", timeout=2)
    assert not isinstance(err.value, requests.Timeout)
    sim.control.open_path(inst["id"], "8188/tcp")
    assert connect_outcome(addr)[0] == "open"


def test_refuse_one_path(sim, inst):
    sim.control.refuse(inst["id"], "direct")
    assert connect_outcome(endpoint(inst, "direct"))[0] == "refused"
    assert connect_outcome(endpoint(inst, "8188/tcp"))[0] == "open"


def test_firewalled_port_times_out_while_others_answer(sim, inst):
    sim.control.firewall(inst["id"], "18188/tcp")
    assert connect_outcome(endpoint(inst, "18188/tcp"))[0] == "timeout"
    assert connect_outcome(endpoint(inst, "8188/tcp"))[0] == "open"
    assert sim.control.instance(inst["id"])["sim"]["endpoints"]["18188/tcp"]["net_mode"] == "blackhole"
    sim.control.clear_faults()
    assert connect_outcome(endpoint(inst, "18188/tcp"))[0] == "open"


def test_slow_comfy_delays_the_answer(sim, inst):
    ip, port = endpoint(inst)
    sim.control.slow_comfy(inst["id"], 0.4, endpoint="8188/tcp")
    started = time.monotonic()
    assert requests.get(f"http://{ip}:{port}/system_stats", timeout=T).ok
    assert time.monotonic() - started >= 0.4
    with pytest.raises(requests.ReadTimeout):
        requests.get(f"http://{ip}:{port}/system_stats", timeout=(1, 0.1))


@pytest.mark.parametrize("status", [500, 503])
def test_comfy_error_answers_that_status_on_system_stats(sim, inst, status):
    ip, port = endpoint(inst)
    sim.control.comfy_error(inst["id"], status=status, endpoint="8188/tcp")
    for prefix in ("", "/api"):
        resp = requests.get(f"http://{ip}:{port}{prefix}/system_stats", timeout=T)
        assert resp.status_code == status, prefix
    assert requests.get(f"http://{ip}:{port}/queue", timeout=T).ok  # only /system_stats fails
    assert requests.get(f"http://{ip}:8188/system_stats", timeout=T).ok  # other paths unaffected
    shown = sim.control.instance(inst["id"])["sim"]["endpoints"]["8188/tcp"]
    assert (shown["comfy_mode"], shown["error_status"]) == ("error500", status)
    sim.control.restore_comfy(inst["id"])
    assert requests.get(f"http://{ip}:{port}/system_stats", timeout=T).json().keys() == {"system", "devices"}


def test_comfy_wrong_body_answers_200_with_json_that_is_not_comfyui(sim, inst):
    ip, port = endpoint(inst)
    sim.control.comfy_wrong_body(inst["id"])  # every ComfyUI path
    for name in ("direct", "8188/tcp", "18188/tcp"):
        host, p = endpoint(inst, name)
        resp = requests.get(f"http://{host}:{p}/system_stats", timeout=T)
        assert resp.status_code == 200 and resp.json() == {"ok": True}, name
    sim.control.clear_faults()  # clear_faults clears it as well as restore_comfy
    assert requests.get(f"http://{ip}:{port}/system_stats", timeout=T).json().keys() == {"system", "devices"}


@pytest.mark.parametrize("body", [{"mode": "error500", "status": 200}, {"mode": "error500", "status": "x"},
                                  {"mode": "explode"}])
def test_comfy_mode_rejects_bad_input(sim, inst, body):
    resp = requests.post(f"{sim.control.control_url}/instances/{inst['id']}/comfy", json=body, timeout=T,
                         headers={"X-Sim-Token": sim.info["control_token"]})
    assert resp.status_code == 400


def test_host_offline_blackholes_everything(sim):
    inst = sim.control.create_instance(running=True, direct_8188=True, port_18188=True, ssh=True)
    sim.control.host_offline(inst["id"])
    shown = sim.control.instance(inst["id"])["instance"]
    assert shown["actual_status"] == "offline"
    for name in ("direct", "8188/tcp", "18188/tcp", "22/tcp"):
        assert connect_only(endpoint(inst, name), 0.25) == "timeout", name
    assert connect_only((inst["ssh_host"], inst["ssh_port"]), 0.25) == "timeout"
    sim.control.restore_instance(inst["id"])
    assert connect_outcome(endpoint(inst))[0] == "open"
    assert connect_only(endpoint(inst, "22/tcp")) == "connected"


@pytest.mark.parametrize("state", ["exited", "outbid"])
def test_dead_container_refuses(sim, inst, state):
    sim.control.set_state(inst["id"], state)
    for name in ("direct", "8188/tcp", "18188/tcp"):
        assert connect_outcome(endpoint(inst, name))[0] == "refused"


def test_comfy_boot_delay_refuses_until_booted(sim):
    inst = sim.control.create_instance(lifecycle={"created_s": 0, "loading_s": 0, "boot_s": 0.6})
    deadline = time.monotonic() + 5
    while sim.control.instance(inst["id"])["instance"]["actual_status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    inst = sim.control.instance(inst["id"])["instance"]
    assert connect_outcome(endpoint(inst))[0] == "refused"  # container up, ComfyUI still booting
    while connect_outcome(endpoint(inst))[0] != "open":
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_websocket_status_message_and_crash_closes_it(sim, inst):
    ip, port = endpoint(inst)

    async def scenario() -> tuple[dict, str]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                f"http://{ip}:{port}/ws?clientId=abc", timeout=aiohttp.ClientWSTimeout(ws_close=2)
            ) as ws,
        ):
            first = await asyncio.wait_for(ws.receive_json(), 3)
            await asyncio.to_thread(sim.control.crash_comfy, inst["id"])
            msg = await asyncio.wait_for(ws.receive(), 3)
            return first, msg.type.name

    first, after = asyncio.run(scenario())
    assert first == {
        "type": "status",
        "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "abc"},
    }
    assert after in ("CLOSED", "CLOSE", "ERROR")
