"""A remote log file that shrank or was replaced: detect it, start a new generation (mostly pure).

The collector resumes a file at its stored offset with ``tail -c +<pos+1> -F``. If the file was truncated
(``> file``) or rotated (renamed, a new one created), that position is past the end of the new file, or in a
different file: reading on would skip the new file's first bytes or store them at the wrong offsets. So
before each session the collector asks ``stat -c '%s %i'`` (size, inode) and, while streaming, watches
``tail``'s own notices on stderr (``file truncated``, ``has been replaced``, ``has appeared``).

A detected change starts a new **generation** of the file: the new file's byte 0 is stored at the offset
where the old one ended (``base``), so stored offsets stay unique and only grow for readers, and the
stream is the old file's lines followed by the new file's. ``gen:``, ``base:`` and ``inode:`` of each file
live in the collector hash; ``ssh-log-rotated`` is emitted.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable

import paramiko

from vastkeep.core.errors import SSHError
from vastkeep.ssh.connect import exec_channel

#: What GNU tail -F prints on stderr when the file it follows changes under it.
NOTICES = (("file truncated", "truncated"), ("has been replaced", "replaced"), ("has appeared", "appeared"))


def rotation_reason(size: int | None, inode: str | None, pos: int, known_inode: str) -> str | None:
    """Why the file at position ``pos`` of the current generation must start a new one, or None.

    ``size``/``inode`` are the remote file's now (None: unknown, e.g. it does not exist yet). Nothing read
    yet (``pos`` 0) never needs a new generation.
    """
    if pos <= 0 or size is None:
        return None
    if size < pos:
        return f"size {size} < offset {pos}"
    if known_inode and inode and inode != known_inode:
        return f"inode {known_inode} → {inode}"
    return None


def notice_in(stderr_text: str) -> str | None:
    """``truncated`` / ``replaced`` / ``appeared`` when tail's stderr says the followed file changed."""
    for needle, kind in NOTICES:
        if needle in stderr_text:
            return kind
    return None


def parse_stat(output: bytes | None) -> tuple[int | None, str | None]:
    """``b"1234 5678\\n"`` → ``(1234, "5678")``; anything else → ``(None, None)``."""
    try:
        size, inode = (output or b"").decode().split()
        return int(size), inode
    except ValueError:
        return None, None


def remote_stat(client: paramiko.SSHClient, path: str, timeout_s: float,
                monotonic: Callable[[], float]) -> tuple[int | None, str | None]:
    """Size and inode of ``path`` on the instance, within ``timeout_s``; ``(None, None)`` when unknown."""
    deadline = monotonic() + timeout_s
    try:
        channel = exec_channel(client, f"stat -c '%s %i' {shlex.quote(path)}", timeout_s)
    except SSHError:
        return None, None
    out = b""
    try:
        while len(out) < 256:
            left = deadline - monotonic()
            if left <= 0:
                return None, None
            channel.settimeout(left)
            chunk = channel.recv(256)
            if not chunk:
                break
            out += chunk
    except (TimeoutError, paramiko.SSHException, EOFError, OSError):
        return None, None
    finally:
        with contextlib.suppress(Exception):
            channel.close()
    return parse_stat(out)
