"""``vastkeep watchdog reset NAME``: reset a daemon that supervision marked ``failed``, so the next sweep
starts it again (``POST /api/proxy/admin/watchdog/{name}/reset`` on the stack's admin API, with the admin
key of ``stack.json``; the API records the reset as an event). Exit 0 when reset, 1 otherwise."""

from __future__ import annotations

import argparse
import sys
from urllib.parse import quote

from vastkeep.cli.common import Unreachable, call_json, home_from_settings
from vastkeep.stack import STACK_FILE, read_stack

RESET_ROUTE = "/api/proxy/admin/watchdog/{name}/reset"


def cmd_watchdog(args: argparse.Namespace) -> int:
    """``vastkeep watchdog reset NAME``: print the answer's ``name`` and ``status``."""
    home = home_from_settings()
    stack = read_stack(home)
    if stack is None or not stack.get("admin_api_url") or not stack.get("admin_api_key"):
        return _fail(f"no stack is running from {home} (no {STACK_FILE} with an admin API); "
                     "start one with `vastkeep up` here")
    url = str(stack["admin_api_url"]) + RESET_ROUTE.format(name=quote(args.name, safe=""))
    try:
        code, answer = call_json("POST", url, headers={"X-Admin-Key": str(stack["admin_api_key"])})
    except Unreachable as exc:
        return _fail(f"the admin API does not answer: {exc}")
    reason = _reason(answer)
    if code == 404:
        return _fail(f"no daemon or process named {args.name!r}{f' ({reason})' if reason else ''}; "
                     "GET /api/proxy/admin/watchdog/status lists them")
    if code >= 400 or not isinstance(answer, dict):
        return _fail(f"the admin API answered {code}{f': {reason}' if reason else ''}")
    was = f" (was {answer['previousStatus']})" if answer.get("previousStatus") else ""
    print(f"{answer.get('name')}: {answer.get('status')}{was}; the next supervision sweep starts it")
    return 0


def _reason(answer: object) -> str:
    """The admin API's refusal ``{"error", "reason"}`` (FastAPI's ``detail`` too), in a few words."""
    if isinstance(answer, dict):
        return str(answer.get("reason") or answer.get("detail") or answer.get("error") or "")
    return str(answer or "")[:200]


def _fail(text: str) -> int:
    print(f"vastkeep watchdog: {text}", file=sys.stderr)
    return 1
