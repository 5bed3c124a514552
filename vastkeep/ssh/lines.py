"""Cutting a byte stream into lines that remember their byte offset (pure).

A line is stored with the offset of its first byte in the remote file, newline included, so the stored
lines laid end to end are the file byte for byte, and the next offset to read is always "end of the last
complete line". A trailing partial line is held back (and re-read after a reconnect) until its newline
arrives; a line longer than ``max_line`` is cut into pieces so one runaway line cannot exhaust memory.
"""

from __future__ import annotations

MAX_LINE_BYTES = 64 * 1024


def split_lines(pending: bytes, base_offset: int,
                max_line: int = MAX_LINE_BYTES) -> tuple[list[tuple[int, bytes]], bytes, int]:
    """``pending`` starts at byte ``base_offset``: return (complete lines as (offset, bytes)), the
    incomplete rest, and the offset where that rest starts."""
    pieces = pending.split(b"\n")  # C speed; the last piece is the incomplete rest (maybe empty)
    rest = pieces.pop()
    lines: list[tuple[int, bytes]] = []
    offset = base_offset
    for piece in pieces:
        if len(piece) >= max_line:
            for off, part in _cut(piece + b"\n", offset, max_line):
                lines.append((off, part))
        else:
            lines.append((offset, piece + b"\n"))
        offset += len(piece) + 1
    while len(rest) >= max_line:  # a runaway line without its newline yet: store full pieces now
        lines.append((offset, rest[:max_line]))
        offset += max_line
        rest = rest[max_line:]
    return lines, rest, offset


def complete_part(pending: bytes, base_offset: int,
                  max_line: int = MAX_LINE_BYTES) -> tuple[bytes, list[int] | None, bytes, int]:
    """The fast path of :func:`split_lines`: (complete lines as one blob, their lengths or None, rest, rest
    offset). Lengths are None when every line in the blob ends with its newline and none is longer than
    ``max_line`` (the reader splits on ``\\n``); only a runaway line costs a per-line pass."""
    end = pending.rfind(b"\n") + 1
    rest = pending[end:]
    short = end == 0 or len(pending) < max_line or _short_lines(pending[:end], max_line)
    if len(rest) < max_line and short:
        return pending[:end], None, rest, base_offset + end
    lines, rest, rest_at = split_lines(pending, base_offset, max_line)
    return b"".join(b for _o, b in lines), [len(b) for _o, b in lines], rest, rest_at


def _short_lines(blob: bytes, max_line: int) -> bool:
    """True when no line of ``blob`` (which ends in a newline) reaches ``max_line`` bytes."""
    return max(map(len, blob.split(b"\n"))) < max_line


def _cut(line: bytes, offset: int, max_line: int) -> list[tuple[int, bytes]]:
    return [(offset + i, line[i:i + max_line]) for i in range(0, len(line), max_line)]


def snapshot_news(stored_tail: list[bytes], snapshot: bytes) -> tuple[list[bytes], bool]:
    """The lines of a provider log snapshot that are not stored yet (pure).

    The provider's log API answers the *last N lines* of the container log, not a byte range, so there is
    no offset to resume from. ``stored_tail`` is the last lines already stored from earlier snapshots
    (newline included), ``snapshot`` the new answer. The longest suffix of ``stored_tail`` that is a
    prefix of the snapshot is what both saw; the lines after it are new. A trailing line without its
    newline is held back (it may still grow), as for SSH. Returns ``(new lines, gap)``: ``gap`` is True
    when stored lines exist but none overlaps the snapshot (more than N lines came and went between two
    polls, or the log was rewritten): then the whole snapshot is new and lines before it may be missing.
    A run of identical lines is ambiguous (the longest overlap wins, so a repeat may be taken for one
    already stored): the price of a source that has no offsets.
    """
    end = snapshot.rfind(b"\n") + 1
    lines = [piece + b"\n" for piece in snapshot[:end].split(b"\n")[:-1]] if end else []
    if not stored_tail or not lines:
        return lines, False
    first = lines[0]
    for k in range(min(len(stored_tail), len(lines)), 0, -1):
        if stored_tail[-k] == first and stored_tail[-k:] == lines[:k]:
            return lines[k:], False
    return lines, True
