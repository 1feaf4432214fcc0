"""Decompression bombs: small files that claim or inflate to far more pixels or bytes than allowed."""

from __future__ import annotations

import zlib

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


def bombs() -> list[bytes]:
    return [
        png_header_only(65535, 65535),
        jpeg_claiming(65500, 65500),
        png_pixel_bomb(),
        png_text_bomb(),
        png_icc_bomb(),
    ]
