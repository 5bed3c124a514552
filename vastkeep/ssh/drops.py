"""The shared count of recent SSH session drops: a lone drop or a herd (:mod:`~vastkeep.ssh.decide`)?

Every collector on every worker records each session that ended under it (not its own stop or hand-over) in
one sorted set (``Keys.ssh_drops``: member the instance id, score the time of its last drop) and reads how
many *instances* dropped within the reconnect window, in one MULTI: one link dropped again and again is a
flapping link (its own backoff handles it), not a herd. Safe to repeat (a re-sent ZADD only moves the score);
a Redis error counts as a lone drop (reconnect at once: the link is the collector's own business).
"""

from __future__ import annotations

import logging
from typing import Union

import redis

from vastkeep.state import Keys

#: A client made with or without ``decode_responses``.
Redis = Union["redis.Redis[str]", "redis.Redis[bytes]"]

log = logging.getLogger("vastkeep.ssh")


def record_drop(redis_client: Redis, keys: Keys, instance_id: str, now: float, window_s: float) -> int:
    """Record a drop of ``instance_id`` at ``now`` (epoch s); returns how many instances dropped within
    ``window_s``."""
    name = keys.ssh_drops()
    try:
        with redis_client.pipeline(transaction=True) as pipe:
            pipe.zadd(name, {str(instance_id): now})
            pipe.zremrangebyscore(name, "-inf", f"({now - window_s}")
            pipe.zcard(name)
            pipe.pexpire(name, int(max(1.0, 2 * window_s) * 1000))
            return int(pipe.execute()[2])
    except redis.RedisError as exc:
        log.info("SSH drop of instance %s not counted: %s", instance_id, type(exc).__name__)
        return 1


__all__ = ["Redis", "record_drop"]
