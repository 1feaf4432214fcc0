"""Near-duplicate grouping: copies of a slice (re-windowed, annotated, resized) join one group, unrelated
images do not, and ingest keeps every group inside one split."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.training.conftest import png_bytes, toy_params, write_params
from training import ingest
from training.near_duplicates import fingerprint, group, nearest_unjoined
from training.params import load_params

REPO = Path(__file__).resolve().parents[2]


def slice_like(seed: int, size: tuple[int, int] = (96, 96)) -> Image.Image:
    """A smooth picture (random 6x6 grey levels, upsampled), unlike every other seed's."""
    coarse = np.random.default_rng(seed).integers(20, 236, (6, 6), dtype=np.uint8)
    return Image.fromarray(coarse, mode="L").resize(size, Image.Resampling.BICUBIC)


def copies(original: Image.Image) -> list[Image.Image]:
    """What the Kaggle set holds of one slice: another window, an annotation line, another size."""
    windowed = original.point(lambda v: min(255, int(v * 0.8 + 30)))
    annotated = original.copy()
    ImageDraw.Draw(annotated).line((10, 10, 40, 30), fill=255, width=2)
    resized = original.resize((130, 130), Image.Resampling.BILINEAR)
    return [windowed, annotated, resized]


def test_copies_join_and_unrelated_images_do_not() -> None:
    originals = [slice_like(seed) for seed in range(6)]
    images = originals + copies(originals[0]) + copies(originals[3])
    prints = np.stack([fingerprint(i) for i in images])
    grouping = group(prints, 0.3)
    assert len(set(grouping.group[:6])) == 6  # six different slices stay apart
    assert set(grouping.group[6:9]) == {grouping.group[0]} and set(grouping.group[9:]) == {grouping.group[3]}
    assert grouping.summary(0.3) == {
        "max_distance": 0.3,
        "images": 12,
        "groups": 6,
        "merged_groups": 2,
        "images_in_merged_groups": 8,
        "largest_group": 4,
    }
    assert all(i < j and 0 <= d <= 0.3 for i, j, d in grouping.pairs)
    (closest,) = nearest_unjoined(prints, grouping, 1)
    assert grouping.group[closest[0]] != grouping.group[closest[1]] and closest[2] > 0.3


def test_joining_is_transitive_and_zero_turns_it_off() -> None:
    a = np.zeros(256, np.float32)
    b, c = a.copy(), a.copy()
    b[:40] = 1.0  # a-b and b-c within reach, a-c not
    c[:80] = 1.0
    prints = np.stack([a, b, c])
    assert group(prints, 0.45).group.tolist() == [0, 0, 0]
    assert group(prints, 0.0).group.tolist() == [0, 1, 2] and group(prints, 0.0).pairs == []


def test_ingest_keeps_each_group_in_one_split_and_reports_it(workdir: Path, tmp_path: Path) -> None:
    data = tmp_path / "Data" / "train"
    planted = {}
    for label, first_seed in (("normal", 0), ("adenocarcinoma", 100)):
        folder = data / label
        folder.mkdir(parents=True)
        for i in range(12):
            original = slice_like(first_seed + i)
            (folder / f"{i}.png").write_bytes(png_bytes(original))
            if i < 3:  # three slices of each class come with their near-copies
                for k, copy in enumerate(copies(original)):
                    (folder / f"{i}_copy{k}.png").write_bytes(png_bytes(copy))
                planted[f"{label}/{i}"] = 4
    write_params(workdir, toy_params(str(tmp_path / "Data")))
    ingest.main()
    manifest = json.loads((workdir / "data/prepared/manifest.json").read_text())
    by_group = defaultdict(set)
    for record in manifest["records"]:
        by_group[record["group"]].add(record["split"])
    assert all(len(splits) == 1 for splits in by_group.values()), by_group
    report = json.loads((workdir / "reports/ingest.json").read_text())["near_duplicates"]
    assert report["merged_groups"] == len(planted) == 6 and report["images_in_merged_groups"] == 24
    skipped = json.loads((workdir / "reports/ingest.json").read_text())["skipped"]
    assert report["mixed_label_groups"] == 0 and report["images"] == 42, skipped
    for split in ("train", "val", "test"):
        assert {r["label"] for r in manifest["records"] if r["split"] == split} == {"normal", "adenocarcinoma"}
    assert (workdir / "reports/near_duplicates.png").stat().st_size > 1000


def test_a_threshold_that_chains_everything_stops_ingest_clearly(workdir: Path, tmp_path: Path) -> None:
    for label in ("normal", "adenocarcinoma"):
        folder = tmp_path / "Data" / "train" / label
        folder.mkdir(parents=True)
        for i in range(15):
            (folder / f"{i}.png").write_bytes(png_bytes(slice_like(i + (50 if label == "normal" else 0))))
    params = toy_params(str(tmp_path / "Data"))
    params["data"]["near_duplicates"] = 1.45  # past the distance of unrelated pictures
    write_params(workdir, params)
    with pytest.raises(SystemExit, match=r"data.near_duplicates 1.45 joins 30 of 30 images into one group"):
        ingest.main()
    assert not (workdir / "data/prepared").exists()


def test_synthetic_phantoms_are_not_grouped() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "synthetic" and params.data.near_duplicates > 0
    assert ingest.near_duplicate_distance(params.data) == 0.0
    real = dataclasses.replace(params.data, source="../shared/data/chest-ct-kaggle/Data")
    assert ingest.near_duplicate_distance(real) == params.data.near_duplicates
