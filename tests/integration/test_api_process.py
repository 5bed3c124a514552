"""The admin API as its own OS process (``uvicorn --factory worker.api:create``, as ``vastkeep up`` runs it).

Against the real test redis-server and the simulated cloud: the process configures logging itself (the
guide's ✅/❌ lines reach stderr with time, level and logger; no key ever does), and a token that
validate-tokens finds rejected is announced as the Celery event ``vastkeep-token-invalid``, captured by a
real ``celery.events.EventReceiver`` on the same broker.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from celery import Celery
from celery.events import EventReceiver

from tests.fixtures.helpers import free_port, stop_process, wait_for
from vastkeep.core.settings import load_settings
from vastkeep.state.events import EventLog
from vastkeep.state.keys import Keys

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "api-proc-SECRET-4b8d2e61"
VALIDATE = "/api/proxy/admin/validate-tokens"
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<msg>.*)$")


class ApiProcess:
    def __init__(self, proc: subprocess.Popen, url: str, stderr_path: Path, env: dict[str, str]) -> None:
        self.proc, self.url, self.stderr_path, self.env = proc, url, stderr_path, env

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def log_lines(self) -> list[re.Match[str]]:
        return [m for m in map(LINE.match, self.stderr().splitlines()) if m]

    def validate_tokens(self) -> dict[str, Any]:
        r = requests.post(self.url + VALIDATE, headers={"X-Admin-Key": ADMIN_KEY}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def api_process(sim: Any, redis_server: Any, redis_client: Any, tmp_path: Path) -> Iterator[ApiProcess]:
    setting_names = {row["name"] for row in load_settings(environ={}, env_file=False).describe()}
    env = {k: v for k, v in os.environ.items() if k not in setting_names}  # nothing inherited by accident
    env.update(sim.env(), REDIS_URL=redis_server.url, ADMIN_API_KEY=ADMIN_KEY, VASTKEEP_SIMULATED="1",
               VASTKEEP_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    port = free_port()
    stderr_path = tmp_path / "api.stderr"
    with open(stderr_path, "wb") as err, open(tmp_path / "api.stdout", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "worker.api:create",
                                 "--host", "127.0.0.1", "--port", str(port)],
                                cwd=tmp_path, env=env, stdout=out, stderr=err)
    api = ApiProcess(proc, f"http://127.0.0.1:{port}", stderr_path, env)

    def healthy() -> bool:
        assert proc.poll() is None, f"the API process exited:\n{api.stderr()}"
        try:
            return requests.get(api.url + "/health", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(healthy, timeout_s=30, what="admin API /health", interval_s=0.05)
        yield api
    finally:
        stop_process(proc)


def secrets_of(api: ApiProcess) -> list[str]:
    return [api.env[k] for k in ("VAST_API_KEY", "HUGGINGFACE_HUB_TOKEN", "CIVITAI_TOKEN", "ADMIN_API_KEY")]


def test_api_process_logs_token_lines_with_time_level_and_logger(api_process: ApiProcess) -> None:
    body = api_process.validate_tokens()
    assert {s: r["status"] for s, r in body["validation"].items()} == {
        "vastai": "valid", "huggingface": "valid", "civitai": "valid"}

    def logged() -> list[str]:
        return [m["msg"] for m in api_process.log_lines() if m["logger"] == "vastkeep.tokens"]

    wait_for(lambda: len(logged()) >= 3, timeout_s=10, what="the three token log lines")
    assert sorted(logged()) == sorted(f"✅ {s} token validated successfully"
                                      for s in ("vastai", "huggingface", "civitai"))
    assert {m["level"] for m in api_process.log_lines() if m["logger"] == "vastkeep.tokens"} == {"INFO"}
    text = api_process.stderr()
    assert "✅ vastai token validated successfully" in text
    for secret in secrets_of(api_process):
        assert secret not in text


def test_invalid_token_via_the_api_process_sends_a_celery_event(api_process: ApiProcess, sim: Any,
                                                                redis_server: Any, redis_client: Any) -> None:
    from worker.config import celery_config

    sim.control.invalidate_token("civitai")
    probe = Celery("vk-event-probe")
    probe.conf.update(celery_config(load_settings(environ=api_process.env, env_file=False),
                                    redis_url=redis_server.url))  # the API process's broker
    seen: list[dict[str, Any]] = []
    got, stop = threading.Event(), threading.Event()

    def on_invalid(event: dict[str, Any]) -> None:
        seen.append(event)
        got.set()

    def listen() -> None:
        with probe.connection() as conn:
            recv = EventReceiver(conn, handlers={"vastkeep-token-invalid": on_invalid}, app=probe)
            while not stop.is_set() and not got.is_set():
                try:
                    recv.capture(limit=None, timeout=0.5, wakeup=False)
                except Exception:  # noqa: BLE001 - the idle capture's socket timeout
                    continue

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    bodies = []
    try:
        deadline = time.monotonic() + 20
        while not got.is_set() and time.monotonic() < deadline:
            # Fanout events reach only subscribed receivers: repeat until the listener has caught one.
            bodies.append(api_process.validate_tokens())
            got.wait(1.0)
    finally:
        stop.set()
        listener.join(5)
        probe.close()
    assert got.is_set(), "no vastkeep-token-invalid Celery event was seen"
    event = seen[0]
    assert (event["service"], event["error"], event["http_status"]) == (
        "civitai", "Token authentication failed (401)", 401)
    assert event["hostname"].startswith("vastkeep-api@")
    assert bodies[-1]["validation"]["civitai"]["status"] == "invalid"
    durable = [e for e in EventLog(redis_client, Keys()).latest(100) if e.kind == "token-invalid"]
    assert durable and durable[-1].fields["service"] == "civitai"
    failed = [m for m in api_process.log_lines() if m["msg"].startswith("❌ civitai token validation FAILED")]
    assert failed and failed[0]["level"] == "ERROR"
    blob = json.dumps(seen) + json.dumps(bodies) + api_process.stderr()
    for secret in secrets_of(api_process):
        assert secret not in blob


def test_create_configures_logging_once(redis_server: Any, tmp_path: Path) -> None:
    """Building the app twice (a reload, a second factory call) never duplicates log lines."""
    code = ("import logging, worker.api as api; api.create(); api.create(); "
            "root = logging.getLogger(); print(len(root.handlers), logging.getLevelName(root.level)); "
            "logging.getLogger('vastkeep.tokens').info('once')")
    env = {**os.environ, "REDIS_URL": redis_server.url, "LOG_LEVEL": "INFO", "PYTHONPATH": str(ROOT),
           "VASTKEEP_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "INFO"]
    assert [m["msg"] for m in map(LINE.match, done.stderr.splitlines()) if m] == ["once"]
