#!/usr/bin/env python3
"""Writes the page's example images: the first N Fashion-MNIST test images as grey
PNG files www/examples/test-0000.png, ... and their list, www/examples/examples.json.
Image i is test image i, so `pixelrnn eval --limit 1` scores the first one.

    python3 scripts/web_examples.py [N]
"""
import gzip
import json
import struct
import sys
import zlib
from pathlib import Path

SOURCE = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"


def png(rows, width, height):
    """An 8-bit greyscale PNG of `rows` (bytes, row-major)."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\0" + rows[y * width : (y + 1) * width] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    data = gzip.open(SOURCE).read()
    _, n, h, w = struct.unpack(">IIII", data[:16])
    out = Path(__file__).resolve().parent.parent / "www" / "examples"
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(min(count, n)):
        name = f"test-{i:04d}.png"
        pixels = data[16 + i * h * w : 16 + (i + 1) * h * w]
        (out / name).write_bytes(png(pixels, w, h))
        names.append(name)
    (out / "examples.json").write_text(json.dumps(names, indent=1) + "\n")
    print(f"{len(names)} examples written to {out}")


if __name__ == "__main__":
    main()
