"""Heatmaps: upsampled, cropped to the image, normalised, coloured, blended."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from service.inference.heatmap import JET, MAX_OVERLAY_SIDE, heat_for, heat_on_image, overlay_png


def test_heat_follows_the_grid_and_crops_the_letterbox() -> None:
    cam = np.zeros((1, 4, 4), np.float32)
    cam[0, 1, 3] = 5.0  # right column, second row
    heat = heat_for(cam, 0, 1.0, image_size=(200, 100), side=64)
    assert heat.box == (0, 16, 64, 32)
    amount = heat_on_image(heat, (200, 100))
    assert amount.shape == (100, 200) and amount.min() == 0.0 and amount.max() == 1.0
    row, col = np.unravel_index(np.argmax(amount), amount.shape)
    assert col > 150 and row < 50


def test_sign_flips_and_flat_maps_are_zero() -> None:
    cam = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    up = heat_on_image(heat_for(cam, 0, 1.0, (64, 64), 64), (64, 64))
    down = heat_on_image(heat_for(cam, 0, -1.0, (64, 64), 64), (64, 64))
    assert np.allclose(up + down, 1.0, atol=1e-5)
    flat = heat_on_image(heat_for(np.ones((1, 4, 4), np.float32), 0, 1.0, (64, 64), 64), (64, 64))
    assert not flat.any()


def test_overlay_png_size_and_cap() -> None:
    cam = np.random.default_rng(0).normal(size=(2, 7, 7)).astype(np.float32)
    grey = Image.new("L", (300, 200), 100)
    png = overlay_png(grey, heat_for(cam, 1, 1.0, grey.size, 224))
    out = Image.open(io.BytesIO(png))
    assert out.format == "PNG" and out.size == (300, 200) and out.mode == "RGB"
    big = Image.new("L", (3000, 1500), 100)
    out = Image.open(io.BytesIO(overlay_png(big, heat_for(cam, 0, 1.0, big.size, 224))))
    assert out.size == (MAX_OVERLAY_SIDE, MAX_OVERLAY_SIDE // 2)


def test_colormap_runs_blue_to_red() -> None:
    assert JET.shape == (256, 3) and JET.dtype == np.uint8
    assert JET[0, 2] > 100 and JET[0, 0] == 0  # cold: blue
    assert JET[-1, 0] > 100 and JET[-1, 2] == 0  # hot: red
