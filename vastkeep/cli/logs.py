"""``vastkeep logs <id> [-f]``: an instance's collected provisioning log, read from the stack's Redis."""

from __future__ import annotations

import argparse
import sys

from vastkeep.cli.common import redis_url_here
from vastkeep.core.clock import SYSTEM_CLOCK


def cmd_logs(args: argparse.Namespace) -> int:
    """Print an instance's collected log from ``--after`` (bytes, exactly as stored); ``-f`` follows it."""
    from vastkeep.ssh import MAX_READ_LINES, LogStore  # noqa: PLC0415
    from vastkeep.state.connection import connect  # noqa: PLC0415
    from vastkeep.state.keys import Keys  # noqa: PLC0415

    if not args.instance_id.isdigit():
        print("vastkeep logs: the instance id is a number (the Vast.ai contract id)", file=sys.stderr)
        return 2
    url = redis_url_here()
    if not url:
        print("vastkeep logs: no stack here and REDIS_URL is not set", file=sys.stderr)
        return 1
    logs = LogStore(connect(url, decode_responses=False, socket_timeout_s=5, socket_connect_timeout_s=3),
                    Keys())
    after, out = max(0, args.after), sys.stdout.buffer
    try:
        while True:
            lines = logs.read(args.instance_id, args.file, after, MAX_READ_LINES)
            for line in lines:
                out.write(line.data)
            out.flush()
            if lines:
                after = lines[-1].end
                continue
            if not args.follow:
                return 0
            SYSTEM_CLOCK.sleep(0.5)
    except KeyboardInterrupt:
        return 0
