"""`vastkeep up` end to end: the whole stack from an empty folder (embedded Redis, simulated cloud,
two workers, beat, admin API, Flower), healthy per `vastkeep check`, then Ctrl-C stops every process
(and every pool process under it) and exits 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.fixtures.helpers import free_port, stop_process, wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def group_members(pgids: set[int]) -> set[int]:
    """Every live process whose process group is one of ``pgids`` (children and their pool processes)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X") and int(fields[2]) in pgids:
            found.add(int(entry.name))
    return found


def documented_children() -> set[str]:
    """The child names in docs/running.md's table of what `vastkeep up` starts."""
    lines = (ROOT / "docs" / "running.md").read_text().splitlines()
    start = lines.index("| child | what | started when |")
    names = set()
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        names.add(line.split("|")[1].strip().strip("`"))
    return names


def vk(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vastkeep.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_up_check_status_and_clean_stop(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "VAST_API_KEY", "ADMIN_API_KEY", "FLOWER_BASIC_AUTH", "VASTKEEP_HOME")}
    api_port, flower_port, proxy_port = free_port(), free_port(), free_port()
    env.update(ADMIN_API_PORT=str(api_port), FLOWER_PORT=str(flower_port), PROXY_PORT=str(proxy_port),
               PYTHONPATH=str(ROOT),
               LOG_LEVEL="INFO")
    out_path = tmp_path / "up.out"
    out = open(out_path, "wb")  # noqa: SIM115
    up = subprocess.Popen([sys.executable, "-m", "vastkeep.cli", "up", "--control-concurrency", "2"],
                          cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    stack_file = tmp_path / ".vastkeep" / "stack.json"
    try:
        last = _wait_healthy(up, out_path, tmp_path, env)
        assert "OK:   workers alive: control@" in last.stdout

        stack = json.loads(stack_file.read_text())
        assert stack_file.stat().st_mode & 0o777 == 0o600
        assert stack["proxy_url"] == f"http://127.0.0.1:{proxy_port}" and "proxy" in stack["children"]
        wait_for(lambda: _answers(stack["proxy_url"] + "/health"), 30, "the proxy child to answer")
        assert stack["simulated"] is True and stack["redis_embedded"] is True
        _check_banner(out_path.read_text(), stack)
        _check_guards(stack, api_port, flower_port)
        redis_password, redis_conf = _check_redis_needs_its_password(stack, tmp_path)
        secrets = (stack["admin_api_key"], stack["flower_password"], redis_password)
        _check_commands_find_the_stack(stack, tmp_path, env, secrets, last.stdout)
        members = _check_no_secret_on_command_lines(stack, secrets)
    finally:
        rc = stop_process(up, 60, sig=signal.SIGINT, group=True)
        out.close()
    assert rc == 0, out_path.read_text()[-3000:]
    leftovers = [p for p in members if alive(p)]
    assert leftovers == [], leftovers
    assert not stack_file.exists() and not redis_conf.exists()
    text = out_path.read_text()
    assert "every process stopped" in text
    assert f"redis://:***@127.0.0.1:{urlsplit(stack['redis_url']).port}/0" in text  # the banner, redacted
    assert redis_password not in text
    for log_file in (tmp_path / ".vastkeep" / "logs").iterdir():  # the children's logs
        assert redis_password not in log_file.read_text(errors="replace"), log_file.name
    assert vk(["check"], tmp_path, env).returncode == 1


def _wait_healthy(up: subprocess.Popen, out_path: Path, folder: Path,
                  env: dict[str, str]) -> subprocess.CompletedProcess:
    """`vastkeep check` in ``folder`` until it passes (``up`` must stay alive meanwhile); its last answer."""
    stack_file = folder / ".vastkeep" / "stack.json"

    def healthy() -> subprocess.CompletedProcess | None:
        assert up.poll() is None, out_path.read_text()
        if not stack_file.exists():
            return None
        res = vk(["check"], folder, env)
        return res if res.returncode == 0 else None

    return wait_for(healthy, 90, "a healthy stack (`vastkeep check` exit 0)", interval_s=0.5)


def _check_banner(text: str, stack: dict) -> None:
    """What `vastkeep up` prints: the simulated cloud said once, where things are, each secret once."""
    assert "cloud is SIMULATED" in text
    assert f"Vast.ai API {stack['simulator']['vast_api_url']}   (the simulator's)" in text
    assert text.count("SIMULATED") == 1  # said once, in the warning line
    assert f"  simulator   {stack['simulator']['control_url']}   (control API" in text
    assert 'its token: "control_token" in .vastkeep/sim/ready.json' in text
    assert stack["simulator"]["control_token"] not in text
    assert "In another terminal in this folder: " in text
    assert stack["tokens_configured"] == {"vastai": True, "huggingface": True, "civitai": True}
    assert stack["vast_mode"] == "simulated" and stack["config_warnings"] == []
    assert "[Watchdog] Registered process: Worker-control" in text
    assert text.count(stack["admin_api_key"]) == 1  # printed exactly once
    assert text.count(stack["flower_password"]) == 1


def _check_guards(stack: dict, api_port: int, flower_port: int) -> None:
    """The admin API is guarded by the generated key, Flower by its generated login; the stack's watchdog
    publishes its processes and beat's supervision sweep registers the daemons (Layer 6)."""
    api = stack["admin_api_url"]
    assert api == f"http://127.0.0.1:{api_port}"
    assert requests.get(f"{api}/api/proxy/admin/system/status", timeout=5).status_code == 401
    key = {"X-Admin-Key": stack["admin_api_key"]}
    st = requests.get(f"{api}/api/proxy/admin/system/status", timeout=5, headers=key)
    assert st.status_code == 200 and st.json()["simulated"] is True

    def registered() -> dict | None:
        wd = requests.get(f"{api}/api/proxy/admin/watchdog/status", timeout=5, headers=key).json()
        daemons = {"keepalive-shard-0", "poll-dispatcher"} <= set(wd["daemons"])
        return wd if wd["processes"] and daemons else None

    wd = wait_for(registered, 40, "the stack's processes and daemons in watchdog/status", interval_s=0.5)
    assert set(wd["processes"]) == set(stack["children"]), wd
    assert all(p["status"] == "running" and p["pid"] for p in wd["processes"].values()), wd
    assert wd["daemons"]["poll-dispatcher"]["status"] in ("starting", "running"), wd
    flower = f"http://127.0.0.1:{flower_port}"
    assert requests.get(f"{flower}/api/workers", timeout=10).status_code == 401
    assert requests.get(f"{flower}/api/workers", timeout=10,
                        auth=(stack["flower_user"], stack["flower_password"])).status_code == 200


def _check_redis_needs_its_password(stack: dict, folder: Path) -> tuple[str, Path]:
    """The embedded Redis requires its per-stack password (without it, NOAUTH); (password, redis.conf)."""
    redis_parts = urlsplit(stack["redis_url"])
    redis_password = redis_parts.password
    assert redis_password and len(redis_password) >= 16
    with socket.create_connection(("127.0.0.1", redis_parts.port), timeout=5) as raw:
        raw.sendall(b"PING\r\n")
        assert raw.recv(256).startswith(b"-NOAUTH")
        raw.sendall(b"*2\r\n$4\r\nKEYS\r\n$10\r\nvastkeep:*\r\n")
        assert raw.recv(256).startswith(b"-NOAUTH")
    redis_conf = folder / ".vastkeep" / "redis.conf"
    assert redis_conf.stat().st_mode & 0o777 == 0o600
    return redis_password, redis_conf


def _check_commands_find_the_stack(stack: dict, folder: Path, env: dict[str, str], secrets: tuple[str, ...],
                                   check_out: str) -> None:
    """`status` prints a summary without any secret; `celery inspect ping` finds the stack by itself; a
    fault for an unknown instance is a clear error; a second `up` in the folder refuses."""
    redis_port = urlsplit(stack["redis_url"]).port
    status = vk(["status"], folder, env)
    assert status.returncode == 0 and "worker-control" in status.stdout
    assert f"simulator   {stack['simulator']['control_url']}" in status.stdout
    assert stack["simulator"]["control_token"] not in status.stdout
    # docs/running.md's table of children is the stack's real list
    assert set(stack["children"]) == documented_children()
    # a fault for an instance the simulator does not have: a clear error, exit 1
    fault = vk(["simulate", "fault", "999999", "crash"], folder, env)
    assert fault.returncode == 1 and "no instance 999999" in fault.stderr, fault.stderr
    assert f"redis://:***@127.0.0.1:{redis_port}/0" in status.stdout
    status_json = vk(["status", "--json"], folder, env)
    assert json.loads(status_json.stdout)["redis_url"].startswith("redis://:***@")
    ping = subprocess.run([sys.executable, "-m", "celery", "-A", "worker", "inspect", "ping",
                           "--timeout", "10"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=60)
    assert ping.returncode == 0 and "pong" in ping.stdout, ping.stdout + ping.stderr
    for secret in secrets:
        for shown in (status.stdout, status_json.stdout, check_out, ping.stdout, ping.stderr):
            assert secret not in shown

    # a second `vastkeep up` in the same folder refuses, and leaves the running stack's files alone
    second = vk(["up"], folder, env)
    assert second.returncode == 1 and "already running" in second.stderr
    assert (folder / ".vastkeep" / "stack.json").exists() and (folder / ".vastkeep" / "redis.conf").exists()


def _check_no_secret_on_command_lines(stack: dict, secrets: tuple[str, ...]) -> set[int]:
    """No secret on the command line of any child or of its pool processes; every such process."""
    pids = {c["pid"] for c in stack["children"].values() if c["pid"]}
    assert len(pids) == 9  # redis, simulator, 3 workers, beat, API, Flower, proxy
    members = group_members(pids)
    assert members >= pids and len(members) > len(pids)  # prefork pool processes too
    for pid in members:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue  # a pool process that just ended
        for secret in secrets:
            assert secret not in cmdline, cmdline
    return members


def test_up_refuses_a_taken_admin_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "VAST_API_KEY")}
        env.update(ADMIN_API_PORT=str(port), FLOWER_PORT=str(free_port()), PYTHONPATH=str(ROOT))
        res = vk(["up"], tmp_path, env, timeout=60)
    assert res.returncode == 1
    assert "ADMIN_API_PORT" in res.stderr and str(port) in res.stderr
    assert not (tmp_path / ".vastkeep" / "stack.json").exists()


def test_help_works_with_bad_settings(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ADMIN_API_PORT": "not-a-port"}
    res = vk(["--help"], tmp_path, env)
    assert res.returncode == 0 and "up" in res.stdout and "check" in res.stdout
    res = vk(["up"], tmp_path, env)
    assert res.returncode == 2 and "ADMIN_API_PORT" in res.stderr
    res = vk(["check"], tmp_path, env)  # no stack here: a reason, exit 1
    assert res.returncode == 1 and "FAIL" in res.stdout


def test_simulate_takes_generated_keys_that_start_with_a_dash(tmp_path: Path) -> None:
    """`vastkeep up` hands the simulator keys from ``secrets.token_urlsafe``, which starts with "-" one
    time in 64 per key; argparse used to read such a value as an option, so the simulator exited 2 on every
    restart and `up` failed after 60 s (the once-in-a-while failure of the test above)."""
    keys = {"VASTKEEP_SIM_API_KEY": "-api-Zk3", "VASTKEEP_SIM_HF_TOKEN": "--hf_tok",
            "VASTKEEP_SIM_CIVITAI_TOKEN": "-civitai", "VASTKEEP_SIM_CONTROL_TOKEN": "-ctl-9x"}
    env = {**os.environ, "PYTHONPATH": str(ROOT), **keys}
    ready = tmp_path / "ready.json"
    out_path = tmp_path / "sim.out"
    with open(out_path, "wb") as out:
        sim = subprocess.Popen([sys.executable, "-m", "vastkeep.cli", "simulate", "--port", "0",
                                "--state-dir", str(tmp_path / "sim"), "--ready-file", str(ready),
                                "--ssh-backend", "off"], cwd=tmp_path, env=env, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
        try:
            def started() -> bool:
                assert sim.poll() is None, out_path.read_text()[-2000:]
                return ready.exists()

            wait_for(started, 60, "the simulator ready", interval_s=0.1)
            info = json.loads(ready.read_text())
            # the simulator accepts the dash key it was given, and refuses another
            url = f"{info['vast_api_url']}/instances"
            bearer = {"Authorization": f"Bearer {keys['VASTKEEP_SIM_API_KEY']}"}
            assert requests.get(url, params={"owner": "me"}, headers=bearer, timeout=10).status_code == 200
            assert requests.get(url, params={"owner": "me"}, timeout=10,
                                headers={"Authorization": "Bearer api-Zk3"}).status_code == 401
        finally:
            stop_process(sim, 15, group=True)
    given = (info["api_key"], info["hf_token"], info["civitai_token"], info["control_token"])
    assert given == tuple(keys.values())


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
