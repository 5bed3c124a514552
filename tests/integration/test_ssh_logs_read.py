"""Reading collected logs: ``GET /api/proxy/admin/instances/{id}/logs`` over real HTTP and ``vastkeep logs``,
both on a real redis-server holding lines written by the fenced append."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis as redis_lib
import requests

from tests.fixtures.admin_api import KEY
from tests.fixtures.helpers import ServedApp as Served
from vastkeep.admin import HEADER, create_app
from vastkeep.core.clock import SystemClock
from vastkeep.core.settings import load_settings
from vastkeep.ssh import PROVISION_LOG, LogStore, lease_name
from vastkeep.state import Keys, LeaseManager, new_owner
from vastkeep.state.connection import connect

ROOT = Path(__file__).resolve().parents[2]
DATA = [b"[onstart] one\n", b"two \xff\n", b"three\n", b"four\n"]


@pytest.fixture
def stored(redis_server, redis_client) -> LogStore:
    keys = Keys()
    lease = LeaseManager(redis_client, keys).acquire(lease_name("42"), new_owner("t"), 60_000)
    logs = LogStore(redis_lib.Redis(host="127.0.0.1", port=redis_server.port), keys)
    offset, lines = 0, []
    for data in DATA:
        lines.append((offset, data))
        offset += len(data)
    logs.append("42", PROVISION_LOG, lease.fence, 0, lines)
    return logs


@pytest.fixture
def api(redis_server, stored):
    settings = load_settings(environ={"REDIS_URL": redis_server.url, "ADMIN_API_KEY": KEY}, env_file=False)
    app = create_app(settings, redis=connect(redis_server.url), clock=SystemClock())
    with Served(app) as s:
        yield s


def get(api, path: str, **params) -> requests.Response:
    return requests.get(f"{api.url}/api/proxy/admin{path}", params=params, headers={HEADER: KEY}, timeout=5)


def test_logs_endpoint_reads_from_any_offset_and_pages_with_next(api) -> None:
    body = get(api, "/instances/42/logs").json()
    assert [ln["text"] for ln in body["lines"]] == ["[onstart] one", "two \ufffd", "three", "four"]
    assert [ln["offset"] for ln in body["lines"]] == [0, 14, 20, 26]
    assert body["next"] == sum(len(d) for d in DATA) and body["lines"][0]["file"] == PROVISION_LOG
    page = get(api, "/instances/42/logs", after=0, limit=2).json()
    assert [ln["offset"] for ln in page["lines"]] == [0, 14] and page["next"] == 20
    rest = get(api, "/instances/42/logs", after=page["next"], limit=10).json()
    assert [ln["text"] for ln in rest["lines"]] == ["three", "four"]
    tail = get(api, "/instances/42/logs", after=rest["next"]).json()
    assert tail["lines"] == [] and tail["next"] == rest["next"]  # follow by polling with next
    assert get(api, "/instances/42/logs", limit=10_000).status_code == 200
    assert get(api, "/instances/42/logs", limit=10_001).status_code == 422
    assert get(api, "/instances/42/logs", after=-1).status_code == 422
    assert get(api, "/instances/x1/logs").status_code == 400
    assert get(api, "/instances/42/logs", file="../etc/passwd").status_code == 400
    assert get(api, "/instances/7/logs").json()["lines"] == []
    assert requests.get(f"{api.url}/api/proxy/admin/instances/42/logs", timeout=5).status_code == 401


def test_vastkeep_logs_prints_the_stored_bytes(redis_server, stored, tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": redis_server.url, "VASTKEEP_HOME": str(tmp_path / "h"),
           "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "vastkeep.cli", "logs", "42"], env=env, cwd=tmp_path,
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"".join(DATA)
    out = subprocess.run([sys.executable, "-m", "vastkeep.cli", "logs", "42", "--after", "20"], env=env,
                         cwd=tmp_path, capture_output=True, timeout=60)
    assert out.stdout == b"three\nfour\n"
    follow = subprocess.Popen([sys.executable, "-m", "vastkeep.cli", "logs", "42", "-f", "--after", "26"],
                              env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert follow.stdout.readline() == b"four\n"
        keys = Keys()
        r = redis_server.client()
        lease = LeaseManager(r, keys).current(lease_name("42"))
        stored.append("42", PROVISION_LOG, lease.fence, 31, [(31, b"five, live\n")])
        assert follow.stdout.readline() == b"five, live\n"  # followed as it arrives
    finally:
        follow.terminate()
        follow.wait(10)


def test_the_provider_log_stream_is_readable_and_marked(api, stored, redis_client) -> None:
    """The fallback's own stream (``file=provider:container-log``) reads back marked ``provider-api``; any
    other non-path file name is still refused."""
    from vastkeep.ssh import PROVIDER_FILE

    lease = LeaseManager(redis_client, Keys()).current(lease_name("42"))
    stored.append("42", PROVIDER_FILE, lease.fence, 0, [(0, b"from the API\n")])
    body = get(api, "/instances/42/logs", file=PROVIDER_FILE).json()
    assert body["lines"] == [{"offset": 0, "file": PROVIDER_FILE, "text": "from the API",
                              "source": "provider-api"}]
    assert get(api, "/instances/42/logs").json()["lines"][0]["source"] == "ssh"
    assert get(api, "/instances/42/logs", file="provider:other").status_code == 400
