"""The synthetic chest CT generator: determinism, the API contract, and that slices look like CT."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from training import synthetic
from training.synthetic import CLASSES, generate, generate_slice

CANCERS = CLASSES[1:]


def test_shape_dtype_and_range() -> None:
    for label in CLASSES:
        image = generate_slice(label, seed=1, size=96)
        assert image.shape == (96, 96) and image.dtype == np.uint8
        assert image.min() == 0 and image.max() == 255  # air is black, bone saturates
    assert generate_slice("normal", seed=1, size=300).shape == (300, 300)  # upsampled past MAX_GRID


def test_unknown_label_raises() -> None:
    with pytest.raises(ValueError, match="unknown label"):
        generate_slice("benign", seed=0)
    with pytest.raises(ValueError, match="unknown label"):
        generate(["normal", "benign"], images_per_class=1, size=32, seed=0)  # eagerly, before any work


def test_same_seed_same_bytes_and_seeds_differ() -> None:
    first = generate_slice("adenocarcinoma", seed=11, size=128)
    assert first.tobytes() == generate_slice("adenocarcinoma", seed=11, size=128).tobytes()
    assert not np.array_equal(first, generate_slice("adenocarcinoma", seed=12, size=128))


def test_generate_order_and_independence_of_workers() -> None:
    labels = ["normal", "squamous_cell_carcinoma"]
    serial = list(generate(labels, images_per_class=3, size=48, seed=5, workers=1))
    pooled = list(generate(labels, images_per_class=3, size=48, seed=5, workers=2))
    assert [(label, index) for label, index, _ in serial] == [(a, i) for a in labels for i in range(3)]
    assert [(a, i, x.tobytes()) for a, i, x in serial] == [(a, i, x.tobytes()) for a, i, x in pooled]
    images = [image.tobytes() for _, _, image in serial]
    assert len(set(images)) == len(images)  # every (label, index) gets its own seed
    again = list(generate(labels[::-1], images_per_class=3, size=48, seed=5, workers=1))
    assert again[0][2].tobytes() == serial[3][2].tobytes()  # a label's images ignore the label list


def _pair(label: str, seed: int, size: int = 128):
    _, lung, lesion = synthetic._phantom(label, seed, size)
    normal = generate_slice("normal", seed, size).astype(float)
    return normal, generate_slice(label, seed, size).astype(float), lung, lesion


@pytest.mark.parametrize("label", CANCERS)
def test_lesion_is_inside_a_lung_and_only_changes_the_lesion(label: str) -> None:
    # A seed fixes the anatomy whatever the label, so the pair differs by the lesion (and photon noise).
    for seed in range(3):
        normal, cancer, lung, lesion = _pair(label, seed)
        assert lesion.sum() >= 20 and not (lesion & ~lung).any()
        assert cancer[lesion].mean() - normal[lesion].mean() > 40  # a soft-tissue mass in dark lung
        rest = lung & ~ndimage.binary_dilation(lesion, iterations=3)
        assert abs(cancer[rest].mean() - normal[rest].mean()) < 2


def test_cancer_adds_bright_lung_pixels_on_average() -> None:
    def bright_fraction(label: str, seed: int) -> float:
        _, lung, _ = synthetic._phantom(label, seed, 128)
        return float((generate_slice(label, seed, 128)[ndimage.binary_erosion(lung)] > 180).mean())

    normal = np.mean([bright_fraction("normal", s) for s in range(100, 106)])
    cancer = np.mean([bright_fraction(label, s) for label in CANCERS for s in range(100, 106)])
    assert cancer > normal + 0.02


def _lesion_stats(label: str, seed: int, n: int = 128) -> tuple[float, float, bool]:
    anatomy, lesion_rng, _ = synthetic._streams(seed)
    hu, lung, hila = synthetic._anatomy(anatomy, n)
    mask = synthetic._lesion(label, lesion_rng, hu, lung, hila)
    cy, cx = ndimage.center_of_mass(mask)
    to_hilum = min(math.hypot(cx - hx, cy - hy) for hx, hy in hila) / (n / 2)
    return mask.sum() / n**2, to_hilum, bool((hu[mask] < -950).any())


def test_classes_differ_in_size_place_and_cavitation() -> None:
    stats = {label: [_lesion_stats(label, s) for s in range(12)] for label in CANCERS}
    area = {label: np.median([a for a, _, _ in rows]) for label, rows in stats.items()}
    to_hilum = {label: np.median([d for _, d, _ in rows]) for label, rows in stats.items()}
    cavities = {label: sum(c for _, _, c in rows) for label, rows in stats.items()}
    assert area["large_cell_carcinoma"] > area["adenocarcinoma"]
    assert to_hilum["squamous_cell_carcinoma"] < min(to_hilum["adenocarcinoma"], to_hilum["large_cell_carcinoma"])
    assert cavities["squamous_cell_carcinoma"] >= 4 and cavities["adenocarcinoma"] == 0


def test_looks_like_ct_in_a_lung_window() -> None:
    seed, n = 3, 128
    hu, lung, _ = synthetic._phantom("normal", seed, n)
    image = generate_slice("normal", seed, n).astype(float)
    x, y = synthetic._grid(n)
    outside = np.hypot(x, y) > 1.0
    assert (image[outside] == 0).all()  # beyond the reconstruction circle
    air = ndimage.binary_erosion((hu == -1000) & ~outside, iterations=3)
    assert image[air].mean() < 6  # air around the patient: black but for clipped noise
    assert image[ndimage.binary_erosion(lung & (hu < -700), iterations=2)].mean() < 70
    soft = ndimage.binary_erosion(np.abs(hu - 40) < 10, iterations=2)
    assert 200 < image[soft].mean() < 250
    bone = ndimage.binary_erosion(hu > 200)
    assert image[bone].mean() > image[soft].mean() and image[bone].mean() > 245
    assert image[soft].std() > 2  # photon noise: tissue is grainy, not a flat fill
