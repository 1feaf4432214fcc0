"""The trust layer in the service: every answer carries the OOD gate's reading; OOD_POLICY decides whether
an out-of-distribution image gets a label; abstentions, OOD scores and drift reach /metrics.

The gated fixture (svc_models.gate_fields) calls flat grey about 100..177 in distribution; black and
white are not."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from litestar.testing import TestClient

from service.app import create_app
from service.card import CARD_FILE, CardError, read_card
from service.inference.engine import Engine
from service.settings import Settings
from tests.service.svc_kit import png_bytes
from tests.service.svc_models import GATE_THRESHOLD, REFERENCE_GREYS, flat_png
from tests.service.test_observability import metric

IN, OUT = flat_png(128), flat_png(255)


@pytest.fixture
def gated(gated_dir: Path) -> Callable:
    @contextmanager
    def make(**overrides) -> Iterator[TestClient]:
        settings = Settings(model_dir=gated_dir, threads=1, decode_threads=1, **overrides)
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield client

    return make


def test_in_distribution_image_is_answered_with_its_reading(gated) -> None:
    with gated() as c:
        body = c.post("/v1/predict", content=IN).json()
    assert body["label"] == "adenocarcinoma" and body["abstained"] is False and body["reason"] is None
    ood = body["ood"]
    assert ood["in_distribution"] is True and ood["threshold"] == GATE_THRESHOLD and 0 <= ood["score"] < 1


def test_out_of_distribution_image_gets_no_label(gated) -> None:
    with gated() as c:
        body = c.post("/v1/predict", content=OUT).json()
    assert body["label"] is None and body["abstained"] is True
    assert body["ood"]["in_distribution"] is False and body["ood"]["score"] > GATE_THRESHOLD
    assert "does not look like the chest CT slices" in body["reason"] and "no prediction is given" in body["reason"]
    assert set(body["probabilities"]) == {"normal", "adenocarcinoma"}  # kept for inspection


def test_flag_policy_keeps_the_label_and_marks_it(gated) -> None:
    with gated(ood_policy="flag") as c:
        body = c.post("/v1/predict", content=OUT).json()
    assert body["label"] == "adenocarcinoma" and body["abstained"] is False and body["reason"] is None
    assert body["ood"]["in_distribution"] is False


def test_off_policy_scores_nothing(gated) -> None:
    with gated(ood_policy="off") as c:
        body = c.post("/v1/predict", content=OUT).json()
        text = c.get("/metrics").text
    assert body["label"] == "adenocarcinoma" and body["abstained"] is False and body["ood"] is None
    assert "chestnet_ood_score_bucket" not in text


def test_a_card_without_a_gate_says_so(client_without_gate) -> None:
    body = client_without_gate.post("/v1/predict", content=png_bytes(128)).json()
    assert body["ood"] is None and body["abstained"] is False and body["label"] is not None


@pytest.fixture
def client_without_gate(model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=model_dir, threads=1)), raise_server_exceptions=False) as c:
        yield c


def test_batch_items_and_explanations_carry_the_verdict(gated) -> None:
    with gated() as c:
        files = [("files", ("a.png", IN, "image/png")), ("files", ("b.png", OUT, "image/png"))]
        results = c.post("/v1/predict/batch", files=files).json()["results"]
        explained = c.post("/v1/explain", content=OUT, headers={"Accept": "application/json"}).json()
        png = c.post("/v1/explain", content=OUT)
    assert [r["result"]["abstained"] for r in results] == [False, True]
    assert results[0]["result"]["label"] == "adenocarcinoma" and results[1]["result"]["label"] is None
    assert (
        explained["abstained"] is True and explained["label"] is None and explained["ood"]["in_distribution"] is False
    )
    assert png.headers["x-abstained"] == "true" and png.headers["x-label"] == ""
    assert float(png.headers["x-ood-score"]) > GATE_THRESHOLD


def test_oip_outputs_ood_score_and_abstained(gated) -> None:
    data = [base64.b64encode(b).decode() for b in (IN, OUT)]
    request = {"inputs": [{"name": "image_bytes", "shape": [2], "datatype": "BYTES", "data": data}]}
    with gated() as c:
        meta = c.get("/v2/models/chest-cancer-net").json()
        out = {o["name"]: o for o in c.post("/v2/models/chest-cancer-net/infer", json=request).json()["outputs"]}
    assert {"ood_score", "abstained"} <= {o["name"] for o in meta["outputs"]}
    assert out["abstained"] == {"name": "abstained", "shape": [2], "datatype": "BOOL", "data": [False, True]}
    assert out["ood_score"]["datatype"] == "FP32" and out["ood_score"]["data"][1] > GATE_THRESHOLD
    assert out["label"]["data"] == ["adenocarcinoma", ""]


def test_oip_without_the_gate_offers_no_trust_outputs(gated) -> None:
    request = {"inputs": [{"name": "b", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(IN).decode()]}]}
    request["outputs"] = [{"name": "ood_score"}]
    with gated(ood_policy="off") as c:
        r = c.post("/v2/models/chest-cancer-net/infer", json=request)
    assert r.status_code == 400 and "unknown output 'ood_score'" in r.json()["detail"]


def test_abstentions_and_scores_are_counted(gated) -> None:
    with gated() as c:
        for data in (IN, OUT, OUT):
            c.post("/v1/predict", content=data)
        text = c.get("/metrics").text
    assert metric(text, "chestnet_abstentions_total", reason="out_of_distribution") == 2
    assert metric(text, "chestnet_ood_score_count") == 3
    assert metric(text, "chestnet_ood_threshold") == GATE_THRESHOLD
    assert metric(text, "chestnet_predictions_total", label="adenocarcinoma") == 1  # abstentions are no answer


def test_drift_stays_low_for_the_reference_and_crosses_the_alert_for_a_shift(gated) -> None:
    unshifted = [flat_png(v) for v in REFERENCE_GREYS]
    brightened = [flat_png(min(255, v + 60)) for v in REFERENCE_GREYS]
    with gated(ood_policy="flag") as c:
        for data in unshifted * 2:
            c.post("/v1/predict", content=data)
        calm = c.get("/metrics").text
    with gated(ood_policy="flag") as c:
        for data in brightened * 2:
            c.post("/v1/predict", content=data)
        shifted = c.get("/metrics").text
    for feature in ("grey_level", "ood_score", "probability"):
        assert metric(calm, "chestnet_drift_psi", feature=feature) < 0.1, feature
        assert metric(shifted, "chestnet_drift_psi", feature=feature) > 0.25, feature  # the alert level
    assert metric(calm, "chestnet_drift_window_images") == 2 * len(unshifted)


def test_altered_ood_statistics_stop_the_model_from_loading(gated_dir: Path, tmp_path: Path) -> None:
    for path in gated_dir.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    stats = tmp_path / read_card(tmp_path).ood.statistics.path
    data = bytearray(stats.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stats.write_bytes(bytes(data))
    with pytest.raises(CardError, match="does not match its card"):
        Engine.open(tmp_path, "int8", threads=1)
    assert (tmp_path / CARD_FILE).exists()
