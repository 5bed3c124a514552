"""A remote log file that shrank or was replaced: detect it, start a new generation (mostly pure).

The collector resumes a file at its stored offset with ``tail -c +<pos+1> --follow=descriptor --retry``
(:func:`tail_command`). If the file was truncated (``> file``, copytruncate) or rotated (renamed and a new
one created), that position is past the end of the new file, or in a different file: reading on would skip
the new file's first bytes or store them at the wrong offsets. Three checks:

* before each ``tail`` starts, ``stat -c '%s %i'`` and ``head -c 64``: a size below the position, another
  inode than the one last seen, or first bytes other than the generation's first stored bytes
  (:data:`HEAD_BYTES`) mean a new file;
* while streaming, the same checks with each 30 s health check: a rotation by rename is seen there (tail
  follows the *descriptor*, so it keeps reading the old, renamed file until then and never switches files
  by itself: every byte it sends belongs to the file it opened). A renamed file is **drained** before the
  switch: its ``tail`` keeps running, and its bytes keep being stored, until it has sent nothing for
  :data:`DRAIN_QUIET_S` (a writer that still holds the old file open after the rename, until it reopens,
  loses nothing), at most :data:`DRAIN_MAX_S`; its last line, if it never got its newline, is stored as it
  is; then the new file is followed from its first byte. A file truncated and refilled past the
  stored offset between two checks cannot be told apart from growth until then: the bytes tail sent from
  it meanwhile are stored in the old generation, and the new one starts again from its first byte;
* tail's own ``file truncated`` notice on stderr. A truncated file is the one case where tail itself starts
  over at byte 0, and sshd may forward those bytes before the notice (it reads stdout before stderr), so
  they may already be stored after the old file's end. The bytes stored in the last
  :data:`RECENT_S` seconds are compared with the new file's head (``head -c``): the longest overlap
  (:func:`overlap`) is taken as already stored from the new file, so it is neither dropped nor stored
  twice. (If the old file's last bytes equal the new file's first ones by chance, that overlap is
  ambiguous: a few bytes of the new file may then be taken for stored.)

A detected change starts a new **generation** of the file: the new file's byte 0 is stored at the offset
where the old one ended (``base``), so stored offsets stay unique and only grow for readers, and the
stream is the old file's lines followed by the new file's. ``gen:``, ``base:`` and ``inode:`` of each file
live in the collector hash; ``ssh-log-rotated`` is emitted.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import paramiko

from vastkeep.ssh.connect import capture as _capture
from vastkeep.ssh.connect import exec_channel
from vastkeep.ssh.logstore import LogStore
from vastkeep.state import EventSink

log = logging.getLogger("vastkeep.ssh")

#: What GNU tail prints on stderr when the file it follows changes under it.
NOTICES = (("file truncated", "truncated"), ("has been replaced", "replaced"), ("has appeared", "appeared"))
#: After a ``file truncated`` notice, bytes stored this recently may be the new file's first ones.
RECENT_S = 2.0
#: The first bytes of a generation, compared with the remote file's (``head -c``): a file truncated and
#: grown back past the stored offset (copytruncate) keeps its inode and is not shorter; its start differs.
HEAD_BYTES = 64
RECENT_BYTES = 64 * 1024
#: A renamed file is switched away from once its tail has been silent this long (GNU tail polls a file at
#: least once a second without inotify) ...
DRAIN_QUIET_S = 2.0
#: ... or, for a writer that never lets go of the old file, after this long (its later bytes are not read).
DRAIN_MAX_S = 60.0


def tail_command(path: str, pos: int) -> str:
    """Follow ``path`` from byte ``pos`` (0-based) of the *open file* (``--follow=descriptor``: a rename
    never makes tail switch files); ``--retry`` waits for a file that does not exist yet."""
    return f"tail -c +{int(pos) + 1} --follow=descriptor --retry {shlex.quote(path)}"


def overlap(recent: bytes, head: bytes) -> int:
    """The longest ``k`` with ``recent[-k:] == head[:k]`` (0 when none): how many of the bytes stored last
    were already the new file's first bytes."""
    for k in range(min(len(recent), len(head)), 0, -1):
        if recent.endswith(head[:k]):
            return k
    return 0


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
    return parse_stat(_capture(client, f"stat -c '%s %i' {shlex.quote(path)}", 256, timeout_s, monotonic))


def remote_head(client: paramiko.SSHClient, path: str, size: int, timeout_s: float,
                monotonic: Callable[[], float]) -> bytes:
    """The first ``size`` bytes of ``path`` (fewer when it is shorter or the read fails)."""
    if size <= 0:
        return b""
    return _capture(client, f"head -c {int(size)} {shlex.quote(path)}", size, timeout_s, monotonic) or b""


@dataclass
class Followed:
    """One streamed file: the stored offset, and the bytes received after it that end in no newline yet."""

    path: str
    offset: int
    base: int = 0  # the stored offset of byte 0 of the current remote file
    inode: str = ""  # of the file tail has open
    head: bytes = b""  # the first stored bytes of this generation (up to HEAD_BYTES): its fingerprint
    pending: bytes = b""
    channel: paramiko.Channel | None = None
    recent: deque[tuple[float, bytes]] = field(default_factory=deque)  # (when, bytes) stored last
    draining_since: float | None = None  # renamed away: tail still reads the old file until it is quiet
    last_data_at: float = 0.0  # when tail last sent bytes (monotonic)

    def drained(self, now: float) -> bool:
        """A renamed file's tail may be closed: silent for ``DRAIN_QUIET_S``, or draining ``DRAIN_MAX_S``."""
        if self.draining_since is None:
            return False
        quiet_since = max(self.draining_since, self.last_data_at)
        return now - quiet_since >= DRAIN_QUIET_S or now - self.draining_since >= DRAIN_MAX_S

    def stored(self, blob: bytes, now: float) -> None:
        """Bookkeeping after ``blob`` was stored: the generation's head, the recent bytes."""
        if len(self.head) < HEAD_BYTES:
            self.head = (self.head + blob)[:HEAD_BYTES]
        self.recent.append((now, blob[-RECENT_BYTES:]))
        while self.recent and (self.recent[0][0] < now - RECENT_S or len(self.recent) > 64):
            self.recent.popleft()


class Tailer:
    """Starts ``tail`` on a :class:`Followed` file of one instance, with the checks of the module doc."""

    def __init__(self, instance_id: str, store: LogStore, fence: int, events: EventSink,
                 check_timeout_s: float, open_timeout_s: float, monotonic: Callable[[], float]) -> None:
        self.iid, self.store, self.fence, self.events = instance_id, store, fence, events
        self.check_timeout_s, self.open_timeout_s, self.monotonic = check_timeout_s, open_timeout_s, monotonic

    def open(self, client: paramiko.SSHClient, f: Followed, notice: str | None = None) -> None:
        """(Re)start ``tail`` on ``f`` at its stored offset, after checking the remote file did not shrink
        or change under it (else a new generation starts)."""
        if f.channel is not None:
            with contextlib.suppress(Exception):
                f.channel.close()
            f.channel = None
        f.pending, f.draining_since = b"", None
        _gen, f.base, known_inode = self.store.generation(self.iid, f.path)
        f.head = self._stored_head(f)
        size, inode = remote_stat(client, f.path, self.check_timeout_s, self.monotonic)
        pos = f.offset - f.base
        why = rotation_reason(size, inode, pos, known_inode) or self._head_changed(client, f)
        if why is None and notice == "truncated" and pos > 0:
            why = "tail: file truncated"
        if why is not None:
            kept = 0
            if notice == "truncated" and size:  # tail restarts at byte 0 itself: some may be stored already
                since = self.monotonic() - RECENT_S
                recent = b"".join(b for t, b in f.recent if t >= since)[-min(pos, RECENT_BYTES):]
                kept = overlap(recent, remote_head(client, f.path, min(len(recent), size),
                                                   self.check_timeout_s, self.monotonic))
            gen = self.store.new_generation(self.iid, f.path, self.fence, f.offset, inode or "",
                                            f.offset - kept)
            log.warning("%s of instance %s was truncated or rotated (%s): generation %d starts at offset %d",
                        f.path, self.iid, why, gen, f.offset - kept)
            self.events.emit("ssh-log-rotated", instance_id=self.iid, file=f.path, generation=gen,
                             offset=f.offset - kept, reason=why)
            f.base, pos = f.offset - kept, kept
            f.recent.clear()
            f.head = self._stored_head(f)
        elif inode and inode != known_inode:
            self.store.set_inode(self.iid, f.path, inode)
        f.inode = inode or known_inode
        f.channel = exec_channel(client, tail_command(f.path, pos), self.open_timeout_s)

    def changed(self, client: paramiko.SSHClient, f: Followed) -> str | None:
        """The periodic check: ``renamed`` when the path now names another file than tail has open (drain
        the old one first), ``changed`` when it is shorter, or its first bytes are not the ones stored
        (truncated, and maybe grown back past the offset): reopen now; None when it is the same file."""
        size, inode = remote_stat(client, f.path, self.check_timeout_s, self.monotonic)
        if f.inode and inode and inode != f.inode:
            return "renamed"
        return "changed" if (rotation_reason(size, inode, f.offset - f.base, f.inode)
                             or self._head_changed(client, f)) is not None else None

    def _stored_head(self, f: Followed) -> bytes:
        """The first stored bytes of the current generation (what its file must still start with)."""
        lines = self.store.read(self.iid, f.path, f.base, 8) if f.offset > f.base else []
        return b"".join(ln.data for ln in lines if ln.offset >= f.base)[:HEAD_BYTES]

    def _head_changed(self, client: paramiko.SSHClient, f: Followed) -> str | None:
        if not f.head:
            return None
        now = remote_head(client, f.path, len(f.head), self.check_timeout_s, self.monotonic)
        return "its first bytes changed" if now and now != f.head else None
