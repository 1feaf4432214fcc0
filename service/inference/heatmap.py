"""Class-activation heatmaps from the model's `cam` output, drawn over the input image.

The model's logits are the mean of its CAM plus a bias, so the map is exact, not an approximation.
The grid (model resolution) is upsampled bilinearly to the letterboxed input square, cropped back to
the image region, resized to the image (capped at MAX_OVERLAY_SIDE), normalised to 0..1, coloured
with a jet-like map and alpha-blended over the grey image, more opaque where the heat is higher.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from service.inputs.imaging import letterbox_box

MAX_OVERLAY_SIDE = 1024  # bounds the work and memory an overlay of a huge image can take
ALPHA_MIN, ALPHA_MAX = 0.15, 0.6


@dataclass(frozen=True, slots=True)
class Heat:
    grid: np.ndarray  # (h, w) float32: the signed CAM channel at model resolution
    box: tuple[int, int, int, int]  # left, top, width, height of the image inside the input square
    side: int  # the input square's side


def heat_for(cam: np.ndarray, channel: int, sign: float, image_size: tuple[int, int], side: int) -> Heat:
    """One image's cam (K, h, w) -> the grid for one channel and where the image lies in the input."""
    grid = np.ascontiguousarray(cam[channel], dtype=np.float32) * np.float32(sign)
    return Heat(grid=grid, box=letterbox_box(image_size[0], image_size[1], side), side=side)


def heat_on_image(heat: Heat, size: tuple[int, int]) -> np.ndarray:
    """The heat as a (height, width) 0..1 float32 array over an image of `size` (width, height)."""
    square = _resize_float(heat.grid, (heat.side, heat.side))
    left, top, width, height = heat.box
    region = _resize_float(square[top : top + height, left : left + width], size)
    low, high = float(region.min()), float(region.max())
    if not high - low > 1e-12:  # a flat map carries no location information
        return np.zeros_like(region)
    region -= low
    region *= np.float32(1.0 / (high - low))
    return region


def overlay_png(grey: Image.Image, heat: Heat) -> bytes:
    """The heatmap blended over the grey image, as PNG bytes."""
    size = _capped(grey.size)
    if size != grey.size:
        grey = grey.resize(size, Image.Resampling.BILINEAR)
    amount = heat_on_image(heat, size)
    colour = JET[(amount * 255.0 + 0.5).astype(np.uint8)].astype(np.float32)
    alpha = (ALPHA_MIN + (ALPHA_MAX - ALPHA_MIN) * amount)[..., None]
    base = np.asarray(grey, dtype=np.float32)[..., None]
    blended = base + alpha * (colour - base)
    out = io.BytesIO()
    Image.fromarray(blended.clip(0, 255).astype(np.uint8)).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _resize_float(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float32 2-D array to (width, height), half-pixel centres."""
    if array.shape[::-1] == tuple(size):
        return np.array(array, dtype=np.float32)
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32))
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR), dtype=np.float32).copy()


def _capped(size: tuple[int, int]) -> tuple[int, int]:
    width, height = size
    longest = max(width, height)
    if longest <= MAX_OVERLAY_SIDE:
        return size
    scale = MAX_OVERLAY_SIDE / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _jet() -> np.ndarray:
    """A 256-entry jet-like colour map (dark blue -> cyan -> yellow -> dark red), uint8 RGB."""
    t = np.linspace(0.0, 1.0, 256)
    rgb = np.stack([1.5 - np.abs(4.0 * t - k) for k in (3.0, 2.0, 1.0)], axis=1)
    return (rgb.clip(0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


JET = _jet()
