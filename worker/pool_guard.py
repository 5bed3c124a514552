"""A guard for one billiard defect: a late soft time limit tears a result frame, and the worker exits.

What happened (``tests/integration/test_judge_redis_restart.py``, Redis away 60 s; the control worker exited
in 2 of 2 runs): a task that ran when Redis went away failed at once (its ``retry`` could not be published),
and its pool process began to send the result to the parent over the pool's pipe: a 4-byte length, then the
pickled result, a traceback chain of tens of kilobytes, written in several ``write()`` calls. The parent was
stuck in Celery's broker reconnect loop and read nothing, so the pipe filled and the child blocked in
``write()``. After the reconnect the parent's timers ran at last, found the task past its soft limit (it had
never read the result) and sent ``SIGUSR1``. billiard's handler raises ``SoftTimeLimitExceeded`` in the
child, right after a partial ``write()``; the child's work loop catches it and sends a second frame. The
parent then read the first frame's length over the second frame's bytes: ``Unrecoverable error:
UnicodeDecodeError`` in ``celery.concurrency.asynpool._recv_message``, and the worker exited.

The guard: while a pool process writes one frame to the parent, a soft-timeout signal is only noted, so a
frame is always whole. A soft limit that arrived meanwhile is dropped, with a warning: the only task it can
concern has already ended (its result is the frame being written). The hard time limit (``SIGKILL`` from the
parent) is untouched. Installed once per process at import of ``worker.app``; the pool processes inherit the
patched class through ``fork``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from billiard import connection as billiard_connection
from billiard import pool as billiard_pool

log = logging.getLogger("vastkeep.worker")
_MARK = "_vastkeep_whole_frames"


def soft_signal() -> signal.Signals | None:
    """The signal billiard sends for a soft time limit (``SIGUSR1`` on Linux)."""
    sig = billiard_pool.SIG_SOFT_TIMEOUT
    return None if sig is None else signal.Signals(sig)


def whole_frames(send: Callable[..., Any], sig: signal.Signals) -> Callable[..., Any]:
    """``send`` (one frame: header and body) that a soft time limit cannot interrupt in a pool process.

    While the frame is written, billiard's handler (which raises) is swapped for one that only notes the
    signal; a noted one is dropped afterwards. Elsewhere (the main process, whose handler for the signal is
    Celery's own, or a thread other than the main one, which cannot set handlers) ``send`` runs unchanged.
    """

    def send_bytes(self: Any, buf: Any, *args: Any, **kwargs: Any) -> Any:
        if (threading.current_thread() is not threading.main_thread()
                or signal.getsignal(sig) is not billiard_pool.soft_timeout_sighandler):
            return send(self, buf, *args, **kwargs)
        late: list[int] = []
        signal.signal(sig, lambda signum, _frame: late.append(signum))
        try:
            return send(self, buf, *args, **kwargs)
        finally:
            signal.signal(sig, billiard_pool.soft_timeout_sighandler)
            if late:
                log.warning("pool: a soft time limit that came while a result was being sent was dropped "
                            "(the task had ended; the parent read its result late)")

    setattr(send_bytes, _MARK, True)
    send_bytes.__wrapped__ = send  # type: ignore[attr-defined]  # billiard's own, for tests
    send_bytes.__name__ = getattr(send, "__name__", "send_bytes")
    return send_bytes


def install() -> bool:
    """Patch ``billiard.connection.Connection._send_bytes`` once per process; True when patched now."""
    sig = soft_signal()
    conn = billiard_connection.Connection
    original = getattr(conn, "_send_bytes")  # noqa: B009 - private in billiard's stub, there at run time
    if sig is None or getattr(original, _MARK, False):
        return False
    setattr(conn, "_send_bytes", whole_frames(original, sig))  # noqa: B010 - a patch of billiard's class
    return True


__all__ = ["install", "soft_signal", "whole_frames"]
