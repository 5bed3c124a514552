"""Collected log lines in Redis: one bounded stream per instance and file, written atomically and fenced.

Each write is one stream entry holding a burst of complete lines: its id is ``<byte offset of its first
line>-1``, field ``t`` the raw bytes (newlines included) and ``n`` the line lengths, so every line keeps its
byte offset, a reader can start at any offset (the entry at or before it, then the ones after), and a line
can never be stored twice (stream ids only grow). One entry per burst instead of one per line is what lets
a fast log be stored at network speed (bench/bench_ssh.py). Because ids are byte offsets, the stream is
bounded by *bytes of log kept* (``XADD MINID ~ <end - SSH_LOG_KEEP_BYTES>``), not by a line count.

The offset to resume from lives in the collector hash (``offset:<file>``) and moves in the same Lua call
(``logstore_append.lua``) that appends the entry, and that call first checks the collector lease's fence: a
collector that lost its lease (paused, partitioned, replaced) cannot write a line, and a new collector
resumes exactly where the last write ended. Binary-safe: bytes are never decoded on the way in; readers
decode with ``errors="replace"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vastkeep.core.errors import StaleFence, WriteConflict
from vastkeep.ssh.drops import Redis
from vastkeep.state import Keys

_LUA = (Path(__file__).parent / "logstore_append.lua").read_text(encoding="utf-8")
# A new generation of a file (it was truncated or rotated): fenced, and only from the offset the caller saw.
# KEYS[1] lease  KEYS[2] collector hash  ARGV fence, file, offset, inode, base (≤ offset)
# → {1, generation} | {-1} | {-2, stored}
_NEW_GENERATION = """
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then return {-1, ''} end
local stored = redis.call('HGET', KEYS[2], 'offset:' .. ARGV[2]) or '0'
if stored ~= ARGV[3] then return {-2, stored} end
local gen = redis.call('HINCRBY', KEYS[2], 'gen:' .. ARGV[2], 1)
redis.call('HSET', KEYS[2], 'base:' .. ARGV[2], ARGV[5], 'inode:' .. ARGV[2], ARGV[4])
return {1, gen}
"""
MAX_READ_LINES = 10_000
#: Files whose name starts with this are not remote files but the provider's log API (``source`` below).
PROVIDER_PREFIX = "provider:"
PROVIDER_SOURCE = "provider-api"
DEFAULT_KEEP_BYTES = 4 * 1024 * 1024


def lease_name(instance_id: str | int) -> str:
    """The fenced lease that makes a collector the only writer of an instance's logs."""
    return f"ssh-collector:{instance_id}"


@dataclass(frozen=True)
class LogLine:
    """One stored line: the byte offset it started at in ``file``, and its bytes."""

    file: str
    offset: int
    data: bytes
    source: str = "ssh"

    @property
    def end(self) -> int:
        return self.offset + len(self.data)

    def to_dict(self) -> dict[str, object]:
        text = self.data.decode("utf-8", "replace")
        return {"offset": self.offset, "file": self.file, "text": text[:-1] if text.endswith("\n") else text,
                "source": self.source}


def source_of(file: str) -> str:
    """``provider-api`` for a provider log stream (``provider:...``), ``ssh`` for a remote file."""
    return PROVIDER_SOURCE if file.startswith(PROVIDER_PREFIX) else "ssh"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry_lines(file: str, eid: bytes | str, fields: Mapping[bytes | str, bytes | str]) -> list[LogLine]:
    """The lines of one stream entry, each with its byte offset."""
    off = int(_text(eid).split("-", 1)[0])
    raw = fields.get(b"t", fields.get("t", b""))
    data = raw if isinstance(raw, bytes) else str(raw).encode()
    sizes = _text(fields.get(b"n", fields.get("n", b"")))
    lengths = ([int(s) for s in sizes.split(",") if s] if sizes
               else [len(p) + 1 for p in data.split(b"\n")[:-1]])
    out: list[LogLine] = []
    pos, source = 0, source_of(file)
    for n in lengths:
        out.append(LogLine(file, off + pos, data[pos:pos + n], source))
        pos += n
    return out


class LogStore:
    """Append (fenced) and read collected lines. Works with clients with or without ``decode_responses``
    for writes; reads need raw bytes, so give it a client made with ``decode_responses=False``."""

    def __init__(self, redis_client: Redis, keys: Keys, keep_bytes: int = DEFAULT_KEEP_BYTES) -> None:
        self.redis = redis_client
        self.keys = keys
        self.keep_bytes = int(keep_bytes)
        self._append = redis_client.register_script(_LUA)
        self._new_generation = redis_client.register_script(_NEW_GENERATION)

    def offset(self, instance_id: str | int, file: str) -> int:
        """Where the next line of ``file`` starts: the end of the last stored complete line (0 at first)."""
        value = self.redis.hget(self.keys.collector(instance_id), f"offset:{file}")
        return int(_text(value)) if value is not None else 0

    def generation(self, instance_id: str | int, file: str) -> tuple[int, int, str]:
        """``(generation, base, inode)`` of ``file``: the stored offset of byte 0 of the current remote file
        is ``base`` (0 until the file was first truncated or rotated); ``inode`` as last seen ('' unknown)."""
        gen, base, inode = self.redis.hmget(self.keys.collector(instance_id), f"gen:{file}", f"base:{file}",
                                            f"inode:{file}")
        return (int(_text(gen)) if gen is not None else 0, int(_text(base)) if base is not None else 0,
                _text(inode) if inode is not None else "")

    def set_inode(self, instance_id: str | int, file: str, inode: str) -> None:
        """Remember the remote file's inode (a later different one means it was replaced)."""
        self.redis.hset(self.keys.collector(instance_id), f"inode:{file}", inode)

    def new_generation(self, instance_id: str | int, file: str, fence: int, offset: int, inode: str,
                       base: int | None = None) -> int:
        """Start a new generation of ``file`` while the stored offset is ``offset`` (the end of what was
        stored): the new file's byte 0 is stored at ``base`` (``offset`` unless some of the new file was
        already stored after the old one), so offsets stay unique and only grow. Fenced like
        :meth:`append`; returns the new generation number."""
        base = int(offset) if base is None else min(int(base), int(offset))
        code, value = self._new_generation(
            keys=[self.keys.lease(lease_name(instance_id)), self.keys.collector(instance_id)],
            args=[int(fence), file, int(offset), inode, base])
        if int(code) == -1:
            raise StaleFence(f"collector of instance {instance_id} holds a stale fence {fence}",
                             instance_id=str(instance_id), fence=int(fence))
        if int(code) == -2:
            raise WriteConflict(f"stored offset of {file} moved", instance_id=str(instance_id),
                                stored_offset=int(_text(value)))
        return int(_text(value))

    def append(self, instance_id: str | int, file: str, fence: int, expected_offset: int,
               lines: list[tuple[int, bytes]]) -> int:
        """Store ``lines`` (consecutive, starting at ``expected_offset``) and move the offset past them.

        ``StaleFence`` when the collector lease has a newer (or no) grant than ``fence``; ``WriteConflict``
        (with ``stored_offset``) when the stored offset is not ``expected_offset``. Returns the new offset.
        """
        if not lines:
            return expected_offset
        blob = b"".join(data for _off, data in lines)
        if lines[0][0] != expected_offset or lines[-1][0] + len(lines[-1][1]) != expected_offset + len(blob):
            raise ValueError("lines must be consecutive and start at expected_offset")
        return self.append_blob(instance_id, file, fence, expected_offset, blob,
                                [len(data) for _off, data in lines])

    def append_blob(self, instance_id: str | int, file: str, fence: int, expected_offset: int, blob: bytes,
                    lengths: list[int] | None = None) -> int:
        """:meth:`append` for lines already laid end to end; ``lengths`` None means "split on newlines"
        (every line of ``blob`` ends with one). Same errors, same result."""
        if not blob:
            return expected_offset
        sizes = ",".join(map(str, lengths)) if lengths is not None else ""
        args: list[int | str | bytes] = [int(fence), file, int(expected_offset), expected_offset + len(blob),
                                         self.keep_bytes, blob, sizes]
        code, value = self._append(
            keys=[self.keys.lease(lease_name(instance_id)), self.keys.collector(instance_id),
                  self.keys.ssh_log(instance_id, file)], args=args)
        code = int(code)
        if code == -1:
            raise StaleFence(f"collector of instance {instance_id} holds a stale fence {fence}",
                             instance_id=str(instance_id), fence=int(fence))
        if code == -2:
            raise WriteConflict(f"stored offset of {file} moved", instance_id=str(instance_id),
                                stored_offset=int(_text(value)))
        return int(_text(value))

    def read(self, instance_id: str | int, file: str, after: int = 0, limit: int = 1000) -> list[LogLine]:
        """Up to ``limit`` lines of ``file`` starting at byte offset ``after`` or later, oldest first."""
        limit = max(1, min(int(limit), MAX_READ_LINES))
        after = max(0, int(after))
        key = self.keys.ssh_log(instance_id, file)
        entries = list(self.redis.xrevrange(key, max=f"{after}-1", min="-", count=1))  # may hold `after`
        entries += self.redis.xrange(key, min=f"({after}-1", max="+", count=limit)  # one line or more each
        out: list[LogLine] = []
        for eid, fields in entries:
            for line in _entry_lines(file, eid, fields):
                if line.offset >= after:
                    out.append(line)
                    if len(out) >= limit:
                        return out
        return out

    def tail_lines(self, instance_id: str | int, file: str, count: int) -> list[bytes]:
        """The last ``count`` stored lines of ``file`` (oldest first), newline included."""
        key = self.keys.ssh_log(instance_id, file)
        out: list[bytes] = []
        top = "+"
        while len(out) < count:
            entries = self.redis.xrevrange(key, max=top, min="-", count=16)
            if not entries:
                break
            for eid, fields in entries:
                out[:0] = [ln.data for ln in _entry_lines(file, eid, fields)]
                top = f"({_text(eid)}"
        return out[-count:] if count > 0 else []

    def read_all_bytes(self, instance_id: str | int, file: str) -> bytes:
        """Every stored line of ``file`` laid end to end (tests compare it with the remote file)."""
        chunks: list[bytes] = []
        after = 0
        while True:
            batch = self.read(instance_id, file, after, MAX_READ_LINES)
            if not batch:
                return b"".join(chunks)
            chunks.extend(line.data for line in batch)
            after = batch[-1].end

    def files(self, instance_id: str | int) -> list[str]:
        """The files of an instance that have a stored offset."""
        fields = self.redis.hkeys(self.keys.collector(instance_id))
        return sorted(_text(f)[len("offset:"):] for f in fields if _text(f).startswith("offset:"))
