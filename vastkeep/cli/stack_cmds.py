"""``vastkeep up``: start and supervise the whole stack from this folder (:mod:`vastkeep.stack`).

A process edge: it reads ``os.environ`` to pass it on to the children; the library below never does.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from types import FrameType

from vastkeep.cli.common import cli_command
from vastkeep.core.errors import StackError
from vastkeep.stack import Stack


def cmd_up(args: argparse.Namespace) -> int:
    """Start and supervise the whole stack until Ctrl-C / SIGTERM."""
    from vastkeep.core.settings import load_settings  # noqa: PLC0415

    settings = load_settings()
    logging.basicConfig(level=settings.log_level, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    stack = Stack(settings, dict(os.environ), control_concurrency=args.control_concurrency,
                  ssh_concurrency=args.ssh_concurrency, out=sys.stdout, cli=cli_command())
    try:
        stack.start(stop)
    except StackError as exc:
        stack.shutdown()
        if stop.is_set():  # Ctrl-C while starting: a clean stop, not a failure
            print("vastkeep up: interrupted while starting; every process stopped", file=sys.stderr)
            return 0
        print(f"vastkeep up: {exc}", file=sys.stderr)
        return 1
    stack.supervise(stop)
    return 0
