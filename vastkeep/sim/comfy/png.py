"""Real PNG files from the standard library alone (zlib + struct): the simulated ComfyUI's outputs and
previews. The pictures are flat colours or a simple gradient: what matters to a client is a valid PNG of the
size the graph asked for, not its pixels.
"""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def encode_rgb(width: int, height: int, rows: list[bytes] | None = None, color: int = 0) -> bytes:
    """An 8-bit RGB PNG: ``rows`` (``height`` rows of ``3 * width`` bytes) or one ``color`` (0xRRGGBB)."""
    if width < 1 or height < 1:
        raise ValueError("a PNG needs at least one pixel")
    if rows is None:
        row = bytes(((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)) * width
        raw = (b"\x00" + row) * height  # filter type 0 (None) before every row
    else:
        raw = b"".join(b"\x00" + r for r in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")


def gradient(width: int, height: int, seed: int = 0) -> bytes:
    """A PNG whose colour runs across the picture, shifted by ``seed`` (a "sampled" image)."""
    base = seed & 0xFF
    row = bytes(v for x in range(width) for v in ((x * 255 // max(width - 1, 1) + base) & 0xFF, base, 128))
    rows = [row[: 3 * width] for _ in range(height)]
    return encode_rgb(width, height, rows)


def size_of(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, or ``None`` when the bytes are not one (what opening an upload finds out)."""
    if len(data) < 24 or not data.startswith(SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return (width, height) if width and height else None
