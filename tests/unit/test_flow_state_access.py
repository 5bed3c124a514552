"""The polling and keepalive flows reach Redis only through ``vastkeep.state``: no raw command of their
own, and no record decoded by hand (the state layer owns the layout and the record format)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLOWS = ["vastkeep/polling/flow.py", "vastkeep/polling/care.py", "vastkeep/keepalive/runner.py"]
#: Redis client methods a flow must not call itself
COMMANDS = {"get", "set", "delete", "mget", "mset", "hget", "hset", "hgetall", "hincrby", "sadd", "srem",
            "smembers", "pipeline", "execute", "expire", "exists", "zadd", "zrem"}


def _raw_redis_calls(path: Path) -> list[str]:
    """``<anything>.redis.<command>(...)``, ``redis.<command>(...)`` and ``pipe.<command>(...)`` calls."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        target, name = node.func.value, node.func.attr
        via_redis = ((isinstance(target, ast.Attribute) and target.attr == "redis")
                     or (isinstance(target, ast.Name) and target.id in {"redis", "pipe"}))
        if via_redis and name in COMMANDS:
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node.func)}")
    return found


@pytest.mark.parametrize("rel", FLOWS)
def test_flow_sends_no_raw_redis_command(rel: str) -> None:
    assert _raw_redis_calls(ROOT / rel) == []


@pytest.mark.parametrize("rel", FLOWS)
def test_flow_decodes_no_record_itself(rel: str) -> None:
    text = (ROOT / rel).read_text(encoding="utf-8")
    assert "json.loads(" not in text and "from_dict(json" not in text
