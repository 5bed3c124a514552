"""A built-in SSH server (paramiko) for machines without OpenSSH's sshd.

It plays sshd's part behind the same per-instance proxy: public-key auth for ``root`` with the simulator's
client key, ``exec`` only, and each command run through the same ForceCommand wrapper with the same
``SSH_CONNECTION`` / ``SSH_ORIGINAL_COMMAND`` environment, so both backends behave alike.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)

log = logging.getLogger("vastkeep.sim")
LOGIN_GRACE_S = 30  # as LoginGraceTime in the sshd_config: a stalled handshake is dropped after it


class _Server(paramiko.ServerInterface):
    def __init__(self, authorized: paramiko.PKey, run: Callable[[paramiko.Channel, str], object]) -> None:
        self.authorized = authorized
        self.run = run

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == "root" and key.get_base64() == self.authorized.get_base64():
            return AUTH_SUCCESSFUL
        return AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return (
            OPEN_SUCCEEDED if kind == "session" else OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        )

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        threading.Thread(
            target=self.run,
            args=(channel, command.decode("utf-8", "replace")),
            daemon=True,
        ).start()
        return True


class _Transport(paramiko.Transport):
    """A server transport for which a connection that never sends an SSH banner (a port check, a TCP
    probe) is one line in the simulator's log, not paramiko's ERROR line and traceback."""

    _not_ssh = False

    def _log(self, level: int, msg: object, *args: object) -> None:
        if isinstance(msg, str) and "Error reading SSH protocol banner" in msg:
            self._not_ssh = True
            try:
                peer = self.getpeername()
            except OSError:
                peer = ("?", 0)
            log.warning("built-in SSH server: a connection from %s:%s closed before sending an SSH banner "
                        "(not an SSH client: a port check?); ignored", peer[0], peer[1])
            return
        if self._not_ssh and isinstance(msg, list):
            return  # the traceback of that same banner error
        super()._log(level, msg, *args)  # type: ignore[misc]  # private in paramiko, absent from its stubs


class BuiltinSshServer:
    """Threaded paramiko server on 127.0.0.1:<free port>."""

    def __init__(
        self, host_key_path: Path, authorized_pub_path: Path, state_dir: Path, wrapper: Path
    ) -> None:
        self.host_key = paramiko.Ed25519Key(filename=str(host_key_path))
        blob = authorized_pub_path.read_text().split()[1]
        self.authorized = paramiko.Ed25519Key(data=base64.b64decode(blob))
        self.state_dir = state_dir
        self.wrapper = wrapper
        self.port = 0
        self._sock: socket.socket | None = None
        self._transports: list[paramiko.Transport] = []
        self._stopped = threading.Event()

    def start(self) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.settimeout(0.5)
        self._sock = sock
        self.port = sock.getsockname()[1]
        threading.Thread(target=self._accept_loop, name="sim-ssh-accept", daemon=True).start()
        return self.port

    def stop(self) -> None:
        self._stopped.set()
        if self._sock is not None:
            self._sock.close()
        for transport in self._transports:
            with contextlib.suppress(Exception):
                transport.close()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, peer = self._sock.accept()  # type: ignore[union-attr]
            except TimeoutError:
                continue
            except OSError:
                return
            transport = _Transport(conn)
            transport.add_server_key(self.host_key)
            self._transports = [t for t in self._transports if t.is_active()] + [transport]
            env = {"SSH_CONNECTION": f"{peer[0]} {peer[1]} 127.0.0.1 {self.port}"}
            transport.handshake_timeout = transport.auth_timeout = LOGIN_GRACE_S
            try:
                # With an event, start_server returns at once and the handshake runs on the transport's own
                # thread: a client (or a hang_after_banner proxy) that stalls mid-handshake must not stop this
                # loop from accepting the next connection, as one sshd child per connection does not.
                transport.start_server(
                    event=threading.Event(),
                    server=_Server(self.authorized, functools.partial(self._exec, env=env)),
                )
            except (paramiko.SSHException, EOFError, OSError) as exc:
                log.debug("builtin ssh handshake failed: %s", type(exc).__name__)

    def _exec(self, channel: paramiko.Channel, command: str, env: dict[str, str]) -> None:
        """Run one command through the wrapper, streaming stdout/stderr, then send the exit status."""
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env, "SSH_ORIGINAL_COMMAND": command}
        proc = subprocess.Popen(
            [sys.executable, "-I", str(self.wrapper), str(self.state_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
        )

        def pump_err() -> None:
            for chunk in iter(lambda: proc.stderr.read1(65536), b""):  # type: ignore[union-attr]
                with contextlib.suppress(OSError, EOFError):
                    channel.sendall_stderr(chunk)

        err_thread = threading.Thread(target=pump_err, daemon=True)
        err_thread.start()
        try:
            for chunk in iter(lambda: proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
                channel.sendall(chunk)
        except (OSError, EOFError, paramiko.SSHException):
            proc.kill()
        code = proc.wait()
        err_thread.join(5)
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            channel.send_exit_status(code)
            channel.close()
