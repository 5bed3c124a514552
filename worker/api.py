"""The admin API process: ``uvicorn --factory worker.api:create``.

Wires :func:`vastkeep.admin.create_app` to this process's resources and gives it a dispatcher
that queues tasks by name through the Celery app (``send_task``: routing applies, no task code
needed here). Arguments are plain JSON kwargs, never secrets.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from vastkeep.admin import create_app
from worker import wiring
from worker.app import app as celery_app


def dispatch(name: str, kwargs: dict[str, Any]) -> str:
    """Queue task ``name`` with ``kwargs``; returns the task id."""
    return str(celery_app.send_task(name, kwargs=kwargs).id)


def create() -> FastAPI:
    """uvicorn factory: the admin app on this process's settings, Redis, store and events."""
    res = wiring.resources()
    settings = res.settings
    if settings.redis_url is None:  # e.g. the URL came from stack.json: keep one source of truth
        from dataclasses import replace

        settings = replace(settings, redis_url=wiring.redis_url())
    return create_app(settings, store=res.store, events=res.events, dispatch=dispatch, redis=res.redis,
                      clock=res.clock, keys=res.keys)
