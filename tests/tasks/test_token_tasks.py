"""The token tasks through the embedded real Celery worker, against the simulated cloud and real Redis."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from tests.fixtures.helpers import wait_until
from tests.fixtures.token_cloud import SimCloud
from vastkeep.core.settings import Secret
from vastkeep.state.events import EventLog
from vastkeep.state.keys import Keys
from vastkeep.tokens.checks import CIVITAI, HUGGINGFACE, SERVICES, VASTAI

TIMEOUT = 30


@pytest.fixture
def cloud(token_sim: SimCloud, vk_celery_worker: Any, vk_settings: Any,
          redis_client: Any) -> Iterator[SimCloud]:
    """Point the worker's settings at the simulator for this test, and back afterwards."""
    from worker import wiring

    vast_url, hf_url, civ_url = token_sim.urls()
    wiring.configure(replace(
        vk_settings, vast_api_url=vast_url, vast_api_key=Secret(token_sim.token(VASTAI)),
        huggingface_api_url=hf_url, huggingface_hub_token=Secret(token_sim.token(HUGGINGFACE)),
        civitai_api_url=civ_url, civitai_token=Secret(token_sim.token(CIVITAI))))
    yield token_sim
    wiring.configure(vk_settings)


def run(name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    import tasks.tokens as t

    task = {"validate_all": t.validate_all, "validate_service": t.validate_service}[name]
    return task.apply_async(args=args, kwargs=kwargs).get(timeout=TIMEOUT)


def test_validate_all_returns_json_without_secrets(cloud, caplog) -> None:
    caplog.set_level(logging.INFO)
    result = run("validate_all")
    assert result["ok"] is True and result["invalid"] == []
    assert result["statuses"] == dict.fromkeys(SERVICES, "valid")
    assert result["validation"][HUGGINGFACE]["user"] == "vastkeep-sim"
    text = json.dumps(result)
    assert json.loads(text) == result
    assert cloud.count_requests() == dict.fromkeys(SERVICES, 1)
    for service in SERVICES:
        assert f"✅ {service} token validated successfully" in caplog.messages
    for secret in cloud.all_tokens():
        assert secret not in text and secret not in caplog.text


def test_use_cache_argument(cloud) -> None:
    run("validate_all")
    cached = run("validate_all", use_cache=True)
    assert all(r["cached"] for r in cached["validation"].values())
    assert cloud.count_requests() == dict.fromkeys(SERVICES, 1)
    fresh = run("validate_service", CIVITAI)
    assert fresh["validation"][CIVITAI]["cached"] is False
    assert cloud.count_requests()[CIVITAI] == 2


def test_invalid_token_gives_durable_event_celery_event_and_error_line(cloud, vk_celery_app, redis_client,
                                                                        caplog) -> None:
    caplog.set_level(logging.INFO)
    cloud.rotate(CIVITAI)  # the worker's configured Civitai token is now rejected
    seen: list[dict[str, Any]] = []
    got = threading.Event()

    def on_invalid(event: dict[str, Any]) -> None:
        seen.append(event)
        got.set()

    stop = threading.Event()

    def listen() -> None:
        with vk_celery_app.connection_for_read() as conn:
            recv = vk_celery_app.events.Receiver(conn, handlers={"task-token-invalid": on_invalid})
            while not stop.is_set():
                try:
                    recv.capture(limit=None, timeout=0.5, wakeup=False)
                except TimeoutError:
                    continue
                except Exception:  # noqa: BLE001 - socket timeout of an idle capture
                    continue

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        results: list[Any] = []

        def caught() -> bool:
            # Fanout events reach only subscribed receivers: repeat until the listener has caught one.
            results.append(run("validate_all"))
            return got.wait(1.0)

        wait_until(caught, timeout_s=20, interval_s=0)  # the assertions below say what was missing
        result = results[-1] if results else None
    finally:
        stop.set()
        listener.join(5)
    assert result is not None and result["invalid"] == [CIVITAI]
    assert result["validation"][CIVITAI]["error"] == "Token authentication failed (401)"
    assert got.is_set(), "no task-token-invalid Celery event was seen"
    assert seen[0]["service"] == CIVITAI and seen[0]["error"] == "Token authentication failed (401)"
    durable = [e for e in EventLog(redis_client, Keys()).latest(100) if e.kind == "token-invalid"]
    assert durable and durable[-1].fields["service"] == CIVITAI
    assert "❌ civitai token validation FAILED: Token authentication failed (401)" in caplog.messages
    blob = json.dumps(seen) + json.dumps(result) + caplog.text + json.dumps([e.to_dict() for e in durable])
    for secret in cloud.all_tokens():
        assert secret not in blob


def test_bad_arguments_are_not_retried(cloud) -> None:
    assert run("validate_service", "dropbox") == {
        "ok": False, "error": "InvalidInput", "field": "service",
        "message": "unknown service; expected one of vastai, huggingface, civitai"}
    assert run("validate_all", use_cache="yes")["field"] == "use_cache"
    assert sum(cloud.count_requests().values()) == 0


def test_runtime_update_reaches_the_worker(cloud, store) -> None:
    new = cloud.rotate(HUGGINGFACE)
    assert run("validate_service", HUGGINGFACE)["statuses"] == {HUGGINGFACE: "invalid"}
    store.set_runtime_secret(HUGGINGFACE, new)  # what update-token stores
    assert run("validate_service", HUGGINGFACE)["statuses"] == {HUGGINGFACE: "valid"}
