"""A guard for one kombu defect: a worker holding unacked messages dies when Redis goes away.

With ``task_acks_late`` a worker always holds the messages of the tasks it runs unacked (the keepalive
worker holds one per shard for the whole run). When the broker connection drops, Celery closes the
channel, and kombu's Redis ``QoS.restore_unacked`` asks the channel for a connection pool whose
connection info is already gone: ``AttributeError: 'NoneType' object has no attribute 'hostname'``.
That is not a connection error, so nothing catches it and the worker logs ``Unrecoverable error`` and
exits instead of reconnecting (kombu 5.x, the family of celery#8030 / #10205). Measured here: the
keepalive worker exited on every Redis restart, the control worker (nothing unacked) reconnected.

The same happens a moment later, after the worker reconnected, when a task that ran through the outage
finishes and its message is acked or rejected on the old, closed channel: ``'NoneType' object has no
attribute 'client'``, ``Unrecoverable error``, exit.

The guard turns both into a warning. Nothing is lost: the messages stay in kombu's ``unacked`` hash in
Redis and are restored by ``restore_visible`` after ``visibility_timeout`` (the supervision sweep restarts
the daemons they carried long before that; every task is safe to run twice).
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger("vastkeep.worker")
_MARK = "_vastkeep_guarded"


def install() -> bool:
    """Wrap ``kombu.transport.redis.QoS.restore_unacked`` once per process; True when it was installed now."""
    qos = kombu_redis.QoS
    original = qos.restore_unacked
    if getattr(original, _MARK, False):
        return False

    def restore_unacked(self: Any, client: Any = None) -> Any:
        try:
            return original(self, client)
        except AttributeError as exc:  # the channel's connection is already torn down
            held = len(self._delivered)
            self._delivered.clear()  # as a restore would: restore_unacked_once runs once per channel
            log.warning("broker: %d unacked message(s) not restored at once (%s: %s); they return after "
                        "visibility_timeout", held, type(exc).__name__, exc)
            return None

    setattr(restore_unacked, _MARK, True)
    setattr(qos, "restore_unacked", restore_unacked)  # noqa: B010 - a patch of kombu's class, on purpose
    setattr(qos, "ack", _on_open_channel(qos.ack))  # noqa: B010
    setattr(qos, "reject", _on_open_channel(qos.reject))  # noqa: B010
    return True


def _on_open_channel(original: Any) -> Any:
    """``ack``/``reject`` of a message whose channel a reconnect closed: left to ``visibility_timeout``."""

    def method(self: Any, delivery_tag: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self.channel, "connection", None) is None:
            log.warning("broker: %s of a message from a closed channel skipped; it returns after "
                        "visibility_timeout", original.__name__)
            return None
        return original(self, delivery_tag, *args, **kwargs)

    method.__name__ = original.__name__
    return method
