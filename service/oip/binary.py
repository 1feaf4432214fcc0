"""The OIP binary tensor data extension (Triton's `binary_tensor_data`, what tritonclient sends by default).

A request or response body is a JSON header followed by raw tensor bytes; the header's length is the
`Inference-Header-Content-Length` HTTP header. In the JSON header a binary tensor has no `data` and a
`binary_data_size` parameter; the binary parts follow in the order of the tensors that have one.
Raw layouts: FP32 little-endian float32, BOOL one byte each, BYTES each element a 4-byte little-endian
length then its bytes.
"""

from __future__ import annotations

import struct

import numpy as np

from service.errors import BadRequest

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSION = "binary_tensor_data"
MEDIA_TYPE = "application/octet-stream"
_LENGTH = struct.Struct("<I")


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """(JSON header, binary rest). Without the HTTP header the whole body is JSON."""
    if header_length is None:
        return body, memoryview(b"")
    try:
        length = int(header_length)
    except ValueError:
        raise BadRequest(f"{HEADER_LENGTH} must be a whole number of bytes") from None
    if not 0 < length <= len(body):
        raise BadRequest(f"{HEADER_LENGTH} {length} does not fit a body of {len(body)} bytes")
    view = memoryview(body)
    return bytes(view[:length]), view[length:]


def take_parts(binary: memoryview, sizes: list[int | None]) -> list[memoryview | None]:
    """Cut the binary rest into one part per tensor that declared a `binary_data_size` (None: JSON data);
    the sizes must account for every byte."""
    parts: list[memoryview | None] = []
    offset = 0
    for size in sizes:
        if size is None:
            parts.append(None)
            continue
        if size < 0 or offset + size > len(binary):
            raise BadRequest(f"binary_data_size {size} runs past the end of the binary data")
        parts.append(binary[offset : offset + size])
        offset += size
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data belong to no input")
    return parts


def fp32_array(part: memoryview, count: int, shape: list[int]) -> np.ndarray:
    if len(part) != 4 * count:
        raise BadRequest(f"the FP32 binary data has {len(part)} bytes; shape {shape} needs {4 * count}")
    return np.frombuffer(part, dtype="<f4").astype(np.float32)


def bytes_elements(part: memoryview, count: int) -> list[bytes]:
    """`count` length-prefixed elements that fill `part` exactly."""
    out, offset = [], 0
    while offset < len(part):
        if len(out) == count or offset + _LENGTH.size > len(part):
            raise BadRequest(f"the BYTES binary data does not hold exactly {count} length-prefixed elements")
        (size,) = _LENGTH.unpack_from(part, offset)
        offset += _LENGTH.size
        if offset + size > len(part):
            raise BadRequest("a BYTES element's length runs past the end of its binary data")
        out.append(bytes(part[offset : offset + size]))
        offset += size
    if len(out) != count:
        raise BadRequest(f"the BYTES binary data holds {len(out)} elements; the shape says {count}")
    return out


def encode_bytes(elements: list[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(e)) + e for e in elements)


def encode_array(array: np.ndarray, datatype: str) -> bytes:
    """An output's raw layout: BYTES elements are str, encoded as UTF-8."""
    if datatype == "BYTES":
        return encode_bytes([str(s).encode() for s in array.reshape(-1)])
    if datatype == "BOOL":
        return np.ascontiguousarray(array, dtype=np.bool_).tobytes()
    return np.ascontiguousarray(array, dtype="<f4").tobytes()
