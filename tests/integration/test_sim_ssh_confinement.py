"""The simulator's SSH commands stay inside the calling instance's root (sshd runs them as root).

Every escape is tried through a real SSH session (OpenSSH sshd when installed, and the built-in paramiko
server): ``..`` in relative and absolute paths, a sibling instance (including one whose folder name
starts with this instance's id), a symlink inside the root that points outside, and options that read a
file named in their value. Each is refused with a non-zero exit status and nothing of the target file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.fixtures.sim import start_sim
from tests.fixtures.sim_ssh import direct, run, ssh_client

MARKER = "vastkeep-confinement-marker-0b1f"


def instance_root(sim, iid: int) -> Path:
    return Path(sim.control.instance(iid)["log_path"]).parents[2]


def escapes(sim, me: dict, other: dict, outside: Path) -> list[str]:
    """Commands that would read ``outside`` (a file holding MARKER) or another instance's files."""
    root = instance_root(sim, me["id"])
    other_log = Path(sim.control.instance(other["id"])["log_path"])
    deep = "../" * (len(root.parts) + 2)
    return [
        "cat ../../../../etc/passwd",
        f"cat {deep}etc/passwd",
        "head -c 10 /../../etc/passwd",
        f"cat /..{'/..' * len(root.parts)}{outside}",
        f"cat {deep}{str(outside).lstrip('/')}",
        f"tail -n 1 {os.path.relpath(other_log, root)}",  # ../<other id>/var/log/onstart.log
        f"tail -n 1 /../{other['id']}/var/log/onstart.log",
        f"cat /../../by-ip/{other['public_ipaddr'].strip()}/var/log/onstart.log",
        f"cat /../{me['id']}9/secret.txt",  # a folder whose name starts with this instance's id
        "cat /var/log/evil-link",  # a symlink inside the root pointing outside
        "cat /var/evil-dir/passwd",  # a symlinked directory
        "cat /var/evil-dir/../var/log/onstart.log",
        "cat -- ../../../../etc/passwd",
        f"wc --files0-from={outside}",
        f"wc --files0={outside}",
        "wc --files0-from /etc/passwd",
        "ls /..",
        "ls -RL /var",  # would follow evil-dir to /etc
        "ls --dereference -R /",
        "stat /../../..",
    ]


def check_confinement(sim, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text(MARKER + "\n")
    me = sim.control.create_instance(running=True)
    other = sim.control.create_instance(running=True)
    sim.control.append_log(me["id"], "my own line")
    sim.control.append_log(other["id"], MARKER)
    root = instance_root(sim, me["id"])
    sibling = root.parent / f"{me['id']}9"  # instances/<id>9: same prefix as instances/<id>
    sibling.mkdir()
    (sibling / "secret.txt").write_text(MARKER + "\n")
    (root / "var" / "log" / "evil-link").symlink_to(outside)
    (root / "var" / "evil-dir").symlink_to("/etc", target_is_directory=True)
    try:
        with ssh_client(sim, *direct(me)) as client:
            for command in escapes(sim, me, other, outside):
                code, out, err = run(client, command)
                assert code != 0, (command, out, err)
                assert MARKER.encode() not in out and b"root:" not in out, (command, out)
            # what the collector does still works
            code, out, _ = run(client, "tail -c +1 /var/log/onstart.log")
            assert code == 0 and out == b"my own line\n"
            assert run(client, "tail -c +4 /var/log/onstart.log")[1] == b"own line\n"
            assert run(client, "wc -c var/log/onstart.log")[1] == b"12 var/log/onstart.log\n"
            assert run(client, "cat /var/log/../log/onstart.log")[1] == b"my own line\n"
            assert run(client, "tail -n 1 -- /var/log/onstart.log")[1] == b"my own line\n"
            assert run(client, 'echo "keepalive"')[1] == b"keepalive\n"
            assert run(client, "ls /")[0] == 0
            code, out, _ = run(client, "ls -laR /var")
            assert code == 0 and b"evil-link -> " in out and b"passwd" not in out
    finally:
        shutil.rmtree(sibling)


def test_ssh_commands_cannot_leave_the_instance_root(sim, tmp_path):
    check_confinement(sim, tmp_path)


@pytest.mark.slow
def test_builtin_backend_confines_the_same_way(tmp_path):
    proc = start_sim(["--ssh-backend", "builtin"])
    try:
        assert proc.info["ssh_backend"] == "builtin"
        check_confinement(proc, tmp_path)
    finally:
        assert proc.stop() == 0
        proc.remove_state_dir()
