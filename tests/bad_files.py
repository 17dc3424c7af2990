"""Files an attacker (or an accident) may hand kdcli, shared by the tests that feed them to it.

Imported as `from bad_files import ...` (a module name no other test folder uses).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from PIL import Image


def bomb_png(side: int = 14_000) -> bytes:
    """A decompression bomb: a complete black 1-bit PNG of side x side pixels (196 million by
    default, over twice Pillow's limit) in about 25 KB; decoded to RGB it would take 590 MB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    rows = bytes((1 + -(-side // 8)) * side)  # each row: filter byte 0, then side bits of 0
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    png = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + png


def write_small_imagefolder(root: Path, classes: tuple[str, ...] = ("a", "b")) -> list[Path]:
    """Two 8 x 8 grayscale PNGs in each class folder; their paths."""
    paths = []
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            paths.append(root / name / f"{i}.png")
            Image.new("L", (8, 8), 40 + 100 * i).save(paths[-1])
    return paths
