"""The admin API's OpenAPI document says exactly what the API answers: schemathesis against the real process.

Schemathesis (its CLI, as an operator would run it) reads ``/openapi.json`` from the API process
(``uvicorn --factory worker.api:create``) and sends every operation schema-valid and schema-invalid requests,
with every check on: no 5xx, every status code, content type, header and body documented, every
schema-valid request accepted and every invalid one refused, 405 with an exact ``Allow``, the ``AdminKey``
scheme enforced. Deterministic (``generation.deterministic``, no example database) and bounded
(``max-examples`` per operation).

Side effects stay inside the test: the API runs on a redis-server of this test's own, which no worker reads
and which the test stops and deletes, so the tasks the routes queue (``system/ping``, ``ports/validate``,
the reconcile kick of ``warm-pool/size`` and ``safe-mode``) are never run; token checks go to the session's
simulated cloud. Two answers are intended and configured as such below: a lease request with no instance
ready is 503 with ``Retry-After`` (the pool is empty here), and a well-formed token the provider rejects is
422.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from tests.fixtures.api_process import api_env, spawn_api
from tests.fixtures.redis_server import start_redis_server

KEY = "openapi-admin-key-5d2c8e1f"
MAX_EXAMPLES = 20
CONFIG = """
[generation]
deterministic = true
database = "none"
max-examples = {max_examples}

[auth.openapi.AdminKey]
api_key = "{key}"

# No instance is ready in this test's empty pool: a lease request is refused with 503 + Retry-After by design.
[[operations]]
include-path = "/api/proxy/admin/warm-pool/leases"
include-method = "POST"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", 503]

# A well-formed token the provider refuses is 422 (the old token is kept): valid JSON, refused on its merits.
[[operations]]
include-path = "/api/proxy/admin/update-token"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", 401, 403, 404, 409, 422, 429, "5xx"]
"""


def test_openapi_document_matches_the_api(sim: Any, tmp_path: Path) -> None:
    redis = start_redis_server()
    env = api_env(**sim.env(), REDIS_URL=redis.url, ADMIN_API_KEY=KEY, LOG_LEVEL="WARNING",
                  VASTKEEP_HOME=str(tmp_path / "home"))
    api = spawn_api(env, tmp_path / "api", ("--no-access-log",))
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(max_examples=MAX_EXAMPLES, key=KEY), encoding="utf-8")
    started = time.monotonic()
    try:
        doc = requests.get(api.url + "/openapi.json", timeout=10).json()
        assert doc["components"]["securitySchemes"]["AdminKey"] == {
            "type": "apiKey", "in": "header", "name": "X-Admin-Key",
            "description": doc["components"]["securitySchemes"]["AdminKey"]["description"]}
        options = requests.options(api.url + "/api/proxy/admin/safe-mode", headers={"X-Admin-Key": KEY},
                                   timeout=10)
        assert options.status_code == 405 and options.headers["Allow"] == "GET, POST", options.headers
        # one worker: with two threads, hypothesis parses lambda sources concurrently and CPython 3.11's
        # ast.parse fails with "SystemError: AST constructor recursion depth mismatch" (seen in a full run)
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
             f"{api.url}/openapi.json", "--checks", "all", "--no-color", "--workers", "1",
             "--request-timeout", "20", "--suppress-health-check", "all"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
        client = redis.client()
        queued = {k: client.llen(k) for k in client.scan_iter(match="vastkeep.*") if client.type(k) == "list"}
    finally:
        api.stop()
        redis.stop()
    took_s = time.monotonic() - started
    output = run.stdout + run.stderr
    summary = output[output.rfind("SUMMARY"):] if "SUMMARY" in output else output[-3000:]
    assert run.returncode == 0, f"schemathesis found mismatches:\n{output[-12000:]}"
    assert "No issues found" in output or " passed" in summary, summary
    # the routes that queue tasks answered 202 for real: their messages wait in the private broker, unrun
    assert sum(queued.values()) > 0, queued
    print(f"schemathesis: {took_s:.0f} s; left unrun in the private broker: {queued}\n{summary}")
