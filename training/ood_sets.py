"""Out-of-distribution image sets, built offline and deterministically, to choose and check the OOD gate.

Each set is a list of encoded PNG files, so it reaches the model exactly as an upload would (the
service's decode and preprocessing). Sources are what this machine has without a network: photographs
and drawings bundled in scikit-image's wheel, medical images of other modalities bundled in pydicom's
wheel and scikit-image's, generated patterns, chest CTs of the test split mangled, and the other domain
(real Kaggle slices for a model trained on synthetic phantoms, phantoms for one trained on real data).

Kinds: `far` (not a CT at all), `modality` (medical, not CT), `near` (a chest CT, mangled), `domain`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from service.card import TASK_LABELS
from training.sources import IMAGE_SUFFIXES

PHOTOS = (
    "astronaut", "brick", "camera", "cat", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass",
    "gravel", "hubble_deep_field", "moon", "rocket",
)  # fmt: skip
DRAWINGS = ("text", "page", "horse", "checkerboard", "logo")
MEDICAL_SKIMAGE = ("retina", "microaneurysms", "immunohistochemistry", "cell")
# Uncompressed (or deflated) files of pydicom's bundled test data: no image codec needed to read them.
MEDICAL_DICOM = ("MR_small.dcm", "examples_overlay.dcm", "examples_rgb_color.dcm", "examples_palette.dcm")
KINDS = ("far", "modality", "near", "domain")


@dataclass(frozen=True)
class OodSet:
    name: str
    kind: str  # one of KINDS
    files: list[bytes]  # encoded PNGs


def build_sets(test_greys: list[Image.Image], other_domain: list[bytes], seed: int, per_set: int) -> list[OodSet]:
    """Every set, at most `per_set` images each. `test_greys`: in-distribution test slices to mangle;
    `other_domain`: encoded files of the other domain (empty when not available)."""
    rng = np.random.default_rng(seed)
    sets = [
        OodSet("photographs", "far", _crops(_skimage(PHOTOS), rng, per_set)),
        OodSet("drawings_and_text", "far", _crops(_skimage(DRAWINGS) + list(_text_pages(rng, 6)), rng, per_set)),
        OodSet("patterns", "far", [_png(a) for a in _patterns(rng, per_set)]),
        OodSet("other_modalities", "modality", _crops(_skimage(MEDICAL_SKIMAGE) + _dicom_images(), rng, per_set)),
    ]
    for name, mangle in MANGLES.items():
        sets.append(OodSet(f"ct_{name}", "near", [_png(np.asarray(mangle(g))) for g in test_greys[:per_set]]))
    if other_domain:
        chosen = rng.permutation(len(other_domain))[:per_set]
        sets.append(OodSet("other_domain", "domain", [other_domain[i] for i in sorted(chosen)]))
    return sets


def real_domain_files(root: Path) -> list[bytes]:
    """The image files under a Kaggle-layout folder (sorted paths), or none when it is absent."""
    if not root.is_dir():
        return []
    return [p.read_bytes() for p in sorted(root.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]


def synthetic_domain_files(count: int, seed: int, size: int = 256) -> list[bytes]:
    """Phantom slices of every class from the built-in generator, with a seed training never used."""
    from training.synthetic import generate

    labels = TASK_LABELS["multiclass"]
    per_label = max(1, -(-count // len(labels)))
    return [_png(pixels) for _, _, pixels in generate(labels, per_label, size, seed, workers=1)][:count]


# --- mangled chest CT (near OOD) ---------------------------------------------------------------------


def _badly_windowed(grey: Image.Image) -> Image.Image:
    # A bone-like window on a lung-window slice: everything but the brightest tissue goes black.
    return grey.point(lambda v: 0 if v < 170 else min(255, (v - 170) * 3))


MANGLES: dict[str, Callable[[Image.Image], Image.Image]] = {
    "inverted": ImageOps.invert,
    "rotated_90": lambda g: g.transpose(Image.Transpose.ROTATE_90),
    "badly_windowed": _badly_windowed,
    "washed_out": lambda g: g.point(lambda v: 150 + v // 3),  # a soft-tissue window on air and lung
    "blurred": lambda g: g.filter(ImageFilter.GaussianBlur(radius=max(g.size) / 40)),
}


# --- sources -----------------------------------------------------------------------------------------


def _skimage(names: tuple[str, ...]) -> list[np.ndarray]:
    import skimage.data

    return [np.asarray(getattr(skimage.data, name)()) for name in names]


def _dicom_images() -> list[np.ndarray]:
    """Pixel data of bundled DICOM files of other modalities, min-max to 8 bits as a viewer shows them."""
    import pydicom
    from pydicom.data import get_testdata_file

    out = []
    for name in MEDICAL_DICOM:
        ds = pydicom.dcmread(get_testdata_file(name))
        pixels = ds.pixel_array
        if ds.PhotometricInterpretation == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            pixels = apply_color_lut(pixels, ds)
        pixels = pixels.astype(np.float64)
        span = max(pixels.max() - pixels.min(), 1e-9)
        out.append(((pixels - pixels.min()) / span * 255).astype(np.uint8))
    return out


def _text_pages(rng: np.random.Generator, count: int) -> Iterator[np.ndarray]:
    words = [
        "the",
        "patient",
        "was",
        "scanned",
        "and",
        "the",
        "report",
        "says",
        "no",
        "acute",
        "finding",
        "in",
        "either",
        "lung",
        "field",
    ]
    for _ in range(count):
        page = Image.new("L", (400, 520), 255)
        draw = ImageDraw.Draw(page)
        for line in range(30):
            text = " ".join(rng.choice(words, size=int(rng.integers(4, 9))))
            draw.text((20, 12 + 16 * line), text, fill=0)
        yield np.asarray(page)


def _patterns(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    side = 256
    yy, xx = np.mgrid[0:side, 0:side] / (side - 1)
    radius = np.hypot(xx - 0.5, yy - 0.5)
    fixed = [
        np.zeros((side, side)),
        np.full((side, side), 255.0),
        np.full((side, side), 128.0),
        xx * 255,
        yy * 255,
        (1 - radius.clip(0, 0.7) / 0.7) * 255,
        ((np.floor(xx * 8) + np.floor(yy * 8)) % 2) * 255,
        (np.sin(xx * 40) > 0) * 255.0,
    ]
    noise = [rng.uniform(0, 255, (side, side)) for _ in range(max(0, count - len(fixed)) // 2)]
    smooth = [rng.normal(128, 50, (side, side)) for _ in range(max(0, count - len(fixed) - len(noise)))]
    return [np.clip(a, 0, 255).astype(np.uint8) for a in (fixed + noise + smooth)[:count]]


def _crops(images: list[np.ndarray], rng: np.random.Generator, count: int) -> list[bytes]:
    """Each image whole, then random crops of 50-90% of it, round-robin, until `count` files."""
    out = [_png(image) for image in images[:count]]
    i = 0
    while len(out) < count and images:
        image = images[i % len(images)]
        h, w = image.shape[:2]
        ch, cw = int(h * rng.uniform(0.5, 0.9)), int(w * rng.uniform(0.5, 0.9))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        out.append(_png(image[top : top + ch, left : left + cw]))
        i += 1
    return out


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, format="PNG", compress_level=1)
    return out.getvalue()
