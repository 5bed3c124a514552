"""The real vastkeep Celery app plus one short-interval beat entry, for the single-beat test.

``celery -A tests.beat_app beat`` runs *the product's* ``worker.app`` configuration (its beat scheduler,
lock timing and static schedule from ``beat_schedule.py``) with one extra entry that sends
``vastkeep.system.ping`` every ``VKTEST_BEAT_INTERVAL_S`` seconds, so a test can count sends quickly.
Imported only by the beat subprocesses the test starts.
"""

from __future__ import annotations

import os

from worker.app import app

PROBE_ENTRY = "vktest.beat-probe"
PROBE_TASK = "vastkeep.system.ping"

app.conf.beat_schedule = {**app.conf.beat_schedule,
                          PROBE_ENTRY: {"task": PROBE_TASK,
                                        "schedule": float(os.environ.get("VKTEST_BEAT_INTERVAL_S", "1"))}}

__all__ = ["PROBE_ENTRY", "PROBE_TASK", "app"]
