"""``vastkeep pool size N | safe-mode on|off [--reason ...] | status [--json]``, on the stack's Redis."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from vastkeep.cli.common import redis_client, stack_settings
from vastkeep.cli.status import pool_document
from vastkeep.core.clock import SYSTEM_CLOCK
from vastkeep.core.errors import StackError
from vastkeep.stack import read_stack, text_field

if TYPE_CHECKING:
    from vastkeep.core.settings import Settings
    from vastkeep.pool import PoolBook
    from vastkeep.state import EventLog, StateStore


def pool_parts() -> tuple[Settings, StateStore, EventLog, PoolBook]:
    """(settings, store, events, book) on the Redis of the stack in this folder, else REDIS_URL."""
    from vastkeep.core.settings import load_settings  # noqa: PLC0415
    from vastkeep.pool import PoolBook  # noqa: PLC0415
    from vastkeep.state import EventLog, Keys, StateStore  # noqa: PLC0415

    stack = read_stack(Path(load_settings().vastkeep_home))
    settings = stack_settings(stack)
    url = text_field(stack, "redis_url") or settings.redis_url
    if not url:
        raise StackError("no Redis to talk to: start the stack with `vastkeep up` here, or set REDIS_URL")
    client = redis_client(url)
    keys = Keys()
    store = StateStore(client, keys, SYSTEM_CLOCK, default_desired_size=settings.warm_pool_desired_size)
    events = EventLog(client, keys, SYSTEM_CLOCK)
    return settings, store, events, PoolBook(client, keys, settings.warm_pool_name)


def cmd_pool(args: argparse.Namespace) -> int:
    """``vastkeep pool size N | safe-mode on|off [--reason ...] | status [--json]``."""
    from vastkeep.core.errors import InvalidInput  # noqa: PLC0415
    from vastkeep.monitoring import pool_document_lines  # noqa: PLC0415
    from vastkeep.pool import set_safe_mode, set_size  # noqa: PLC0415

    try:
        settings, store, events, book = pool_parts()
        if args.pool_command == "size":
            out = set_size(store, events, args.n, settings.warm_pool_max_size)
            print(f"desired size {out['previous']} -> {out['desiredSize']}; the pool converges within "
                  f"{settings.warm_pool_reconcile_interval_s:.0f} s")
            return 0
        if args.pool_command == "safe-mode":
            view = set_safe_mode(store, book, events, args.state == "on", args.reason, SYSTEM_CLOCK.now())
            print(f"safe mode {'ON' if view['enabled'] else 'OFF'}"
                  + (f" ({view['cause']}: {view['reason']})" if view["enabled"] else ""))
            return 0
        doc = pool_document(settings, store, book)
    except (InvalidInput, StackError) as exc:
        print(f"vastkeep pool: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    for line in pool_document_lines(doc):
        print(line)
    return 0
