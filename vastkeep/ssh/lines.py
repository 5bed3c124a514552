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
