"""SSH into simulated instances: a real OpenSSH sshd behind a per-instance proxy that holds the SSH faults.

Why a proxy: sshd cannot tell 10,000 instances apart, but the proxy connects to it from the instance's own
loopback address, and the ForceCommand wrapper (``ssh_wrapper.py``) maps that client address back to the
instance's directory. The proxy is also where "kill sessions", "hang after banner" and black-holes live.
Without an sshd binary, the built-in paramiko server (``ssh_builtin.py``) takes its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import IO, TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from vastkeep.core.processes import end_process
from vastkeep.sim.net import Path

if TYPE_CHECKING:
    from vastkeep.sim.ssh_builtin import BuiltinSshServer

log = logging.getLogger("vastkeep.sim")
SSHD = "/usr/sbin/sshd"
WRAPPER = FsPath(__file__).with_name("ssh_wrapper.py")


def write_keypair(private_path: FsPath) -> str:
    """Generate an ed25519 key in OpenSSH format (mode 0600); returns the public line. Never logged."""
    key = ed25519.Ed25519PrivateKey.generate()
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = public.decode() + " vastkeep-sim"
    private_path.with_suffix(".pub").write_text(line + "\n")
    return line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Session:
    """One proxied SSH connection: client side + sshd side; abort() resets both."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.banner_sent = False
        self.hung = False

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()

    def is_closing(self) -> bool:
        return self.client.transport.is_closing()


class SshService:
    """Keys, known_hosts, the sshd (or built-in) server, and the proxy handler :class:`Network` calls."""

    def __init__(
        self, state_dir: FsPath, instance_ip: Callable[[int], str | None], backend: str = "auto"
    ) -> None:
        self.dir = state_dir / "ssh"
        self.state_dir = state_dir
        self.instance_ip = instance_ip
        self.backend = backend
        self.client_key_path = self.dir / "id_ed25519"
        self.known_hosts_path = self.dir / "known_hosts"
        self.host_key_path = self.dir / "ssh_host_ed25519_key"
        self.port = 0
        self.host_public = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._builtin: BuiltinSshServer | None = None
        self._known: set[str] = set()
        self._log_fh: IO[bytes] | None = None

    def start(self) -> None:
        """Generate keys, then start sshd (or the built-in server) on 127.0.0.1:<free port>."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "by-ip").mkdir(parents=True, exist_ok=True)
        client_public = write_keypair(self.client_key_path)
        self.host_public = write_keypair(self.host_key_path).rsplit(" ", 1)[0]
        (self.dir / "authorized_keys").write_text(client_public + "\n")
        self.known_hosts_path.write_text("")
        use_sshd = self.backend == "sshd" or (self.backend == "auto" and os.access(SSHD, os.X_OK))
        if use_sshd:
            self._start_sshd()
        else:
            from vastkeep.sim.ssh_builtin import BuiltinSshServer  # noqa: PLC0415

            server = BuiltinSshServer(
                self.host_key_path, self.client_key_path.with_suffix(".pub"), self.state_dir, WRAPPER
            )
            self.port = server.start()
            self._builtin = server
            self.backend = "builtin"

    def _start_sshd(self) -> None:
        with contextlib.suppress(OSError):
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        self.port = _free_port()
        config = self.dir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key_path}",
                    "PidFile none",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
                    f"ForceCommand {sys.executable} -I {WRAPPER} {self.state_dir}",
                    "UseDNS no",
                    "LogLevel ERROR",
                    "LoginGraceTime 30",
                    "MaxStartups 200:30:400",
                    "MaxSessions 64",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "AllowTcpForwarding no",
                    "X11Forwarding no",
                    "AllowAgentForwarding no",
                    "PermitUserEnvironment no",
                    # bash sources ~/.bashrc for a command run by sshd when it is a top-level shell;
                    # SHLVL=1 makes it a nested one, so a login profile (pyenv init, ...) never runs
                    # for the ForceCommand (it cost seconds per session and piled up under load)
                    "SetEnv SHLVL=1",
                    "ClientAliveInterval 0",
                    "",
                ]
            )
        )
        self._log_fh = open(self.dir / "sshd.log", "ab")  # noqa: SIM115 - lives as long as sshd
        self._proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=self._log_fh,
            start_new_session=True,
        )
        self.backend = "sshd"

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Wait until sshd accepts TCP connections (once, at start-up).

        The built-in server listens before ``start()`` returns, and a bare TCP probe would reach it as a
        client that never sends an SSH banner: nothing to wait for there.
        """
        if self._builtin is not None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self._proc.returncode}; see {self.dir / 'sshd.log'}")
            try:
                _r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), timeout=1)
                w.close()
                return
            except (OSError, TimeoutError):
                await asyncio.sleep(0.02)
        raise RuntimeError("SSH server did not start")

    def stop(self) -> None:
        if self._proc is not None:
            end_process(self._proc, 5)
        if self._builtin is not None:
            self._builtin.stop()
        if self._log_fh is not None:
            self._log_fh.close()

    def add_known_host(self, ip: str, port: int) -> None:
        """Record the host key for ``[ip]:port`` so clients can use RejectPolicy."""
        name = ip if port == 22 else f"[{ip}]:{port}"
        if name in self._known:
            return
        self._known.add(name)
        with open(self.known_hosts_path, "a") as fh:
            fh.write(f"{name} {self.host_public}\n")

    def link_instance(self, ip: str, instance_dir: FsPath) -> None:
        link = self.state_dir / "by-ip" / ip
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(instance_dir)

    def unlink_instance(self, ip: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "by-ip" / ip).unlink()

    async def handle(self, path: Path, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Proxy one client connection to the SSH server, from the instance's own source address."""
        session = _Session(writer)
        path.track(session)
        ip = self.instance_ip(path.instance_id)
        try:
            if ip is None:
                return
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port, local_addr=(ip, 0)), timeout=5
            )
            session.upstream = up_writer
            tasks = [
                asyncio.create_task(self._pump(path, session, up_reader, writer, True)),
                asyncio.create_task(self._pump(path, session, reader, up_writer, False)),
            ]
            _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
        except (OSError, TimeoutError) as exc:
            log.debug("ssh proxy for instance %s: %s", path.instance_id, type(exc).__name__)
        finally:
            for w in (writer, session.upstream):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()

    @staticmethod
    async def _pump(
        path: Path, session: _Session, src: asyncio.StreamReader, dst: asyncio.StreamWriter, from_server: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await src.read(65536)
                if not data:
                    return
                if session.hung or path.endpoint.ssh_mode == "hang_after_banner":
                    session.hung = True  # once hung, this session stays silent
                    if from_server and not session.banner_sent:
                        end = data.find(b"\n")
                        dst.write(data if end < 0 else data[: end + 1])
                        session.banner_sent = end >= 0
                    continue
                if not path.flowing.is_set():
                    await path.flowing.wait()
                if from_server and b"\n" in data:
                    session.banner_sent = True
                dst.write(data)
                await dst.drain()
