"""Layer 5: asking the provider about an instance missing from the listing, off the dispatcher's path.

The dispatcher never waits for Vast.ai. When :func:`~vastkeep.polling.decide.absence_verdict` says *ask*,
the poll marks the question (``poll:shown:<id>`` = ``asked``, SET NX with :data:`ASK_TTL_MS`, so one show
is in flight per instance) and sends ``vastkeep.polling.confirm_absence``; that task, in another worker
slot, calls ``show`` with the client's own timeouts and retries (up to ~143 s), stores the answer
(:class:`~vastkeep.polling.decide.ShowAnswer`, with a TTL) and makes the instance due now, so the next poll
applies it. A slow provider therefore delays only the verdict about that one instance, never the other
polls, and never the dispatcher's lease. The answer is dropped when the instance is listed again
(``ProviderSnapshot``), and expires: ``found`` / ``not_found`` / ``no_record`` after
:data:`ANSWER_TTL_MS`, ``error`` after :data:`ERROR_TTL_MS` (then the next poll asks again).
"""

from __future__ import annotations

import logging

from vastkeep.core.errors import NotFound, RecordMissing, VastkeepError
from vastkeep.polling.decide import ShowAnswer
from vastkeep.polling.schedule import PollSchedule
from vastkeep.providers import Provider
from vastkeep.state import Keys, as_text
from vastkeep.state.flowmarks import RedisClient

log = logging.getLogger("vastkeep.polling")

CONFIRM_TASK = "vastkeep.polling.confirm_absence"
#: An ``asked`` mark outlives one show's worst case (4 attempts × 35 s + backoff = 143.5 s): a task lost on
#: the way is asked again after it, a slow one is never asked twice.
ASK_TTL_MS = 180_000
ANSWER_TTL_MS = 300_000
ERROR_TTL_MS = 30_000
_TTL_MS = {ShowAnswer.ERROR: ERROR_TTL_MS, ShowAnswer.ASKED: ASK_TTL_MS}


class ShowAnswers:
    """The answers of ``show`` about unlisted instances, one short-lived key each."""

    def __init__(self, redis_client: RedisClient, keys: Keys) -> None:
        self.redis = redis_client
        self.keys = keys

    def get(self, instance_ids: list[str]) -> dict[str, str]:
        """id → its current answer (ids without one are left out)."""
        if not instance_ids:
            return {}
        values = self.redis.mget([self.keys.poll_shown(i) for i in instance_ids])
        return {str(i): as_text(v) for i, v in zip(instance_ids, values, strict=True) if v is not None}

    def mark_asked(self, instance_id: str) -> bool:
        """True when this caller may ask (no question or answer is pending for the instance)."""
        return bool(self.redis.set(self.keys.poll_shown(instance_id), ShowAnswer.ASKED.value, nx=True,
                                   px=ASK_TTL_MS))

    def record(self, instance_id: str, answer: ShowAnswer) -> None:
        self.redis.set(self.keys.poll_shown(instance_id), answer.value, px=_TTL_MS.get(answer, ANSWER_TTL_MS))

    def drop(self, instance_ids: list[str]) -> None:
        """Forget what show said (the instance is listed again, or no longer ours)."""
        if instance_ids:
            self.redis.delete(*[self.keys.poll_shown(i) for i in instance_ids])


def ask_show(vast: Provider, instance_id: str) -> ShowAnswer:
    """One ``show`` call, classified: only a real 404 is ``not_found``; anything unreadable is ``error``."""
    try:
        vast.instance(int(instance_id))
    except NotFound:
        return ShowAnswer.NOT_FOUND
    except RecordMissing:
        return ShowAnswer.NO_RECORD
    except VastkeepError as exc:
        log.warning("⚠️  show of unlisted instance %s failed (%s); asked again later", instance_id,
                    type(exc).__name__, extra={"instance_id": instance_id})
        return ShowAnswer.ERROR
    return ShowAnswer.FOUND


def confirm_absence(redis_client: RedisClient, keys: Keys, vast: Provider, schedule: PollSchedule,
                    instance_id: str) -> dict[str, str]:
    """Ask ``show`` about one unlisted instance, store the answer, poll it now; returns a small dict."""
    iid = str(instance_id)
    answers = ShowAnswers(redis_client, keys)
    answer = ask_show(vast, iid)
    answers.record(iid, answer)
    redis_client.hincrby(keys.poll_stats(), "vast_show_calls", 1)
    schedule.poll_now(iid)
    return {"instance_id": iid, "answer": answer.value}


__all__ = ["ANSWER_TTL_MS", "ASK_TTL_MS", "CONFIRM_TASK", "ERROR_TTL_MS", "ShowAnswers", "ask_show",
           "confirm_absence"]
