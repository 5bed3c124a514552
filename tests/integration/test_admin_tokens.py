"""The token admin endpoints over real HTTP (uvicorn on a loopback port) against the simulated cloud.

X-Admin-Key guard, the guide's bodies, update-token's validate-before-replace rules, every kind of bad
body, and no token string in any response or captured log line.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.fixtures.helpers import ServedApp, wait_for
from tests.fixtures.state import State
from tests.fixtures.token_cloud import SimCloud
from vastkeep.core.settings import load_settings
from vastkeep.state.events import EventLog
from vastkeep.state.keys import Keys
from vastkeep.tokens.checks import CIVITAI, HUGGINGFACE, SERVICES, VASTAI

ADMIN_KEY = "adm-SECRET-7c1e0f9b"
PREFIX = "/api/proxy/admin"
KEYS = Keys("vkadmtok")


@pytest.fixture(scope="module")
def admin(sim_cloud: Any, redis_server: Any) -> Iterator[ServedApp]:
    cloud = SimCloud(sim_cloud)
    env = {**cloud.env(), "ADMIN_API_KEY": ADMIN_KEY, "REDIS_URL": redis_server.url}
    settings = load_settings(environ=env, env_file=False)
    app = State(redis_server.client(), keys=KEYS).admin_app(settings)
    with ServedApp(app) as server:
        yield server


@pytest.fixture
def cloud(token_sim: SimCloud, redis_client: Any) -> SimCloud:
    return token_sim


def post(admin: ServedApp, path: str, *, key: str | None = ADMIN_KEY, **kw: Any) -> requests.Response:
    headers = {"X-Admin-Key": key} if key is not None else {}
    headers.update(kw.pop("headers", {}))
    return requests.post(admin.url + PREFIX + path, headers=headers, timeout=30, **kw)


def assert_clean(text: str, cloud: SimCloud, *extra: str) -> None:
    for secret in (*cloud.all_tokens(), ADMIN_KEY, *extra):
        assert secret not in text


@pytest.mark.parametrize("path", ["/validate-tokens", "/update-token"])
@pytest.mark.parametrize("key", [None, "", "wrong-key", ADMIN_KEY + "x"])
def test_guard_refuses_missing_or_wrong_key(admin, cloud, path, key, caplog) -> None:
    r = post(admin, path, key=key, json={"service": CIVITAI, "token": "tok-abcdef123"})
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"
    assert sum(cloud.count_requests().values()) == 0
    assert_clean(r.text + caplog.text, cloud, "tok-abcdef123")


def test_validate_tokens_is_fresh_each_time_with_guide_shape(admin, cloud) -> None:
    for expected_calls in (1, 2):
        r = post(admin, "/validate-tokens")
        assert r.status_code == 200
        body = r.json()
        assert body["success"] is True and set(body["validation"]) == set(SERVICES)
        assert all(v["valid"] is True and v["status"] == "valid" for v in body["validation"].values())
        assert body["validation"][HUGGINGFACE]["user"] == "vastkeep-sim"
        assert body["validation"][VASTAI]["testedAt"].endswith("Z")
        assert cloud.count_requests() == dict.fromkeys(SERVICES, expected_calls)
        assert_clean(r.text, cloud)


def test_validate_tokens_reports_invalid_as_a_result(admin, cloud, caplog) -> None:
    caplog.set_level(logging.INFO)
    cloud.rotate(CIVITAI)
    r = post(admin, "/validate-tokens")
    assert r.status_code == 200
    civ = r.json()["validation"][CIVITAI]
    assert (civ["valid"], civ["error"]) == (False, "Token authentication failed (401)")
    assert "❌ civitai token validation FAILED: Token authentication failed (401)" in caplog.messages
    assert_clean(r.text + caplog.text, cloud)


def test_update_token_validates_then_every_reader_sees_it(admin, cloud, redis_client, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    new = cloud.rotate(CIVITAI)
    r = post(admin, "/update-token", json={"service": CIVITAI, "token": new})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["service"] == CIVITAI
    assert body["validation"]["valid"] is True and body["validation"]["user"] == "vastkeep-sim"
    assert redis_client.get(KEYS.runtime_secret(CIVITAI)) == new  # where every worker reads it
    status = requests.get(admin.url + PREFIX + "/tokens", headers={"X-Admin-Key": ADMIN_KEY},
                          timeout=10).json()
    assert status["tokens"][CIVITAI]["source"] == "runtime"
    assert status["tokens"][CIVITAI]["result"]["status"] == "valid"
    again = post(admin, "/validate-tokens").json()["validation"][CIVITAI]
    assert again["valid"] is True  # the new token is the effective one
    events = EventLog(redis_client, KEYS).latest(50)
    assert [e.fields["service"] for e in events if e.kind == "token-updated"] == [CIVITAI]
    assert_clean(r.text + json.dumps(status) + caplog.text + json.dumps([e.to_dict() for e in events]), cloud)


def test_update_token_rejected_keeps_old_one(admin, cloud, redis_client, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    r = post(admin, "/update-token", json={"service": HUGGINGFACE, "token": "hf_wrongwrongwrong"})
    assert r.status_code == 422
    body = r.json()
    assert body["success"] is False and body["service"] == HUGGINGFACE
    assert body["error"] == "token rejected by huggingface (401)"
    assert body["validation"]["status"] == "invalid"
    assert redis_client.get(KEYS.runtime_secret(HUGGINGFACE)) is None
    assert post(admin, "/validate-tokens").json()["validation"][HUGGINGFACE]["valid"] is True
    assert_clean(r.text + caplog.text, cloud, "hf_wrongwrongwrong")


def test_update_token_provider_down_is_503_unless_forced(admin, cloud, redis_client) -> None:
    new = cloud.rotate(VASTAI)
    cloud.fault(VASTAI, status=502, count=1)
    r = post(admin, "/update-token", json={"service": VASTAI, "token": new})
    assert r.status_code == 503
    assert r.json()["success"] is False and "force" in r.json()["error"]
    assert redis_client.get(KEYS.runtime_secret(VASTAI)) is None
    cloud.fault(VASTAI, status=502, count=1)
    forced = post(admin, "/update-token", json={"service": VASTAI, "token": new, "force": True})
    assert forced.status_code == 200 and forced.json()["forced"] is True
    assert redis_client.get(KEYS.runtime_secret(VASTAI)) == new
    assert_clean(r.text + forced.text, cloud)


SECRETISH = "tok-S3CRET-abcdef"


@pytest.mark.parametrize(("kwargs", "status", "field"), [
    ({"data": "not json " + SECRETISH, "headers": {"Content-Type": "application/json"}}, 400, "body"),
    ({"data": SECRETISH}, 400, "body"),
    ({"json": [CIVITAI, SECRETISH]}, 400, "body"),
    ({"json": {"service": "dropbox", "token": SECRETISH}}, 400, "service"),
    ({"json": {"service": 5, "token": SECRETISH}}, 400, "service"),
    ({"json": {"token": SECRETISH}}, 400, "service"),
    ({"json": {"service": CIVITAI}}, 400, "token"),
    ({"json": {"service": CIVITAI, "token": ""}}, 400, "token"),
    ({"json": {"service": CIVITAI, "token": "   \t"}}, 400, "token"),
    ({"json": {"service": CIVITAI, "token": SECRETISH + "\r\nX-Injected: 1"}}, 400, "token"),
    ({"json": {"service": CIVITAI, "token": SECRETISH + "\x00"}}, 400, "token"),
    ({"json": {"service": CIVITAI, "token": SECRETISH * 300}}, 400, "token"),
    ({"json": {"service": CIVITAI, "token": {"v": SECRETISH}}}, 400, "token"),
    ({"json": {"service": CIVITAI, "token": SECRETISH, "force": "yes"}}, 400, "force"),
    ({"json": {"service": CIVITAI, "token": SECRETISH, "tokne": SECRETISH}}, 400, "body"),
    ({"json": {"service": CIVITAI, "token": SECRETISH * 5000}}, 413, None),
])
def test_update_token_bad_bodies(admin, cloud, redis_client, kwargs, status, field, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    r = post(admin, "/update-token", **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert body.get("reason")
    if field is not None:
        assert body["field"] == field
    assert sum(cloud.count_requests().values()) == 0
    assert redis_client.get(KEYS.runtime_secret(CIVITAI)) is None
    assert SECRETISH not in r.text and SECRETISH not in caplog.text


# ── live notification of a rejected token (worker/api.py turns it into a Celery event) ──
class EventTap:
    """A real Celery event receiver on the broker, in a thread: what ``celery events`` or Flower sees."""

    def __init__(self, celery_app: Any) -> None:
        self.app = celery_app
        self.seen: list[dict[str, Any]] = []
        self.receiver: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.app.connection_for_read() as conn:
            self.receiver = self.app.events.Receiver(conn, handlers={"*": self.seen.append})
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in list(self.seen) if e.get("type") == kind]

    def __enter__(self) -> EventTap:
        self.thread.start()
        # fanout on Redis is PUBLISH: only a subscribed receiver hears it, so probe until one arrives
        def heard() -> bool:
            with self.app.events.default_dispatcher(hostname="tap-probe") as dispatcher:
                dispatcher.send("vastkeep-tap-probe")
            return bool(self.of_type("vastkeep-tap-probe"))

        wait_for(heard, timeout_s=15, what="the event receiver to subscribe", interval_s=0.2)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(10)


def test_validate_tokens_announces_each_newly_invalid_token_as_a_celery_event(
        redis_server, cloud, caplog, vk_celery_app) -> None:
    """The production notifier (``worker.api.notify``) on the real broker; a real receiver hears it."""
    from worker.api import EVENT_PREFIX, notify

    caplog.set_level(logging.INFO)
    env = {**cloud.env(), "ADMIN_API_KEY": ADMIN_KEY, "REDIS_URL": redis_server.url}
    app = State(redis_server.client(), keys=KEYS).admin_app(load_settings(environ=env, env_file=False),
                                                            notify=notify)
    kind = EVENT_PREFIX + "token-invalid"
    with EventTap(vk_celery_app) as tap, ServedApp(app) as server:
        assert post(server, "/validate-tokens").status_code == 200
        cloud.rotate(CIVITAI)
        cloud.rotate(VASTAI)
        r = post(server, "/validate-tokens")
        assert r.status_code == 200
        wait_for(lambda: len(tap.of_type(kind)) >= 2, timeout_s=15, what="two token-invalid events")
        events = tap.of_type(kind)
    assert sorted((e["service"], e["error"], e["http_status"]) for e in events) == [
        (svc, "Token authentication failed (401)", 401) for svc in (CIVITAI, VASTAI)]
    assert {e["hostname"] for e in events} == {f"vastkeep-api@{socket.gethostname()}"}
    assert not [m for m in caplog.messages if m.startswith(("could not announce", "could not send"))]
    assert_clean(json.dumps(events, default=str) + r.text + caplog.text, cloud)


def test_validate_tokens_survives_a_notifier_that_raises(redis_server, cloud, caplog) -> None:
    """Fault injection: the app's own guard when its notifier raises (the production one never does: it
    logs and swallows broker errors itself). The request still succeeds; each failure is logged."""
    caplog.set_level(logging.INFO)
    attempts: list[str] = []

    def broken(kind: str, fields: dict[str, Any]) -> None:
        attempts.append(fields["service"])
        raise ConnectionError("broker down")

    env = {**cloud.env(), "ADMIN_API_KEY": ADMIN_KEY, "REDIS_URL": redis_server.url}
    app = State(redis_server.client(), keys=KEYS).admin_app(load_settings(environ=env, env_file=False),
                                                            notify=broken)
    with ServedApp(app) as server:
        cloud.rotate(CIVITAI)
        cloud.rotate(VASTAI)
        r = post(server, "/validate-tokens")
        assert r.status_code == 200  # a failing notifier never fails the request

        def warned() -> list[str]:
            return [m for m in caplog.messages if m.startswith("could not announce token-invalid")]

        wait_for(lambda: len(warned()) == 2, timeout_s=10, what="two logged notifier failures")
    assert sorted(attempts) == [CIVITAI, VASTAI]
    assert_clean(r.text + caplog.text, cloud)
