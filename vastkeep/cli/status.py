"""``vastkeep status``: what runs where, the checks, the tokens, the pool in one line, every instance.

Read from ``stack.json`` and the stack's Redis (no API call, no secret printed); the text itself is built by
the pure views of :mod:`vastkeep.monitoring` so the terminal and the admin API cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from vastkeep.cli.common import cli_command, home_from_settings, redis_client, stack_settings
from vastkeep.cli.health import run_checks
from vastkeep.core.clock import SYSTEM_CLOCK
from vastkeep.stack import (
    STACK_FILE,
    json_object,
    pid_alive,
    public_view,
    read_stack,
    simulator_lines,
    text_field,
)

if TYPE_CHECKING:
    from vastkeep.core.settings import Settings
    from vastkeep.pool import PoolBook
    from vastkeep.state import StateStore


class Overview(TypedDict):
    """What ``status`` reads from the stack's Redis: token verdicts, the warm-pool document, endpoints."""

    tokens: dict[str, dict[str, object]]
    warmPool: dict[str, object]
    endpoints: list[dict[str, object]]


def cmd_status(args: argparse.Namespace) -> int:
    """Print what runs where (no secrets)."""
    home = home_from_settings()
    stack = read_stack(home)
    if stack is None:
        print(f"no stack is running from {home} (no {STACK_FILE}); start one with `vastkeep up`")
        return 1
    view = public_view(stack)
    overview, error = None, None
    redis_url = text_field(stack, "redis_url")
    if redis_url is not None:
        try:
            overview = overview_of(redis_url, json_object(stack.get("tokens_configured")),
                                   text_field(stack, "proxy_url"), stack)
        except Exception as exc:  # noqa: BLE001 - status must still print the rest
            error = type(exc).__name__
    if args.json:
        print(json.dumps({**view, **(overview or {})}, indent=2, sort_keys=True))
        return 0
    for line in stack_lines(stack, view, home, pid_alive(stack.get("pid"))):
        print(line)
    for ok, text in run_checks(stack, redis_url, text_field(stack, "admin_api_url")):
        print(("  OK   " if ok else "  FAIL ") + text)
    print_overview(overview, error or ("no Redis in stack.json" if redis_url is None else None))
    return 0


def stack_lines(stack: Mapping[str, object], view: Mapping[str, object], home: Path, up: bool) -> list[str]:
    """The processes part of ``vastkeep status``: where each part listens, the simulator's control API and
    where its token lives (never the token), then one aligned row per child."""
    lines = [f"stack in {home}: supervisor pid {stack.get('pid')} {'running' if up else 'NOT running'}, "
             f"started {stack.get('started_at')}{', cloud SIMULATED' if stack.get('simulated') else ''}",
             f"  redis       {view.get('redis_url')}{' (embedded)' if stack.get('redis_embedded') else ''}",
             f"  admin API   {stack.get('admin_api_url')}   docs {stack.get('admin_api_url')}/docs",
             f"  flower      {stack.get('flower_url')}",
             *([f"  proxy       {stack['proxy_url']}   (/c/{{endpointToken}}/, /pool/, /metrics)"]
               if stack.get("proxy_url") else []),
             *simulator_lines(stack, home, cli_command())]
    children = sorted((cid, json_object(child)) for cid, child in json_object(stack.get("children")).items())
    width = max([len(cid) for cid, _ in children] + [len("process")])
    status_width = max([len(str(c.get("status"))) for _, c in children] + [len("status")])
    if children:
        lines.append(f"  {'process':<{width}}  {'status':<{status_width}}  pid      restarts")
    for cid, child in children:
        lines.append(f"  {cid:<{width}}  {str(child.get('status')):<{status_width}}  "
                     f"{str(child.get('pid')):<7}  {child.get('restartCount')}")
    return lines


def overview_of(redis_url: str, configured: Mapping[str, object] | None = None,
                proxy_url: str | None = None, stack: Mapping[str, object] | None = None) -> Overview:
    """Each token's last verdict as the workers stored it (no API call; the stack's own tokens may not be in
    this shell's environment, so which are configured comes from ``stack.json``: ``configured``), the
    warm-pool status document, and each lease's endpoint at the stack's proxy (``proxy_url``)."""
    from vastkeep.pool import PoolBook  # noqa: PLC0415
    from vastkeep.proxy import lease_endpoints  # noqa: PLC0415
    from vastkeep.state import Keys, StateStore  # noqa: PLC0415
    from vastkeep.tokens import SERVICES  # noqa: PLC0415

    settings = stack_settings(stack)
    client = redis_client(redis_url)
    store = StateStore(client, Keys(), SYSTEM_CLOCK, default_desired_size=settings.warm_pool_desired_size)
    tokens: dict[str, dict[str, object]] = {}
    for service in SERVICES:
        hit = store.get_token_result(service)
        tokens[service] = {"result": {k: v for k, v in hit.items() if not k.startswith("_")}
                           if isinstance(hit, dict) else None,
                           "runtimeOverride": store.get_runtime_secret(service) is not None,
                           "configured": (configured or {}).get(service)}
    return {"tokens": tokens, "warmPool": pool_document(settings, store,
                                                        PoolBook(client, Keys(), settings.warm_pool_name)),
            "endpoints": lease_endpoints(client, Keys(), settings.warm_pool_name, proxy_url,
                                         SYSTEM_CLOCK.now())}


def pool_document(settings: Settings, store: StateStore, book: PoolBook) -> dict[str, object]:
    """``GET /api/proxy/admin/warm-pool/status``, read straight from Redis (poll times, figures, slots)."""
    from vastkeep.monitoring import warm_pool_status  # noqa: PLC0415
    from vastkeep.polling import PollSchedule  # noqa: PLC0415
    from vastkeep.pool import build_leases, pool_figures  # noqa: PLC0415

    pool, records = store.get_pool(), store.list_instances()
    now = SYSTEM_CLOCK.now()
    polls = PollSchedule(store.redis, store.keys).poll_times([r.instance_id for r in records])
    leases = build_leases(settings, store.redis, store.keys, SYSTEM_CLOCK)
    figures = pool_figures(settings, book, records, pool.safe_mode, leases, now, pool.desired_size)
    return warm_pool_status(pool, records, now, polls, figures)


def print_overview(overview: Overview | None, error: str | None) -> None:
    """Tokens, the pool in one line, then every instance with its status."""
    from vastkeep.monitoring import instance_rows, pool_summary_line, token_lines  # noqa: PLC0415

    if overview is None:
        print(f"  tokens, pool and instances: unavailable ({error})")
        return
    for line in token_lines(overview["tokens"]):
        print(line)
    doc = overview["warmPool"]
    print(pool_summary_line(doc))
    print(f"  instances: {json_object(doc.get('counts')).get('total')} (poll times UTC)")
    for line in instance_rows(doc):
        print(line)
    for e in overview["endpoints"]:  # each lease's endpoint (token by fingerprint) → its instance
        print(f"  lease {e['client']} fence {e['fence']}: {e['endpoint'] or '(no endpoint token)'}"
              f"{' [' + str(e['tokenFingerprint']) + ']' if e['tokenFingerprint'] else ''} → instance "
              f"{e['instanceId']} at {e['target'] or '(no connection URL)'}")
