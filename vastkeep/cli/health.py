"""``vastkeep check``: Redis, worker heartbeats and the admin API's ``/health``, exit 0 or 1.

The checks are those ``/health`` runs (:mod:`vastkeep.monitoring.health`); ``vastkeep status`` prints them
too.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING

from vastkeep.cli.common import home_from_settings, redis_client
from vastkeep.core.clock import SYSTEM_CLOCK
from vastkeep.core.errors import ConfigError
from vastkeep.stack import read_stack, text_field

if TYPE_CHECKING:
    from vastkeep.core.settings import Settings

CHECK_HEARTBEAT_MAX_AGE_S = 60.0
HEALTH_DEADLINE_S = 7.0  # the whole /health call, headers and body included


def http_health(url: str) -> tuple[bool, str]:
    """GET /health within :data:`HEALTH_DEADLINE_S` in all (a server that stalls cannot hang ``check``)."""
    import requests  # noqa: PLC0415

    from vastkeep.providers.deadline import DeadlineWatchdog, call_deadline  # noqa: PLC0415
    from vastkeep.providers.http import make_session  # noqa: PLC0415

    watchdog = DeadlineWatchdog(idle_s=0)  # this one call's: a CLI command makes one and exits
    with make_session("vastkeep-check/1", watchdog=watchdog) as session, \
            call_deadline(HEALTH_DEADLINE_S, watchdog) as call:
        try:
            r = session.get(f"{url}/health", timeout=(2, 5))
            r.content  # noqa: B018 - read the body inside the deadline
        except requests.RequestException as exc:
            why = f"no answer within {HEALTH_DEADLINE_S:g}s" if call.expired else type(exc).__name__
            return False, f"{url}/health unreachable ({why})"
    if call.expired:
        return False, f"{url}/health unreachable (no answer within {HEALTH_DEADLINE_S:g}s)"
    if r.status_code != 200:
        return False, f"{url}/health answered {r.status_code}"
    return True, f"{url}/health ok"


def run_checks(stack: Mapping[str, object] | None, redis_url: str | None,
               admin_url: str | None) -> list[tuple[bool, str]]:
    """Redis answers, every worker has a fresh heartbeat (the checks ``/health`` runs too, from
    :mod:`vastkeep.monitoring.health`), and the admin API's ``/health`` is 200."""
    from vastkeep.monitoring import run_checks as shared_checks  # noqa: PLC0415
    from vastkeep.state.keys import Keys  # noqa: PLC0415

    if not redis_url:
        return [(False, "no stack found (no VASTKEEP_HOME/stack.json) and REDIS_URL is unset")]
    workers = (stack or {}).get("workers")
    expected = [str(w) for w in workers] if isinstance(workers, list) else []
    checks = shared_checks(redis_client(redis_url), Keys(), SYSTEM_CLOCK, expected_workers=expected or None,
                           max_age_s=CHECK_HEARTBEAT_MAX_AGE_S)
    results = [(c.ok, c.detail) for c in checks]
    if checks[0].ok and admin_url:
        results.append(http_health(admin_url))
    return results


def config_findings(stack: Mapping[str, object] | None, settings: Settings | None) -> list[tuple[bool, str]]:
    """Likely configuration mistakes, ``(fatal, text)``: those the running stack recorded at start-up,
    else those of the settings this shell would start one with."""
    from vastkeep.core.config_hints import config_warnings  # noqa: PLC0415

    recorded = (stack or {}).get("config_warnings")
    if isinstance(recorded, list):
        return [(bool(f.get("fatal")), str(f.get("text"))) for f in recorded if isinstance(f, dict)]
    return config_warnings(settings) if settings is not None else []


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 when the stack is healthy, 1 with the reasons otherwise (a WARN line does not fail)."""
    from vastkeep.core.settings import load_settings  # noqa: PLC0415

    home = home_from_settings()
    stack = read_stack(home)
    redis_url = text_field(stack, "redis_url")
    admin_url = text_field(stack, "admin_api_url")
    settings = None
    try:
        settings = load_settings()
    except ConfigError as exc:
        if stack is None:
            print(f"FAIL: configuration: {exc}")
            return 1
    if stack is None and settings is not None:
        redis_url, admin_url = settings.redis_url, f"http://{settings.admin_api_host}:{settings.admin_api_port}"
    findings = config_findings(stack, settings)
    for fatal, text in findings:
        print(("FAIL: " if fatal else "WARN: ") + "configuration: " + text)
    results = run_checks(stack, redis_url, admin_url)
    for ok, text in results:
        print(("OK:   " if ok else "FAIL: ") + text)
    healthy = results and all(ok for ok, _ in results) and not any(fatal for fatal, _ in findings)
    return 0 if healthy else 1
