"""``vastkeep pool size|safe-mode|status`` as a real process against a real redis-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from vastkeep.state import Keys, StateStore

ROOT = Path(__file__).resolve().parents[2]


def vk(args: list[str], cwd: Path, redis_url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WARM_POOL_", "VAST"))}
    env.update({"REDIS_URL": redis_url, "VASTKEEP_HOME": str(cwd / "home"), "PYTHONPATH": str(ROOT)})
    return subprocess.run([sys.executable, "-m", "vastkeep.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_pool_size_safe_mode_and_status(tmp_path: Path, redis_server, redis_client) -> None:
    store = StateStore(redis_client, Keys())
    out = vk(["pool", "size", "4"], tmp_path, redis_server.url)
    assert out.returncode == 0, out.stderr
    assert "1 -> 4" in out.stdout and store.get_pool().desired_size == 4
    bad = vk(["pool", "size", "500"], tmp_path, redis_server.url)
    assert bad.returncode == 2 and "WARM_POOL_MAX_SIZE" in bad.stderr and store.get_pool().desired_size == 4
    on = vk(["pool", "safe-mode", "on", "--reason", "budget review"], tmp_path, redis_server.url)
    assert on.returncode == 0 and "ON (operator: budget review)" in on.stdout and store.get_pool().safe_mode
    st = vk(["pool", "status"], tmp_path, redis_server.url)
    assert st.returncode == 0 and "desired 4" in st.stdout and "SAFE MODE (operator)" in st.stdout
    doc = json.loads(vk(["pool", "status", "--json"], tmp_path, redis_server.url).stdout)
    assert doc["desiredSize"] == 4 and doc["safeMode"] is True and doc["pool"]["poolName"] == "default"
    off = vk(["pool", "safe-mode", "off"], tmp_path, redis_server.url)
    assert off.returncode == 0 and "OFF" in off.stdout and not store.get_pool().safe_mode
