"""Celery configuration, built from :class:`vastkeep.core.settings.Settings` and nothing else.

Each value below is set explicitly because Celery's default is wrong for this system:

* JSON only: a pickle payload from anyone who can write to Redis is code execution, and JSON keeps
  task arguments inspectable (and makes a ``Secret`` impossible to send: it refuses to serialise).
* ``task_acks_late`` + ``task_reject_on_worker_lost``: a worker that dies mid-task does not lose the
  task; it is redelivered, so every task is idempotent.
* ``worker_prefetch_multiplier=1``: a long SSH collection must not hold short probes hostage.
* ``visibility_timeout`` in all three places (broker, result backend, top level): on Redis an unacked
  (countdown/ETA or running) message is redelivered after it, so it must exceed the longest countdown
  and task; ``Settings`` already refuses a value below the poll intervals and the SSH time limit.
* Two queues, routed by task-name prefix: ``vastkeep.control`` (short) and ``vastkeep.ssh`` (long).
* Task events on, so Flower sees every task, sent and started.
* Beat uses celery-redbeat (``beat_schedule.SCHEDULER``, ``worker.beat``): the static schedule lives in
  Redis under ``Keys.beat_prefix()`` with a lock, so every host may run beat and each entry still fires
  once per interval; a Redis outage is waited out, not fatal. The lock expires ``BEAT_LOCK_TIMEOUT_S``
  after its holder stops renewing it (renewed every tick, at most ``BEAT_MAX_LOOP_INTERVAL_S`` apart); a
  standby beat retries the lock every tick interval.
"""

from __future__ import annotations

import json
from pathlib import Path

from kombu import Exchange, Queue

import beat_schedule
from vastkeep.core.settings import Settings
from vastkeep.state.keys import Keys

CONTROL_QUEUE = "vastkeep.control"
SSH_QUEUE = "vastkeep.ssh"
KEEPALIVE_QUEUE = "vastkeep.keepalive"
QUEUES = (CONTROL_QUEUE, SSH_QUEUE, KEEPALIVE_QUEUE)
SSH_PREFIXES = ("vastkeep.ssh.", "vastkeep.logs.")
#: Long-lived async shard runners get a worker of their own: each holds a pool slot for its whole run.
KEEPALIVE_TASKS = frozenset({"vastkeep.keepalive.run_shard"})
#: Short tasks named under an SSH prefix: they must not wait behind long collectors.
CONTROL_TASKS = frozenset({"vastkeep.ssh.ensure_collectors", "vastkeep.supervision.sweep"})
FALLBACK_REDIS_URL = "redis://127.0.0.1:6379/0"
RESULT_EXPIRES_S = 86_400
REDIS_SOCKET_TIMEOUT_S = 30.0
REDIS_CONNECT_TIMEOUT_S = 5.0
#: beat wakes at least this often (renews the lock; a standby retries it): failover within the lock timeout
BEAT_MAX_LOOP_INTERVAL_S = 5
#: a beat that stopped renewing loses the lock after this long (several missed ticks, never one slow tick)
BEAT_LOCK_TIMEOUT_S = 30


def _queue(name: str) -> Queue:
    """A queue with its own direct exchange and routing key (never sharing the default binding)."""
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def queue_for(task_name: str) -> str:
    """The queue a task name routes to: SSH/log collection and keepalive shards apart from everything else."""
    if task_name in KEEPALIVE_TASKS:
        return KEEPALIVE_QUEUE
    if task_name in CONTROL_TASKS:
        return CONTROL_QUEUE
    return SSH_QUEUE if task_name.startswith(SSH_PREFIXES) else CONTROL_QUEUE


def route_task(name: str, args: object, kwargs: object, options: object, task: object = None,
               **kw: object) -> dict[str, str]:
    """Celery router (also applied to ``send_task`` by name, so Flower/API triggers route the same)."""
    return {"queue": queue_for(name)}


def resolve_redis_url(settings: Settings) -> str:
    """REDIS_URL, else the Redis of a ``vastkeep up`` stack in VASTKEEP_HOME, else local 6379.

    The middle step is what lets ``celery -A worker inspect ping`` work inside a folder where
    ``vastkeep up`` runs, without exporting anything.
    """
    if settings.redis_url:
        return settings.redis_url
    stack = Path(settings.vastkeep_home) / "stack.json"
    try:
        data: object = json.loads(stack.read_text())
        url = data.get("redis_url") if isinstance(data, dict) else None
        if isinstance(url, str) and url.startswith(("redis://", "rediss://", "unix://")):
            return url
    except (OSError, ValueError, AttributeError):
        pass
    return FALLBACK_REDIS_URL


def celery_config(settings: Settings, redis_url: str | None = None) -> dict[str, object]:
    """The full Celery configuration dict for ``app.conf.update``."""
    url = redis_url or resolve_redis_url(settings)
    vt = int(settings.celery_visibility_timeout_s)
    transport = {
        "visibility_timeout": vt,
        "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
        "health_check_interval": 25,
        "retry_on_timeout": True,
    }
    return {
        "broker_url": url,
        "result_backend": url,
        # serialisation
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # delivery guarantees
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # False on Redis: Celery would terminate running acks_late tasks on a connection loss expecting the
        # broker to redeliver them (AMQP does); kombu's Redis transport keeps them unacked until
        # visibility_timeout instead, so a 1 s Redis restart would strand them for an hour. Our tasks are
        # idempotent and ack after the reconnect (tests/integration/test_chaos_redis.py).
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": REDIS_CONNECT_TIMEOUT_S,
        "broker_transport_options": dict(transport),
        "result_backend_transport_options": dict(transport),
        "visibility_timeout": vt,
        "redis_socket_timeout": REDIS_SOCKET_TIMEOUT_S,
        "redis_socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
        "redis_backend_health_check_interval": 25,
        "redis_retry_on_timeout": True,
        "result_backend_always_retry": True,
        "result_backend_max_retries": 10,
        "result_expires": RESULT_EXPIRES_S,
        # queues and routing
        "task_default_queue": CONTROL_QUEUE,
        "task_create_missing_queues": False,
        "task_default_exchange": CONTROL_QUEUE,
        "task_default_routing_key": CONTROL_QUEUE,
        "task_queues": [_queue(q) for q in QUEUES],
        "task_routes": (route_task,),
        # visibility (Flower)
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        # time
        "enable_utc": True,
        "timezone": "UTC",
        "beat_schedule": beat_schedule.build_schedule(settings),
        # one sending beat per deployment (celery-redbeat: schedule + lock in Redis)
        "beat_scheduler": beat_schedule.SCHEDULER,
        "beat_max_loop_interval": BEAT_MAX_LOOP_INTERVAL_S,
        "redbeat_redis_url": url,
        "redbeat_key_prefix": Keys().beat_prefix(),
        "redbeat_lock_timeout": BEAT_LOCK_TIMEOUT_S,
        "redbeat_redis_options": {"socket_timeout": REDIS_SOCKET_TIMEOUT_S,
                                  "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
                                  "health_check_interval": 25, "retry_on_timeout": True},
        # the tasks package registers every task module
        "imports": ("tasks",),
        "worker_hijack_root_logger": True,
        "worker_log_color": False,
    }
