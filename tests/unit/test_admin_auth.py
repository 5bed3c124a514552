"""The X-Admin-Key guard and the admin app's refusal paths (in-process ASGI client; no Redis needed)."""

from __future__ import annotations

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from pydantic import BaseModel

from vastkeep.admin import HEADER, create_app
from vastkeep.admin import auth as auth_mod
from vastkeep.admin.app import MAX_BODY_BYTES
from vastkeep.core.errors import LeaseBusy, NotFound
from vastkeep.core.settings import load_settings

KEY = "k3y-for-tests-0123456789"
STATUS = "/api/proxy/admin/system/status"
PING = "/api/proxy/admin/system/ping"


class TokenBody(BaseModel):
    service: str
    token: str


def _extra_router() -> APIRouter:
    r = APIRouter(prefix="/api/proxy/admin/test")

    @r.post("/echo-service")
    def echo(body: TokenBody) -> dict:
        return {"service": body.service}

    @r.get("/missing")
    def missing() -> dict:
        raise NotFound("instance 9 is gone", instance_id="9")

    @r.get("/busy")
    def busy() -> dict:
        raise LeaseBusy("lease held")

    return r


def make_client(key: str | None = KEY, dispatch=None) -> TestClient:
    env = {"ADMIN_API_KEY": key} if key else {}
    settings = load_settings(environ=env, env_file=False)
    app = create_app(settings, dispatch=dispatch, extra_routers=[_extra_router()])
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client() -> TestClient:
    return make_client()


def test_missing_key_is_401_with_reason(client: TestClient) -> None:
    r = client.get(STATUS)
    assert r.status_code == 401
    assert r.json() == {"error": "unauthorized", "reason": f"missing {HEADER} header"}


@pytest.mark.parametrize("wrong", ["nope", KEY[:-1], KEY + "x", " " + KEY, "x" * 5000, "ключ"])
def test_wrong_key_is_401(client: TestClient, wrong: str) -> None:
    r = client.get(STATUS, headers={HEADER: wrong.encode("utf-8")})
    assert r.status_code == 401
    assert r.json()["reason"] == f"invalid {HEADER}"
    assert KEY not in r.text


def test_right_key_passes(client: TestClient) -> None:
    r = client.get(STATUS, headers={HEADER: KEY})
    assert r.status_code == 200
    assert r.json()["redis"] == "not configured"


def test_constant_time_compare_is_used(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = auth_mod.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_mod.hmac, "compare_digest", spy)
    assert client.get(STATUS, headers={HEADER: "wrong"}).status_code == 401
    assert client.get(STATUS, headers={HEADER: KEY}).status_code == 200
    assert calls == [(b"wrong", KEY.encode()), (KEY.encode(), KEY.encode())]


def test_unconfigured_key_answers_503_not_open() -> None:
    c = make_client(key=None)
    for headers in ({}, {HEADER: "anything"}):
        r = c.get(STATUS, headers=headers)
        assert r.status_code == 503
        assert r.json()["reason"].startswith("admin key not configured")
    assert c.get("/health").status_code == 503  # unguarded; 503 only because no Redis is configured


def test_oversize_body_is_413_declared_and_streamed(client: TestClient) -> None:
    big = b"{" + b" " * (MAX_BODY_BYTES + 10) + b"}"
    r = client.post(PING, content=big, headers={HEADER: KEY, "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"

    def chunks():
        for _ in range(20):
            yield b"x" * 8192

    r = client.post("/api/proxy/admin/test/echo-service", content=chunks(),
                    headers={HEADER: KEY, "content-type": "application/json"})
    assert r.status_code == 413, r.text


def test_junk_never_500s_and_never_echoes_input(client: TestClient) -> None:
    url = "/api/proxy/admin/test/echo-service"
    h = {HEADER: KEY, "content-type": "application/json"}
    secret = "hf_SECRETVALUE123"
    cases = [
        client.post(url, content=b"{not json", headers=h),
        client.post(url, content=b"\xff\xfe\x00", headers=h),
        client.post(url, json={"service": "hf"}, headers=h),
        client.post(url, json={"service": ["x"], "token": secret}, headers=h),
        client.post(url, json=[1, 2, 3], headers=h),
        client.post(url, content=b"", headers=h),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, (r.status_code, r.text)
        body = r.json()
        assert body["reason"], body
        assert secret not in r.text
    assert client.post(url, json={"service": "hf", "token": secret}, headers=h).json() == {"service": "hf"}
    assert client.get("/nope").status_code == 404
    assert client.get("/nope").json()["error"] == "not_found"
    assert client.delete(STATUS, headers={HEADER: KEY}).status_code == 405
    r = client.post(PING, headers={HEADER: KEY, "content-length": "abc"})
    assert r.status_code == 400


def test_library_errors_map_to_4xx(client: TestClient) -> None:
    r = client.get("/api/proxy/admin/test/missing", headers={HEADER: KEY})
    assert r.status_code == 404 and r.json() == {"error": "NotFound", "reason": "instance 9 is gone",
                                                 "instance_id": "9"}
    assert client.get("/api/proxy/admin/test/busy", headers={HEADER: KEY}).status_code == 409


def test_dispatch_queues_by_name_and_broker_failure_is_503() -> None:
    sent: list[tuple[str, dict]] = []

    def dispatch(name: str, kwargs: dict) -> str:
        sent.append((name, kwargs))
        return "task-123"

    r = make_client(dispatch=dispatch).post(PING, headers={HEADER: KEY})
    assert r.status_code == 202 and r.json()["taskId"] == "task-123"
    assert sent == [("vastkeep.system.ping", {})]

    def broken(name: str, kwargs: dict) -> str:
        raise ConnectionError("redis down")

    r = make_client(dispatch=broken).post(PING, headers={HEADER: KEY})
    assert r.status_code == 503 and "broker unavailable" in r.json()["reason"]
    assert make_client(dispatch=None).post(PING, headers={HEADER: KEY}).status_code == 503


def test_openapi_lists_guarded_routes(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert "/health" in doc["paths"] and "/metrics" in doc["paths"] and STATUS in doc["paths"]
    assert client.get("/docs").status_code == 200
