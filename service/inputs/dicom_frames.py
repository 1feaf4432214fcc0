"""Decompression-bomb guards for DICOM: compressed data must not decode to more than its header declares.

A JPEG 2000 codestream of a few kilobytes can declare a 30000x30000 image, RLE expands up to 64 times,
and a deflated dataset up to about 1000 times; the decoders (and pydicom's inflate) would allocate all of
it before comparing with Rows x Columns. Each guard reads only headers or counts, never decodes.
"""

from __future__ import annotations

import io
import zlib

from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLELossless,
)

from service.errors import BadRequest, InvalidImage, UnsupportedMediaType
from service.inputs.limits import DecodeLimits

_NON_PIXEL_BYTES = 1 << 20  # room for the elements beside the pixels in an inflated dataset
# JPEG start-of-frame markers (baseline, extended, progressive, lossless, arithmetic) and JPEG-LS's SOF55.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
_JPEG_SOS = 0xDA
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  "


def check_inflated_size(data: bytes, limits: DecodeLimits) -> None:
    """A deflated dataset may inflate to at most what `limits` allows for pixels, plus 1 MiB."""
    stream = io.BytesIO(data)
    try:
        read_preamble(stream, False)
        # pydicom's own reader of the file meta group: the only way to find where the dataset starts
        # without pydicom inflating all of it first.
        syntax = _read_file_meta_info(stream).get("TransferSyntaxUID")
    except Exception as exc:  # a file meta group that cannot be parsed
        raise BadRequest("the DICOM file is malformed or truncated") from exc
    if syntax != DeflatedExplicitVRLittleEndian:
        return
    bound = limits.max_pixels * 4 + _NON_PIXEL_BYTES
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(data[stream.tell() :], bound)
    except zlib.error as exc:
        raise BadRequest("the deflated DICOM dataset is corrupt") from exc
    if inflater.unconsumed_tail or (not inflater.eof and len(inflated) >= bound):
        raise InvalidImage(f"the deflated DICOM dataset inflates to more than {bound} bytes")


def check_encoded_frame(ds: Dataset, rows: int, columns: int) -> None:
    """An encapsulated frame's own header must declare the same size as the dataset's Rows and Columns."""
    syntax = ds.file_meta.TransferSyntaxUID
    if not syntax.is_encapsulated:
        return  # native pixel data: pydicom refuses a short one and reads only Rows x Columns of a long one
    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    except Exception as exc:  # no item tag, fragment lengths past the end...
        raise BadRequest("the DICOM pixel data fragments are malformed") from exc
    if syntax == RLELossless:
        check_rle(frame, rows * columns, segments=int(ds.BitsAllocated) // 8)
        return
    if syntax in JPEG2000TransferSyntaxes:
        size = j2k_size(frame)
    elif syntax in JPEGTransferSyntaxes or syntax in JPEGLSTransferSyntaxes:
        size = jpeg_size(frame)
    else:  # an encapsulated syntax with a decoder but no guard here: refused rather than trusted
        raise UnsupportedMediaType(f"DICOM transfer syntax {syntax.name} is not accepted by this service")
    if size is None:
        raise BadRequest("the compressed DICOM frame has no readable header")
    if size != (columns, rows):
        raise InvalidImage(f"the compressed DICOM frame is {size[0]}x{size[1]}, its header says {columns}x{rows}")


def jpeg_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG or JPEG-LS start-of-frame segment, None when there is none."""
    if frame[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(frame):
        if frame[pos] != 0xFF:
            return None
        marker = frame[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_SOF and pos + 9 <= len(frame):
            height = int.from_bytes(frame[pos + 5 : pos + 7], "big")
            width = int.from_bytes(frame[pos + 7 : pos + 9], "big")
            return width, height
        length = int.from_bytes(frame[pos + 2 : pos + 4], "big")
        if marker == _JPEG_SOS or length < 2:
            return None
        pos += 2 + length
    return None


def j2k_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG 2000 codestream's SIZ segment (inside a JP2 wrapper or bare)."""
    start = _jp2_codestream_start(frame) if frame.startswith(_JP2_SIGNATURE) else 0
    if start is None or frame[start : start + 4] != b"\xff\x4f\xff\x51" or len(frame) < start + 28:
        return None
    x_siz, y_siz, x_off, y_off = (int.from_bytes(frame[start + i : start + i + 4], "big") for i in (8, 12, 16, 20))
    return x_siz - x_off, y_siz - y_off


def check_rle(frame: bytes, pixels: int, segments: int) -> None:
    """An RLE frame of one grey sample: one segment per byte of it, none decoding past `pixels` bytes."""
    if len(frame) < 64:
        raise BadRequest("the DICOM RLE header is truncated")
    count = int.from_bytes(frame[:4], "little")
    offsets = [int.from_bytes(frame[4 + 4 * i : 8 + 4 * i], "little") for i in range(count)] if count <= 15 else []
    if count != segments or any(not 64 <= o <= len(frame) for o in offsets) or offsets != sorted(offsets):
        raise BadRequest("the DICOM RLE header does not match its pixel attributes")
    allowed = pixels + 1  # an encoder may pad an odd-length segment by one byte
    for start, end in zip(offsets, [*offsets[1:], len(frame)], strict=True):
        if rle_decoded_length(frame[start:end], allowed) > allowed:
            raise InvalidImage("the DICOM RLE data decodes to more pixels than its header declares")


def rle_decoded_length(segment: bytes, limit: int) -> int:
    """Bytes a PackBits segment decodes to, counted without decoding; stops once past `limit`."""
    total = pos = 0
    end = len(segment)
    while pos < end and total <= limit:
        header = segment[pos]
        if header < 128:  # a literal run of header + 1 bytes
            total += header + 1
            pos += header + 2
        elif header > 128:  # one byte repeated 257 - header times
            total += 257 - header
            pos += 2
        else:  # 128 is a no-op
            pos += 1
    return total


def _jp2_codestream_start(frame: bytes) -> int | None:
    pos = 0
    while pos + 8 <= len(frame):
        length = int.from_bytes(frame[pos : pos + 4], "big")
        if frame[pos + 4 : pos + 8] == b"jp2c":
            return pos + 8
        if length < 8:
            return None
        pos += length
    return None
