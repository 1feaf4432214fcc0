"""The shadow candidate: sampled traffic runs on it off the critical path, the comparison is counted
(GET /v1/shadow, /metrics), and the client's answer never shows it or waits for it.

Fixtures: the plain binary model and the gated one share their heads, so flat grey images get the same
label from both; the gated one abstains on white. The multiclass one labels differently."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from litestar.testing import TestClient

from service.app import create_app
from service.inference.shadow_tally import ShadowTally, wilson_interval
from service.settings import Settings
from tests.service.svc_models import flat_png
from tests.service.test_observability import metric

GREY, WHITE = flat_png(128), flat_png(255)


@pytest.fixture
def serve(model_dir: Path) -> Callable:
    @contextmanager
    def make(shadow: Path | None, **overrides) -> Iterator[TestClient]:
        settings = Settings(model_dir=model_dir, shadow_model_dir=shadow, threads=1, decode_threads=1, **overrides)
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield client

    return make


def wait_for(client: TestClient, done: Callable[[dict], bool], timeout: float = 10.0) -> dict:
    """GET /v1/shadow until `done(summary)`: the comparison runs after the answers were sent."""
    deadline = time.perf_counter() + timeout
    while True:
        summary = client.get("/v1/shadow").json()
        if done(summary) or time.perf_counter() > deadline:
            return summary
        time.sleep(0.02)


def test_agreeing_candidate_is_counted_and_the_answer_says_nothing_of_it(serve, gated_dir: Path) -> None:
    with serve(gated_dir) as c:
        plain = c.post("/v1/predict", content=GREY).json()
        for _ in range(4):
            assert c.post("/v1/predict", content=GREY).json().keys() == plain.keys()
        summary = wait_for(c, lambda s: s["compared"] >= 5)
        model = c.get("/v1/model").json()
        text = c.get("/metrics").text
    assert "shadow" not in plain and plain["label"] == "adenocarcinoma"
    assert summary["active"] is True and summary["sample"] == 1.0
    assert summary["compared"] == summary["agree"] == 5 and summary["disagree"] == 0
    assert summary["labels"] == {"adenocarcinoma": {"adenocarcinoma": 5}}
    assert summary["agreement"] == 1.0
    low, high = summary["agreement_interval"]
    assert 0.5 < low < 1.0 and high == 1.0  # Wilson: 5 of 5 is not proof of 100%
    assert summary["probability_difference"]["max"] < 0.01  # same heads: only int8 rounding differs
    assert model["shadow"]["sha256"] == summary["candidate"]["sha256"] != model["sha256"]
    assert metric(text, 'chestnet_shadow_total{outcome="agree"}') == 5
    assert metric(text, 'chestnet_shadow_labels_total{candidate="adenocarcinoma",primary="adenocarcinoma"}') == 5
    assert metric(text, "chestnet_shadow_probability_difference_count") == 5
    assert metric(text, "chestnet_shadow_inference_duration_seconds_count") >= 1
    assert 'chestnet_model_info{name="chest-cancer-net",role="shadow"' in text
    assert 'chestnet_model_info{name="chest-cancer-net",role="primary"' in text


def test_disagreement_is_directional_and_abstention_is_a_label(serve, gated_dir: Path) -> None:
    with serve(gated_dir) as c:
        answer = c.post("/v1/predict", content=WHITE).json()
        c.post("/v1/predict", content=GREY)
        summary = wait_for(c, lambda s: s["compared"] >= 2)
        reset = c.post("/admin/shadow/reset")
    assert answer["label"] == "adenocarcinoma"  # the primary has no gate
    assert summary["agree"] == 1 and summary["disagree"] == 1
    assert summary["labels"] == {"adenocarcinoma": {"abstained": 1, "adenocarcinoma": 1}}
    assert reset.status_code == 404  # no ADMIN_API_KEY: no admin routes


def test_candidate_with_other_labels_disagrees_and_batch_and_oip_are_shadowed(serve, multiclass_dir: Path) -> None:
    files = [("files", (f"{i}.png", GREY, "image/png")) for i in range(3)]
    with serve(multiclass_dir) as c:
        assert c.post("/v1/predict/batch", files=files).status_code == 200
        oip = {"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": [_b64(GREY)]}]}
        assert c.post("/v2/models/chest-cancer-net/infer", json=oip).status_code == 200
        summary = wait_for(c, lambda s: s["compared"] >= 4)
    assert summary["compared"] == summary["disagree"] == 4
    (primary,) = summary["labels"]
    assert primary == "adenocarcinoma" and sum(summary["labels"][primary].values()) == 4


def test_sample_zero_offers_nothing(serve, gated_dir: Path) -> None:
    with serve(gated_dir, shadow_sample=0.0) as c:
        for _ in range(5):
            assert c.post("/v1/predict", content=GREY).status_code == 200
        time.sleep(0.2)
        summary = c.get("/v1/shadow").json()
    assert summary["active"] is True and summary["compared"] == summary["dropped"] == 0


def test_a_stuck_candidate_never_delays_the_answer_and_a_full_queue_drops(serve, gated_dir: Path) -> None:
    release = threading.Event()
    with serve(gated_dir, shadow_queue_max=2) as c:
        shadow = c.app.state.runtime.shadow
        shadow.candidate = stuck_model = _Stuck(shadow.candidate, release)
        statuses = [c.post("/v1/predict", content=GREY).status_code]
        assert stuck_model.entered.wait(5)  # the first offer is in the (blocked) candidate
        statuses += [c.post("/v1/predict", content=GREY).status_code for _ in range(7)]
        stuck = c.get("/v1/shadow").json()
        release.set()
        summary = wait_for(c, lambda s: s["compared"] + s["dropped"] >= 8)
    assert statuses == [200] * 8  # answered while the candidate was blocked
    # One offer is in the blocked run, two wait in the queue: the other five were dropped at once.
    assert stuck["compared"] == 0 and stuck["dropped"] == 5
    assert summary["compared"] == 3 and summary["dropped"] == 5


def test_a_failing_candidate_is_counted_as_errors_never_raised(serve, gated_dir: Path) -> None:
    with serve(gated_dir) as c:
        shadow = c.app.state.runtime.shadow
        shadow.candidate = _Broken(shadow.candidate)
        statuses = [c.post("/v1/predict", content=GREY).status_code for _ in range(3)]
        summary = wait_for(c, lambda s: s["errors"] >= 3)
        text = c.get("/metrics").text
    assert statuses == [200] * 3 and summary["errors"] == 3 and summary["compared"] == 0
    assert metric(text, 'chestnet_shadow_total{outcome="error"}') == 3


def test_no_shadow_configured(serve) -> None:
    with serve(None) as c:
        summary = c.get("/v1/shadow").json()
        model = c.get("/v1/model").json()
        text = c.get("/metrics").text
    assert summary["active"] is False and summary["candidate"] is None and summary["compared"] == 0
    assert model["shadow"] is None and 'role="shadow"' not in text


def test_a_bad_candidate_stops_start_up(model_dir: Path, copy_model_dir, start_server) -> None:
    broken = copy_model_dir()
    (broken / "model.int8.onnx").write_bytes(b"not a model")
    server = start_server(model_dir, SHADOW_MODEL_DIR=str(broken))
    assert server.proc.wait(60) == 1
    lines = [line for line in server.output().splitlines() if line.startswith("service:")]
    assert len(lines) == 1 and "shadow candidate (SHADOW_MODEL_DIR)" in lines[0] and "sha256" in lines[0]


def test_tally_quantiles_interval_and_reset() -> None:
    tally = ShadowTally()
    for i in range(100):
        tally.compared("a", "a" if i < 90 else "b", i / 100)
    tally.missed("dropped")
    summary = tally.summary()
    assert summary["agree"] == 90 and summary["disagree"] == 10 and summary["dropped"] == 1
    assert summary["labels"] == {"a": {"a": 90, "b": 10}}
    differences = summary["probability_difference"]
    assert differences["p50"] == pytest.approx(0.49) and differences["p90"] == pytest.approx(0.89)
    assert differences["max"] == pytest.approx(0.99) and differences["mean"] == pytest.approx(0.495)
    low, high = summary["agreement_interval"]
    assert low == pytest.approx(0.8256, abs=1e-3) and high == pytest.approx(0.9448, abs=1e-3)  # Wilson 90/100
    tally.reset()
    assert tally.summary()["compared"] == 0 and tally.summary()["probability_difference"] is None


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) is None
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0.25 < high < 0.35
    low, high = wilson_interval(10, 10)
    assert 0.65 < low < 0.75 and high == 1.0


class _Stuck:
    """The candidate, but its runs wait for `release` (a candidate that has hung)."""

    def __init__(self, model, release: threading.Event) -> None:
        self.model, self.release, self.entered = model, release, threading.Event()

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def run(self, batch):
        self.entered.set()
        self.release.wait(10)
        return self.model.run(batch)


class _Broken(_Stuck):
    def __init__(self, model) -> None:
        super().__init__(model, threading.Event())

    def run(self, batch):
        raise RuntimeError("the candidate broke")


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()
