"""SSH into simulated instances with paramiko (RejectPolicy + the simulator's known_hosts), and SSH faults."""

from __future__ import annotations

import socket
import time

import paramiko
import pytest

from tests.fixtures.helpers import wait_for
from tests.fixtures.sim_ssh import direct, run, ssh_client

T = 5


def wait_running(sim, iid: int, deadline_s: float = 5) -> dict:
    def running() -> dict | None:
        inst = sim.control.instance(iid)["instance"]
        return inst if inst["actual_status"] == "running" else None

    return wait_for(running, deadline_s, f"instance {iid} running")


def test_provisioning_log_grows_and_is_read_with_tail_c(sim):
    iid = sim.control.create_instance(
        lifecycle={"created_s": 0, "loading_s": 0.1, "boot_s": 3, "log_interval_s": 0.05}
    )["id"]
    inst = wait_running(sim, iid)
    with ssh_client(sim, *direct(inst)) as client:
        code, first, _ = run(client, "tail -c +1 /var/log/onstart.log")
        assert code == 0 and b"[image] pulling layer" in first
        more = wait_for(lambda: run(client, f"tail -c +{len(first) + 1} /var/log/onstart.log")[1], 3,
                        "more provisioning lines", interval_s=0.05)
        assert b"[provision]" in more
        code, count, _ = run(client, "wc -c /var/log/onstart.log")
        assert int(count.split()[0]) >= len(first) + len(more)
        assert run(client, 'echo "keepalive"')[1] == b"keepalive\n"


def test_proxy_route_and_unknown_commands(sim):
    inst = sim.control.create_instance(running=True)
    sim.control.append_log(inst["id"], "line one", "line two")
    with ssh_client(sim, inst["ssh_host"], inst["ssh_port"]) as client:
        assert run(client, "tail -n 1 /var/log/onstart.log")[1] == b"line two\n"
        code, _, err = run(client, "rm -rf /")
        assert code == 127 and b"not found" in err


def test_host_key_is_checked(sim):
    inst = sim.control.create_instance(running=True)
    with pytest.raises(paramiko.SSHException):
        ssh_client(sim, *direct(inst), known_hosts=False)


def following_log(sim, inst, marker: str):
    """An SSH session running ``tail -f`` on the provisioning log, shown to be live by ``marker``."""
    client = ssh_client(sim, *direct(inst))
    try:
        channel = client.get_transport().open_session(timeout=T)
        channel.settimeout(T)
        channel.exec_command("tail -f /var/log/onstart.log")
        sim.control.append_log(inst["id"], marker)
        assert marker.encode() in channel.recv(4096)
    except BaseException:
        client.close()
        raise
    return client, channel


def test_kill_sessions_breaks_an_open_channel(sim):
    inst = sim.control.create_instance(running=True)
    client, channel = following_log(sim, inst, "before the kill")
    try:
        assert sim.control.kill_ssh_sessions(inst["id"]) >= 1
        started = time.monotonic()
        assert channel.recv(4096) == b""  # the stream ends at once, no timeout needed
        assert time.monotonic() - started < 2
        end = time.monotonic() + 2
        while client.get_transport().is_active():
            assert time.monotonic() < end
            time.sleep(0.01)
    finally:
        client.close()
    with ssh_client(sim, *direct(inst)) as again:  # new sessions work
        assert run(again, "echo ok")[1] == b"ok\n"


def test_hang_after_banner_times_out_the_handshake(sim):
    inst = sim.control.create_instance(running=True)
    sim.control.ssh_hang_after_banner(inst["id"], "22/tcp")
    with socket.create_connection(direct(inst), timeout=T) as raw:
        assert raw.recv(256).startswith(b"SSH-2.0-")
        raw.sendall(b"SSH-2.0-test\r\n")
        raw.settimeout(0.5)
        with pytest.raises(TimeoutError):
            raw.recv(256)
    started = time.monotonic()
    with pytest.raises((paramiko.SSHException, EOFError, TimeoutError)):
        ssh_client(sim, *direct(inst), timeout_s=1.0)
    assert 0.9 <= time.monotonic() - started < 4
    with ssh_client(sim, inst["ssh_host"], inst["ssh_port"]) as client:  # the proxy route is fine
        assert run(client, "echo ok")[1] == b"ok\n"
    sim.control.ssh_normal(inst["id"])
    with ssh_client(sim, *direct(inst)) as client:
        assert run(client, "echo ok")[1] == b"ok\n"


def test_blackholed_ssh_port_makes_connect_time_out(sim):
    inst = sim.control.create_instance(running=True)
    sim.control.blackhole(inst["id"], "22/tcp")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        ssh_client(sim, *direct(inst), timeout_s=0.5)
    assert time.monotonic() - started >= 0.45
    with ssh_client(sim, inst["ssh_host"], inst["ssh_port"]) as client:
        assert run(client, "echo ok")[1] == b"ok\n"
    sim.control.open_path(inst["id"], "22/tcp")
    with ssh_client(sim, *direct(inst)) as client:
        assert run(client, "echo ok")[1] == b"ok\n"


def test_offline_host_freezes_an_open_session(sim):
    inst = sim.control.create_instance(running=True)
    client, channel = following_log(sim, inst, "still online")
    try:
        sim.control.host_offline(inst["id"])
        sim.control.append_log(inst["id"], "nobody hears this")
        channel.settimeout(0.5)
        with pytest.raises(TimeoutError):  # silence, not EOF: only a deadline notices a dead route
            channel.recv(4096)
        assert client.get_transport().is_active()
    finally:
        client.close()


def test_builtin_ssh_backend_serves_the_same_commands():
    from tests.fixtures.sim import start_sim

    proc = start_sim(["--ssh-backend", "builtin"])
    try:
        assert proc.info["ssh_backend"] == "builtin"
        inst = proc.control.create_instance(running=True)
        proc.control.append_log(inst["id"], "from the builtin server")
        with ssh_client(proc, *direct(inst)) as client:
            assert run(client, "tail -n 1 /var/log/onstart.log")[1] == b"from the builtin server\n"
            assert run(client, "wc -l /var/log/onstart.log")[1] == b"1 var/log/onstart.log\n"
            assert run(client, "reboot")[0] == 127
        proc.control.ssh_hang_after_banner(inst["id"])
        with pytest.raises((paramiko.SSHException, EOFError, TimeoutError)):
            ssh_client(proc, *direct(inst), timeout_s=0.5)
        # One route hung mid-handshake must not stall the server for the other route (the built-in server
        # once ran each handshake on its accept loop, so the proxy route waited behind the hung one).
        proc.control.ssh_normal(inst["id"])
        proc.control.ssh_hang_after_banner(inst["id"], "22/tcp")
        with pytest.raises((paramiko.SSHException, EOFError, TimeoutError)):
            ssh_client(proc, *direct(inst), timeout_s=0.5)
        with ssh_client(proc, inst["ssh_host"], inst["ssh_port"]) as client:
            assert run(client, "echo ok")[1] == b"ok\n"
    finally:
        assert proc.stop() == 0
        proc.remove_state_dir()
