"""Open Inference Protocol v2 with requests shaped as KServe / Triton clients send them."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from litestar.testing import TestClient

from service.app import create_app
from service.card import golden_input
from service.settings import Settings
from tests.service.svc_kit import assert_error, jpeg_bytes, png_bytes
from tests.service.svc_models import SIZE

MODEL = "chest-cancer-net"


@pytest.fixture
def client(model_dir: Path) -> Iterator[TestClient]:
    settings = Settings(model_dir=model_dir, threads=1, decode_threads=2, max_batch_files=4)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_server_endpoints(client: TestClient) -> None:
    meta = client.get("/v2").json()
    assert meta["name"] == MODEL and isinstance(meta["extensions"], list) and "version" in meta
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}


def test_model_metadata_and_ready(client: TestClient) -> None:
    meta = client.get(f"/v2/models/{MODEL}").json()
    assert meta["name"] == MODEL and meta["versions"] == ["0.0.0-test"]
    assert meta["platform"] == "onnxruntime_onnx"
    inputs = {t["name"]: t for t in meta["inputs"]}
    assert inputs["image"] == {"name": "image", "datatype": "FP32", "shape": [-1, 1, SIZE, SIZE]}
    assert inputs["image_bytes"]["datatype"] == "BYTES"
    outputs = {t["name"]: t for t in meta["outputs"]}
    assert outputs["logits"]["shape"] == [-1, 1] and outputs["cam"]["shape"] == [-1, 1, 8, 8]
    assert client.get(f"/v2/models/{MODEL}/versions/0.0.0-test").status_code == 200
    assert client.get(f"/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}
    assert_error(client.get("/v2/models/other"), 404, "not_found")
    assert_error(client.get(f"/v2/models/{MODEL}/versions/9/ready"), 404, "not_found")


def test_infer_fp32_matches_the_golden_output(client: TestClient, model_dir: Path) -> None:
    from service.card import read_card

    x = np.concatenate([golden_input(SIZE), np.full((1, 1, SIZE, SIZE), -0.8, np.float32)])
    request = {
        "id": "req-1",
        "inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}],
    }
    r = client.post(f"/v2/models/{MODEL}/infer", json=request)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == MODEL and body["model_version"] == "0.0.0-test" and body["id"] == "req-1"
    out = {o["name"]: o for o in body["outputs"]}
    assert set(out) == {"logits", "cam", "probabilities", "label"}
    assert out["logits"]["datatype"] == "FP32" and out["logits"]["shape"] == [2, 1]
    golden = read_card(model_dir).golden
    assert out["logits"]["data"][0] == pytest.approx(golden.logits["int8"][0], abs=golden.atol["int8"])
    assert out["cam"]["shape"] == [2, 1, 8, 8] and len(out["cam"]["data"]) == 128
    assert out["probabilities"]["shape"] == [2, 2]
    assert out["label"] == {
        "name": "label",
        "shape": [2],
        "datatype": "BYTES",
        "data": [out["label"]["data"][0], "normal"],
    }


def test_infer_nested_data_and_requested_outputs(client: TestClient) -> None:
    x = np.full((1, 1, SIZE, SIZE), 3.0, np.float32)
    request = {
        "inputs": [{"name": "image", "shape": [1, 1, SIZE, SIZE], "datatype": "FP32", "data": x.tolist()}],
        "outputs": [{"name": "label"}, {"name": "probabilities"}],
    }
    r = client.post(f"/v2/models/{MODEL}/versions/0.0.0-test/infer", json=request)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"]
    assert [o["name"] for o in out] == ["label", "probabilities"]
    assert out[0]["data"] == ["adenocarcinoma"]


def test_infer_bytes_input(client: TestClient) -> None:
    files = [png_bytes(240), jpeg_bytes(5)]
    request = {
        "inputs": [
            {
                "name": "image_bytes",
                "shape": [2],
                "datatype": "BYTES",
                "data": [base64.b64encode(f).decode() for f in files],
            }
        ],
        "outputs": [{"name": "label"}],
    }
    r = client.post(f"/v2/models/{MODEL}/infer", json=request)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ["adenocarcinoma", "normal"]


@pytest.mark.parametrize(
    ("request_body", "status", "code"),
    [
        ({"inputs": []}, 400, "bad_request"),
        (
            {"inputs": [{"name": "image", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]},
            400,
            "bad_request",
        ),
        (
            {"inputs": [{"name": "image", "shape": [1, 1, SIZE, SIZE], "datatype": "FP32", "data": [0.0] * 5}]},
            400,
            "bad_request",
        ),
        (
            {
                "inputs": [
                    {"name": "image", "shape": [1, 1, SIZE, SIZE], "datatype": "FP32", "data": ["x"] * SIZE * SIZE}
                ]
            },
            400,
            "bad_request",
        ),
        (
            {"inputs": [{"name": "image", "shape": [1, 1, SIZE, SIZE], "datatype": "INT8", "data": [0] * SIZE * SIZE}]},
            400,
            "bad_request",
        ),
        (
            {"inputs": [{"name": "b", "shape": [1], "datatype": "BYTES", "data": ["***not base64***"]}]},
            400,
            "bad_request",
        ),
        (
            {
                "inputs": [
                    {"name": "b", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(b"GIF89a").decode()]}
                ]
            },
            415,
            "unsupported_media_type",
        ),
        (
            {"inputs": [{"name": "b", "shape": [5], "datatype": "BYTES", "data": ["AA=="] * 5}]},
            413,
            "payload_too_large",
        ),
        (
            {
                "inputs": [
                    {"name": "image", "shape": [1, 1, SIZE, SIZE], "datatype": "FP32", "data": [0.0] * SIZE * SIZE}
                ],
                "outputs": [{"name": "nope"}],
            },
            400,
            "bad_request",
        ),
        ({"inputs": "nope"}, 400, "bad_request"),
    ],
)
def test_infer_refusals(client: TestClient, request_body: dict, status: int, code: str) -> None:
    assert_error(client.post(f"/v2/models/{MODEL}/infer", json=request_body), status, code)


def test_infer_non_finite_and_malformed_json(client: TestClient) -> None:
    r = client.post(
        f"/v2/models/{MODEL}/infer",
        content=b'{"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [1.0',
        headers={"Content-Type": "application/json"},
    )
    assert_error(r, 400, "bad_request")
    data = [0.0] * (SIZE * SIZE)
    data[3] = 1e39  # valid JSON, but infinite as float32
    body = {"inputs": [{"name": "image", "shape": [1, 1, SIZE, SIZE], "datatype": "FP32", "data": data}]}
    assert (
        "NaN or infinity"
        in assert_error(client.post(f"/v2/models/{MODEL}/infer", json=body), 400, "bad_request")["detail"]
    )


def test_infer_unknown_model_is_404(client: TestClient) -> None:
    body = {"inputs": [{"name": "image", "shape": [1, 1, SIZE, SIZE], "datatype": "FP32", "data": [0.0] * SIZE * SIZE}]}
    assert_error(client.post("/v2/models/other/infer", json=body), 404, "not_found")
