"""Bulk creation (a CI-sized 200; bench/bench_sim_scale.py runs 10,000) and the CLI's start/stop contract."""

from __future__ import annotations

import os
import random
import socket
import stat
import time
from pathlib import Path

import requests

from tests.fixtures.sim import start_sim


def test_bulk_200_instances_all_answer(sim):
    result = sim.control.bulk_create(200)
    assert len(result["ids"]) == 200 and result["failed"] == 0
    assert result["elapsed_s"] < 10
    health = sim.control.health()
    assert health["instances"] == 200 and health["listeners"]["serve"] == 200  # one socket per instance
    listing = requests.get(f"{sim.vast_api_url}/instances", headers=sim.vast_headers(), timeout=10).json()
    instances = listing["instances"]
    assert len({i["public_ipaddr"].strip() for i in instances}) == 200
    assert all(i["actual_status"] == "running" and set(i["ports"]) == {"8188/tcp"} for i in instances)
    with requests.Session() as http:
        for inst in random.Random(3).sample(instances, 25):
            url = f"http://{inst['public_ipaddr'].strip()}:{inst['ports']['8188/tcp'][0]['HostPort']}"
            assert http.get(url + "/system_stats", timeout=5).json()["system"]["os"] == "posix"
    sim.control.reset()
    assert sim.control.health()["listeners"]["serve"] == 0


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_cli_ready_file_banner_and_clean_sigterm():
    proc = start_sim(["--api-key", "k-123", "--seed", "5"])
    ready = proc.state_dir / "ready.json"
    try:
        assert stat.S_IMODE(os.stat(ready).st_mode) == 0o600
        assert proc.info["api_key"] == "k-123" and proc.info["pid"] == proc.proc.pid
        assert set(proc.info) >= {
            "vast_api_url",
            "huggingface_api_url",
            "civitai_api_url",
            "control_url",
            "control_token",
            "api_key",
            "hf_token",
            "civitai_token",
            "ssh_private_key_path",
            "pid",
        }
        children = _children(proc.proc.pid)
        if proc.info["ssh_backend"] == "sshd":
            assert children, "sshd should run as a child of the simulator"
        inst = proc.control.create_instance(running=True)
        host, port = inst["public_ipaddr"].strip(), int(inst["ports"]["8188/tcp"][0]["HostPort"])
        assert requests.get(f"http://{host}:{port}/system_stats", timeout=5).ok
    finally:
        code = proc.stop()
    assert code == 0
    out = (proc.state_dir / "sim.out").read_text()
    assert "SIMULATED" in out and "k-123" not in out and proc.info["control_token"] not in out
    assert not ready.exists()
    for child in children:
        end = time.monotonic() + 5
        while Path(f"/proc/{child}").exists() and "zombie" not in Path(f"/proc/{child}/status").read_text():
            assert time.monotonic() < end, "sshd survived the simulator"
            time.sleep(0.02)
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex((host, port)) != 0
    proc.remove_state_dir()
