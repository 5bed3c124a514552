"""The commands a newcomer and an operator reach for in the first hour, against real servers:
``vastkeep simulate fault <id> <kind>`` on a real simulator, ``vastkeep watchdog reset NAME`` on a real
loopback HTTP server answering as the admin API's route does, and ``vastkeep status`` naming a token the
stack has not as ``not configured`` (a real redis-server). Each finds the stack from this folder's
``stack.json``, as ``vastkeep up`` writes it."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from vastkeep.cli import main

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def here(clean_shell: Path) -> Path:
    """An empty folder as the current one, no variables of ours: returns its VASTKEEP_HOME."""
    home = clean_shell / ".vastkeep"
    home.mkdir()
    return home


def write_stack(home: Path, **info: Any) -> None:
    (home / "stack.json").write_text(json.dumps({"pid": os.getpid(), "children": {}, **info}))


def simulated_stack(home: Path, sim: Any) -> None:
    write_stack(home, simulated=True, simulator={"vast_api_url": sim.vast_api_url,
                                                 "control_url": sim.info["control_url"],
                                                 "control_token": sim.info["control_token"]})


# ── vastkeep simulate fault ─────────────────────────────────────────────────
def test_each_fault_kind_reaches_the_simulator_and_heal_clears_it(here: Path, sim, capsys) -> None:
    simulated_stack(here, sim)
    iid = str(sim.control.create_instance(running=True, ssh=True)["id"])

    def view() -> dict[str, Any]:
        return sim.control.instance(int(iid))["sim"]

    assert main(["simulate", "fault", iid, "crash"]) == 0
    assert {e["comfy_mode"] for n, e in view()["endpoints"].items() if n in ("8188/tcp",)} == {"crash"}
    assert "ComfyUI crashed" in capsys.readouterr().out
    assert main(["simulate", "fault", iid, "hang"]) == 0
    assert view()["endpoints"]["8188/tcp"]["comfy_mode"] == "hang"
    for kind in ("offline", "exited", "outbid"):
        assert main(["simulate", "fault", iid, kind]) == 0
        assert view()["fault"] == kind
    assert main(["simulate", "fault", iid, "ssh-drop"]) == 0
    assert main(["simulate", "fault", iid, "heal"]) == 0
    healed = view()
    assert healed["fault"] is None and healed["actual_status"] == "running"
    assert {(e["comfy_mode"], e["net_mode"], e["ssh_mode"]) for e in healed["endpoints"].values()} == {
        ("up", "open", "normal")}
    out = capsys.readouterr()
    assert sim.info["control_token"] not in out.out + out.err


def test_ssh_drop_ends_the_open_sessions(here: Path, sim) -> None:
    import paramiko

    simulated_stack(here, sim)
    inst = sim.control.create_instance(running=True, ssh=True)
    host, port = inst["public_ipaddr"].strip(), int(inst["ports"]["22/tcp"][0]["HostPort"])
    client = paramiko.SSHClient()
    client.load_host_keys(sim.info["ssh_known_hosts_path"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(host, port, username="root", key_filename=sim.info["ssh_private_key_path"],
                   timeout=10, banner_timeout=10, auth_timeout=10, look_for_keys=False, allow_agent=False)
    try:
        assert client.get_transport().is_active()
        assert main(["simulate", "fault", str(inst["id"]), "ssh-drop"]) == 0
        transport = client.get_transport()
        transport.join(10)  # the transport's thread ends once the simulator has dropped the session
        assert not transport.is_active()
    finally:
        client.close()


def test_fault_errors_say_why_with_exit_1_or_2(here: Path, sim, capsys) -> None:
    assert main(["simulate", "fault", "12", "crash"]) == 1  # no stack here
    assert "no stack is running from" in capsys.readouterr().err
    write_stack(here, simulated=False, simulator=None)
    assert main(["simulate", "fault", "12", "crash"]) == 1  # a stack on the real cloud
    assert "real Vast.ai cloud" in capsys.readouterr().err
    simulated_stack(here, sim)
    assert main(["simulate", "fault", "999999", "crash"]) == 1
    assert "no instance 999999 in the simulated cloud" in capsys.readouterr().err
    assert main(["simulate", "fault", "12", "explode"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["simulate", "fault", "abc", "crash"]) == 2
    assert "is a number" in capsys.readouterr().err


# ── vastkeep watchdog reset ─────────────────────────────────────────────────
ADMIN_KEY = "AdminKey_" + "k" * 24


@pytest.fixture
def reset_route() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback server answering ``POST /api/proxy/admin/watchdog/{name}/reset`` as the admin API does:
    401 without the key, 404 for an unknown name, else the daemon's name and status."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            seen.append({"path": self.path, "key": self.headers.get("X-Admin-Key")})
            prefix, suffix = "/api/proxy/admin/watchdog/", "/reset"
            name = self.path[len(prefix):-len(suffix)] if self.path.startswith(prefix) else ""
            if self.headers.get("X-Admin-Key") != ADMIN_KEY:
                self._answer(401, {"error": "unauthorized", "reason": "invalid or missing X-Admin-Key"})
            elif not self.path.endswith(suffix) or name != "poll-dispatcher":
                self._answer(404, {"error": "not_found", "reason": f"no daemon {name!r}"})
            else:
                self._answer(200, {"id": name, "name": "PollDispatcher", "status": "registered",
                                   "previousStatus": "failed"})

        def _answer(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_watchdog_reset_calls_the_route_with_the_stack_key(here: Path, reset_route, capsys) -> None:
    url, seen = reset_route
    write_stack(here, admin_api_url=url, admin_api_key=ADMIN_KEY)
    assert main(["watchdog", "reset", "poll-dispatcher"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == "PollDispatcher: registered (was failed); the next supervision sweep starts it"
    assert seen == [{"path": "/api/proxy/admin/watchdog/poll-dispatcher/reset", "key": ADMIN_KEY}]
    assert ADMIN_KEY not in out.out + out.err


def test_watchdog_reset_errors_exit_1(here: Path, reset_route, capsys) -> None:
    url, _seen = reset_route
    assert main(["watchdog", "reset", "poll-dispatcher"]) == 1  # no stack here
    assert "no stack is running" in capsys.readouterr().err
    write_stack(here, admin_api_url=url, admin_api_key=ADMIN_KEY)
    assert main(["watchdog", "reset", "no-such"]) == 1
    err = capsys.readouterr().err
    assert "no daemon or process named 'no-such' (no daemon 'no-such')" in err and "watchdog/status" in err
    write_stack(here, admin_api_url=url, admin_api_key="wrong")
    assert main(["watchdog", "reset", "poll-dispatcher"]) == 1
    assert "answered 401: invalid or missing X-Admin-Key" in capsys.readouterr().err


def test_watchdog_reset_against_the_real_admin_api(here: Path, tmp_path: Path, redis_client, redis_server,
                                                  capsys) -> None:
    """The admin API as its own process (as `vastkeep up` runs it) with a daemon supervision marked failed."""
    from tests.fixtures.api_process import api_env, spawn_api
    from vastkeep.core.backoff import RestartPolicy
    from vastkeep.core.clock import FakeClock
    from vastkeep.state import EventLog, Keys, write_heartbeat
    from vastkeep.supervision import SupervisionPolicy, keepalive_shard, poll_dispatcher, sweep

    keys, clock = Keys(), FakeClock()
    events = EventLog(redis_client, keys, clock)
    policy = SupervisionPolicy(restart=RestartPolicy(max_restarts=0), start_timeout_s=5.0)
    specs = [keepalive_shard(0), poll_dispatcher()]
    for _ in range(2):  # registered and started; then the dispatcher never beat: 0 restarts allowed → failed
        sweep(redis=redis_client, keys=keys, specs=specs, policy=policy, start=lambda spec: None, clock=clock,
              events=events)
        write_heartbeat(redis_client, keys, clock, "keepalive-shard-0", kind="keepalive-shard",
                        ttl_ms=3_600_000)
        clock.advance(6)
    api = spawn_api(api_env(REDIS_URL=redis_server.url, ADMIN_API_KEY=ADMIN_KEY), tmp_path / "api")
    try:
        write_stack(here, admin_api_url=api.url, admin_api_key=ADMIN_KEY)
        assert main(["watchdog", "reset", "poll-dispatcher"]) == 0
        assert capsys.readouterr().out.strip() == (
            "PollDispatcher: registered (was failed); the next supervision sweep starts it")
        assert main(["watchdog", "reset", "no-such-daemon"]) == 1
        err = capsys.readouterr().err
        assert "no daemon or process named 'no-such-daemon'" in err and "poll-dispatcher" in err, err
        assert main(["watchdog", "reset", "keepalive-shard-0"]) == 1  # running: 409, not failed
        assert "answered 409" in capsys.readouterr().err
    finally:
        api.stop()
    assert [e.kind for e in events.read(count=100)].count("process-reset") == 1


# ── vastkeep status: tokens the stack has not ───────────────────────────────
def test_status_says_not_configured_for_a_token_the_stack_has_not(here: Path, redis_server, capsys) -> None:
    write_stack(here, redis_url=redis_server.url, admin_api_url=None,
                tokens_configured={"vastai": True, "huggingface": False, "civitai": False})
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "token huggingface  not configured" in out and "token civitai      not configured" in out
    assert "token vastai       configured, no recent check" in out
    assert main(["status", "--json"]) == 0
    tokens = json.loads(capsys.readouterr().out)["tokens"]
    assert tokens["huggingface"]["configured"] is False and tokens["vastai"]["configured"] is True
