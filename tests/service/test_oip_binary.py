"""The OIP binary tensor data extension, driven by Triton's own client (tritonclient[http]) in both of its
modes, binary (its default) and JSON, against a real server; malformed binary bodies by hand.

The answers must equal /v1/predict's for the same images. The fixture model is the gated one
(svc_models.gate_fields): flat grey about 100..177 is in distribution, white is not."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.card import read_card
from service.inputs.imaging import decode, preprocess
from service.settings import Settings
from tests.service.dicom_kit import ct_bytes
from tests.service.svc_kit import jpeg_bytes, png_bytes, serve_in_thread
from tests.service.svc_models import SIZE, flat_png

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is in the dev extra")
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException

MODEL = "chest-cancer-net"
IMAGES = [flat_png(v) for v in (110, 128, 150, 170)] + [png_bytes(140), flat_png(255)]  # the last is OOD
EVERY_OUTPUT = ("logits", "cam", "probabilities", "label", "ood_score", "abstained")


@pytest.fixture(scope="module")
def server(gated_dir: Path) -> Iterator[str]:
    settings = Settings(model_dir=gated_dir, threads=1, decode_threads=1, max_body_bytes=2_000_000)
    with serve_in_thread(settings) as url:
        yield url


@pytest.fixture(scope="module")
def triton(server: str) -> Iterator:
    client = httpclient.InferenceServerClient(server.removeprefix("http://"))
    yield client
    client.close()


def predict(server: str, image: bytes) -> dict:
    answer = httpx.post(server + "/v1/predict", content=image, headers={"content-type": "image/png"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def tensors(gated_dir: Path, images: list[bytes]) -> np.ndarray:
    spec = read_card(gated_dir).input
    return np.stack([preprocess(decode(image), spec) for image in images]).astype(np.float32)


def bytes_input(images: list[bytes], binary: bool):
    tensor = httpclient.InferInput("image_bytes", [len(images)], "BYTES")
    # In JSON mode BYTES elements go as strings: base64, as the service's JSON tensors expect.
    elements = images if binary else [base64.b64encode(i).decode() for i in images]
    tensor.set_data_from_numpy(np.array(elements, dtype=object), binary_data=binary)
    return tensor


def requested(binary: bool) -> list:
    return [httpclient.InferRequestedOutput(name, binary_data=binary) for name in EVERY_OUTPUT]


def test_metadata_and_readiness(triton, server: str) -> None:
    assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready(MODEL)
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]
    meta = triton.get_model_metadata(MODEL)
    assert {o["name"] for o in meta["outputs"]} == set(EVERY_OUTPUT)
    assert [i["datatype"] for i in meta["inputs"]] == ["FP32", "BYTES"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("count", [1, 6])
def test_bytes_inputs_answer_as_v1_predict(triton, server: str, binary: bool, count: int) -> None:
    images = IMAGES[-count:]
    result = triton.infer(MODEL, [bytes_input(images, binary)], outputs=requested(binary))
    for output in result.get_response()["outputs"]:  # each output in the mode asked for
        assert ("data" not in output and output["parameters"]["binary_data_size"] > 0) if binary else "data" in output
    expected = [predict(server, image) for image in images]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (count, 2)
    np.testing.assert_allclose(probabilities[:, 1], [e["probability"] for e in expected], atol=1e-6)
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")]
    assert labels == [e["label"] or "" for e in expected]
    assert result.as_numpy("abstained").tolist() == [e["abstained"] for e in expected]
    np.testing.assert_allclose(result.as_numpy("ood_score"), [e["ood"]["score"] for e in expected], rtol=1e-5)
    assert result.as_numpy("logits").shape == (count, 1) and result.as_numpy("cam").shape[:2] == (count, 1)


def test_an_out_of_distribution_image_has_an_empty_label_in_binary(triton) -> None:
    result = triton.infer(MODEL, [bytes_input([flat_png(255)], True)])  # no outputs named: all, binary
    assert result.as_numpy("label").tolist() == [b""] and result.as_numpy("abstained").tolist() == [True]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("kind", ["jpeg", "dicom"])
def test_jpeg_and_dicom_bytes(triton, server: str, binary: bool, kind: str) -> None:
    image = jpeg_bytes(140) if kind == "jpeg" else ct_bytes(np.full((96, 80), 140, np.uint8))
    result = triton.infer(MODEL, [bytes_input([image], binary)], outputs=requested(binary))
    expected = predict(server, image)
    assert result.as_numpy("probabilities")[0, 1] == pytest.approx(expected["probability"], abs=1e-6)
    assert result.as_numpy("abstained").tolist() == [expected["abstained"]]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("count", [1, 8])
def test_fp32_tensors_answer_as_v1_predict(triton, server: str, gated_dir: Path, binary: bool, count: int) -> None:
    images = [flat_png(100 + 9 * i) for i in range(count)]
    tensor = httpclient.InferInput("input", [count, 1, SIZE, SIZE], "FP32")
    tensor.set_data_from_numpy(tensors(gated_dir, images), binary_data=binary)
    result = triton.infer(MODEL, [tensor], outputs=requested(binary))
    expected = [predict(server, image)["probability"] for image in images]
    np.testing.assert_allclose(result.as_numpy("probabilities")[:, 1], expected, atol=1e-6)


def test_binary_and_json_outputs_in_one_answer(triton) -> None:
    outputs = [
        httpclient.InferRequestedOutput("probabilities", binary_data=True),
        httpclient.InferRequestedOutput("label", binary_data=False),
    ]
    result = triton.infer(MODEL, [bytes_input([flat_png(128)], True)], outputs=outputs)
    by_name = {o["name"]: o for o in result.get_response()["outputs"]}
    assert "data" not in by_name["probabilities"] and by_name["probabilities"]["parameters"]["binary_data_size"] == 8
    assert by_name["label"]["data"] == ["adenocarcinoma"] == result.as_numpy("label").tolist()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_wrong_shape_and_datatype_are_clean_400s(triton, binary: bool) -> None:
    wrong_shape = httpclient.InferInput("input", [1, 1, SIZE + 1, SIZE + 1], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((1, 1, SIZE + 1, SIZE + 1), np.float32), binary_data=binary)
    wrong_type = httpclient.InferInput("input", [1, 1, SIZE, SIZE], "INT32")
    wrong_type.set_data_from_numpy(np.zeros((1, 1, SIZE, SIZE), np.int32), binary_data=binary)
    for tensor in (wrong_shape, wrong_type):
        with pytest.raises(InferenceServerException) as caught:
            triton.infer(MODEL, [tensor])
        assert caught.value.status() == "400" and caught.value.message() == "bad_request"


# --- malformed binary bodies, by hand --------------------------------------------------------------------


def raw_infer(server: str, header: dict, rest: bytes, header_length: int | str | None = None) -> httpx.Response:
    head = json.dumps(header).encode()
    length = len(head) if header_length is None else header_length
    return httpx.post(
        f"{server}/v2/models/{MODEL}/infer",
        content=head + rest,
        headers={"Inference-Header-Content-Length": str(length), "content-type": "application/octet-stream"},
    )


def bytes_header(size: int, count: int = 1, **extra) -> dict:
    tensor = {"name": "image_bytes", "shape": [count], "datatype": "BYTES", "parameters": {"binary_data_size": size}}
    return {"inputs": [tensor | extra]}


def element(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


@pytest.mark.parametrize(
    ("header", "rest", "length", "says"),
    [
        (bytes_header(10), element(b"x" * 6), "many", "whole number"),
        (bytes_header(10), element(b"x" * 6), 10**6, "does not fit"),
        (bytes_header(50), element(b"x" * 6), None, "runs past the end"),
        (bytes_header(4), element(b"x" * 6), None, "belong to no input"),
        (bytes_header(10, count=2), element(b"x" * 6), None, "holds 1 elements; the shape says 2"),
        (bytes_header(8), struct.pack("<I", 99) + b"abcd", None, "runs past the end of its binary data"),
        (bytes_header(10, data=["eA=="]), element(b"x" * 6), None, "both data and a binary_data_size"),
        ({"inputs": [{"name": "i", "shape": [1], "datatype": "BYTES"}]}, b"", None, "neither data nor"),
        (bytes_header(10), element(b"x" * 6), None, "image"),  # well-formed, but not an image: 4xx from decode
    ],
)
def test_malformed_binary_bodies_are_clean_4xx(server: str, header: dict, rest: bytes, length, says: str) -> None:
    answer = raw_infer(server, header, rest, length)
    assert 400 <= answer.status_code < 500, answer.text
    assert says in answer.json()["detail"], answer.json()


def test_the_body_limit_covers_the_binary_part(server: str) -> None:
    big = element(b"\0" * 2_100_000)
    answer = raw_infer(server, bytes_header(len(big)), big)
    assert answer.status_code == 413, answer.text


def test_the_binary_part_obeys_the_image_count_limit(server: str) -> None:
    rest = element(flat_png(128)) * 17
    answer = raw_infer(server, bytes_header(len(rest), count=17), rest)
    assert answer.status_code == 413 and "at most 16 images" in answer.json()["detail"]


def test_a_json_body_still_answers_json(server: str) -> None:
    body = {
        "inputs": [{"name": "b", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(flat_png(128)).decode()]}]
    }
    answer = httpx.post(f"{server}/v2/models/{MODEL}/infer", json=body)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    assert "Inference-Header-Content-Length" not in answer.headers
