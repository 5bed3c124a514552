"""The process's open-file limit, and the probe bound it allows.

Every port probe holds one socket (one fd) for up to its TCP + HTTP deadline, so a pool sweep at
``PORT_PROBE_CONCURRENCY`` needs that many fds on top of what the worker already has open (Redis,
the broker, logs, the Vast.ai session). Linux starts processes with a soft ``RLIMIT_NOFILE`` of 1024
while the hard limit is usually far higher (20,000 on our machines), so the worker raises its soft
limit to the hard one at start (:func:`raise_nofile_limit`), and the validator never asks for more
probes at once than the soft limit minus a margin (:func:`cap_concurrency`): past that, sockets fail
with EMFILE and healthy instances would be reported as broken.
"""

from __future__ import annotations

import contextlib
import logging
import resource

log = logging.getLogger("vastkeep.core")

#: fds kept free for everything that is not a probe (Redis, broker, logs, HTTP sessions, SSH).
NOFILE_MARGIN = 256
_warned: set[tuple[int, int]] = set()


def nofile_limits() -> tuple[int, int]:
    """(soft, hard) ``RLIMIT_NOFILE`` of this process; ``resource.RLIM_INFINITY`` means unlimited."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return int(soft), int(hard)


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (best effort); returns the limits now in force.

    Unprivileged and idempotent. An unlimited hard limit is left alone (the kernel may refuse
    ``RLIM_INFINITY`` for open files); a refusal leaves the old soft limit, never an error.
    """
    soft, hard = nofile_limits()
    unlimited = resource.RLIM_INFINITY
    if soft != unlimited and hard != unlimited and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return nofile_limits()


def cap_concurrency(requested: int, soft_limit: int, margin: int = NOFILE_MARGIN) -> int:
    """Pure: the probe bound to use — ``requested``, but never more than ``soft_limit - margin``.

    A small limit keeps at least half of itself for probes (the margin shrinks to ``soft_limit // 2``),
    and the result is never below 1. ``soft_limit`` of ``RLIM_INFINITY`` (or <= 0) means no cap.
    """
    if requested < 1:
        raise ValueError("requested concurrency must be >= 1")
    if soft_limit == resource.RLIM_INFINITY or soft_limit <= 0:
        return requested
    headroom = soft_limit - min(margin, soft_limit // 2)
    return max(1, min(requested, headroom))


def effective_probe_concurrency(requested: int, *, soft_limit: int | None = None,
                                logger: logging.Logger = log) -> int:
    """:func:`cap_concurrency` against this process's soft limit, with one warning per (requested, limit).

    The warning names PORT_PROBE_CONCURRENCY so an operator knows which knob (or which ``ulimit -n``) to fix.
    """
    soft = nofile_limits()[0] if soft_limit is None else soft_limit
    bound = cap_concurrency(requested, soft)
    if bound < requested and (requested, soft) not in _warned:
        _warned.add((requested, soft))
        logger.warning("PORT_PROBE_CONCURRENCY=%d exceeds what the open-file limit allows (soft "
                       "RLIMIT_NOFILE %d, %d kept free): probing at most %d at once; raise the limit "
                       "(ulimit -n) or lower PORT_PROBE_CONCURRENCY", requested, soft, soft - bound, bound)
    return bound
