"""The real vastkeep Celery app with one test hook: a collector that blocks in its fenced write.

``celery -A tests.hang_app worker -P threads`` runs *the product's* app, tasks and configuration. The hook
wraps ``Collector._take`` (bytes read from the SSH channel, about to be stored): while the file named by
``VKTEST_HANG_GATE`` holds the collector's lease fence, the call blocks, as a read or a write without a
deadline would. Nothing in the collector's own loop runs meanwhile (no heartbeat, no progress beat); only
its lease keeper thread does. Imported only by the worker subprocesses the stall test starts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import tasks  # noqa: F401 - registers every task
from vastkeep.ssh import collector as _collector
from worker.app import app

GATE = Path(os.environ.get("VKTEST_HANG_GATE", "/nonexistent"))
_take = _collector.Collector._take


def _hung(fence: int) -> bool:
    try:
        return GATE.read_text().strip() == str(fence)
    except OSError:
        return False


def _blocking_take(self: Any, f: Any, data: bytes) -> None:
    while _hung(self.lease.fence):
        time.sleep(0.05)
    _take(self, f, data)


_collector.Collector._take = _blocking_take  # type: ignore[method-assign]

__all__ = ["app"]
