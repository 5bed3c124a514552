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


def test_a_port_another_live_stack_claims_is_skipped_while_it_is_free():
    """A stack's Redis restarting leaves its port free for the watchdog's back-off; a second stack starting
    then took it (every stack's first pick is 6390), and the first one's Redis never came back (a soak beside
    CI: its judge met the other stack's Redis, `invalid username-password pair`). The claim outlives the
    gap."""
    import subprocess
    import sys

    from tests.fixtures.helpers import free_port

    mine, other = free_port(), free_port()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from vastkeep.stack import embedded_redis as er; "
         f"assert er.pick_port([{mine}]) == {mine}; print('claimed', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "claimed"
        assert er.port_is_free(mine)  # nothing listens there: the other stack's Redis is between restarts
        assert er.pick_port([mine, other]) == other
    finally:
        holder.kill()
        holder.wait()
    er.release_port(other)
    assert er.pick_port([mine]) == mine  # the claim ended with its process
    er.release_port(mine)
