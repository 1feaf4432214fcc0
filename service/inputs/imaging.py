"""Untrusted image bytes -> one grey image -> the model's input tensor.

The single implementation of decoding and preprocessing: the service runs it on uploads, and the
training pipeline (ingest, datasets, export's parity gate) imports it, so train and serve cannot drift.
PNG and JPEG are decoded here; DICOM CT slices in service.inputs.dicom, onto the same grey image.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from service.card import DicomWindow, InputSpec
from service.errors import InvalidImage, UnsupportedMediaType
from service.inputs.limits import DecodeLimits, check_size

# Formats are recognised by their magic bytes only, never by file name or client content type.
_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
# DICOM Part 10: a 128-byte preamble (any content), then "DICM".
_DICOM_MAGIC, _DICOM_MAGIC_AT = b"DICM", 128
_UPLOAD_LIMITS = DecodeLimits()
_CARD_DEFAULT_WINDOW = DicomWindow()  # what a card without a DICOM window means (service.card.InputSpec)

# EXIF orientation tag value -> the transpose that puts the image upright.
_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112
_ALPHA_MODES = {"LA", "La", "RGBA", "RGBa", "PA"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def harden_pillow(max_pixels: int) -> None:
    """Process-wide: Pillow's own bomb guard at our limit, and its warning raised as an error.

    Our header check in `decode` refuses first; this is the backstop for any other Pillow use.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def sniff_format(data: bytes) -> str:
    """'PNG', 'JPEG' or 'DICOM' from the bytes; anything else is refused."""
    if not data:
        raise InvalidImage("the image is empty")
    for magic, name in _MAGIC.items():
        if data.startswith(magic):
            return name
    if data[_DICOM_MAGIC_AT : _DICOM_MAGIC_AT + len(_DICOM_MAGIC)] == _DICOM_MAGIC:
        return "DICOM"
    raise UnsupportedMediaType("only PNG, JPEG and DICOM (Part 10) images are accepted")


def decode(
    data: bytes, limits: DecodeLimits = _UPLOAD_LIMITS, window: DicomWindow = _CARD_DEFAULT_WINDOW
) -> Image.Image:
    """Decode PNG/JPEG/DICOM bytes into an upright 8-bit grey ('L') image, or raise a domain error.

    `window` (from the model card's input spec) maps a DICOM slice's Hounsfield units onto grey.
    """
    fmt = sniff_format(data)
    if fmt == "DICOM":
        # Imported on first use: pydicom costs ~0.2 s and ~24 MB, which PNG-only deployments never pay.
        from service.inputs.dicom import decode_dicom

        return decode_dicom(data, limits, window)
    image = _open(data, fmt)
    _check_header(image, limits)
    if fmt == "JPEG" and image.mode in ("RGB", "YCbCr"):
        # Ask libjpeg for luma directly: same pixels as RGB->L, a millisecond cheaper.
        image.draft("L", image.size)
    try:
        image.load()
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, zlib/struct errors...
        raise InvalidImage("the image data is truncated or corrupt") from exc
    grey = _to_grey(image)
    return _upright(image, grey)


def preprocess(grey: Image.Image, spec: InputSpec) -> np.ndarray:
    """Letterbox a grey image to spec.size and normalise: a (1, size, size) float32 array."""
    if grey.mode != "L":
        raise ValueError(f"preprocess expects a grey 'L' image, got {grey.mode!r}")
    side = spec.size
    width, height = grey.size
    left, top, new_w, new_h = letterbox_box(width, height, side)
    if (new_w, new_h) != (width, height):
        grey = grey.resize((new_w, new_h), Image.Resampling.BILINEAR)
    canvas = np.zeros((side, side), dtype=np.float32)
    canvas[top : top + new_h, left : left + new_w] = np.asarray(grey, dtype=np.float32)
    canvas *= np.float32(1.0 / (255.0 * spec.std))
    canvas -= np.float32(spec.mean / spec.std)
    return canvas[None]


def letterbox_box(width: int, height: int, side: int) -> tuple[int, int, int, int]:
    """Where `preprocess` puts a width x height image in the side x side input: (left, top, w, h)."""
    scale = side / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    return (side - new_w) // 2, (side - new_h) // 2, new_w, new_h


def load_tensor(data: bytes, spec: InputSpec, limits: DecodeLimits = _UPLOAD_LIMITS) -> np.ndarray:
    """decode + preprocess: encoded bytes to a (1, size, size) model input, windowed as `spec` says."""
    return preprocess(decode(data, limits, spec.dicom_window), spec)


def pixel_digest_source(grey: Image.Image) -> bytes:
    """The bytes that identify an image's content (size + grey pixels), for duplicate detection."""
    width, height = grey.size
    return f"{width}x{height}:".encode() + grey.tobytes()


def _open(data: bytes, fmt: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage("the image has too many pixels") from exc
    except Exception as exc:  # an unreadable header: Pillow's error types vary by plugin
        raise InvalidImage(f"the {fmt} header cannot be read") from exc


def _check_header(image: Image.Image, limits: DecodeLimits) -> None:
    check_size(*image.size, limits)
    if getattr(image, "n_frames", 1) != 1:
        raise InvalidImage("animated or multi-frame images are not accepted")


def _to_grey(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "L":
        return image
    if mode in _SIXTEEN_BIT_MODES:
        # 16-bit grey: rescale 0..65535 onto 0..255 with rounding.
        wide = np.asarray(image).astype(np.int64).clip(0, 65535)
        return Image.fromarray(((wide + 128) // 257).astype(np.uint8), mode="L")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        # Transparent pixels become black, as the letterbox padding is.
        rgba = image.convert("RGBA")
        grey = Image.new("L", rgba.size, 0)
        grey.paste(rgba.convert("L"), mask=rgba.getchannel("A"))
        return grey
    if mode in ("RGB", "1", "P"):
        return image.convert("L")
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB").convert("L")
    raise InvalidImage(f"pixel mode {mode} is not supported")


def _upright(source: Image.Image, grey: Image.Image) -> Image.Image:
    try:
        orientation = int(source.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # malformed EXIF: the pixels are fine, keep them as stored
        orientation = 1
    transpose = _ORIENT.get(orientation)
    return grey.transpose(transpose) if transpose is not None else grey
