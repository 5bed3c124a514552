"""``VASTKEEP_HOME/stack.json``: what ``vastkeep up`` records for the commands run beside it.

Written by the stack's supervisor (mode 0600: it holds the generated credentials) and read back by
``vastkeep status``/``check``/``pool``/``logs``/``simulate fault``/``watchdog`` and ``worker.config``. A
reader gets a plain JSON object and narrows each field it uses: the file comes from another process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

STACK_FILE = "stack.json"
SECRET_FIELDS = ("admin_api_key", "flower_password", "control_token")


#: ``stack.json`` as read back: a JSON object whose fields each reader narrows (another process wrote it)
StackFile = dict[str, object]


def json_object(value: object) -> dict[str, object]:
    """``value`` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def text_field(stack: Mapping[str, object] | None, key: str) -> str | None:
    """A non-empty string field of ``stack.json``, else None."""
    value = (stack or {}).get(key)
    return value if isinstance(value, str) and value else None


def write_private_json(path: Path, data: Mapping[str, object]) -> None:
    """Atomically write ``data`` with mode 0600 (it holds credentials)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_stack(home: Path) -> StackFile | None:
    """The stack a ``vastkeep up`` in this folder recorded, or None."""
    try:
        data: object = json.loads((home / STACK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def public_view(stack: Mapping[str, object]) -> StackFile:
    """The stack file without any credential (for ``status --json``); the Redis password redacted."""
    from vastkeep.core.settings import redact_url  # noqa: PLC0415

    out = {k: v for k, v in stack.items() if k not in SECRET_FIELDS}
    redis_url = out.get("redis_url")
    if isinstance(redis_url, str):
        out["redis_url"] = redact_url(redis_url)
    simulator = out.get("simulator")
    if isinstance(simulator, dict):
        out["simulator"] = {k: v for k, v in simulator.items() if k not in SECRET_FIELDS}
    return out


def pid_alive(pid: object) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


__all__ = ["SECRET_FIELDS", "STACK_FILE", "StackFile", "json_object", "pid_alive", "public_view",
           "read_stack", "text_field", "write_private_json"]
