"""The baseline for ``bench/bench_tasks.py``: a bare ``Celery()`` app with one plain task.

``celery -A bench.plain_app worker`` finds ``app`` here. The broker and result backend come from
``BENCH_BROKER_URL`` (the bench's private redis-server). With ``BENCH_PLAIN_VKCONF=1`` the app also takes
vastkeep's delivery and visibility settings (acks late, prefetch 1, task events, sent events, track started),
so the bench can tell what the configuration costs apart from what the task code and wiring cost.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

#: vastkeep's per-task settings that change the number of broker/backend writes per task.
VK_DELIVERY = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "worker_send_task_events": True,
    "task_send_sent_event": True,
    "task_track_started": True,
}


def make_app(broker_url: str, *, vk_conf: bool = False) -> Celery:
    """A bare app (Celery's defaults, JSON as in Celery 5) on ``broker_url``; ``vk_conf`` adds VK_DELIVERY."""
    plain = Celery("bench_plain", broker=broker_url, backend=broker_url, set_as_current=False)
    plain.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                      broker_connection_retry_on_startup=True)
    if vk_conf:
        plain.conf.update(VK_DELIVERY)

    @plain.task(name="bench.plain.ping", bind=True)
    def ping(self: Any) -> dict[str, Any]:
        return {"pong": True, "worker": self.request.hostname}

    return plain


app = make_app(os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"),
               vk_conf=os.environ.get("BENCH_PLAIN_VKCONF") == "1")
