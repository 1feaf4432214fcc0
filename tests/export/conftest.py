"""Fixtures for the export stage: a tiny project (prepared data, checkpoint, metrics) in a temp folder.

The images are two easy classes (a plain disc; a disc with a bright blob), stored as their originals
in the modes the real data has (RGBA, RGB, L PNGs and a JPEG named .png) plus the prepared grey PNGs
ingest would write. The model is a randomly initialised ChestNet whose head is set in closed form to
the difference of the two classes' mean features, so its decisions are clear-cut and the INT8 gate
can pass on eight test images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
LABELS = ["normal", "adenocarcinoma"]
SPLITS = {"train": 6, "val": 2, "test": 4}  # per class
ENCODINGS = ("RGBA", "RGB", "L", "JPEG")


def toy_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["preprocess"]["image_size"] = 64
    params["export"]["calibration_images"] = 8
    params["ood"].update(images_per_set=6, other_domain="none")
    return params


def toy_picture(label: str, seed: int) -> Image.Image:
    """A noisy disc; cancer adds a bright blob. Sizes vary so the letterbox is exercised."""
    rng = np.random.default_rng(seed)
    width, height = int(rng.integers(72, 120)), int(rng.integers(72, 120))
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = height / 2, width / 2
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < (0.4 * min(width, height)) ** 2
    pixels = 40 + 80 * disc + rng.normal(0, 12, (height, width))
    if label != "normal":
        by, bx = cy + rng.uniform(-8, 8), cx + rng.uniform(-8, 8)
        pixels += 130 * np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / 60.0)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")


def encode(grey: Image.Image, how: str) -> bytes:
    out = io.BytesIO()
    if how == "JPEG":
        grey.convert("RGB").save(out, format="JPEG", quality=90)
    elif how == "RGBA":
        rgba = grey.convert("RGBA")
        rgba.putalpha(255)
        rgba.save(out, format="PNG")
    else:
        grey.convert(how).save(out, format="PNG")
    return out.getvalue()


def write_dataset(root: Path) -> None:
    """source/ (originals) and data/prepared/ (grey PNGs + manifest), written by ingest's own writer."""
    from service.inputs.imaging import decode, pixel_digest_source
    from training.ingest import write_prepared
    from training.params import load_params

    data = dataclasses.replace(load_params(root / "params.yaml").data, source=str(root / "source"))
    found, assignment, seed = {}, {}, 0
    for split, per_class in SPLITS.items():
        for label in LABELS:
            for _ in range(per_class):
                seed += 1
                encoded = encode(toy_picture(label, seed), ENCODINGS[seed % len(ENCODINGS)])
                source = f"{split}/{label}/{seed:03d}.png"  # JPEGs too: the real data has such files
                (root / "source" / source).parent.mkdir(parents=True, exist_ok=True)
                (root / "source" / source).write_bytes(encoded)
                grey = decode(encoded)
                digest = hashlib.sha256(pixel_digest_source(grey)).hexdigest()
                found[digest] = {"label": label, "source": source, "image": grey}
                assignment[digest] = split
    write_prepared(found, assignment, {d: d for d in found}, data, LABELS, Counter(), root / "data" / "prepared")


def write_model_and_metrics(root: Path) -> None:
    import torch

    from training.data import input_spec, load_split
    from training.model import build_model, save_checkpoint
    from training.params import load_params

    spec = input_spec(load_params(root / "params.yaml").preprocess)
    x, y, _ = load_split("train", spec, root / "data" / "prepared")
    torch.manual_seed(0)
    model = build_model("binary", LABELS).eval()
    with torch.no_grad():
        features = model.body(torch.from_numpy(x)).mean(dim=(2, 3)).double()
        mean0, mean1 = features[y == 0].mean(0), features[y == 1].mean(0)
        # Linear probe: logit -4 at the normal mean, +4 at the cancer mean.
        weight = 8 * (mean1 - mean0) / (mean1 - mean0).square().sum()
        model.head.classifier.weight.copy_(weight.float().view(1, -1, 1, 1))
        model.head.bias.fill_(float(-weight @ (mean0 + mean1) / 2))
    save_checkpoint(model, root / "artifacts" / "model.pt", LABELS, "binary", {"toy": True})
    metrics = {
        "threshold": 0.5,
        "threshold_rule": "youden",
        "test": {"roc_auc": {"value": 1.0, "low": 1.0, "high": 1.0}},
    }
    (root / "reports").mkdir()
    (root / "reports" / "metrics.json").write_text(json.dumps(metrics))


def run_ood_stage(root: Path, mlflow_uri: str) -> None:
    """The ood stage on the toy project, as `dvc repro` would run it before export."""
    import os

    from training import ood

    before, uri = Path.cwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.chdir(root)
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri
    try:
        ood.main()
    finally:
        os.chdir(before)
        if uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = uri


@pytest.fixture(scope="session")
def toy_project(tmp_path_factory, mlflow_uri) -> Path:
    """The stage's inputs, built once; tests copy it (see `project`)."""
    root = tmp_path_factory.mktemp("toy_project")
    params = toy_params()
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    write_dataset(root)
    write_model_and_metrics(root)
    run_ood_stage(root, mlflow_uri)
    return root


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """One throw-away MLflow store for the session (creating a sqlite store costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def project(toy_project, tmp_path, monkeypatch, mlflow_uri) -> Path:
    """A fresh copy of the toy project as the working directory, never touching the repo's MLflow store."""
    work = tmp_path / "work"
    shutil.copytree(toy_project, work)
    manifest_path = work / "data" / "prepared" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["source_root"] = str(work / "source")
    manifest_path.write_text(json.dumps(manifest, indent=2))
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    return work
