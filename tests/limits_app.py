"""The real vastkeep Celery app with the port tasks' time limits shortened, for the prefork time-limit test.

``celery -A tests.limits_app worker -P prefork`` runs *the product's* app, tasks and configuration; only
``vastkeep.ports.validate_pool`` and ``vastkeep.ports.validate_instance`` get the soft limit named by
``VKTEST_SOFT_LIMIT_S`` (hard = soft + 10 s), so a test can reach the soft limit in seconds while the
probes it waits on are still running. Imported only by the worker subprocesses that test starts.
"""

from __future__ import annotations

import os

import tasks  # noqa: F401 - registers every task before the limits are changed
from worker.app import app

SOFT_S = float(os.environ.get("VKTEST_SOFT_LIMIT_S", "4"))
for _name in ("vastkeep.ports.validate_pool", "vastkeep.ports.validate_instance"):
    app.tasks[_name].soft_time_limit, app.tasks[_name].time_limit = SOFT_S, SOFT_S + 10

__all__ = ["app"]
