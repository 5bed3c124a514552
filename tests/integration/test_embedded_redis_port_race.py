"""Two stacks starting side by side can both find the same preferred port free; the second Redis then
exits on bind. `vastkeep up` starts it again on another free port instead of failing the whole stack."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from vastkeep.core.settings import load_settings
from vastkeep.stack import embedded_redis as er
from vastkeep.stack.runtime import Stack


def test_a_port_taken_between_check_and_bind_is_left_for_another(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()  # taken: redis-server exits with "Address already in use"
    taken = holder.getsockname()[1]
    real = er.pick_port
    calls: list[int] = []

    def pick(preferred=er.DEFAULT_PORTS, host="127.0.0.1"):  # the first pick loses the race
        port = taken if not calls else real(preferred, host)
        calls.append(port)
        return port

    monkeypatch.setattr(er, "pick_port", pick)
    settings = load_settings({"VASTKEEP_HOME": str(tmp_path / ".vastkeep")}, env_file=False)
    stack = Stack(settings, {}, out=open("/dev/null", "w"))  # noqa: SIM115
    stack.home.mkdir(parents=True)
    stack.logs.mkdir()
    try:
        url = stack._start_embedded_redis(threading.Event())
        assert len(calls) == 2 and calls[0] == taken and f":{calls[1]}" in url
        assert er.wait_ready(calls[1], 1.0, password=url.split("@")[0].rsplit(":", 1)[1])
        assert list(stack.supervisor.status()) == ["redis"]  # the failed first one is not watched any more
    finally:
        stack.supervisor.stop_all()
        holder.close()
