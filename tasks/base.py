"""What every task shares: error mapping and full-jitter retry delays.

A task body calls the library and returns a small JSON dict. Library errors decide the outcome:
a :class:`~vastkeep.core.errors.TransientError` is retried after ``uniform(0, min(cap, base·2^n))``
seconds, never in lockstep with the other instances that failed at the same moment. A ``delay_s``
hint on the error (an HTTP backoff ceiling, a lease's remaining time) widens that bound to
``uniform(0, min(cap, max(hint, base·2^n)))``: it is an upper bound for the jitter, never a floor,
because a floor would send every worker that saw the same 429 back at the same instant. A
:class:`~vastkeep.core.errors.PermanentError` fails the task at once, because retrying cannot help.

Every task has a time limit (:mod:`worker.limits`, derived from the work's own budgets). When the soft
limit fires, ``SoftTimeLimitExceeded`` is raised inside the task; the base class turns it into a result
(:meth:`VastkeepTask.interrupted_result`, which a task may override to report what it finished) instead
of a failure, so the message is acknowledged once and never redelivered into the same limit again.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import redis
from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded

from vastkeep.core.backoff import BackoffPolicy, backoff_ceiling, full_jitter
from vastkeep.core.errors import TransientError
from vastkeep.supervision import mark_crashed

if TYPE_CHECKING:
    from worker.wiring import Resources

DEFAULT_RETRY_POLICY = BackoffPolicy(base_s=1.0, cap_s=60.0)
_rng = random.SystemRandom()
log = logging.getLogger(__name__)
T = TypeVar("T")
#: any Celery task, whatever its arguments (the base class of ours, and what Celery hands a bound task)
AnyTask = Task[..., object]


def retry_delay_s(task: AnyTask, exc: BaseException | None = None, policy: BackoffPolicy | None = None,
                  rng: random.Random | None = None) -> float:
    """Full-jitter countdown for the task's next retry (attempt = ``task.request.retries``).

    ``uniform(0, bound)`` with ``bound = min(cap, max(delay_s hint, base·2^attempt))``: the error's
    ``delay_s`` (if any) can widen the window, never pin the countdown to one value.
    """
    policy = policy or getattr(task, "retry_policy_backoff", None) or DEFAULT_RETRY_POLICY
    attempt = int(getattr(task.request, "retries", 0) or 0)
    bound = backoff_ceiling(attempt, policy)
    hint = getattr(exc, "delay_s", None)
    if isinstance(hint, int | float) and not isinstance(hint, bool) and hint == hint and hint > bound:
        bound = min(float(hint), policy.cap_s)
    return round(full_jitter(bound, rng or _rng), 3)


class VastkeepTask(AnyTask):
    """Base class of every vastkeep task: TransientError → retry with jitter; PermanentError → fail."""

    max_retries = 8
    retry_policy_backoff: BackoffPolicy = DEFAULT_RETRY_POLICY

    def __call__(self, *args: object, **kwargs: object) -> object:
        try:
            return super().__call__(*args, **kwargs)
        except TransientError as exc:
            raise self.retry(exc=exc, countdown=retry_delay_s(self, exc)) from exc
        except SoftTimeLimitExceeded:
            log.warning("%s: soft time limit (%ss) reached; returning what was done", self.name,
                        self.soft_time_limit)
            return self.interrupted_result(*args, **kwargs)

    def interrupted_result(self, *args: object, **kwargs: object) -> dict[str, object]:
        """The result after ``SoftTimeLimitExceeded`` (small JSON); override to add partial progress."""
        return {"ok": False, "interrupted": True,
                "error": f"stopped at the soft time limit ({self.soft_time_limit}s)"}


def retry_on_redis(task: AnyTask, fn: Callable[[], T], what: str) -> T:
    """``fn()``; a Redis connection error or timeout becomes a jittered ``task.retry`` (logged as ``what``).

    redis-py errors are not in the vastkeep error tree (the library lets them through), so tasks that
    read or write the shared state wrap their body in this to retry a Redis blip instead of failing.
    """
    try:
        return fn()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        delay = retry_delay_s(task, exc)
        log.warning("%s: Redis unavailable (%s), retrying in %.1fs", what, type(exc).__name__, delay)
        raise task.retry(countdown=delay, exc=exc) from None


def run_supervised(task: AnyTask, fn: Callable[[], T], what: str, res: Resources, daemon_id: str) -> T:
    """:func:`retry_on_redis` for a supervised daemon's run: any other error first beats ``crashed`` for
    ``daemon_id``, so the next sweep backs off where it ran (the guide's 10/20/40/60 s) rather than taking it
    for a holder gone elsewhere (restarted at once); a Redis blip is a retry, not a crash."""
    try:
        return retry_on_redis(task, fn, what)
    except Retry:
        raise
    except Exception:
        with contextlib.suppress(Exception):
            mark_crashed(res.redis, res.keys, res.clock, daemon_id)
        raise
