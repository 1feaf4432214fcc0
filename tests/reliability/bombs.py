"""Decompression bombs: small files that claim or inflate to far more pixels or bytes than allowed."""

from __future__ import annotations

import zlib

from benchmarks.harness.client import Call, image_call
from tests.reliability.corpus import chunk, jpeg_claiming, png, png_header_only, png_text_bomb


def png_pixel_bomb(side: int = 12_000) -> bytes:
    """A real, complete PNG of side x side black pixels (144 Mpx for 12000): about 140 KB on the wire."""
    import struct

    row = b"\0" * (side + 1)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def png_icc_bomb() -> bytes:
    """A small valid PNG whose iCCP profile inflates to 64 MiB."""
    body = png()
    icc = chunk(b"iCCP", b"icc\0\0" + zlib.compress(b"\0" * (64 << 20), 9))
    return body[:33] + icc + body[33:]


def bombs() -> list[Call]:
    images = [
        png_header_only(65535, 65535),
        jpeg_claiming(65500, 65500),
        png_pixel_bomb(),
        png_text_bomb(),
        png_icc_bomb(),
    ]
    return [image_call(data) for data in images]


def json_number_flood(body_bytes: int, size: int) -> Call:
    """An OIP request for one image whose FP32 data runs to `body_bytes` of numbers: parsed into Python
    floats, each 4 bytes of text would take 24+ bytes of memory (and a pointer)."""
    head = f'{{"inputs":[{{"name":"image","shape":[1,1,{size},{size}],"datatype":"FP32","data":['
    count = (body_bytes - len(head) - 8) // 4
    body = (head + "0.1," * (count - 1) + "0.1]}]}").encode()
    return Call("POST", "/v2/models/chest-cancer-net/infer", body, (("Content-Type", "application/json"),))
