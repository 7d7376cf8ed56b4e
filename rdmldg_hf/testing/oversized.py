"""Oversized images for tests: a valid PNG of many pixels in a few kilobytes, written without decoding.

A 20,000 x 20,000 1-bit black PNG is ~50 KB on disk and would take 400 MB (or more) to decode:
the decompression-bomb case real image folders can hold.
"""

from __future__ import annotations

import struct
import zlib

__all__ = ["oversized_png"]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def oversized_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A black 1-bit greyscale PNG of ``width`` x ``height`` pixels, compressed row by row."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")
