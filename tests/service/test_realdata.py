"""Real chest CT images (../shared/data) through /v1/predict, /v1/explain and /v1/predict/batch."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient
from PIL import Image, ImageOps

from service.app import create_app
from service.settings import Settings
from tests.service.svc_models import write_model_dir

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "chest-ct-kaggle" / "Data"
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not present at {DATA}"),
]


def images(split: str) -> list[Path]:
    return sorted(p for p in (DATA / split).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def sample() -> list[Path]:
    """A few images from every class folder of every split, and every JPEG."""
    picked: list[Path] = []
    for folder in sorted(p for p in DATA.glob("*/*") if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        picked += files[:2] + [p for p in files if p.suffix.lower() in (".jpg", ".jpeg")]
    return picked


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:

    folder = write_model_dir(tmp_path_factory.mktemp("real-models"), "multiclass", size=128)
    with TestClient(create_app(Settings(model_dir=folder, threads=2)), raise_server_exceptions=False) as c:
        yield c


def test_predict_and_explain_real_images(client: TestClient) -> None:
    files = sample()
    assert len(files) >= 16
    for path in files:
        data = path.read_bytes()
        r = client.post("/v1/predict", files={"file": ("upload", data, "application/octet-stream")})
        assert r.status_code == 200, (path.name, r.text)
        body = r.json()
        assert body["label"] in body["probabilities"]
        assert sum(body["probabilities"].values()) == pytest.approx(1.0)
        overlay = client.post("/v1/explain", content=data)
        assert overlay.status_code == 200 and overlay.headers["content-type"] == "image/png"
        original = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        assert Image.open(io.BytesIO(overlay.content)).size == original.size
        numbers = client.post("/v1/explain", content=data, headers={"Accept": "application/json"}).json()
        assert numbers["label"] == body["label"] and numbers["cam_shape"] == [4, 16, 16]
        assert (numbers["image_width"], numbers["image_height"]) == original.size


def test_the_whole_test_split_in_batches(client: TestClient) -> None:
    files = images("test")
    labels: dict[str, int] = {}
    for start in range(0, len(files), 16):
        chunk = files[start : start + 16]
        r = client.post("/v1/predict/batch", files=[("files", ("x", p.read_bytes(), "image/png")) for p in chunk])
        assert r.status_code == 200, r.text
        for item in r.json()["results"]:
            assert item["error"] is None, (chunk[item["index"]].name, item["error"])
            labels[item["result"]["label"]] = labels.get(item["result"]["label"], 0) + 1
    assert sum(labels.values()) == len(files)
