"""``worker.pool_guard``: a soft time limit that comes while a pool process writes its result frame leaves the
frame whole (the 60 s Redis outage scenario's worker exit, docs/reliability.md).

Real parts: billiard's own pipe and its soft-timeout handler; the reader holds off until the signal has
come, as the parent stuck in its broker reconnect loop did.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from billiard import connection as billiard_connection
from billiard import pool as billiard_pool
from billiard.exceptions import SoftTimeLimitExceeded

from worker import pool_guard

FRAME = b"x" * 400_000  # far above the pipe's 64 KiB: the writer blocks until the reader reads


def _send_while_signalled(send) -> tuple[bytes, BaseException | None]:
    reader, writer = billiard_connection.Pipe(duplex=False)
    got: list[bytes] = []

    def late_reader() -> None:
        time.sleep(0.3)
        os.kill(os.getpid(), billiard_pool.SIG_SOFT_TIMEOUT)  # the parent's late soft limit
        time.sleep(0.3)
        got.append(reader.recv_bytes())

    previous = signal.signal(billiard_pool.SIG_SOFT_TIMEOUT, billiard_pool.soft_timeout_sighandler)
    thread = threading.Thread(target=late_reader, daemon=True)
    thread.start()
    raised: BaseException | None = None
    try:
        send(writer, FRAME)
    except SoftTimeLimitExceeded as exc:
        raised = exc
    finally:
        signal.signal(billiard_pool.SIG_SOFT_TIMEOUT, previous)
    thread.join(3)
    reader.close()
    writer.close()
    return (got[0] if got else b""), raised


def test_without_the_guard_the_soft_limit_cuts_the_frame() -> None:
    original = getattr(billiard_connection.Connection, "_send_bytes")  # noqa: B009
    original = getattr(original, "__wrapped__", original)  # billiard's own, if worker.app patched it here
    _, raised = _send_while_signalled(lambda w, b: original(w, b))
    assert isinstance(raised, SoftTimeLimitExceeded)  # the child would now send a second frame: torn stream


def test_with_the_guard_the_frame_arrives_whole_and_the_late_limit_is_dropped() -> None:
    send = getattr(billiard_connection.Connection, "_send_bytes")  # noqa: B009
    guarded = pool_guard.whole_frames(getattr(send, "__wrapped__", send), pool_guard.soft_signal())
    frame, raised = _send_while_signalled(lambda w, b: guarded(w, b))
    print(f"\npool guard: a {len(frame)}-byte frame arrived whole; soft limit raised: {raised is not None}")
    assert raised is None and frame == FRAME
