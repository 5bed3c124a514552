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
    lines: list[tuple[int, bytes]] = []
    start = 0
    size = len(pending)
    while start < size:
        end = pending.find(b"\n", start, start + max_line)
        if end < 0:
            if size - start >= max_line:  # a runaway line: store a full piece, keep going
                end = start + max_line - 1
            else:
                break
        lines.append((base_offset + start, pending[start:end + 1]))
        start = end + 1
    return lines, pending[start:], base_offset + start
