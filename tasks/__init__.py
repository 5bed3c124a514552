"""Thin Celery tasks, one module per concern. Importing this package registers every task.

Add one line `import tasks.<module>  # noqa: F401` per task module, sorted
(the worker imports this package at start-up).
"""

import tasks.keepalive  # noqa: F401
import tasks.polling  # noqa: F401
import tasks.pool  # noqa: F401
import tasks.ports  # noqa: F401
import tasks.ssh  # noqa: F401
import tasks.supervision  # noqa: F401
import tasks.system  # noqa: F401
import tasks.tokens  # noqa: F401
from tasks.base import VastkeepTask, retry_delay_s

__all__ = ["VastkeepTask", "retry_delay_s"]
