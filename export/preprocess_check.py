"""Evidence for the preprocessing gate: the service's path and the training pipeline's path on the same images.

Service path: original encoded bytes -> service.inputs.imaging.load_tensor with the card's input spec.
Training path: what ingest stores (the decoded grey image as a lossless PNG) -> what load_split does
(open, convert to L, preprocess with the params' spec). There is one implementation of decoding and
preprocessing; this guards the seams around it (ingest's re-encoding, load_split, the card's spec).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from service.card import InputSpec
from service.errors import ServiceError
from service.inputs.imaging import decode, load_tensor, preprocess
from training.data import Record
from training.ingest import INGEST_LIMITS as LIMITS
from training.ingest import store_grey

# The gate compares pixels, not upload policy: accept every image ingest accepted.
VARIANT_IMAGES = 2  # test images re-encoded in every mode; each costs ~10 decodes


def source_bytes(manifest: dict, prepared: Path, row: Record) -> bytes:
    """The file the record came from; the prepared PNG when the source is not on disk (synthetic, URL, zip)."""
    root = manifest.get("source_root")
    return (Path(root) / row.source if root else Path(prepared) / row.file).read_bytes()


def split_differences(
    manifest: dict, prepared: Path, rows: list[Record], training: np.ndarray, spec: InputSpec
) -> tuple[float, list[str]]:
    """Worst |service - training| over the split's images, and the images the service could not use."""
    worst, problems = 0.0, []
    for row, expected in zip(rows, training, strict=True):
        try:
            served = load_tensor(source_bytes(manifest, prepared, row), spec, LIMITS)
        except (OSError, ServiceError) as exc:
            problems.append(f"{row.source} ({exc})")
            continue
        worst = max(worst, _max_abs(served, expected))
    return worst, problems


def variant_differences(
    greys: list[Image.Image], service_spec: InputSpec, training_spec: InputSpec
) -> dict[str, float]:
    """Worst |service - training| per encoding, over `greys` re-encoded in each way uploads arrive."""
    worst: dict[str, float] = {}
    for grey in greys:
        for name, data in mode_variants(grey).items():
            served = load_tensor(data, service_spec, LIMITS)
            diff = _max_abs(served, training_path_tensor(data, training_spec))
            worst[name] = max(worst.get(name, 0.0), diff)
    return worst


def training_path_tensor(data: bytes, spec: InputSpec) -> np.ndarray:
    """What ingest + load_split make of encoded bytes: decode, store as PNG, reopen, preprocess."""
    stored = io.BytesIO()
    store_grey(decode(data, LIMITS), stored)
    stored.seek(0)
    with Image.open(stored) as image:
        return preprocess(image.convert("L"), spec)


def mode_variants(grey: Image.Image) -> dict[str, bytes]:
    """One picture as every kind of file the real data holds (and a few more uploads may)."""
    grey = grey.convert("L")
    # Distinct channels, so colour -> grey conversion is really exercised.
    rgb = Image.merge("RGB", (grey, grey.point(lambda v: 255 - v), grey.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    ramp = Image.linear_gradient("L").resize(grey.size)  # partial transparency, 0..255
    rgba, la = rgb.copy(), grey.copy()
    rgba.putalpha(ramp)
    la.putalpha(ramp)
    wide = Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257)  # 16-bit grey
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    return {
        "png_L": _encode(grey, "PNG"),
        "png_LA": _encode(la, "PNG"),
        "png_RGB": _encode(rgb, "PNG"),
        "png_RGBA": _encode(rgba, "PNG"),
        "png_P": _encode(rgb.convert("P"), "PNG"),
        "png_I16": _encode(wide, "PNG"),
        "jpeg_L": _encode(grey, "JPEG"),
        "jpeg_RGB": _encode(rgb, "JPEG"),
        "jpeg_RGB_exif_rotated": _encode(rgb, "JPEG", exif=exif),
    }


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _max_abs(served: np.ndarray, expected: np.ndarray) -> float:
    if served.shape != expected.shape:
        return float("inf")
    return float(np.abs(served - expected).max())
