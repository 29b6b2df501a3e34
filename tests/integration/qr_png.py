"""Reading back the modules of a QR code that a PNG shows, without a QR decoder:
enough to check that a PNG holds exactly the symbol segno makes for a text."""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_pixels(data: bytes) -> list[list[bool]]:
    """The pixels of a 1-bit grayscale PNG (as segno writes them), True for dark."""
    assert data.startswith(SIGNATURE), "not a PNG"
    position, compressed = len(SIGNATURE), b""
    width = height = 0
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, colour, interlace) == (1, 0, 0), "expected 1-bit grayscale"
        elif kind == b"IDAT":
            compressed += body
        position += 12 + length
    raw = zlib.decompress(compressed)
    stride = (width + 7) // 8
    rows: list[list[bool]] = []
    previous = bytearray(stride)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        current = _unfilter(line[0], bytearray(line[1:]), previous)
        rows.append([not (current[x // 8] >> (7 - x % 8)) & 1 for x in range(width)])
        previous = current
    return rows


def _unfilter(kind: int, line: bytearray, previous: bytearray) -> bytearray:
    for i in range(len(line)):
        left = line[i - 1] if i else 0
        up = previous[i]
        corner = previous[i - 1] if i else 0
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + up) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 0xFF
        elif kind == 4:
            estimate = left + up - corner
            nearest = min(
                (abs(estimate - left), left),
                (abs(estimate - up), up),
                (abs(estimate - corner), corner),
                key=lambda pair: pair[0],
            )[1]
            line[i] = (line[i] + nearest) & 0xFF
    return line


def qr_modules(data: bytes) -> list[list[bool]]:
    """The QR code's modules in a PNG: its scale and quiet zone are read from the
    top-left finder pattern (7 dark modules wide), and each module from its centre."""
    pixels = png_pixels(data)
    top = next(y for y, row in enumerate(pixels) if any(row))
    left = pixels[top].index(True)
    run = next((x for x in range(left, len(pixels[top])) if not pixels[top][x]), len(pixels[top]))
    scale = (run - left) // 7
    size = (len(pixels[top]) - 2 * left) // scale
    return [
        [pixels[top + r * scale + scale // 2][left + c * scale + scale // 2] for c in range(size)]
        for r in range(size)
    ]
