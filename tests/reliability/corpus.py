"""The bad-input corpus: hostile, broken and odd uploads, each with the status it must get.

Built in memory from Pillow and hand-made bytes (no fixture files). `raw` cases go over a socket as
written, for what a client library would refuse to send (chunked bodies, broken boundaries).
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from benchmarks.harness.client import Call

MODEL = "chest-cancer-net"
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Case:
    name: str
    expect: int
    call: Call | None = None
    raw: bytes | None = None  # sent as is instead of `call`
    json_error: bool = True  # the answer is our JSON error body (not uvicorn's own plain text)
    size: tuple[int, int] | None = None  # for orientation cases: the upright size /v1/explain reports


# --- encoders ------------------------------------------------------------------------------------


def noise(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width), np.uint8)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def png(width: int = 96, height: int = 80, seed: int = 0) -> bytes:
    return encode(Image.fromarray(noise(width, height, seed)), "PNG")


def jpeg(width: int = 96, height: int = 80, seed: int = 0) -> bytes:
    return encode(Image.fromarray(noise(width, height, seed)).convert("RGB"), "JPEG", quality=90)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and an IHDR claiming a size, with a few bytes of pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose SOF0 header is rewritten to claim another size."""
    data = bytearray(jpeg(64, 64))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_text_bomb() -> bytes:
    """A small valid PNG carrying a zTXt chunk that inflates to 64 MiB."""
    body = png()
    ztxt = chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * (64 << 20), 9))
    return body[:33] + ztxt + body[33:]


def png_bad_crc() -> bytes:
    data = bytearray(png())
    data[29] ^= 0xFF  # IHDR's CRC
    return bytes(data)


def png_bad_zlib() -> bytes:
    body = png()
    ihdr_end = 8 + 25
    pixels = zlib.compress(bytes(noise(96, 80).tobytes()))
    broken = bytearray(pixels)
    broken[len(broken) // 2 : len(broken) // 2 + 16] = b"\xff" * 16
    ihdr = body[8:ihdr_end]
    return b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", bytes(broken)) + chunk(b"IEND", b"")


def animated(fmt: str) -> bytes:
    frames = [Image.fromarray(noise(64, 64, s)) for s in range(3)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:])


def with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[_EXIF_ORIENTATION] = orientation
    return encode(Image.fromarray(noise(120, 60)).convert("RGB"), "JPEG", exif=exif.tobytes())


def malformed_exif() -> bytes:
    """A JPEG whose APP1 EXIF segment is garbage after its 'Exif' marker."""
    body = jpeg()
    app1 = b"Exif\0\0" + b"MM\0*\0\0\0\x08\xff\xff" + b"\x13" * 40
    return body[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + body[2:]


def png_zip_polyglot() -> bytes:
    """A valid PNG with a ZIP archive appended (readers of either format accept it)."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../../evil.sh", "echo owned")
    return png() + archive.getvalue()


def zip_png_polyglot() -> bytes:
    """A ZIP archive whose first member is a PNG: it starts with 'PK', not the PNG signature."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("scan.png", png())
    return archive.getvalue()


def multipart(parts: list[tuple[str, str, bytes]], boundary: str = "reliability-boundary") -> tuple[bytes, str]:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: image/png\r\n\r\n".encode()
        out += data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def form_call(path: str, parts: list[tuple[str, str, bytes]]) -> Call:
    body, content_type = multipart(parts)
    return Call("POST", path, body, (("Content-Type", content_type),))


def raw_call(data: bytes, path: str = "/v1/predict", content_type: str = "image/png", *extra: tuple[str, str]) -> Call:
    return Call("POST", path, data, (("Content-Type", content_type), *extra))


def oip_call(payload: object, path: str = f"/v2/models/{MODEL}/infer") -> Call:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Call("POST", path, body, (("Content-Type", "application/json"),))


def chunked(path: str, total: int, piece: int = 64 * 1024) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    data = b"\x89PNG\r\n\x1a\n" + b"\0" * (total - 8)
    body = b"".join(
        b"%x\r\n" % len(data[i : i + piece]) + data[i : i + piece] + b"\r\n" for i in range(0, len(data), piece)
    )
    return head.encode() + body + b"0\r\n\r\n"


def other_format(fmt: str) -> bytes:
    if fmt == "PDF":
        return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    if fmt == "PSD":  # Pillow reads PSD but cannot write it: a minimal 8BPS header
        return b"8BPS\0\x01" + b"\0" * 6 + struct.pack(">HIIHH", 1, 64, 64, 8, 1) + b"\0" * 64
    image = Image.fromarray(noise(64, 64)).convert("RGB")
    return encode(image, fmt)


# --- the corpus ----------------------------------------------------------------------------------


def cases(max_body_bytes: int, max_pixels: int, max_batch_files: int) -> list[Case]:
    """Every case, for a server with these limits (the defaults unless a test changes them)."""
    side = int(max_pixels**0.5)
    over_body = b"\x89PNG\r\n\x1a\n" + b"\0" * max_body_bytes
    out = [
        Case("empty body", 422, raw_call(b"")),
        Case("multipart without the file field", 400, form_call("/v1/predict", [("other", "a.png", png())])),
        Case("body over the limit (Content-Length)", 413, raw_call(over_body)),
        Case("body over the limit (chunked, no Content-Length)", 413, raw=chunked("/v1/predict", len(over_body))),
        Case(
            "too many images in a batch",
            413,
            form_call("/v1/predict/batch", [("files", f"{i}.png", png()) for i in range(max_batch_files + 1)]),
        ),
        Case("two images to /v1/predict", 413, form_call("/v1/predict", [("file", "a.png", png())] * 2)),
        Case(
            "too many multipart parts",
            413,
            form_call("/v1/predict", [("file", "a.png", png())] + [(f"x{i}", "", b"1") for i in range(40)]),
        ),
        Case(
            "multipart without a boundary",
            400,
            Call("POST", "/v1/predict", b"--x\r\n", (("Content-Type", "multipart/form-data"),)),
        ),
        Case(
            "multipart with a malformed boundary",
            400,
            Call(
                "POST",
                "/v1/predict",
                b"--other\r\nContent-Disposition: form-data\r\n\r\nxx",
                (("Content-Type", "multipart/form-data; boundary=expected"),),
            ),
        ),
        Case("HTML named .png", 415, form_call("/v1/predict", [("file", "scan.png", b"<html><script>x</script>")])),
        Case("plain text as image/png", 415, raw_call(b"hello, I am a PNG")),
        *(
            Case(f"{fmt} (outside the allowlist)", 415, raw_call(other_format(fmt)))
            for fmt in ("GIF", "TIFF", "PSD", "PDF", "BMP", "WEBP")
        ),
        Case("PNG header claiming 65535x65535", 422, raw_call(png_header_only(65535, 65535))),
        Case("JPEG header claiming 65500x65500", 422, raw_call(jpeg_claiming(65500, 65500), content_type="image/jpeg")),
        Case("PNG just over the pixel limit", 422, raw_call(encode(Image.new("L", (side + 1, side), 90), "PNG"))),
        Case("1xN strip", 422, raw_call(encode(Image.new("L", (1, 512), 90), "PNG"))),
        Case("zero width", 422, raw_call(png_header_only(0, 64))),
        Case("truncated PNG", 422, raw_call(png(256, 256)[:3000])),
        Case("truncated JPEG", 422, raw_call(jpeg(256, 256)[:3000], content_type="image/jpeg")),
        Case("PNG with a bad CRC", 422, raw_call(png_bad_crc())),
        Case("PNG with corrupt zlib data", 422, raw_call(png_bad_zlib())),
        Case("PNG with a zTXt text bomb", 422, raw_call(png_text_bomb())),
        Case("animated PNG", 422, raw_call(animated("PNG"))),
        Case("animated GIF", 415, raw_call(animated("GIF"))),
        Case("multi-page TIFF", 415, raw_call(animated("TIFF"))),
        Case("16-bit grey PNG", 200, raw_call(encode(Image.fromarray(noise(96, 80).astype(np.uint16) * 257), "PNG"))),
        Case("CMYK JPEG", 200, raw_call(encode(Image.new("CMYK", (96, 80), (0, 0, 0, 90)), "JPEG"))),
        Case(
            "palette PNG with transparency",
            200,
            raw_call(encode(Image.fromarray(noise(96, 80)).convert("P"), "PNG", transparency=0)),
        ),
        *(
            Case(
                f"EXIF orientation {o}",
                200,
                raw_call(with_orientation(o), "/v1/explain", "image/jpeg", ("Accept", "application/json")),
                size=(60, 120) if o >= 5 else (120, 60),
            )
            for o in range(1, 9)
        ),
        Case("malformed EXIF", 200, raw_call(malformed_exif(), content_type="image/jpeg")),
        Case("PNG/ZIP polyglot (PNG first)", 200, raw_call(png_zip_polyglot())),
        Case("ZIP/PNG polyglot (ZIP first)", 415, raw_call(zip_png_polyglot())),
        Case(
            "batch with one bad image",
            200,
            form_call("/v1/predict/batch", [("files", "a.png", png()), ("files", "b.png", b"GIF89a")]),
        ),
        Case("explain with an unknown target", 400, raw_call(png(), "/v1/explain?target=../../etc")),
        Case("OIP: not JSON", 400, oip_call(b"{not json")),
        Case(
            "OIP: invalid base64",
            400,
            oip_call({"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": ["@@@"]}]}),
        ),
        Case(
            "OIP: base64 of a GIF",
            415,
            oip_call(
                {
                    "inputs": [
                        {
                            "name": "image_bytes",
                            "shape": [1],
                            "datatype": "BYTES",
                            "data": [base64.b64encode(animated("GIF")).decode()],
                        }
                    ]
                }
            ),
        ),
        Case(
            "OIP: FP32 of the wrong shape",
            400,
            oip_call({"inputs": [{"name": "image", "shape": [1, 1, 2, 2], "datatype": "FP32", "data": [0, 0, 0, 0]}]}),
        ),
        Case("OIP: unknown model", 404, oip_call({"inputs": []}, "/v2/models/..%2F..%2Fetc/infer")),
        Case("unknown route", 404, Call("GET", "/v1/../../etc/passwd")),
        Case("wrong method", 405, Call("DELETE", "/v1/predict")),
        # Under uvicorn's 16 KiB head limit: an unknown route. (A longer head is cut off when it arrives
        # in pieces, 400 or a reset depending on timing: tests/service/test_server.py covers that.)
        Case("12 KB URL", 404, raw=b"GET /" + b"a" * 12_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        Case("malformed request line", 400, raw=b"BLAH\x00\x01 / HTTP/9.9\r\n\r\n", json_error=False),
    ]
    return out
