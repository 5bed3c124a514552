"""Layer 2 tasks: ``vastkeep.tokens.validate_all`` (beat, every TOKEN_PERIODIC_CHECK_MS) and
``vastkeep.tokens.validate_service``.

Thin on purpose: build the process's :class:`~vastkeep.tokens.manager.TokenManager`, validate, send a
``task-token-invalid`` Celery event per freshly rejected token (Flower counts it by type in its
``/metrics``, but its task page does not show the event's fields; the result's ``invalid`` lists the
services; the durable record is the ``token-invalid`` event the library writes to Redis), and return
the results. Arguments and results
are plain JSON and never contain a token. A Redis hiccup is retried with full jitter; a bad argument
is not retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tasks.base import AnyTask, VastkeepTask, retry_on_redis
from vastkeep.core.errors import InvalidInput
from vastkeep.tokens.checks import INVALID, SERVICES
from vastkeep.tokens.manager import TokenManager
from worker import wiring
from worker.app import app
from worker.limits import limits_for

log = logging.getLogger(__name__)


def token_manager() -> TokenManager:
    """The manager for this worker process (settings, shared store, event log, clock from the wiring)."""
    res = wiring.resources()
    return res.token_manager()


Results = dict[str, dict[str, object]]


def _summary(results: Results) -> dict[str, object]:
    return {
        "validation": results,
        "invalid": [s for s, r in results.items() if r.get("status") == INVALID],
        "statuses": {s: r.get("status") for s, r in results.items()},
    }


def _announce_invalid(task: AnyTask, results: Results) -> None:
    """One ``task-token-invalid`` Celery event per fresh rejection (cached verdicts were announced before)."""
    for service, result in results.items():
        if result.get("status") == INVALID and not result.get("cached"):
            try:
                task.send_event("task-token-invalid", service=service, error=str(result.get("error")),
                                http_status=_int_or_zero(result.get("httpStatus")))
            except Exception as exc:  # noqa: BLE001 - an event channel outage must not fail validation
                log.warning("could not send task-token-invalid for %s: %s", service, type(exc).__name__)


def _int_or_zero(value: object) -> int:
    """An HTTP status from a check result (an int there, absent when no answer came)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _bool_arg(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false", field=name)
    return value


def _run(task: AnyTask, fn: Callable[[], dict[str, object]]) -> dict[str, object]:
    """A bad argument is a result (never retried); a Redis blip is retried with jitter."""
    try:
        return retry_on_redis(task, fn, "token validation")
    except InvalidInput as exc:
        return {"ok": False, **exc.to_dict()}


@app.task(name="vastkeep.tokens.validate_all", bind=True, base=VastkeepTask,
          **limits_for("vastkeep.tokens.validate_all", wiring.settings()))
def validate_all(self: VastkeepTask, use_cache: bool = False) -> dict[str, object]:
    """Validate all three tokens (fresh by default: this is the periodic re-check) and report."""

    def go() -> dict[str, object]:
        results = token_manager().validate_all(use_cache=_bool_arg(use_cache, "use_cache"))
        _announce_invalid(self, results)
        return {"ok": True, **_summary(results)}

    return _run(self, go)


@app.task(name="vastkeep.tokens.validate_service", bind=True, base=VastkeepTask,
          **limits_for("vastkeep.tokens.validate_service", wiring.settings()))
def validate_service(self: VastkeepTask, service: str, use_cache: bool = False) -> dict[str, object]:
    """Validate one token (``service`` in vastai / huggingface / civitai)."""

    def go() -> dict[str, object]:
        if service not in SERVICES:
            raise InvalidInput(f"unknown service; expected one of {', '.join(SERVICES)}", field="service")
        manager = token_manager()
        result = manager.validate_service(service, use_cache=_bool_arg(use_cache, "use_cache"))
        _announce_invalid(self, {service: result})
        return {"ok": True, "service": service, **_summary({service: result})}

    return _run(self, go)
