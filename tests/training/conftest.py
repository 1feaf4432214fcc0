"""Fixtures for the torch side: a small Kaggle-layout folder and a toy params.yaml."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
LONG = {
    "normal": "normal",
    "adenocarcinoma": "adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib",
    "large_cell_carcinoma": "large.cell.carcinoma_left.hilum_T2_N2_M0_IIIa",
    "squamous_cell_carcinoma": "squamous.cell.carcinoma_left.hilum_T1_N2_M0_IIIa",
}
SHORT = {
    "normal": "normal",
    "adenocarcinoma": "adenocarcinoma",
    "large_cell_carcinoma": "large.cell.carcinoma",
    "squamous_cell_carcinoma": "squamous.cell.carcinoma",
}


def grey_image(seed: int, size=(80, 72)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8), mode="L")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def build_kaggle_folder(root: Path, per_class: int = 6) -> dict:
    """Data/{train,valid,test}/<class folder> with the traps of the real dataset; returns what it planted."""
    data = root / "Data"
    seed = 0
    for label in LONG:
        for i in range(per_class):
            seed += 1
            split = ("train", "valid", "test")[i % 3]
            folder = data / split / (SHORT if split == "test" else LONG)[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{label}_{i}.png").write_bytes(png_bytes(grey_image(seed)))
    adeno_train = data / "train" / LONG["adenocarcinoma"]
    first = (adeno_train / "adenocarcinoma_0.png").read_bytes()
    # the same image again in test (a cross-split duplicate) and once more as RGBA
    (data / "test" / "adenocarcinoma" / "copy_of_train.png").write_bytes(first)
    rgba = Image.open(io.BytesIO(first)).convert("RGBA")
    (adeno_train / "rgba_copy.png").write_bytes(png_bytes(rgba))
    # a JPEG named .png, a corrupt file and a tiny image
    jpeg = io.BytesIO()
    grey_image(999).convert("RGB").save(jpeg, format="JPEG", quality=95)
    (data / "train" / "normal" / "really_a_jpeg.png").write_bytes(jpeg.getvalue())
    (data / "train" / "normal" / "corrupt.png").write_bytes(first[:200])
    (data / "valid" / "normal" / "tiny.png").write_bytes(png_bytes(grey_image(5, (20, 20))))
    return {"distinct_per_class": per_class, "jpeg": 1, "corrupt": 1, "tiny": 1, "duplicates": 2}


@pytest.fixture
def kaggle_folder(tmp_path) -> Path:
    build_kaggle_folder(tmp_path)
    return tmp_path / "Data"


def toy_params(source: str = "synthetic", task: str = "binary") -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(source=source, task=task, min_side=32)
    params["data"]["synthetic"].update(images_per_class=8, size=64)
    params["preprocess"]["image_size"] = 32
    params["tune"].update(n_trials=2, epochs=1, batch_size=[4])
    params["train"].update(epochs=2, patience=1)
    params["evaluate"]["bootstrap"] = 20
    params["export"]["calibration_images"] = 4
    return params


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """One throw-away MLflow store for the session (creating a sqlite store costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def workdir(tmp_path, monkeypatch, mlflow_uri) -> Path:
    """An empty stage working directory, never the repo's MLflow store; stages run with it as cwd."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    return work


def write_params(work: Path, params: dict) -> None:
    (work / "params.yaml").write_text(yaml.safe_dump(params))
