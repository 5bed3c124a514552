"""What every command needs: the stack of this folder (``VASTKEEP_HOME/stack.json``) and a Redis client.

``vastkeep status``, ``check``, ``logs``, ``pool``, ``simulate fault`` and ``watchdog`` all find the stack
that ``vastkeep up`` started in the current folder, without flags, through :func:`home_from_settings`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from vastkeep.core.errors import ConfigError
from vastkeep.stack import read_stack, text_field

if TYPE_CHECKING:
    from redis import Redis

    from vastkeep.core.settings import Settings


def stack_settings(stack: Mapping[str, object] | None) -> Settings:
    """This shell's settings, with the pool settings of the stack in this folder (``stack.json``'s
    ``pool_settings``) over them: the stack may have been started with an environment this shell lacks
    (``WARM_POOL_DESIRED_SIZE=3 vastkeep up``), and the pool is what the stack runs, not what this shell
    says."""
    import os  # noqa: PLC0415

    from vastkeep.core.settings import load_settings  # noqa: PLC0415

    recorded = (stack or {}).get("pool_settings")
    pool = {str(k): str(v) for k, v in recorded.items()} if isinstance(recorded, dict) else {}
    return load_settings({**os.environ, **pool}) if pool else load_settings()


def home_from_settings() -> Path:
    """VASTKEEP_HOME from settings; ./.vastkeep when settings cannot be read (status must still work)."""
    try:
        from vastkeep.core.settings import load_settings  # noqa: PLC0415

        return Path(load_settings().vastkeep_home)
    except ConfigError:
        return Path.cwd() / ".vastkeep"


def cli_command(cwd: Path | None = None) -> str:
    """This ``vastkeep`` as another terminal can run it without activating the venv: the console script
    beside this Python (relative to the folder when inside it, ``.venv/bin/vastkeep``), else ``-m``."""
    script = Path(sys.executable).parent / "vastkeep"
    if not script.is_file():
        return f"{sys.executable} -m vastkeep.cli"
    try:
        return str(script.relative_to(cwd or Path.cwd()))
    except ValueError:
        return str(script)


def redis_client(url: str) -> Redis[str]:
    """A client with short deadlines and no retries: a CLI command must answer, not wait."""
    from vastkeep.state.connection import connect  # noqa: PLC0415

    return connect(url, socket_timeout_s=3, socket_connect_timeout_s=2, retry_attempts=0)


def redis_url_here() -> str | None:
    """The Redis of the stack in this folder, else REDIS_URL."""
    url = text_field(read_stack(home_from_settings()), "redis_url")
    if url is not None:
        return url
    from vastkeep.core.settings import load_settings  # noqa: PLC0415

    return load_settings().redis_url


HTTP_DEADLINE_S = 15.0  # one CLI call to the admin API or the simulator, headers and body included


class Unreachable(Exception):
    """The server did not answer (refused, timed out): the text says which URL, never a header."""


def call_json(method: str, url: str, *, headers: dict[str, str] | None = None,
              body: Mapping[str, object] | None = None) -> tuple[int, object]:
    """One HTTP call within :data:`HTTP_DEADLINE_S`: ``(status, parsed JSON body or its text)``; the caller
    narrows the body (an answer is whatever the server sent)."""
    import requests  # noqa: PLC0415

    from vastkeep.providers.deadline import DeadlineWatchdog, call_deadline  # noqa: PLC0415
    from vastkeep.providers.http import make_session, safe_url  # noqa: PLC0415

    watchdog = DeadlineWatchdog(idle_s=0)  # this one call's: a CLI command makes one and exits
    with make_session("vastkeep-cli/1", watchdog=watchdog) as session, \
            call_deadline(HTTP_DEADLINE_S, watchdog) as call:
        try:
            r = session.request(method, url, headers=headers or {}, json=body, timeout=(3, 10))
            r.content  # noqa: B018 - read the body inside the deadline
        except requests.RequestException as exc:
            why = f"no answer within {HTTP_DEADLINE_S:g}s" if call.expired else type(exc).__name__
            raise Unreachable(f"{safe_url(url)} unreachable ({why})") from None
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, r.text[:300]
