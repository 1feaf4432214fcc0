"""The preprocessing gate's evidence: service path vs training path, on synthetic and on the real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export.preprocess_check import mode_variants, split_differences, training_path_tensor, variant_differences
from service.card import InputSpec
from service.inputs.imaging import load_tensor
from training.data import load_split, records

SPEC = InputSpec(size=64, mean=0.2, std=0.25)
REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "chest-ct-kaggle" / "Data"


def picture(width=90, height=70) -> Image.Image:
    yy, xx = np.mgrid[0:height, 0:width]
    return Image.fromarray(((xx * 3 + yy * 5) % 256).astype(np.uint8), mode="L")


def test_every_encoding_gives_the_training_tensor():
    worst = variant_differences([picture(), picture(120, 64)], SPEC, SPEC)
    assert set(worst) == {
        "png_L",
        "png_LA",
        "png_RGB",
        "png_RGBA",
        "png_P",
        "png_I16",
        "jpeg_L",
        "jpeg_RGB",
        "jpeg_RGB_exif_rotated",
    }
    assert max(worst.values()) <= 1e-5, worst


def test_variants_really_are_the_modes_they_claim():
    import io

    modes = {}
    for name, data in mode_variants(picture()).items():
        with Image.open(io.BytesIO(data)) as image:
            modes[name] = (image.format, image.mode)
    assert modes["png_RGBA"] == ("PNG", "RGBA") and modes["png_I16"] == ("PNG", "I;16")
    assert modes["jpeg_RGB_exif_rotated"] == ("JPEG", "RGB") and modes["png_P"] == ("PNG", "P")


def test_a_spec_that_differs_from_training_is_measured():
    worst = variant_differences([picture()], InputSpec(size=64, mean=0.3, std=0.25), SPEC)
    assert min(worst.values()) == pytest.approx(0.4, abs=1e-5)
    resized = variant_differences([picture()], InputSpec(size=96, mean=0.2, std=0.25), SPEC)
    assert all(v == float("inf") for v in resized.values())


def test_without_source_files_the_prepared_pngs_are_decoded(tmp_path):
    prepared = tmp_path / "prepared"
    (prepared / "images").mkdir(parents=True)
    rows = []
    for i, (w, h) in enumerate([(90, 70), (64, 100)]):
        picture(w, h).save(prepared / "images" / f"{i}.png")
        rows.append(
            {
                "sha256": str(i),
                "source": f"gone/{i}.png",
                "label": "normal",
                "split": "test",
                "file": f"images/{i}.png",
                "width": w,
                "height": h,
            }
        )
    manifest = {
        "labels": ["normal", "adenocarcinoma"],
        "task": "binary",
        "source": "synthetic",
        "source_root": None,
        "records": rows,
    }
    (prepared / "manifest.json").write_text(json.dumps(manifest))
    x, _, test_rows = load_split("test", SPEC, prepared)
    assert split_differences(manifest, prepared, test_rows, x, SPEC) == (0.0, [])
    manifest["source_root"] = str(tmp_path / "missing")
    worst, problems = split_differences(manifest, prepared, records(manifest, "test"), x, SPEC)
    assert len(problems) == 2 and "gone/0.png" in problems[0]


def real_files() -> list[Path]:
    return sorted(p for p in REAL.rglob("*") if p.is_file())


def kind_of(path: Path) -> str:
    with Image.open(path) as image:
        return f"{path.suffix.lower()}:{image.format}:{image.mode}"


def worst_by_kind(paths: list[Path]) -> dict[str, float]:
    """Service tensor vs ingest + load_split's (decode, store PNG, reopen, preprocess), worst per file kind."""
    spec = InputSpec(size=128, mean=0.2, std=0.25)
    worst: dict[str, float] = {}
    for path in paths:
        data = path.read_bytes()
        diff = float(np.abs(load_tensor(data, spec) - training_path_tensor(data, spec)).max())
        worst[kind_of(path)] = max(worst.get(kind_of(path), 0.0), diff)
    return worst


needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/chest-ct-kaggle is not beside the checkout")


@pytest.mark.realdata
@needs_real
def test_one_real_file_of_every_kind_gives_the_training_tensor():
    first: dict[str, Path] = {}
    for path in real_files():
        first.setdefault(kind_of(path), path)
    # The kinds this copy holds (its README also names L mode; no such file is in it: png_L is synthetic above).
    assert {".png:PNG:RGBA", ".png:PNG:RGB", ".png:JPEG:RGB", ".jpg:JPEG:RGB"} <= set(first), first
    worst = worst_by_kind(list(first.values()))
    assert max(worst.values()) <= 1e-5, worst


@pytest.mark.realdata
@pytest.mark.slow
@needs_real
def test_every_real_file_gives_the_training_tensor():
    worst = worst_by_kind(real_files())
    assert max(worst.values()) <= 1e-5, worst
