"""``vastkeep pool size|safe-mode|status`` as a real process against a real redis-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from vastkeep.state import InstanceRecord, Keys

ROOT = Path(__file__).resolve().parents[2]


def vk(args: list[str], cwd: Path, redis_url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WARM_POOL_", "VAST"))}
    env.update({"REDIS_URL": redis_url, "VASTKEEP_HOME": str(cwd / "home"), "PYTHONPATH": str(ROOT)})
    return subprocess.run([sys.executable, "-m", "vastkeep.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_pool_size_safe_mode_and_status(tmp_path: Path, redis_server, store) -> None:
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


def test_status_is_the_system_overview_and_pool_status_the_pool_document(tmp_path: Path, redis_server,
                                                                         redis_client, store) -> None:
    """``vastkeep status``: processes, checks, tokens, the pool in one line, every instance with its status.
    ``vastkeep pool status``: the warm-pool document (guide fields, slots, leases, safe mode), no lease id."""
    from vastkeep.pool import PoolLeases  # noqa: PLC0415

    store.set_desired_size(3)
    store.put_instance(InstanceRecord("41", status="ready", label="vastkeep:default:0",
                                      connection_url="http://127.0.0.9:8188"))
    store.put_instance(InstanceRecord("42", status="loading", label="vastkeep:default:1"))
    store.put_token_result("vastai", {"status": "valid", "testedAt": "2026-01-01T00:00:00+00:00",
                                      "_fp": "abc"}, 60_000)
    grant = PoolLeases(redis_client, Keys(), "default", "vastkeep", store=store).grant(300, "svc-a")
    home = tmp_path / "home"
    home.mkdir()
    (home / "stack.json").write_text(json.dumps({
        "pid": os.getpid(), "redis_url": redis_server.url, "admin_api_url": "http://127.0.0.1:9",
        "children": {"worker-control": {"status": "running", "pid": os.getpid(), "restartCount": 0}}}))

    overview = vk(["status"], tmp_path, redis_server.url)
    assert overview.returncode == 0, overview.stderr
    text = overview.stdout
    assert "worker-control" in text and "token vastai       valid" in text and "_fp" not in text
    pool_lines = [line for line in text.splitlines() if "warm pool default" in line]
    assert len(pool_lines) == 1 and "desired 3, ready 1, warming 1" in pool_lines[0]
    assert "leased 1" in pool_lines[0] and "vastkeep pool status" in pool_lines[0]
    assert "41" in text and "42" in text and "loading" in text
    assert "slots" not in text and "client svc-a" not in text  # those are the pool document's
    as_json = json.loads(vk(["status", "--json"], tmp_path, redis_server.url).stdout)
    assert as_json["warmPool"]["desiredSize"] == 3
    assert as_json["tokens"]["vastai"]["result"]["status"] == "valid"

    doc = vk(["pool", "status"], tmp_path, redis_server.url)
    assert doc.returncode == 0, doc.stderr
    for part in ("desired 3", "safe mode: off", "instance: 41 ready", "slots (3):", "vastkeep:default:2",
                 "free", "leases (1):", "client svc-a", f"fence {grant.fence}"):
        assert part in doc.stdout, part
    full = json.loads(vk(["pool", "status", "--json"], tmp_path, redis_server.url).stdout)
    assert [s["status"] for s in full["pool"]["slots"]] == ["ready", "loading", "free"]
    for shown in (text, doc.stdout, json.dumps(full), json.dumps(as_json)):
        assert grant.lease_id not in shown
