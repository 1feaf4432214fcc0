"""What an input image may be, checked from its header before any pixel is decoded (PNG, JPEG, DICOM)."""

from __future__ import annotations

from dataclasses import dataclass

from service.errors import InvalidImage

# The pixel limit of an upload (the service's MAX_PIXELS default), checked from the header; CT slices are
# 512x512, and the Kaggle screenshots at most about 1200 wide. Ingest passes its own, larger limits.
DEFAULT_MAX_PIXELS = 2048 * 2048
# DICOM modalities decoded by default: the model has only seen CT.
DEFAULT_DICOM_MODALITIES = frozenset({"CT"})


@dataclass(frozen=True)
class DecodeLimits:
    """What an upload may be, checked from the header before any pixel is decoded."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = 32
    max_aspect: float = 10.0
    dicom_modalities: frozenset[str] = DEFAULT_DICOM_MODALITIES  # DICOM Modality values accepted


def check_size(width: int, height: int, limits: DecodeLimits) -> None:
    """Refuse a zero, too large, too small or too elongated image (InvalidImage, 422)."""
    if width <= 0 or height <= 0:
        raise InvalidImage("the image has a zero dimension")
    if width * height > limits.max_pixels:
        raise InvalidImage(f"the image has {width}x{height} pixels, more than {limits.max_pixels}")
    if min(width, height) < limits.min_side:
        raise InvalidImage(f"the image is {width}x{height}: each side must be >= {limits.min_side} pixels")
    if max(width, height) / min(width, height) > limits.max_aspect:
        raise InvalidImage(f"the image is {width}x{height}: aspect ratio over {limits.max_aspect:g}")
