"""What every command needs: the stack of this folder (``VASTKEEP_HOME/stack.json``) and a Redis client.

``vastkeep status``, ``check``, ``logs``, ``pool``, ``simulate fault`` and ``watchdog`` all find the stack
that ``vastkeep up`` started in the current folder, without flags, through :func:`home_from_settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vastkeep.core.errors import ConfigError
from vastkeep.stack import read_stack


def home_from_settings() -> Path:
    """VASTKEEP_HOME from settings; ./.vastkeep when settings cannot be read (status must still work)."""
    try:
        from vastkeep.core.settings import load_settings  # noqa: PLC0415

        return Path(load_settings().vastkeep_home)
    except ConfigError:
        return Path.cwd() / ".vastkeep"


def redis_client(url: str) -> Any:
    """A client with short deadlines and no retries: a CLI command must answer, not wait."""
    from vastkeep.state.connection import connect  # noqa: PLC0415

    return connect(url, socket_timeout_s=3, socket_connect_timeout_s=2, retry_attempts=0)


def redis_url_here() -> str | None:
    """The Redis of the stack in this folder, else REDIS_URL."""
    stack = read_stack(home_from_settings())
    if stack and stack.get("redis_url"):
        return str(stack["redis_url"])
    from vastkeep.core.settings import load_settings  # noqa: PLC0415

    return load_settings().redis_url
