"""The admin API process: ``uvicorn --factory worker.api:create``.

Wires :func:`vastkeep.admin.create_app` to this process's resources and gives it a dispatcher
that queues tasks by name through the Celery app (``send_task``: routing applies, no task code
needed here) and a notifier that turns what happened in this process (``token-invalid`` after
validate-tokens) into Celery events. Arguments and event fields are plain JSON, never secrets.

uvicorn configures only its own loggers, so :func:`create` configures the root logger (level
``LOG_LEVEL``, lines with time, level and logger) - otherwise the library's INFO lines, such as
``✅ vastai token validated successfully``, would be lost.
"""

from __future__ import annotations

import logging
import socket

import redis
from fastapi import FastAPI

from vastkeep.admin import create_app
from vastkeep.core.redact import install_redaction
from worker import wiring
from worker.app import app as celery_app

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: uvicorn's own loggers (they do not propagate to the root): their handlers get the redaction filter too
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
#: Celery event type = this prefix + the admin app's kind (``vastkeep-token-invalid``)
EVENT_PREFIX = "vastkeep-"
log = logging.getLogger("vastkeep.api")

class BrokerUnavailable(ConnectionError):
    """The broker did not answer the pre-check; the request gets a prompt 503."""


def dispatch(name: str, kwargs: dict[str, object]) -> str:
    """Queue task ``name`` with ``kwargs``; returns the task id.

    ``send_task`` first subscribes to the result channel under the result backend's retry policy
    (20 × 1 s), so during a Redis outage a request would hold one of the API's threads for ~19 s and
    enough of them would stall ``/health``; a one-second PING answers those with 503 at once.
    """
    try:
        wiring.resources().broker_probe.ping()
    except redis.RedisError as exc:
        raise BrokerUnavailable(f"broker did not answer ({type(exc).__name__})") from None
    return str(celery_app.send_task(name, kwargs=kwargs).id)


def event_hostname() -> str:
    """The sender name Celery event consumers see for this process."""
    return f"vastkeep-api@{socket.gethostname()}"


def notify(kind: str, fields: dict[str, object]) -> None:
    """Send the Celery event ``vastkeep-<kind>`` with ``fields`` on the broker; a failure is only logged.

    Consumers of the event exchange (``celery -A worker events --dump``, a ``celery.events``
    receiver) see it; the durable record is the ``vastkeep:events`` stream.
    """
    try:
        with celery_app.events.default_dispatcher(hostname=event_hostname()) as dispatcher:
            dispatcher.send(EVENT_PREFIX + kind, **fields)
    except Exception as exc:  # noqa: BLE001 - a broker hiccup must not fail the request that caused it
        log.warning("could not send Celery event %s%s: %s", EVENT_PREFIX, kind, type(exc).__name__)


def configure_logging(level: str) -> None:
    """Root logger to stderr at ``level`` with time, level and logger name; lease ids redacted everywhere.

    Every handler of the root logger and of uvicorn's loggers (its access log prints request paths)
    passes records through :class:`vastkeep.core.redact.RedactFilter`, so no lease id reaches a log.
    Idempotent (``logging.basicConfig`` does nothing when the root logger already has a handler), so
    building the app twice never duplicates lines, and a ``--log-config`` given to uvicorn wins.
    """
    logging.basicConfig(level=level, format=LOG_FORMAT)
    install_redaction(*(logging.getLogger(name) for name in UVICORN_LOGGERS))


def create() -> FastAPI:
    """uvicorn factory: the admin app on this process's settings, Redis, store and events."""
    res = wiring.resources()
    settings = res.settings
    configure_logging(settings.log_level)
    if settings.redis_url is None:  # e.g. the URL came from stack.json: keep one source of truth
        from dataclasses import replace

        settings = replace(settings, redis_url=wiring.redis_url())
    return create_app(settings, store=res.store, events=res.events, dispatch=dispatch, notify=notify,
                      redis=res.redis, clock=res.clock, keys=res.keys)
